//! Reading the whole segment into an owned [`Snapshot`]: every slot, summed totals, and the
//! connection table read entry by entry under each entry's seqlock.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use serde::Serialize;

use super::raw::layout::{
    ConnEntry, LastRequest, Slot, SlotCounters, HISTOGRAM_BOUNDS, HISTOGRAM_BUCKETS, STATUS_CLASSES,
};
use super::segment::{load_acquire, HeaderTruth, SlotTruth};
use super::{mono_ns, strings, unix_ms, Aggregation, MetricKind, Segment, SlotState};

/// Tries a seqlocked read this many times before giving up on an entry (its writer keeps
/// rewriting it, or died mid-write).
const SEQLOCK_READ_TRIES: usize = 64;

/// Runs `f` until it ran without a concurrent write under `seq`.
pub(crate) fn read_consistent<T>(seq: &AtomicU64, f: impl Fn() -> T) -> Option<T> {
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

/// A request-duration histogram: per-bucket counts (not cumulative) and the sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Counts per bucket; the last bucket is +Inf. Bounds are [`HISTOGRAM_BOUNDS`].
    pub counts: Vec<u64>,
    /// Sum of all observed durations, seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    fn empty() -> Self {
        Self {
            counts: vec![0; HISTOGRAM_BUCKETS],
            sum_seconds: 0.0,
        }
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.wrapping_add(*b);
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Upper bounds of the buckets (the last, +Inf, is not listed).
    pub fn bounds() -> &'static [f64] {
        &HISTOGRAM_BOUNDS
    }
}

/// The request in flight on a connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestSnapshot {
    /// Method (truncated to [`super::METHOD_BYTES`]).
    pub method: String,
    /// Path without the query string (truncated to [`super::PATH_BYTES`]).
    pub path: String,
    /// Whether the path was truncated.
    pub path_truncated: bool,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, … or empty when unknown.
    pub version: String,
    /// Seconds since the request started.
    pub age_seconds: f64,
    /// Requests in flight on this connection (HTTP/2 may have several; one is shown).
    pub in_flight: u64,
    /// App-set key/value infos.
    pub infos: Vec<(String, String)>,
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnSnapshot {
    /// Entry index in the slot's table.
    pub entry: usize,
    /// Client address.
    pub client: SocketAddr,
    /// Seconds since the connection was accepted.
    pub age_seconds: f64,
    /// Seconds since the connection last finished a request (0 while one is in flight).
    pub idle_seconds: f64,
    /// Requests finished on it.
    pub requests: u64,
    /// Its in-flight request, if any.
    pub request: Option<RequestSnapshot>,
}

/// The last request a slot finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRequestSnapshot {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status code (0 = no response was sent).
    pub status: u16,
    /// Duration, seconds.
    pub duration_seconds: f64,
    /// When it finished, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// Client address.
    pub client: SocketAddr,
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotSnapshot {
    /// Slot index.
    pub index: usize,
    /// Worker pid (0 = none).
    pub pid: u32,
    /// State.
    pub state: SlotState,
    /// Generation of the (last) worker.
    pub generation: u64,
    /// When the current worker was spawned, ms since the epoch (0 = never).
    pub started_unix_ms: u64,
    /// Respawns of this slot after unexpected exits.
    pub restarts: u64,
    /// Connections open now.
    pub conns_open: u64,
    /// Connections accepted (slot lifetime).
    pub conns_total: u64,
    /// Connections not shown because the table was full.
    pub conn_overflow: u64,
    /// Requests in flight now.
    pub requests_active: u64,
    /// Requests finished (slot lifetime).
    pub requests_total: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Finished requests by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub status: [u64; STATUS_CLASSES],
    /// Request durations.
    pub histogram: HistogramSnapshot,
    /// Open connections with their in-flight requests.
    pub connections: Vec<ConnSnapshot>,
    /// Last finished request.
    pub last_request: Option<LastRequestSnapshot>,
}

