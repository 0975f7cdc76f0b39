//! Respawn with backoff, scaling (and its races with reloads), stale events, status.

use super::*;
use crate::master::backoff::{BASE_DELAY, MAX_DELAY, STABLE_AFTER};

#[test]
fn a_crash_loop_backs_off_exponentially_up_to_the_cap() {
    let mut sim = Sim::running(settings(4, 2));
    let first = sim.exit(0, Some(1));
    assert_eq!(spawns(&first), [(0, 1)], "the first exit respawns at once");
    assert!(has(&first, |a| matches!(
        a,
        Action::SlotRestarted { slot: 0 }
    )));
    assert!(logs(&first, Level::Warn)[0].contains("worker exited unexpectedly (exit code 1)"));
    let mut expected = BASE_DELAY;
    for _ in 0..12 {
        let out = sim.exit(0, Some(1));
        assert!(spawns(&out).is_empty(), "no respawn before the delay");
        let delay = sim.core.poll_timeout().expect("a respawn timer") - sim.now;
        assert!(
            delay >= expected.mul_f64(0.8).min(MAX_DELAY.mul_f64(0.8)) && delay <= MAX_DELAY,
            "{delay:?} vs {expected:?}"
        );
        let respawn = sim.advance(delay);
        assert_eq!(spawns(&respawn), [(0, 1)]);
        expected = (expected * 2).min(MAX_DELAY);
    }
    // The other worker never noticed.
    assert!(sim.live.contains_key(&1));
}

#[test]
fn a_worker_that_ran_stably_is_respawned_at_once() {
    let mut sim = Sim::running(settings(4, 2));
    sim.exit(0, Some(1));
    sim.exit(0, Some(1));
    sim.advance(MAX_DELAY);
    sim.now += STABLE_AFTER;
    assert_eq!(spawns(&sim.exit(0, Some(1))), [(0, 1)]);
}

#[test]
fn a_failed_respawn_is_retried_with_backoff() {
    let mut sim = Sim::running(settings(4, 2));
    sim.spawn_error = Some("fork: resource busy".into());
    let out = sim.exit(0, Some(1));
    assert!(has(&out, |a| matches!(
        a,
        Action::SlotExited {
            slot: 0,
            status: -1
        }
    )));
    assert!(logs(&out, Level::Error)[0].starts_with("respawn failed: fork: resource busy"));
    sim.spawn_error = None;
    let delay = sim.core.poll_timeout().expect("a retry") - sim.now;
    assert!(delay > Duration::ZERO);
    assert_eq!(spawns(&sim.advance(delay)), [(0, 1)]);
}

#[test]
fn garbage_on_the_control_channel_gets_a_worker_killed_and_replaced() {
    let mut sim = Sim::running(settings(4, 2));
    let pid = sim.pid(1);
    let error = "bad message".to_string();
    let out = sim.feed(Event::WorkerBroken {
        slot: 1,
        pid,
        error,
    });
    assert_eq!(signals(&out), [(1, Sig::Kill)]);
    assert_eq!(spawns(&sim.exit(1, None)), [(1, 1)]);
}

#[test]
fn events_of_a_process_that_is_gone_are_ignored() {
    let mut sim = Sim::running(settings(4, 2));
    let old = sim.pid(0);
    sim.exit(0, Some(1));
    assert_ne!(sim.pid(0), old);
    let status = None;
    let stale = [
        Event::WorkerReady { slot: 0, pid: old },
        Event::WorkerExited {
            slot: 0,
            pid: old,
            status,
        },
        Event::WorkerBroken {
            slot: 0,
            pid: old,
            error: String::new(),
        },
        Event::Spawned { slot: 0, pid: 1 },
        Event::SpawnFailed {
            slot: 0,
            error: String::new(),
        },
        Event::Prepared {
            generation: 9,
            result: Ok(()),
        },
        Event::HookDone {
            hook: Hook::BeforeReload { generation: 9 },
            result: Ok(()),
        },
        Event::HookDone {
            hook: Hook::BeforeShutdown,
            result: Ok(()),
        },
    ];
    for ev in stale {
        assert!(sim.feed(ev.clone()).is_empty(), "{ev:?}");
    }
}

#[test]
fn scale_up_spawns_into_free_slots_and_down_drains_the_highest() {
    let mut sim = Sim::running(settings(4, 2));
    let (up, out) = sim.control(Request::Scale { workers: 4 });
    assert_eq!(spawns(&out), [(2, 1), (3, 1)]);
    assert_eq!(sim.reply(up).workers, Some(4));
    assert!(has(&out, |a| matches!(a, Action::SetTarget(4))));
    sim.ready_all();
    let (down, out) = sim.control(Request::Scale { workers: 1 });
    assert_eq!(drains(&out), [1, 2, 3]);
    assert_eq!(sim.reply(down).workers, Some(1));
    // Drained ones are not respawned.
    assert!(spawns(&sim.exit(2, Some(0))).is_empty());
}

#[test]
fn scale_is_refused_when_invalid_or_short_of_slots() {
    let mut sim = Sim::running(settings(4, 2));
    let (zero, _) = sim.control(Request::Scale { workers: 0 });
    assert!(sim
        .reply(zero)
        .error
        .as_deref()
        .is_some_and(|e| e.contains("invalid worker count")));
    let (many, _) = sim.control(Request::Scale { workers: 5 });
    assert!(sim
        .reply(many)
        .error
        .as_deref()
        .is_some_and(|e| e.contains("not enough free slots")));
}

#[test]
fn scale_during_a_reload_or_the_start_is_refused() {
    let mut sim = Sim::new(settings(4, 2));
    sim.feed(Event::Start);
    let (starting, _) = sim.control(Request::Scale { workers: 1 });
    assert!(sim
        .reply(starting)
        .error
        .as_deref()
        .is_some_and(|e| e.contains("in progress")));
    sim.ready_all();
    sim.control(Request::Reload);
    let (reloading, out) = sim.control(Request::Scale { workers: 1 });
    assert!(sim
        .reply(reloading)
        .error
        .as_deref()
        .is_some_and(|e| e.contains("in progress")));
    assert!(drains(&out).is_empty());
}

#[test]
fn a_reload_right_after_a_scale_up_replaces_the_new_workers_too() {
    let mut sim = Sim::running(settings(8, 2));
    sim.control(Request::Scale { workers: 3 });
    // Slot 2 is still starting when the reload begins.
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(3, 2), (4, 2), (5, 2)]);
    sim.ready(2);
    sim.ready(3);
    sim.ready(4);
    let commit = sim.ready(5);
    assert_eq!(drains(&commit), [0, 1, 2]);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn a_reload_right_after_a_scale_down_waits_for_the_drained_slots_only_if_needed() {
    let mut sim = Sim::running(settings(4, 3));
    sim.control(Request::Scale { workers: 1 });
    // Slots 1 and 2 drain; slot 3 is free: enough for one worker.
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(3, 2)]);
    sim.ready(3);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn the_status_document_lists_workers_by_slot() {
    let mut sim = Sim::running(settings(4, 2));
    sim.control(Request::Reload);
    let (w, _) = sim.control(Request::Status);
    let doc = sim.reply(w).status.clone().expect("a status");
    assert_eq!(doc["phase"], "running");
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["reload_in_progress"], true);
    let states: Vec<_> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["slot"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (0, "ready".into()),
            (1, "ready".into()),
            (2, "starting".into()),
            (3, "starting".into())
        ]
    );
}
