//! Reading the header, every slot and the seqlocked connection entries of a segment.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{ClientAddr, StatusCounts};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use super::super::raw::layout::{
    ConnEntry, LastRequest, Slot, SlotCounters, CLIENT_UNIX, HISTOGRAM_BUCKETS,
};
use super::super::segment::{load_acquire, HeaderTruth, SlotTruth};
use super::super::{mono_ns, strings, unix_ms, Segment, SlotState};
use super::super::{MasterInfo, UpgradeCounts};
use super::{
    custom, ConnSnapshot, Counters, HistogramSnapshot, LastReloadSnapshot, LastRequestSnapshot,
    RequestSnapshot, SlotSnapshot, Snapshot, Totals,
};

/// Tries a seqlocked read this many times before giving up on an entry (its writer keeps
/// rewriting it, or died mid-write).
const SEQLOCK_READ_TRIES: usize = 64;

/// Runs `f` until it ran without a concurrent write under `seq`.
pub(super) fn read_consistent<T>(seq: &AtomicU64, f: impl Fn() -> T) -> Option<T> {
    for _ in 0..SEQLOCK_READ_TRIES {
        let s1 = load_acquire(seq);
        if s1 & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let v = f();
        fence(Acquire);
        if seq.load(Relaxed) == s1 {
            return Some(v);
        }
    }
    None
}

pub(in crate::scoreboard) fn take(sb: &Segment) -> Snapshot {
    let now = mono_ns();
    let unix_now_ms = unix_ms();
    let mut slots: Vec<SlotSnapshot> = (0..sb.slot_count())
        .filter_map(|i| sb.slot(i).map(|s| read_slot(i, s, now, unix_now_ms)))
        .collect();
    let mut guards = None;
    let (mut canary_counts, mut canary_window) = (None, None);
    let mut master = None;
    let (header, listen_queues) = match &sb.truth {
        // The creator shows what it knows, whatever a worker wrote over the header.
        Some(t) => {
            overlay_slots(&mut slots, &t.slots());
            guards = Some(t.guards().overlay(&mut slots));
            let header = t.header().clone();
            canary_counts = Some(header.canary_counts);
            master = Some(MasterInfo::this_process(UpgradeCounts {
                success: header.upgrades_success,
                rollback: header.upgrades_rollback,
            }));
            canary_window = t.canary().as_ref().map(|b| b.window(&slots));
            (header, t.queues().shown())
        }
        None => (
            read_header(sb),
            super::queues::read(&sb.header().listen_queues),
        ),
    };
    let totals = sum(&slots);
    let custom = custom::read(sb, &slots);
    Snapshot {
        instance: header.name,
        master_pid: header.master_pid as u32,
        created_unix_ms: header.created_unix_ms,
        taken_unix_ms: unix_now_ms,
        generation: header.generation,
        target_workers: header.target_workers,
        reloads_success: header.reloads_success,
        reloads_rollback: header.reloads_rollback,
        last_reload: header.last_reload.and_then(
            |(outcome, generation, finished_unix_ms, reason)| {
                let outcome = match outcome {
                    1 => "success",
                    2 => "rollback",
                    _ => return None,
                };
                Some(LastReloadSnapshot {
                    outcome: outcome.to_string(),
                    generation,
                    finished_unix_ms,
                    reason,
                })
            },
        ),
        last_canary: header.last_canary,
        canary_counts,
        canary_window,
        master,
        last_upgrade: header.last_upgrade,
        status_addr: header.status_addr,
        otlp_exports_ok: header.otlp_ok,
        otlp_exports_failed: header.otlp_failed,
        slots,
        totals,
        custom,
        route_limit: sb.map.route_limit(),
        routes: super::super::routes::read(sb),
        guards,
        listen_queues,
    }
}

/// Slot `index` alone, as [`take`] shows it (without the master's guard records).
pub(in crate::scoreboard) fn read_one(sb: &Segment, index: usize) -> Option<SlotSnapshot> {
    let slot = sb.slot(index)?;
    let mut one = [read_slot(index, slot, mono_ns(), unix_ms())];
    if let Some(t) = &sb.truth {
        overlay_slots(&mut one, t.slots().get(index..).unwrap_or_default());
    }
    let [one] = one;
    Some(one)
}

