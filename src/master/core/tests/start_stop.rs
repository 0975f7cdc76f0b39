//! Start, start failures and every way of stopping.

use super::*;
use crate::master::core::Notify;

#[test]
fn start_prepares_then_spawns_one_slot_at_a_time_and_runs_when_all_ready() {
    let mut sim = Sim::new(settings(4, 2));
    sim.auto_prepare = false;
    let first = sim.feed(Event::Start);
    assert!(matches!(
        first.as_slice(),
        [
            Action::SetGeneration(1),
            Action::SetTarget(2),
            Action::Prepare { generation: 1 }
        ]
    ));
    let spawned = sim.prepared(Ok(()));
    assert_eq!(spawns(&spawned), [(0, 1), (1, 1)]);
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + READY_TIMEOUT));
    assert!(!has(&sim.ready(0), |a| matches!(a, Action::SetPhase(_))));
    let last = sim.ready(1);
    assert!(has(&last, |a| matches!(
        a,
        Action::SetPhase(Phase::Running)
    )));
    assert!(has(&last, |a| matches!(a, Action::Notify(Notify::Ready))));
    assert_eq!(sim.core.poll_timeout(), None);
}

#[test]
fn start_fails_when_a_worker_exits_before_it_is_ready() {
    let mut sim = Sim::new(settings(4, 2));
    sim.feed(Event::Start);
    let out = sim.exit(0, Some(5));
    let failure = sim.core.failure().expect("a failure");
    assert!(
        failure.contains("exited during start-up (exit code 5)"),
        "{failure}"
    );
    assert!(has(&out, |a| matches!(
        a,
        Action::SetPhase(Phase::Stopping)
    )));
    assert_eq!(drains(&out), [1]);
    assert!(!sim.core.finished());
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn start_fails_when_the_ready_timeout_passes() {
    let mut sim = Sim::new(settings(4, 2));
    sim.feed(Event::Start);
    sim.ready(0);
    sim.advance(READY_TIMEOUT);
    assert_eq!(
        sim.core.failure(),
        Some("only 1 of 2 workers were ready after 30s")
    );
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn start_fails_when_the_program_copy_fails() {
    let mut sim = Sim::new(settings(4, 2));
    sim.auto_prepare = false;
    sim.feed(Event::Start);
    sim.prepared(Err("cannot prepare program \"x\": gone".into()));
    assert!(sim.core.failure().is_some_and(|f| f.contains("gone")));
    assert!(sim.core.finished());
}

#[test]
fn start_fails_at_the_first_failed_spawn_and_spawns_no_more() {
    let mut sim = Sim::new(settings(4, 2));
    sim.spawn_error = Some("no such file".into());
    let out = sim.feed(Event::Start);
    assert_eq!(spawns(&out), [(0, 1)], "one attempt, then stop");
    assert_eq!(sim.core.failure(), Some("slot 0: no such file"));
    assert!(sim.core.finished());
}

#[test]
fn stop_drains_every_worker_then_kills_after_the_shutdown_timeout() {
    let mut sim = Sim::running(settings(4, 2));
    let out = sim.signal(SignalEvent::Stop);
    assert_eq!(drains(&out), [0, 1]);
    assert!(has(&out, |a| matches!(
        a,
        Action::SetPhase(Phase::Stopping)
    )));
    sim.exit(0, Some(0));
    let late = sim.advance(SHUTDOWN_TIMEOUT);
    assert_eq!(signals(&late), [(1, Sig::Kill)]);
    assert!(logs(&late, Level::Warn)[0].contains("still draining after 10s"));
    assert!(!sim.core.finished());
    sim.exit(1, None);
    assert!(sim.core.finished());
    assert_eq!(sim.core.failure(), None);
}

#[test]
fn a_second_stop_while_draining_kills_at_once() {
    let mut sim = Sim::running(settings(4, 2));
    sim.signal(SignalEvent::Stop);
    let out = sim.signal(SignalEvent::Stop);
    assert_eq!(signals(&out), [(0, Sig::Kill), (1, Sig::Kill)]);
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn stop_on_the_control_socket_is_answered_at_once() {
    let mut sim = Sim::running(settings(4, 2));
    let (w, out) = sim.control(Request::Stop);
    assert!(sim.reply(w).ok);
    assert_eq!(drains(&out), [0, 1]);
    let (late, _) = sim.control(Request::Reload);
    assert_eq!(
        sim.reply(late).error.as_deref(),
        Some("the cluster is stopping")
    );
    let (scale, _) = sim.control(Request::Scale { workers: 3 });
    assert_eq!(
        sim.reply(scale).error.as_deref(),
        Some("the cluster is stopping")
    );
}

#[test]
fn stop_during_a_reload_answers_every_waiter_and_spawns_nothing_more() {
    let mut sim = Sim::running(settings(4, 2));
    sim.auto_prepare = false;
    let (a, _) = sim.control(Request::Reload);
    let (b, _) = sim.control(Request::Reload);
    let out = sim.signal(SignalEvent::Stop);
    for w in [a, b] {
        assert_eq!(
            sim.reply(w).error.as_deref(),
            Some("the cluster is stopping")
        );
    }
    assert_eq!(drains(&out), [0, 1]);
    // The copy in flight keeps the master until it is back, then it is dropped.
    sim.exit_all();
    assert!(!sim.core.finished());
    let late = sim.prepared(Ok(()));
    assert!(spawns(&late).is_empty());
    assert!(has(&late, |a| matches!(
        a,
        Action::DropGeneration { generation: 2 }
    )));
    assert!(sim.core.finished());
}

#[test]
fn stop_while_new_workers_start_drains_them_too() {
    let mut sim = Sim::running(settings(4, 2));
    let (a, started) = sim.control(Request::Reload);
    assert_eq!(spawns(&started), [(2, 2), (3, 2)]);
    let out = sim.signal(SignalEvent::Stop);
    assert_eq!(drains(&out), [0, 1, 2, 3]);
    assert!(sim.reply(a).error.is_some());
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn the_before_shutdown_hook_runs_first_and_an_error_does_not_stop_the_stop() {
    let mut cfg = settings(4, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::running(cfg);
    let out = sim.signal(SignalEvent::Stop);
    assert!(drains(&out).is_empty());
    assert_eq!(sim.hooks.front(), Some(&Hook::BeforeShutdown));
    // Reloads are refused while it runs; the workers keep serving.
    let (w, _) = sim.control(Request::Reload);
    assert!(sim.reply(w).error.is_some());
    let done = sim.hook_done(Err("flush failed".into()));
    assert!(logs(&done, Level::Error)[0].contains("flush failed; stopping anyway"));
    assert_eq!(drains(&done), [0, 1]);
    sim.exit_all();
    assert!(sim.core.finished());
}

/// The race of issue 13: a second stop while the before-shutdown hook runs used to kill the
/// workers but leave respawn timers, the reload and the queue in place.
#[test]
fn a_second_stop_during_the_before_shutdown_hook_goes_through_enter_stopping() {
    let mut cfg = settings(4, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::running(cfg);
    // A reload starting (slots 2 and 3), one queued behind it.
    let (a, _) = sim.control(Request::Reload);
    let (b, _) = sim.control(Request::Reload);
    // Slot 0 crash-loops: respawned at once, then a backoff timer is pending.
    sim.exit(0, Some(1));
    sim.exit(0, Some(1));
    assert!(!sim.live.contains_key(&0));
    assert!(sim.core.poll_timeout().is_some());
    sim.signal(SignalEvent::Stop);
    assert!(
        !sim.replies.contains_key(&a),
        "the hook runs; the reload goes on"
    );
    let out = sim.signal(SignalEvent::Stop);
    assert!(has(&out, |a| matches!(
        a,
        Action::SetPhase(Phase::Stopping)
    )));
    assert_eq!(
        signals(&out),
        [(1, Sig::Kill), (2, Sig::Kill), (3, Sig::Kill)]
    );
    for w in [a, b] {
        assert_eq!(
            sim.reply(w).error.as_deref(),
            Some("the cluster is stopping")
        );
    }
    assert_eq!(
        sim.core.poll_timeout(),
        None,
        "no respawn, no reload deadline"
    );
    assert!(spawns(&sim.advance(Duration::from_secs(60))).is_empty());
    sim.exit_all();
    assert!(sim.core.finished());
    // The hook ends late: nothing happens.
    let late = sim.hook_done(Ok(()));
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn a_second_stop_during_the_hook_while_starting_clears_the_start_deadline() {
    let mut cfg = settings(4, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::new(cfg);
    sim.feed(Event::Start);
    sim.signal(SignalEvent::Stop);
    sim.signal(SignalEvent::Stop);
    assert_eq!(sim.core.poll_timeout(), None);
    sim.advance(READY_TIMEOUT * 2);
    assert_eq!(sim.core.failure(), None, "a stop is not a failed start");
    sim.exit_all();
    assert!(sim.core.finished());
}
