//! Unit tests of carrying the master's state: the JSON form, adopting a real sealed segment,
//! the refusals, foreign slots, the final import and listen-queue drops across an upgrade.
use std::os::unix::fs::FileExt;

use super::super::QueueSample;
use super::*;
use crate::canary::{CanaryLimits, CanaryReport, Verdict};
use crate::scoreboard::{MetricSpec, Snapshot};

fn tcp(length: u32, drops: u32) -> QueueSample {
    QueueSample {
        length,
        limit: 128,
        drops: Some(drops),
    }
}

fn jobs() -> MetricSpec {
    MetricSpec::counter("jobs_done_total", "Jobs finished.").label("queue", "mail")
}

/// An old master's scoreboard with something in every part of its state: two live workers
/// (slot 0 served 3 requests and counted 5 jobs), a restart, reloads, a canary, OTLP pushes,
/// guard records, a scale event, a listener that dropped 7 connections.
fn filled() -> Scoreboard {
    let sb = Scoreboard::create_sealed("web", 4).unwrap();
    sb.set_status_addr("127.0.0.1:9100");
    sb.set_target_workers(2);
    sb.record_reload(true, 2, Some("deploy"));
    sb.record_reload(false, 3, None);
    sb.set_generation(2);
    sb.record_otlp_export(true);
    sb.record_otlp_export(false);
    sb.record_canary(&CanaryReport {
        workers: 1,
        secs: 2.0,
        limits: CanaryLimits::default(),
        old: None,
        new: None,
        verdict: Some(Verdict::Promote),
        reason: "fine".into(),
    });
    for (slot, pid) in [(0, 4100), (1, 4101)] {
        sb.slot_spawned(slot, pid, 2);
        sb.writer(slot).unwrap().set_state(SlotState::Ready);
    }
    sb.slot_restarted(1);
    let at = sb.register(&jobs()).unwrap();
    let w = sb.writer(0).unwrap();
    w.custom_cell(at.cell)
        .unwrap()
        .fetch_add(5, Ordering::Relaxed);
    for _ in 0..3 {
        let conn = w.conn_open("127.0.0.1:4000".parse().unwrap());
        conn.request_begin("GET", "/", 11).finish(200, 10);
    }
    sb.record_recycle(1, "age");
    sb.record_kill(0, 4100, "heartbeat", "no heartbeat");
    sb.record_scale("up", "busy");
    sb.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(3, 7))]);
    sb
}

fn dup(sb: &Scoreboard) -> OwnedFd {
    sb.fd().try_clone_to_owned().unwrap()
}

fn via_json(c: &Carried) -> Carried {
    serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap()
}

/// What both masters must show alike (the master's pid differs).
fn shown(s: &Snapshot) -> impl PartialEq + std::fmt::Debug {
    (
        (s.instance.clone(), s.created_unix_ms, s.generation),
        (s.target_workers, s.reloads_success, s.reloads_rollback),
        (
            s.last_reload.clone(),
            s.last_canary.clone(),
            s.canary_counts,
        ),
        (
            s.status_addr.clone(),
            s.otlp_exports_ok,
            s.otlp_exports_failed,
        ),
        (s.totals.clone(), s.custom.clone(), s.guards.clone()),
        s.listen_queues.clone(),
    )
}