/// Sums over every slot (counters of dead and retired slots included, so they never go down).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Connections open now.
    pub conns_open: u64,
    /// Connections accepted.
    pub conns_total: u64,
    /// Connections not shown in the table.
    pub conn_overflow: u64,
    /// Requests in flight.
    pub requests_active: u64,
    /// Requests finished.
    pub requests_total: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Finished requests by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub status: [u64; STATUS_CLASSES],
    /// Request durations, all workers.
    pub histogram: HistogramSnapshot,
    /// Respawns.
    pub restarts: u64,
    /// Workers by state: starting, ready, draining.
    pub workers_starting: u64,
    /// Workers ready.
    pub workers_ready: u64,
    /// Workers draining.
    pub workers_draining: u64,
}

/// One worker's value of a custom counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WorkerValue {
    /// Slot.
    pub slot: usize,
    /// Value.
    pub value: f64,
}

/// A custom histogram summed over workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomHistogram {
    /// Upper bounds (+Inf implied).
    pub bounds: Vec<f64>,
    /// Counts per bucket, the last one +Inf (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of observed values.
    pub sum: f64,
}

/// A custom metric series, combined across workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomMetricSnapshot {
    /// Name as registered.
    pub name: String,
    /// Help text.
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label set (sorted by name).
    pub labels: Vec<(String, String)>,
    /// Gauges: `sum`, `max`, `min` or `latest`.
    pub aggregation: Option<&'static str>,
    /// Counter: the sum; gauge: the combined value (none when no worker set it); histogram: the count.
    pub value: Option<f64>,
    /// Per-worker values (counters: every slot that counted; gauges: the workers that count).
    pub per_worker: Vec<WorkerValue>,
    /// Histogram buckets.
    pub histogram: Option<CustomHistogram>,
}

/// The last reload the master recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReloadSnapshot {
    /// `success` or `rollback`.
    pub outcome: String,
    /// The generation it started.
    pub generation: u64,
    /// When it ended, ms since the epoch.
    pub finished_unix_ms: u64,
    /// Why it was rolled back (empty on success).
    pub reason: String,
}

/// An owned, point-in-time read of the whole scoreboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Instance name.
    pub instance: String,
    /// Master pid.
    pub master_pid: u32,
    /// When the segment was created, ms since the epoch.
    pub created_unix_ms: u64,
    /// When this snapshot was taken, ms since the epoch.
    pub taken_unix_ms: u64,
    /// Generation now serving.
    pub generation: u64,
    /// Workers the master wants.
    pub target_workers: u64,
    /// Reloads that succeeded.
    pub reloads_success: u64,
    /// Reloads rolled back.
    pub reloads_rollback: u64,
    /// The last reload, if any.
    pub last_reload: Option<LastReloadSnapshot>,
    /// The master's management HTTP address (empty when off).
    pub status_addr: String,
    /// OTLP pushes that succeeded.
    pub otlp_exports_ok: u64,
    /// OTLP pushes that failed.
    pub otlp_exports_failed: u64,
    /// Every slot, in index order.
    pub slots: Vec<SlotSnapshot>,
    /// Sums.
    pub totals: Totals,
    /// Custom metrics, in registration order.
    pub custom: Vec<CustomMetricSnapshot>,
}

pub(super) fn take(sb: &Segment) -> Snapshot {
    let now = mono_ns();
    let unix_now_ms = unix_ms();
    let mut slots: Vec<SlotSnapshot> = (0..sb.slot_count())
        .filter_map(|i| sb.slot(i).map(|s| read_slot(i, s, now, unix_now_ms)))
        .collect();
    let header = match &sb.truth {
        // The creator shows what it knows, whatever a worker wrote over the header.
        Some(t) => {
            overlay_slots(&mut slots, &t.slots());
            t.header().clone()
        }
        None => read_header(sb),
    };
    let totals = sum(&slots);
    let custom = read_custom(sb, &slots);
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
        status_addr: header.status_addr,
        otlp_exports_ok: header.otlp_ok,
        otlp_exports_failed: header.otlp_failed,
        slots,
        totals,
        custom,
    }
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
        status_addr: strings::read(&h.status_addr).0,
        otlp_ok: h.otlp_exports_ok.load(Relaxed),
        otlp_failed: h.otlp_exports_failed.load(Relaxed),
    }
}