/// The header as the segment has it (readers other than the creator).
fn read_header(sb: &Segment) -> HeaderTruth {
    let h = sb.header();
    HeaderTruth {
        name: strings::read(&h.name).0,
        master_pid: h.master_pid.load(Relaxed),
        created_unix_ms: h.created_unix_ms.load(Relaxed),
        generation: load_acquire(&h.generation),
        target_workers: h.target_workers.load(Relaxed),
        reloads_success: h.reloads_success.load(Relaxed),
        reloads_rollback: h.reloads_rollback.load(Relaxed),
        last_reload: read_consistent(&h.last_reload_seq, || {
            (
                h.last_reload_outcome.load(Relaxed),
                h.last_reload_generation.load(Relaxed),
                h.last_reload_unix_ms.load(Relaxed),
                strings::read(&h.last_reload_reason).0,
            )
        }),
        // The master's own records, not in the segment.
        last_canary: None,
        canary_counts: Default::default(),
        upgrades_success: 0,
        upgrades_rollback: 0,
        last_upgrade: None,
        status_addr: strings::read(&h.status_addr).0,
        otlp_ok: h.otlp_exports_ok.load(Relaxed),
        otlp_failed: h.otlp_exports_failed.load(Relaxed),
    }
}

/// Replaces the master-written slot fields with the master's own record of them: a worker
/// can spoil its slot's numbers, not who runs in it or how often it restarted.
fn overlay_slots(slots: &mut [SlotSnapshot], truth: &[SlotTruth]) {
    // A slot another master writes (an upgrade) is shown as the segment has it.
    for (s, t) in slots.iter_mut().zip(truth).filter(|(_, t)| !t.foreign) {
        s.pid = t.pid;
        s.generation = t.generation;
        s.started_unix_ms = t.started_unix_ms;
        s.restarts = t.restarts;
        s.state = match (t.state, s.state) {
            // Alive: the worker reports readiness and draining itself.
            (SlotState::Starting, w @ (SlotState::Ready | SlotState::Draining)) => w,
            (master, _) => master,
        };
    }
}

fn sum(slots: &[SlotSnapshot]) -> Totals {
    let mut t = Totals {
        counters: Counters::zero(),
        ..Totals::default()
    };
    for s in slots {
        t.counters.add(&s.counters);
        t.restarts = t.restarts.wrapping_add(s.restarts);
        match s.state {
            SlotState::Starting => t.workers_starting += 1,
            SlotState::Ready => t.workers_ready += 1,
            SlotState::Draining => t.workers_draining += 1,
            _ => {}
        }
    }
    t
}

/// A counter summed over the slot's writer lanes (wrapping, like the writers).
fn lanes(s: &Slot, field: impl Fn(&SlotCounters) -> &AtomicU64) -> u64 {
    s.counters
        .iter()
        .fold(0u64, |a, c| a.wrapping_add(field(c).load(Relaxed)))
}

/// A gauge summed over the lanes: one lane may be below zero (raised on the other), and a
/// transient negative sum reads as 0.
pub(in crate::scoreboard) fn gauge(s: &Slot, field: impl Fn(&SlotCounters) -> &AtomicU64) -> u64 {
    let sum = lanes(s, field);
    if sum > i64::MAX as u64 {
        0
    } else {
        sum
    }
}

fn read_slot(index: usize, s: &Slot, now: u64, unix_now_ms: u64) -> SlotSnapshot {
    let bitmap = load_acquire(&s.conn_bitmap);
    let connections = s
        .conns
        .iter()
        .enumerate()
        .filter(|(i, _)| bitmap & (1u64 << i) != 0)
        .filter_map(|(i, e)| read_entry(i, e, now))
        .collect();
    SlotSnapshot {
        index,
        pid: s.pid.load(Relaxed) as u32,
        state: SlotState::from_raw(load_acquire(&s.state)),
        generation: s.generation.load(Relaxed),
        started_unix_ms: s.started_unix_ms.load(Relaxed),
        restarts: s.restarts.load(Relaxed),
        counters: read_counters(s),
        connections,
        // Each lane keeps its own last request: the slot's is the one that finished last.
        last_request: s
            .last
            .iter()
            .filter_map(|l| read_last(l, now, unix_now_ms))
            .max_by_key(|(finished, _)| *finished)
            .map(|(_, last)| last),
        event_loop_lag_seconds: None,
        last_guard_event: None,
    }
}