#[test]
fn carried_state_survives_a_json_round_trip() {
    let sb = filled();
    let c = sb.carried().unwrap();
    assert_eq!(c.slot_count(), 4);
    assert_eq!(c.generation(), 2);
    assert_eq!(c.header.master_pid, 0, "the pid is not carried");
    assert_eq!(c.header.canary_counts.promote, 1);
    assert_eq!(c.slots[1].restarts, 1);
    assert_eq!(c.guards.shown.kill_records.len(), 1);
    assert_eq!(c.queues[0].raw_drops, Some(7));
    assert_eq!(c.registry.entries.len(), 1);
    assert_eq!(via_json(&c), c);
    // An older master's state (fields missing) still reads, with defaults.
    let old: Carried = serde_json::from_str(r#"{"header":{"name":"web"}}"#).unwrap();
    assert_eq!((old.header.name.as_str(), old.slots.len()), ("web", 0));
    // Only the creator has a state to carry.
    let reader = Scoreboard::from_fd(dup(&sb)).unwrap();
    assert!(reader.carried().is_none());
}

#[test]
fn adopting_shows_the_same_state_and_keeps_the_registry() {
    let old = filled();
    let new = Scoreboard::adopt(dup(&old), via_json(&old.carried().unwrap())).unwrap();
    let (a, b) = (old.snapshot(), new.snapshot());
    assert_eq!(shown(&b), shown(&a));
    assert_eq!(b.totals.counters.requests_total, 3);
    assert_eq!(b.custom[0].value, Some(5.0));
    assert_eq!(b.master_pid, std::process::id());
    assert_eq!(b.slots[1].restarts, 1);
    // The same series again gets the same cells; a new one the next cell.
    let again = new.register(&jobs()).unwrap();
    assert_eq!(again, old.register(&jobs()).unwrap());
    let other = new
        .register(&MetricSpec::counter("jobs_failed_total", "Jobs failed."))
        .unwrap();
    assert_eq!(
        (other.entry, other.cell),
        (again.entry + 1, again.cell + again.cells)
    );
    // The old master's workers keep counting into the same segment.
    let w = old.writer(0).unwrap();
    w.conn_open("127.0.0.1:4000".parse().unwrap())
        .request_begin("GET", "/", 11)
        .finish(200, 1);
    assert_eq!(new.snapshot().totals.counters.requests_total, 4);
}

#[test]
fn adopting_writes_nothing_into_the_segment() {
    let old = filled();
    let len = layout::segment_size(4, 0);
    let bytes = |sb: &Scoreboard| {
        let mut v = vec![0u8; len];
        File::from(dup(sb)).read_exact_at(&mut v, 0).unwrap();
        v
    };
    let before = bytes(&old);
    let new = Scoreboard::adopt(dup(&old), old.carried().unwrap()).unwrap();
    new.set_generation(3);
    new.restamp();
    assert!(
        bytes(&old) == before,
        "the frozen header and live slots stay"
    );
    // Unfrozen, the header shows the new master's record.
    new.set_header_frozen(false);
    let reader = Scoreboard::from_fd(dup(&old)).unwrap().reader();
    let r = reader.snapshot();
    assert_eq!(r.generation, 3);
    assert_eq!(r.slots[0].pid, 4100, "a foreign slot is the segment's");
}

#[test]
fn adopting_refuses_what_is_not_the_handed_over_segment() {
    let sb = filled();
    let c = sb.carried().unwrap();
    let refused = |fd: OwnedFd, c: Carried| Scoreboard::adopt(fd, c).unwrap_err();

    // A memfd whose size is not sealed.
    let flags = nix::sys::memfd::MFdFlags::MFD_CLOEXEC;
    let fd = nix::sys::memfd::memfd_create(c"unsealed", flags).unwrap();
    let f = File::from(fd);
    f.set_len(layout::segment_size(4, 0) as u64).unwrap();
    let err = refused(f.into(), c.clone());
    assert!(matches!(err, ScoreboardError::NotAdoptable(_)), "{err}");
    assert!(err.to_string().contains("not sealed"), "{err}");

    // A plain file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    drop(Scoreboard::create(&path, "web", 4).unwrap());
    let err = refused(File::open(&path).unwrap().into(), c.clone());
    assert!(err.to_string().contains("not a sealed memfd"), "{err}");

    // Another slot count.
    let mut fewer = c.clone();
    fewer.slots.pop();
    let err = refused(dup(&sb), fewer);
    assert!(err.to_string().contains("4 slots"), "{err}");

    // Another route limit.
    let other = Carried {
        route_limit: Some(9),
        ..c.clone()
    };
    assert!(matches!(
        refused(dup(&sb), other),
        ScoreboardError::NotAdoptable(_)
    ));

    // A scribbled magic.
    sb.header().magic.store(0xdead, Ordering::Relaxed);
    let err = refused(dup(&sb), c.clone());
    assert!(matches!(err, ScoreboardError::BadMagic(0xdead)), "{err}");
    sb.restamp();
    Scoreboard::adopt(dup(&sb), c).unwrap();
}

#[test]
fn a_foreign_slot_is_neither_restamped_nor_written() {
    let sb = filled();
    sb.set_slot_foreign(2, true).unwrap();
    assert!(sb.set_slot_foreign(4, true).is_err());
    // The other master spawned a worker there.
    let s = sb.slot(2).unwrap();
    s.pid.store(5000, Ordering::Relaxed);
    s.generation.store(3, Ordering::Relaxed);
    s.state.store(SlotState::Ready.to_raw(), Ordering::Relaxed);
    sb.restamp();
    sb.slot_restarted(2);
    sb.slot_exited(2, 0);
    sb.slot_spawned(2, 6000, 9);
    assert_eq!(s.pid.load(Ordering::Relaxed), 5000);
    assert_eq!(s.restarts.load(Ordering::Relaxed), 0);
    let shown = &sb.snapshot().slots[2];
    assert_eq!((shown.pid, shown.generation), (5000, 3));
    assert_eq!(shown.state, SlotState::Ready);
    // This master's own slots are still healed.
    sb.slot(0).unwrap().pid.store(1, Ordering::Relaxed);
    sb.restamp();
    assert_eq!(sb.slot(0).unwrap().pid.load(Ordering::Relaxed), 4100);
    // Back to this master: its next spawn writes the slot.
    sb.set_slot_foreign(2, false).unwrap();
    sb.slot_spawned(2, 6001, 4);
    assert_eq!(s.pid.load(Ordering::Relaxed), 6001);
}

#[test]
fn a_frozen_header_is_not_written() {
    let sb = filled();
    sb.set_header_frozen(true);
    sb.set_generation(5);
    sb.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(9, 7))]);
    let reader = Scoreboard::from_fd(dup(&sb)).unwrap().reader();
    let r = reader.snapshot();
    assert_eq!((r.generation, r.listen_queues[0].length), (2, 3));
    assert_eq!(sb.snapshot().generation, 5, "its own record changes");
    sb.set_header_frozen(false);
    let r = reader.snapshot();
    assert_eq!((r.generation, r.listen_queues[0].length), (5, 9));
}