/// Replaces the master-written slot fields with the master's own record of them: a worker
/// can spoil its slot's numbers, not who runs in it or how often it restarted.
fn overlay_slots(slots: &mut [SlotSnapshot], truth: &[SlotTruth]) {
    for (s, t) in slots.iter_mut().zip(truth) {
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

fn live(state: SlotState) -> bool {
    matches!(
        state,
        SlotState::Starting | SlotState::Ready | SlotState::Draining
    )
}

fn read_custom(sb: &Segment, slots: &[SlotSnapshot]) -> Vec<CustomMetricSnapshot> {
    let cells = |slot: usize, cell: usize| {
        sb.slot(slot)
            .and_then(|s| s.custom.get(cell))
            .map_or(0, |c| c.load(Relaxed))
    };
    sb.registered()
        .into_iter()
        .map(|e| {
            let cell = e.at.cell;
            let mut m = CustomMetricSnapshot {
                name: e.spec.name,
                help: e.spec.help,
                kind: "counter",
                labels: e.spec.labels,
                aggregation: None,
                value: None,
                per_worker: Vec::new(),
                histogram: None,
            };
            match e.spec.kind {
                MetricKind::Counter => {
                    m.per_worker = slots
                        .iter()
                        .map(|s| WorkerValue {
                            slot: s.index,
                            value: cells(s.index, cell) as f64,
                        })
                        .filter(|v| v.value != 0.0)
                        .collect();
                    m.value = Some(
                        slots
                            .iter()
                            .fold(0u64, |a, s| a.wrapping_add(cells(s.index, cell)))
                            as f64,
                    );
                }
                MetricKind::Gauge {
                    aggregation,
                    count_dead,
                } => {
                    m.kind = "gauge";
                    m.aggregation = Some(aggregation.as_str());
                    let values: Vec<(usize, f64, u64)> = slots
                        .iter()
                        .filter(|s| count_dead || live(s.state))
                        .map(|s| {
                            (
                                s.index,
                                f64::from_bits(cells(s.index, cell)),
                                cells(s.index, cell + 1),
                            )
                        })
                        .filter(|(_, v, set_at)| *set_at != 0 && !v.is_nan())
                        .collect();
                    m.value = combine(aggregation, &values);
                    m.per_worker = values
                        .iter()
                        .map(|&(slot, value, _)| WorkerValue { slot, value })
                        .collect();
                }
                MetricKind::Histogram { buckets } => {
                    m.kind = "histogram";
                    let n = buckets.len() + 1;
                    let counts: Vec<u64> = (0..n)
                        .map(|b| {
                            slots
                                .iter()
                                .fold(0u64, |a, s| a.wrapping_add(cells(s.index, cell + b)))
                        })
                        .collect();
                    let sum = slots
                        .iter()
                        .map(|s| f64::from_bits(cells(s.index, cell + n)))
                        .filter(|v| v.is_finite())
                        .sum();
                    m.value = Some(counts.iter().fold(0u64, |a, c| a.wrapping_add(*c)) as f64);
                    m.histogram = Some(CustomHistogram {
                        bounds: buckets,
                        counts,
                        sum,
                    });
                }
            }
            m
        })
        .collect()
}

fn combine(aggregation: Aggregation, values: &[(usize, f64, u64)]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let vs = values.iter().map(|v| v.1);
    Some(match aggregation {
        Aggregation::Sum => vs.sum(),
        Aggregation::Max => vs.fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Min => vs.fold(f64::INFINITY, f64::min),
        Aggregation::Latest => values.iter().max_by_key(|v| v.2).map_or(0.0, |v| v.1),
    })
}

fn sum(slots: &[SlotSnapshot]) -> Totals {
    let mut t = Totals {
        histogram: HistogramSnapshot::empty(),
        ..Totals::default()
    };
    for s in slots {
        t.conns_open = t.conns_open.wrapping_add(s.conns_open);
        t.conns_total = t.conns_total.wrapping_add(s.conns_total);
        t.conn_overflow = t.conn_overflow.wrapping_add(s.conn_overflow);
        t.requests_active = t.requests_active.wrapping_add(s.requests_active);
        t.requests_total = t.requests_total.wrapping_add(s.requests_total);
        t.bytes_in = t.bytes_in.wrapping_add(s.bytes_in);
        t.bytes_out = t.bytes_out.wrapping_add(s.bytes_out);
        t.restarts = t.restarts.wrapping_add(s.restarts);
        for (a, b) in t.status.iter_mut().zip(&s.status) {
            *a = a.wrapping_add(*b);
        }
        t.histogram.add(&s.histogram);
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
pub(super) fn lanes(s: &Slot, field: impl Fn(&SlotCounters) -> &AtomicU64) -> u64 {
    s.counters
        .iter()
        .fold(0u64, |a, c| a.wrapping_add(field(c).load(Relaxed)))
}

/// A gauge summed over the lanes: one lane may be below zero (raised on the other), and a
/// transient negative sum reads as 0.
pub(super) fn gauge(s: &Slot, field: impl Fn(&SlotCounters) -> &AtomicU64) -> u64 {
    let sum = lanes(s, field);
    if sum > i64::MAX as u64 {
        0
    } else {
        sum
    }
}

fn read_slot(index: usize, s: &Slot, now: u64, unix_now_ms: u64) -> SlotSnapshot {
    let status: [u64; STATUS_CLASSES] = std::array::from_fn(|i| lanes(s, |c| &c.status[i]));
    let histogram = HistogramSnapshot {
        counts: (0..HISTOGRAM_BUCKETS)
            .map(|i| lanes(s, |c| &c.histogram[i]))
            .collect(),
        sum_seconds: lanes(s, |c| &c.duration_sum_ns) as f64 / 1e9,
    };
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
        conns_open: gauge(s, |c| &c.conns_open),
        conns_total: lanes(s, |c| &c.conns_total),
        conn_overflow: lanes(s, |c| &c.conn_overflow),
        requests_active: gauge(s, |c| &c.requests_active),
        // Finished requests = the sum of the status classes (the writer keeps no separate total).
        requests_total: status.iter().fold(0u64, |a, n| a.wrapping_add(*n)),
        bytes_in: lanes(s, |c| &c.bytes_in),
        bytes_out: lanes(s, |c| &c.bytes_out),
        status,
        histogram,
        connections,
        // Each lane keeps its own last request: the slot's is the one that finished last.
        last_request: s
            .last
            .iter()
            .filter_map(|l| read_last(l, now, unix_now_ms))
            .max_by_key(|(finished, _)| *finished)
            .map(|(_, last)| last),
    }
}

fn load_addr(ip: &[AtomicU64; 2], port: &AtomicU64) -> SocketAddr {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&ip[0].load(Relaxed).to_be_bytes());
    bytes[8..].copy_from_slice(&ip[1].load(Relaxed).to_be_bytes());
    let v6 = Ipv6Addr::from(bytes);
    let p = port.load(Relaxed);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) if p & (1 << 16) == 0 => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, (p & 0xffff) as u16)
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

#[cfg(test)]
mod tests {
    use super::super::Scoreboard;
    use super::*;

    #[test]
    fn tracks_connections_requests_and_last() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).unwrap();
        let w = sb.writer(1).unwrap();
        let conn = w.conn_open("[::1]:5555".parse().unwrap());
        let mut req = conn.request_begin("POST", "/a/b", 11);
        assert!(req.set_info("user", "42"));
        let snap = sb.snapshot();
        let c = &snap.slots[1].connections[0];
        assert_eq!(c.client, "[::1]:5555".parse::<SocketAddr>().unwrap());
        let r = c.request.as_ref().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.version.as_str()),
            ("POST", "/a/b", "HTTP/1.1")
        );
        assert_eq!(r.infos, vec![("user".to_string(), "42".to_string())]);
        assert_eq!(snap.totals.requests_active, 1);
        req.set_status(503);
        drop(req);
        let snap = sb.snapshot();
        assert_eq!(snap.totals.requests_total, 1);
        assert_eq!(snap.totals.status[4], 1);
        assert_eq!(snap.totals.histogram.count(), 1);
        assert!(snap.slots[1].connections[0].request.is_none());
        let last = snap.slots[1].last_request.clone().unwrap();
        assert_eq!((last.status, last.path.as_str()), (503, "/a/b"));
        drop(conn);
        let snap = sb.snapshot();
        assert!(snap.slots[1].connections.is_empty());
        assert_eq!(snap.totals.conns_open, 0);
        assert_eq!(snap.totals.conns_total, 1);
    }

    #[test]
    fn overflow_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
        let w = sb.writer(0).unwrap();
        let conns: Vec<_> = (0..super::super::CONN_ENTRIES + 3)
            .map(|i| w.conn_open(SocketAddr::from(([127, 0, 0, 1], i as u16))))
            .collect();
        let snap = sb.snapshot();
        assert_eq!(snap.slots[0].connections.len(), super::super::CONN_ENTRIES);
        assert_eq!(snap.slots[0].conn_overflow, 3);
        assert_eq!(snap.slots[0].conns_open, conns.len() as u64);
        drop(conns);
        assert_eq!(sb.snapshot().slots[0].conns_open, 0);
        // Freed entries are reused.
        let _c = w.conn_open("127.0.0.1:1".parse().unwrap());
        assert_eq!(sb.snapshot().slots[0].connections.len(), 1);
    }

    #[test]
    fn master_reset_keeps_counters() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
        let w = sb.writer(0).unwrap();
        let conn = w.conn_open("127.0.0.1:1".parse().unwrap());
        conn.request_begin("GET", "/", 11).finish(200, 5);
        // The worker dies with a request in flight on an open connection.
        std::mem::forget(conn.request_begin("GET", "/slow", 11));
        std::mem::forget(conn);
        sb.slot_exited(0, 9);
        let s = &sb.snapshot().slots[0];
        assert_eq!((s.conns_open, s.requests_active), (0, 0));
        assert_eq!((s.conns_total, s.requests_total), (1, 1));
        assert!(s.connections.is_empty());
        assert_eq!(s.state, SlotState::Dead);
    }

    #[test]
    fn no_torn_entries_under_concurrent_writes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Each request's path is one character repeated `k` times and its method is `M{k}`:
        // a torn read would mix two requests.
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let w = sb.writer(0).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let conn = w.conn_open(SocketAddr::from(([127, 0, 0, 1], 1000 + t)));
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let k = (n % 100) as usize + 1;
                        let c = char::from(b'a' + (n % 26) as u8);
                        let req = conn.request_begin(
                            &format!("M{k}"),
                            &format!("/{}", c.to_string().repeat(k)),
                            11,
                        );
                        req.set_info("k", &k.to_string());
                        req.finish(200, 0);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut checked = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(700);
        while std::time::Instant::now() < deadline {
            for c in &sb.snapshot().slots[0].connections {
                if let Some(r) = &c.request {
                    let k: usize = r.method[1..].parse().unwrap();
                    assert_eq!(r.path.len(), k + 1, "torn: {r:?}");
                    let first = r.path.as_bytes()[1];
                    assert!(r.path.bytes().skip(1).all(|b| b == first), "torn: {r:?}");
                    if let Some((_, v)) = r.infos.iter().find(|(key, _)| key == "k") {
                        assert_eq!(v.parse::<usize>().unwrap(), k, "torn info: {r:?}");
                    }
                    checked += 1;
                }
            }
            if let Some(last) = &sb.snapshot().slots[0].last_request {
                let first = last.path.as_bytes()[1];
                assert!(
                    last.path.bytes().skip(1).all(|b| b == first),
                    "torn last: {last:?}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(checked > 0 && written > 0);
        assert_eq!(sb.snapshot().totals.requests_total, written);
    }
}