/// A slot's traffic figures, each summed over its writer lanes.
fn read_counters(s: &Slot) -> Counters {
    let codes = StatusCounts(std::array::from_fn(|i| lanes(s, |c| &c.status[i])));
    Counters {
        conns_open: gauge(s, |c| &c.conns_open),
        conns_total: lanes(s, |c| &c.conns_total),
        conn_overflow: lanes(s, |c| &c.conn_overflow),
        requests_active: gauge(s, |c| &c.requests_active),
        // Finished requests = the sum of the status counters (the writer keeps no separate total).
        requests_total: codes.total(),
        bytes_in: lanes(s, |c| &c.bytes_in),
        bytes_out: lanes(s, |c| &c.bytes_out),
        status: codes.classes(),
        codes,
        histogram: HistogramSnapshot {
            counts: (0..HISTOGRAM_BUCKETS)
                .map(|i| lanes(s, |c| &c.histogram[i]))
                .collect(),
            sum_seconds: lanes(s, |c| &c.duration_sum_ns) as f64 / 1e9,
        },
        tls_handshake_failures: lanes(s, |c| &c.tls_handshake_failures),
        route_overflow: lanes(s, |c| &c.route_overflow),
        request_timeouts: lanes(s, |c| &c.request_timeouts),
    }
}

fn load_addr(ip: &[AtomicU64; 2], port: &AtomicU64) -> ClientAddr {
    let p = port.load(Relaxed);
    if p & CLIENT_UNIX != 0 {
        return ClientAddr::Unix;
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&ip[0].load(Relaxed).to_be_bytes());
    bytes[8..].copy_from_slice(&ip[1].load(Relaxed).to_be_bytes());
    let v6 = Ipv6Addr::from(bytes);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) if p & (1 << 16) == 0 => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    };
    ClientAddr::Ip(SocketAddr::new(ip, (p & 0xffff) as u16))
}

fn secs_between(later: u64, earlier: u64) -> f64 {
    later.saturating_sub(earlier) as f64 / 1e9
}

fn version_name(v: u64) -> &'static str {
    match v {
        9 => "HTTP/0.9",
        10 => "HTTP/1.0",
        11 => "HTTP/1.1",
        20 => "HTTP/2",
        30 => "HTTP/3",
        _ => "",
    }
}

fn read_entry(index: usize, e: &ConnEntry, now: u64) -> Option<ConnSnapshot> {
    let conn = read_consistent(&e.seq, || {
        if e.in_use.load(Relaxed) != 1 {
            return None;
        }
        let req_start = e.req_start_ns.load(Relaxed);
        let request = RequestSnapshot {
            method: strings::read(&e.method).0,
            path: strings::read(&e.path).0,
            path_truncated: strings::read(&e.path).1,
            route: strings::read(&e.route).0,
            version: version_name(e.req_version.load(Relaxed)).to_string(),
            age_seconds: secs_between(now, req_start),
            in_flight: 0,
            infos: e
                .infos
                .iter()
                .filter(|c| c.key.len.load(Relaxed) != 0)
                .map(|c| (strings::read(&c.key).0, strings::read(&c.value).0))
                .collect(),
        };
        // Read with the data: an HTTP/1 writer stores it under the seqlock, so a request is
        // never shown with the previous one's (or no) method and path.
        let in_flight = e.inflight.load(Relaxed);
        Some((
            ConnSnapshot {
                entry: index,
                client: load_addr(&e.client_ip, &e.client_port),
                age_seconds: secs_between(now, e.opened_ns.load(Relaxed)),
                idle_seconds: secs_between(now, e.idle_since_ns.load(Relaxed)),
                requests: e.requests.load(Relaxed),
                request: Some(request),
            },
            in_flight,
        ))
    })??;
    let (conn, in_flight) = conn;
    Some(ConnSnapshot {
        idle_seconds: if in_flight > 0 {
            0.0
        } else {
            conn.idle_seconds
        },
        request: conn
            .request
            .filter(|_| in_flight > 0)
            .map(|r| RequestSnapshot { in_flight, ..r }),
        ..conn
    })
}

/// A lane's last request with its monotonic finish time.
fn read_last(l: &LastRequest, now: u64, unix_now_ms: u64) -> Option<(u64, LastRequestSnapshot)> {
    read_consistent(&l.seq, || {
        let finished = l.finished_mono_ns.load(Relaxed);
        (finished != 0).then(|| {
            (
                finished,
                LastRequestSnapshot {
                    method: strings::read(&l.method).0,
                    path: strings::read(&l.path).0,
                    route: strings::read(&l.route).0,
                    status: l.status.load(Relaxed).min(u64::from(u16::MAX)) as u16,
                    duration_seconds: l.duration_ns.load(Relaxed) as f64 / 1e9,
                    finished_unix_ms: unix_now_ms
                        .saturating_sub(now.saturating_sub(finished) / 1_000_000),
                    bytes_sent: l.bytes_sent.load(Relaxed),
                    client: load_addr(&l.client_ip, &l.client_port),
                },
            )
        })
    })
    .flatten()
}
