//! The heartbeat kill and the kill records (`RecordKill` before every SIGKILL, once per
//! worker).

use super::*;
use crate::master::core::guards::heartbeat::STALL_GRACE;

const HEARTBEAT: Duration = Duration::from_secs(2);

fn guarded(slots: usize, workers: usize) -> Settings {
    let mut cfg = settings(slots, workers);
    cfg.guards.heartbeat_timeout = Some(HEARTBEAT);
    cfg
}

/// The index of the first action matching `want`.
fn index(actions: &[Action], want: impl Fn(&Action) -> bool) -> usize {
    actions.iter().position(want).expect("the action")
}

#[test]
fn a_silent_worker_is_killed_at_the_deadline_and_not_before() {
    let mut sim = Sim::running(guarded(4, 2));
    let t0 = sim.now;
    assert_eq!(sim.core.poll_timeout(), Some(t0 + HEARTBEAT));
    sim.now += HEARTBEAT - Duration::from_millis(1);
    sim.beat(1, 1);
    let early = sim.feed(Event::Tick);
    assert!(kills(&early).is_empty() && signals(&early).is_empty());
    // The silent worker's deadline is the next timer.
    assert_eq!(sim.core.poll_timeout(), Some(t0 + HEARTBEAT));
    let out = sim.advance(Duration::from_millis(1));
    assert_eq!(
        kills(&out),
        [(
            0,
            KillReason::Heartbeat,
            "no heartbeat for 2.0s (timeout 2s)".into()
        )]
    );
    assert_eq!(signals(&out), [(0, Sig::Term)]);
    let record = index(&out, |a| matches!(a, Action::RecordKill { .. }));
    let term = index(&out, |a| matches!(a, Action::Signal { .. }));
    assert!(record < term, "the record comes before the signal");
    assert!(logs(&out, Level::Warn)[0].contains("worker killed: no heartbeat for 2.0s"));
}

#[test]
fn a_master_that_missed_the_deadline_itself_kills_nobody_for_it() {
    let mut sim = Sim::running(guarded(4, 2));
    // The master did not run for 3.1 s (stopped, paused, starved): the workers' heartbeats
    // may wait unread, so nobody is killed for the master's stall.
    let out = sim.advance(Duration::from_millis(3100));
    assert!(kills(&out).is_empty(), "{out:?}");
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + STALL_GRACE));
    // Worker 1's heartbeat is read now; worker 0 stays silent through the grace.
    sim.beat(1, 1);
    let out = sim.advance(STALL_GRACE);
    let killed: Vec<(usize, String)> = kills(&out).into_iter().map(|k| (k.0, k.2)).collect();
    assert_eq!(
        killed,
        [(0, "no heartbeat for 3.6s (timeout 2s)".to_string())]
    );
}

#[test]
fn a_worker_that_never_sends_a_heartbeat_is_warned_about_not_killed() {
    let mut sim = Sim::new(guarded(4, 1));
    sim.feed(Event::Start);
    let pid = sim.pid(0);
    // Ready without the heartbeat that follows it (a worker built with an older library).
    sim.feed(Event::WorkerReady { slot: 0, pid });
    let out = sim.advance(HEARTBEAT);
    assert!(kills(&out).is_empty());
    let warn = logs(&out, Level::Warn);
    assert!(warn[0].contains("sent no heartbeat"), "{warn:?}");
    // Once: no deadline left for it.
    assert_eq!(sim.core.poll_timeout(), None);
    assert!(logs(&sim.advance(HEARTBEAT * 3), Level::Warn).is_empty());
}

#[test]
fn a_heartbeat_moves_the_deadline() {
    let mut sim = Sim::running(guarded(4, 1));
    let t0 = sim.now;
    sim.now += Duration::from_millis(1500);
    sim.beat(0, 0);
    assert_eq!(
        sim.core.poll_timeout(),
        Some(t0 + Duration::from_millis(3500))
    );
    assert!(kills(&sim.advance(Duration::from_millis(1999))).is_empty());
    assert_eq!(kills(&sim.advance(Duration::from_millis(1))).len(), 1);
}

#[test]
fn a_worker_is_not_checked_before_it_is_ready_and_ready_counts_as_a_beat() {
    let mut sim = Sim::new(guarded(4, 1));
    sim.feed(Event::Start);
    // Starting for longer than the heartbeat timeout: not checked.
    assert!(kills(&sim.advance(HEARTBEAT * 3)).is_empty());
    let t = sim.now;
    sim.ready(0);
    assert_eq!(sim.core.poll_timeout(), Some(t + HEARTBEAT));
    assert!(kills(&sim.advance(HEARTBEAT - Duration::from_millis(1))).is_empty());
    assert_eq!(kills(&sim.advance(Duration::from_millis(1))).len(), 1);
}

#[test]
fn a_draining_worker_is_never_heartbeat_killed() {
    let mut sim = Sim::running(guarded(4, 2));
    sim.control(Request::Reload);
    sim.ready(2);
    let commit = sim.ready(3);
    assert_eq!(drains(&commit), [0, 1]);
    // The old ones drain silently; the new ones beat.
    for _ in 0..4 {
        sim.now += Duration::from_secs(1);
        sim.beat(2, 1);
        let out = sim.beat(3, 1);
        assert!(kills(&out).is_empty(), "{out:?}");
    }
    assert!(kills(&sim.all).is_empty());
}

