//! The reload transaction: commit, every rollback, coalescing, waiting for slots.

use super::*;
use crate::control::Outcome;

#[test]
fn a_reload_commits_once_every_new_worker_is_ready() {
    let mut sim = Sim::running(settings(4, 2));
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(2, 2), (3, 2)]);
    assert!(!sim.replies.contains_key(&w));
    assert!(!has(&sim.ready(2), |a| matches!(
        a,
        Action::SetGeneration(_)
    )));
    let commit = sim.ready(3);
    assert!(has(&commit, |a| matches!(a, Action::SetGeneration(2))));
    assert_eq!(drains(&commit), [0, 1]);
    assert!(has(
        &commit,
        |a| matches!(a, Action::RecordReload(r) if r.outcome == Outcome::Success)
    ));
    assert_eq!(sim.reload_reason(w), "success");
    assert_eq!(sim.core.generation(), 2);
    // The old generation's copy goes once its last worker is gone.
    assert!(!has(&sim.exit(0, Some(0)), |a| matches!(
        a,
        Action::DropGeneration { .. }
    )));
    let gone = sim.exit(1, Some(0));
    assert!(has(&gone, |a| matches!(
        a,
        Action::DropGeneration { generation: 1 }
    )));
}

#[test]
fn a_new_worker_dying_before_it_is_ready_rolls_back() {
    let mut sim = Sim::running(settings(4, 2));
    let (w, _) = sim.control(Request::Reload);
    let pid = sim.pid(2);
    let out = sim.exit(2, Some(7));
    let reason = sim.reload_reason(w);
    assert_eq!(
        reason,
        format!("new worker in slot 2 (pid {pid}) exited during start-up (exit code 7)")
    );
    // The other new worker never was ready: SIGTERM, not a drain request.
    assert_eq!(signals(&out), [(3, Sig::Term)]);
    assert!(drains(&out).is_empty());
    assert_eq!(sim.core.generation(), 1);
    assert!(has(
        &out,
        |a| matches!(a, Action::RecordReload(r) if r.outcome == Outcome::Rollback)
    ));
    // SIGKILL if it does not go within the shutdown timeout.
    assert_eq!(signals(&sim.advance(SHUTDOWN_TIMEOUT)), [(3, Sig::Kill)]);
}

#[test]
fn a_new_worker_dying_after_it_was_ready_rolls_back_and_the_ready_one_drains() {
    let mut sim = Sim::running(settings(6, 3));
    let (w, _) = sim.control(Request::Reload);
    assert_eq!(sim.live.len(), 6);
    sim.ready(3);
    sim.ready(4);
    let out = sim.exit(3, Some(1));
    assert!(sim.reload_reason(w).contains("exited during start-up"));
    assert_eq!(drains(&out), [4]);
    assert_eq!(signals(&out), [(5, Sig::Term)]);
}