#[test]
fn the_final_state_replaces_the_old_masters_parts_only() {
    let old = filled();
    let new = Scoreboard::adopt(dup(&old), old.carried().unwrap()).unwrap();
    assert!(new.slot_foreign(0) && new.slot_foreign(1));
    assert!(
        !new.slot_foreign(2),
        "a free slot is lent to the new master"
    );
    new.set_generation(3);
    new.set_target_workers(2);
    new.slot_spawned(2, 7000, 3);
    new.slot_restarted(2);
    // The old master goes on until the commit.
    old.set_slot_foreign(2, true).unwrap();
    old.slot_restarted(1);
    old.record_reload(true, 2, Some("again"));
    old.record_kill(1, 4101, "shutdown_timeout", "draining");
    let fin = via_json(&old.carried().unwrap());
    new.import_final(fin.clone()).unwrap();
    let s = new.snapshot();
    assert_eq!((s.generation, s.target_workers), (3, 2), "its own core's");
    assert_eq!(s.master_pid, std::process::id());
    assert_eq!(s.reloads_success, 2);
    assert_eq!(s.slots[1].restarts, 2);
    let truth = new.carried().unwrap().slots;
    assert_eq!(
        truth[1].restarts, 2,
        "a foreign slot takes the final record"
    );
    assert_eq!(
        (s.slots[2].pid, s.slots[2].restarts),
        (7000, 1),
        "its own slot"
    );
    let g = s.guards.unwrap();
    assert_eq!(g.kills.total(), 2);
    assert_eq!(
        s.slots[1].last_guard_event.as_ref().unwrap().reason,
        "shutdown_timeout"
    );
    let mut short = fin;
    short.slots.pop();
    assert!(new.import_final(short).is_err());
}

#[test]
fn the_final_registry_keeps_the_new_masters_series() {
    let old = filled();
    let new = Scoreboard::adopt(dup(&old), old.carried().unwrap()).unwrap();
    let mine = new
        .register(&MetricSpec::counter("mine_total", "Mine."))
        .unwrap();
    new.import_final(old.carried().unwrap()).unwrap();
    assert_eq!(
        new.register(&MetricSpec::counter("mine_total", "Mine."))
            .unwrap(),
        mine
    );
    assert_eq!(new.carried().unwrap().registry.entries.len(), 2);
}

#[test]
fn listen_queue_drops_are_counted_once_across_an_upgrade() {
    let old = filled(); // the kernel had counted 7
    let new = Scoreboard::adopt(dup(&old), via_json(&old.carried().unwrap())).unwrap();
    new.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(0, 9))]);
    assert_eq!(new.snapshot().listen_queues[0].drops, Some(9));
    // The old master sampled 10 before the commit; the new one goes on from there.
    old.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(0, 10))]);
    new.import_final(via_json(&old.carried().unwrap())).unwrap();
    assert_eq!(new.snapshot().listen_queues[0].drops, Some(10));
    new.record_listen_queues(&[("127.0.0.1:8080".into(), tcp(0, 12))]);
    assert_eq!(new.snapshot().listen_queues[0].drops, Some(12));
}

#[test]
fn the_final_guard_records_keep_the_new_masters_own() {
    let old = filled(); // 1 heartbeat kill, 1 age recycle, 1 scale up
    let new = Scoreboard::adopt(dup(&old), via_json(&old.carried().unwrap())).unwrap();
    new.slot_spawned(2, 7000, 3);
    let (id, _) = new.record_kill(2, 7000, "heartbeat", "stuck").unwrap();
    new.record_recycle(2, "memory");
    old.record_kill(1, 4101, "shutdown_timeout", "draining");
    new.import_final(via_json(&old.carried().unwrap())).unwrap();
    let g = new.snapshot().guards.unwrap();
    assert_eq!((g.kills.heartbeat, g.kills.shutdown_timeout), (2, 1));
    assert_eq!((g.recycles.memory, g.recycles.age), (1, 1));
    assert_eq!(g.scale_events.up_busy, 1);
    let pids: Vec<u32> = g.kill_records.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3);
    assert!(pids.contains(&7000) && pids.contains(&4101), "{pids:?}");
    // Its own record keeps its id: the threads read later still reach it.
    let thread = crate::scoreboard::ThreadSnapshot {
        tid: 7001,
        name: "w".into(),
        state: "R".into(),
        wchan: String::new(),
        syscall: String::new(),
    };
    new.set_kill_threads(id, vec![thread]);
    let g = new.snapshot().guards.unwrap();
    let own = g.kill_records.iter().find(|r| r.pid == 7000).unwrap();
    assert_eq!(own.threads.len(), 1);
    assert_eq!(
        new.snapshot().slots[2]
            .last_guard_event
            .as_ref()
            .unwrap()
            .reason,
        "memory"
    );
}