#[test]
fn a_killed_worker_gets_sigkill_after_the_shutdown_timeout_without_a_second_record() {
    let mut sim = Sim::running(guarded(4, 1));
    sim.advance(HEARTBEAT);
    let t = sim.now;
    assert_eq!(sim.core.poll_timeout(), Some(t + SHUTDOWN_TIMEOUT));
    // Heartbeats of a killed worker change nothing.
    sim.beat(0, 1);
    let late = sim.advance(SHUTDOWN_TIMEOUT);
    assert_eq!(signals(&late), [(0, Sig::Kill)]);
    assert!(kills(&late).is_empty(), "one record per worker");
    assert!(logs(&late, Level::Warn)[0].contains("did not exit within 10s of SIGTERM"));
    assert_eq!(kills(&sim.all).len(), 1);
}

#[test]
fn a_killed_worker_is_respawned_and_logged_as_a_kill() {
    let mut sim = Sim::running(guarded(4, 2));
    // Both live and beat for longer than the backoff's stable life.
    for _ in 0..12 {
        sim.now += Duration::from_secs(1);
        sim.beat(0, 1);
        sim.beat(1, 1);
    }
    sim.now += HEARTBEAT;
    let killed = sim.beat(1, 1);
    assert_eq!(kills(&killed)[0].0, 0);
    let out = sim.exit(0, None);
    assert_eq!(
        spawns(&out),
        [(0, 1)],
        "a long-lived worker respawns at once"
    );
    let warn = logs(&out, Level::Warn);
    assert!(
        warn[0].starts_with("killed worker exited (heartbeat: killed by SIGKILL)"),
        "{warn:?}"
    );
    assert!(!warn[0].contains("unexpectedly"));
    // The new worker is watched from its ready on.
    let t = sim.now;
    sim.ready(0);
    sim.beat(1, 1);
    assert_eq!(sim.core.poll_timeout(), Some(t + HEARTBEAT));
}

#[test]
fn a_worker_killed_soon_after_each_start_backs_off() {
    let mut sim = Sim::running(guarded(4, 1));
    sim.advance(HEARTBEAT);
    assert_eq!(spawns(&sim.exit(0, None)), [(0, 1)], "the first at once");
    sim.ready(0);
    sim.advance(HEARTBEAT);
    assert!(
        spawns(&sim.exit(0, None)).is_empty(),
        "a quick second kill waits for the backoff"
    );
}

#[test]
fn a_stop_after_a_heartbeat_kill_keeps_the_earlier_sigkill_and_one_record() {
    let mut sim = Sim::running(guarded(4, 1));
    sim.advance(HEARTBEAT);
    let t = sim.now;
    sim.now += Duration::from_secs(5);
    let out = sim.signal(SignalEvent::Stop);
    assert_eq!(drains(&out), [0]);
    assert_eq!(sim.core.poll_timeout(), Some(t + SHUTDOWN_TIMEOUT));
    let late = sim.advance(Duration::from_secs(5));
    assert_eq!(signals(&late), [(0, Sig::Kill)]);
    assert_eq!(kills(&sim.all).len(), 1);
    sim.exit(0, None);
    assert!(sim.core.finished());
}

#[test]
fn a_worker_still_draining_at_the_deadline_gets_its_record_before_sigkill_once() {
    let mut sim = Sim::running(settings(4, 2));
    sim.signal(SignalEvent::Stop);
    let late = sim.advance(SHUTDOWN_TIMEOUT);
    let detail = "still running after the shutdown timeout (10s)".to_string();
    assert_eq!(
        kills(&late),
        [
            (0, KillReason::ShutdownTimeout, detail.clone()),
            (1, KillReason::ShutdownTimeout, detail)
        ]
    );
    for slot in [0, 1] {
        let record = index(
            &late,
            |a| matches!(a, Action::RecordKill { slot: s, .. } if *s == slot),
        );
        let kill = index(
            &late,
            |a| matches!(a, Action::Signal { slot: s, sig: Sig::Kill, .. } if *s == slot),
        );
        assert!(record < kill);
    }
    assert!(kills(&sim.advance(SHUTDOWN_TIMEOUT)).is_empty());
}

#[test]
fn a_rolled_back_worker_that_ignores_sigterm_gets_a_shutdown_timeout_record() {
    let mut sim = Sim::running(settings(4, 2));
    sim.control(Request::Reload);
    sim.exit(2, Some(1));
    let late = sim.advance(SHUTDOWN_TIMEOUT);
    assert_eq!(signals(&late), [(3, Sig::Kill)]);
    assert_eq!(kills(&late).len(), 1);
    assert_eq!(kills(&late)[0].1, KillReason::ShutdownTimeout);
}

#[test]
fn a_second_stop_and_a_broken_channel_kill_without_a_record() {
    let mut sim = Sim::running(settings(4, 2));
    let pid = sim.pid(1);
    let error = "bad".to_string();
    let out = sim.feed(Event::WorkerBroken {
        slot: 1,
        pid,
        error,
    });
    assert_eq!(signals(&out), [(1, Sig::Kill)]);
    sim.signal(SignalEvent::Stop);
    let out = sim.signal(SignalEvent::Stop);
    assert!(kills(&out).is_empty());
}