#[test]
fn an_old_worker_dying_during_a_reload_is_respawned_into_its_slot() {
    let mut sim = Sim::running(settings(4, 2));
    let (w, _) = sim.control(Request::Reload);
    let out = sim.exit(0, Some(1));
    assert_eq!(spawns(&out), [(0, 1)]);
    assert!(has(&out, |a| matches!(
        a,
        Action::SlotRestarted { slot: 0 }
    )));
    sim.ready(2);
    sim.ready(3);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn the_ready_timeout_rolls_back_with_the_count() {
    let mut sim = Sim::running(settings(4, 2));
    let (w, _) = sim.control(Request::Reload);
    sim.ready(2);
    sim.advance(READY_TIMEOUT);
    assert_eq!(
        sim.reload_reason(w),
        "only 1 of 2 new workers were ready after 30s"
    );
}

#[test]
fn a_failing_before_reload_hook_rolls_back_without_spawning() {
    let mut cfg = settings(4, 2);
    cfg.before_reload = true;
    let mut sim = Sim::running(cfg);
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert_eq!(
        sim.hooks.front(),
        Some(&Hook::BeforeReload { generation: 2 })
    );
    assert!(has(
        &out,
        |a| matches!(a, Action::RunHook { timeout, .. } if *timeout == READY_TIMEOUT)
    ));
    let done = sim.hook_done(Err("database migration".into()));
    assert!(spawns(&done).is_empty());
    assert_eq!(
        sim.reload_reason(w),
        "before-reload hook failed: database migration"
    );
}

#[test]
fn a_passing_before_reload_hook_lets_the_reload_go_on() {
    let mut cfg = settings(4, 2);
    cfg.before_reload = true;
    let mut sim = Sim::running(cfg);
    let (w, _) = sim.control(Request::Reload);
    assert_eq!(spawns(&sim.hook_done(Ok(()))), [(2, 2), (3, 2)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn reloads_asked_for_during_a_reload_are_coalesced_into_one() {
    let mut sim = Sim::running(settings(6, 2));
    let (a, _) = sim.control(Request::Reload);
    let (b, _) = sim.control(Request::Reload);
    sim.signal(SignalEvent::Reload);
    let (c, _) = sim.control(Request::Reload);
    sim.ready(2);
    let next = sim.ready(3);
    assert_eq!(sim.reload_reason(a), "success");
    assert_eq!(
        spawns(&next),
        [(4, 3), (5, 3)],
        "one more reload, not three"
    );
    assert!(!sim.replies.contains_key(&b));
    sim.ready(4);
    sim.ready(5);
    for w in [b, c] {
        let r = sim.reply(w).reload.clone().expect("an outcome");
        assert_eq!((r.outcome, r.generation), (Outcome::Success, 3));
    }
    assert_eq!(sim.core.generation(), 3);
}

#[test]
fn a_reload_asked_for_during_the_start_runs_after_it() {
    let mut sim = Sim::new(settings(4, 2));
    sim.feed(Event::Start);
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    let started = sim.ready_all();
    assert_eq!(spawns(&started), [(2, 2), (3, 2)]);
    sim.ready(2);
    sim.ready(3);
    assert_eq!(sim.reload_reason(w), "success");
}

#[test]
fn a_reload_waits_for_draining_workers_to_free_its_slots() {
    let mut sim = Sim::running(settings(4, 2));
    let (_, _) = sim.control(Request::Reload);
    sim.ready(2);
    sim.ready(3);
    // Slots 0 and 1 still drain generation 1.
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l.contains("waits for 2 draining workers")));
    let deadline = sim.now + SHUTDOWN_TIMEOUT + super::super::reload::SLOT_WAIT_MARGIN;
    let tx = sim.core.reload.as_ref().expect("a reload");
    assert_eq!(tx.deadline(), Some(deadline));
    assert!(
        spawns(&sim.exit(0, Some(0))).is_empty(),
        "one slot is not enough"
    );
    let out = sim.exit(1, Some(0));
    assert_eq!(spawns(&out), [(0, 3), (1, 3)]);
    sim.ready(0);
    sim.ready(1);
    assert_eq!(sim.reload_reason(w), "success");
}

/// Issue 13: the rollback while waiting for slots said "0 of 0 new workers ready".
#[test]
fn a_reload_that_waited_too_long_for_slots_says_so() {
    let mut sim = Sim::running(settings(4, 2));
    sim.control(Request::Reload);
    sim.ready_all();
    let (w, _) = sim.control(Request::Reload);
    sim.advance(SHUTDOWN_TIMEOUT + super::super::reload::SLOT_WAIT_MARGIN);
    let reason = sim.reload_reason(w);
    assert!(!reason.contains("0 of 0"), "{reason}");
    assert!(reason.contains("draining workers"), "{reason}");
    assert_eq!(sim.core.generation(), 2);
}

#[test]
fn a_reload_without_enough_slots_rolls_back_at_once() {
    let mut sim = Sim::running(settings(3, 2));
    let (w, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert!(sim
        .reload_reason(w)
        .starts_with("not enough free slots for a new generation: 1 free, 2 needed"));
}

#[test]
fn a_failed_spawn_rolls_back_and_spawns_no_more() {
    let mut sim = Sim::running(settings(6, 3));
    sim.spawn_error = Some("runtime directory no longer names the one we hold".into());
    let (w, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(3, 2)]);
    assert_eq!(
        sim.reload_reason(w),
        "cannot spawn a new worker in slot 3: runtime directory no longer names the one we hold"
    );
    sim.spawn_error = None;
    let (again, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(3, 3), (4, 3), (5, 3)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(again), "success");
}

#[test]
fn a_failed_program_copy_rolls_back() {
    let mut sim = Sim::running(settings(4, 2));
    sim.auto_prepare = false;
    let (w, _) = sim.control(Request::Reload);
    sim.prepared(Err("cannot prepare program: disk full".into()));
    assert_eq!(sim.reload_reason(w), "cannot prepare program: disk full");
    assert!(sim.core.reload.is_none());
}

#[test]
fn a_queued_reload_does_not_begin_once_a_stop_was_asked_for() {
    let mut cfg = settings(4, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::running(cfg);
    let (first, _) = sim.control(Request::Reload);
    let (queued, _) = sim.control(Request::Reload);
    // The before-shutdown hook runs: the reload in progress goes on, a new one must not.
    sim.signal(SignalEvent::Stop);
    let commit = [sim.ready(2), sim.ready(3)].concat();
    assert_eq!(sim.reload_reason(first), "success");
    assert!(!has(&commit, |a| matches!(
        a,
        Action::Notify(super::super::Notify::Reloading { .. }) | Action::Spawn { .. }
    )));
    assert_eq!(
        sim.reply(queued).error.as_deref(),
        Some("the cluster is stopping")
    );
}
