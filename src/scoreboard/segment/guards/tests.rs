//! Unit tests of the master's guard records.
use std::time::Duration;

use super::super::super::{Scoreboard, SlotState};
use super::*;

/// A master-side scoreboard with a ready worker 4100 in slot 0 serving one request with a
/// hostile path and info, and a ready worker 4101 in slot 1.
fn busy() -> Scoreboard {
    let sb = Scoreboard::create_sealed("g", 3).expect("create");
    for (slot, pid) in [(0, 4100), (1, 4101)] {
        sb.slot_spawned(slot, pid, 7);
        sb.writer(slot).expect("writer").set_state(SlotState::Ready);
    }
    sb
}

#[test]
fn counts_by_reason_grow_and_unknown_reasons_are_ignored() {
    let sb = busy();
    for reason in ["memory", "age", "age", "bogus"] {
        sb.record_recycle(1, reason);
    }
    assert!(sb
        .record_kill(0, 4100, "heartbeat", "no heartbeat")
        .is_some());
    sb.record_kill(1, 4101, "shutdown_timeout", "still draining");
    let g = sb.snapshot().guards.expect("master records");
    assert_eq!(
        (g.recycles.memory, g.recycles.max_requests, g.recycles.age),
        (1, 0, 2)
    );
    assert_eq!((g.kills.heartbeat, g.kills.shutdown_timeout), (1, 1));
    assert_eq!(g.kills.total(), 2);
}

#[test]
fn kill_record_shows_requests_in_flight_and_threads_later() {
    let sb = busy();
    let conn = sb
        .writer(0)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 40000).into());
    let mut req = conn.request_begin("GET", "/block/<script>", 11);
    req.set_route("/block/{x}");
    assert!(req.set_info("job", "\"quote\""));
    let (id, record) = sb
        .record_kill(0, 4100, "heartbeat", "no heartbeat for 3.0s")
        .expect("master");
    assert_eq!((record.slot, record.pid, record.generation), (0, 4100, 7));
    assert_eq!(record.detail, "no heartbeat for 3.0s");
    let [r] = &record.requests[..] else {
        panic!("one request: {:?}", record.requests)
    };
    assert_eq!(r.request.path, "/block/<script>");
    assert_eq!(r.request.route, "/block/{x}");
    assert_eq!(r.request.infos, vec![("job".into(), "\"quote\"".into())]);
    assert_eq!(r.client.to_string(), "127.0.0.1:40000");
    let thread = ThreadSnapshot {
        tid: 4100,
        name: "worker".into(),
        state: "S".into(),
        wchan: "hrtimer_nanosleep".into(),
        syscall: "230 0x0".into(),
    };
    sb.set_kill_threads(id, vec![thread.clone()]);
    let snap = sb.snapshot();
    let g = snap.guards.expect("master records");
    assert_eq!(g.kill_records.len(), 1);
    assert_eq!(g.kill_records[0].threads, vec![thread]);
    let last = snap.slots[0].last_guard_event.clone().expect("event");
    assert_eq!(
        (last.kind, last.reason.as_str()),
        (GuardKind::Kill, "heartbeat")
    );
    assert!(snap.slots[1].last_guard_event.is_none());
    drop(req);
}

#[test]
fn keeps_the_last_records_oldest_first() {
    let sb = busy();
    let mut ids = Vec::new();
    for i in 0..MAX_KILL_RECORDS + 4 {
        let (id, _) = sb
            .record_kill(1, 4101, "heartbeat", &format!("kill {i}"))
            .expect("master");
        ids.push(id);
    }
    // Threads of a record that was dropped go nowhere.
    sb.set_kill_threads(ids[0], Vec::new());
    let g = sb.snapshot().guards.expect("master records");
    assert_eq!(g.kills.heartbeat, (MAX_KILL_RECORDS + 4) as u64);
    let details: Vec<&str> = g.kill_records.iter().map(|r| r.detail.as_str()).collect();
    let want: Vec<String> = (4..MAX_KILL_RECORDS + 4)
        .map(|i| format!("kill {i}"))
        .collect();
    assert_eq!(details, want);
}

#[test]
fn lag_shows_for_the_live_worker_and_grows_when_heartbeats_stop() {
    let sb = busy();
    let interval = Duration::from_millis(20);
    sb.record_heartbeat(0, 4100, Duration::from_micros(1500), interval);
    // A heartbeat of a worker that is no longer the slot's shows nothing.
    sb.record_heartbeat(1, 999, Duration::from_millis(1), interval);
    let snap = sb.snapshot();
    let lag = snap.slots[0].event_loop_lag_seconds.expect("lag");
    assert!(lag >= 0.0015, "{lag}");
    assert_eq!(snap.slots[1].event_loop_lag_seconds, None);
    assert_eq!(snap.slots[2].event_loop_lag_seconds, None);
    // No heartbeat for much longer than the interval: the lag grows with the silence.
    let quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_millis(120) {
        std::thread::yield_now();
    }
    let lag = sb.snapshot().slots[0].event_loop_lag_seconds.expect("lag");
    assert!(lag >= 0.09, "{lag}");
    // The worker is gone: no lag, the last guard event stays.
    sb.record_recycle(0, "memory");
    sb.slot_exited(0, 0);
    let s = &sb.snapshot().slots[0];
    assert_eq!(s.event_loop_lag_seconds, None);
    assert_eq!(
        s.last_guard_event.as_ref().map(|e| e.kind),
        Some(GuardKind::Recycle)
    );
}

#[test]
fn readers_in_other_processes_have_no_records_until_they_apply_a_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let sb = Scoreboard::create(&path, "g", 2).expect("create");
    sb.slot_spawned(0, 4100, 1);
    sb.record_heartbeat(0, 4100, Duration::from_millis(2), Duration::from_secs(60));
    sb.record_recycle(0, "max_requests");
    sb.record_kill(1, 4101, "heartbeat", "gone quiet");
    let master = sb.snapshot();
    let reader = Scoreboard::open_read_only(&path).expect("open");
    let mut other = reader.snapshot();
    assert_eq!(other.guards, None);
    assert_eq!(other.slots[0].last_guard_event, None);
    let report = master.guards_report().expect("report");
    let json = serde_json::to_string(&report).expect("json");
    let back: crate::scoreboard::GuardsReport = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, report);
    // A report of another master is refused.
    let mut foreign = back.clone();
    foreign.master_pid ^= 1;
    assert!(!other.apply_guards(foreign));
    assert!(other.apply_guards(back));
    assert_eq!(other.guards, master.guards);
    assert_eq!(
        other.slots[0].last_guard_event,
        master.slots[0].last_guard_event
    );
    assert_eq!(
        other.slots[0].event_loop_lag_seconds,
        master.slots[0].event_loop_lag_seconds
    );
    assert!(reader.snapshot().guards_report().is_none());
}

#[test]
fn a_report_fits_a_size_by_dropping_the_oldest_records() {
    let sb = busy();
    let conn = sb
        .writer(1)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 40001).into());
    let _req = conn.request_begin("GET", &"/x".repeat(60), 11);
    for i in 0..MAX_KILL_RECORDS {
        sb.record_kill(1, 4101, "heartbeat", &format!("kill {i}"));
    }
    let full = sb.snapshot().guards_report().expect("report");
    let full_len = serde_json::to_vec(&full).expect("json").len();
    let fitted = full.clone().fit(full_len / 2);
    assert!(serde_json::to_vec(&fitted).expect("json").len() <= full_len / 2);
    let kept = fitted.guards.kill_records.len();
    assert!(kept > 0 && kept < MAX_KILL_RECORDS, "{kept}");
    assert_eq!(
        fitted.guards.kill_records.last(),
        full.guards.kill_records.last()
    );
    assert_eq!(fitted.guards.kills, full.guards.kills);
    // Too small for any record: the counts stay.
    let bare = full.fit(1);
    assert!(bare.guards.kill_records.is_empty());
    assert_eq!(bare.guards.kills.heartbeat, MAX_KILL_RECORDS as u64);
}
