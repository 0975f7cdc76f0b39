//! What else happens during a master upgrade and after it: reloads, canaries and scales
//! refused, SIGHUP and SIGUSR2 logged, stops, crashed old workers, recycles, autoscaling,
//! and reloads waiting for the slots a failed upgrade's new master still holds.

use super::super::{Autoscale, Notify};
use super::upgrade::*;
use super::*;
use crate::control::Outcome;

const BUSY: &str = "a master upgrade is in progress";
const HANDED_OVER: &str = "this master has handed over to a new one; ask the new master";

/// Reload, canary and scale requests: each refused with `why`, nothing spawned.
fn coordinator_jobs_refused(sim: &mut Sim, why: &[&str; 3]) {
    let jobs = [
        Request::Reload,
        Request::canary(1, 1.0),
        Request::Scale { workers: 3 },
    ];
    for (request, why) in jobs.into_iter().zip(why) {
        let (w, out) = sim.control(request);
        assert!(spawns(&out).is_empty(), "{out:?}");
        assert!(!has(&out, |a| matches!(
            a,
            Action::Notify(Notify::Reloading { .. }) | Action::SetTarget(_)
        )));
        assert_eq!(sim.error_of(w), *why);
    }
}

/// SIGHUP: logged, nothing else.
fn sighup_ignored(sim: &mut Sim, why: &str) {
    let out = sim.signal(SignalEvent::Reload);
    assert!(spawns(&out).is_empty());
    assert!(!has(&out, |a| matches!(
        a,
        Action::Notify(Notify::Reloading { .. })
    )));
    assert_eq!(
        logs(&out, Level::Warn),
        [format!("SIGHUP reload ignored: {why}")]
    );
}

#[test]
fn reloads_canaries_and_scales_are_refused_while_it_runs_and_sighup_is_ignored() {
    let (mut sim, _) = upgrading();
    let again = |what: &str| format!("{BUSY}; {what} again when it ends");
    let why = [again("reload"), again("reload"), again("scale")];
    coordinator_jobs_refused(&mut sim, &why.each_ref().map(String::as_str));
    sighup_ignored(&mut sim, BUSY);
    // Also while committing.
    sim.upgrade_ready();
    coordinator_jobs_refused(&mut sim, &why.each_ref().map(String::as_str));
    assert!(sim.core.upgrading());
    // The status answers and says so.
    let (s, _) = sim.control(Request::Status);
    let doc = sim.reply(s).status.clone().expect("a status");
    assert_eq!(doc["upgrade_in_progress"], true);
}

#[test]
fn after_the_handover_they_are_refused_with_ask_the_new_master() {
    let (mut sim, _) = upgrading();
    sim.upgrade_ready();
    sim.feed(Event::UpgradeCommitted);
    coordinator_jobs_refused(&mut sim, &[HANDED_OVER; 3]);
    sighup_ignored(&mut sim, HANDED_OVER);
    let (w, out) = sim.control(upgrade(None));
    assert!(spawn_upgrades(&out).is_empty());
    assert_eq!(sim.error_of(w), "the cluster is stopping");
}

#[test]
fn a_stop_while_handing_over_rolls_back_first_then_stops() {
    let (mut sim, w) = upgrading();
    let (s, out) = sim.control(Request::Stop);
    assert!(sim.reply(s).ok);
    rolled_back(&sim, w, &out, "the cluster is stopping");
    let abort = out
        .iter()
        .position(|a| matches!(a, Action::AbortUpgrade { .. }));
    let drain = out.iter().position(|a| matches!(a, Action::Drain { .. }));
    assert!(abort.is_some() && abort < drain, "{out:?}");
    assert_eq!(drains(&out), [0, 1]);
    assert!(!has(&out, |a| matches!(a, Action::Retire)));
    // Finished once the workers and the new master (it shares the lock) are gone.
    sim.exit_all();
    assert!(!sim.core.finished());
    sim.upgrade_gone();
    assert!(sim.core.finished());
}

#[test]
fn a_stop_before_the_spawn_answer_finishes_with_the_workers() {
    let mut sim = Sim::running(settings(6, 2));
    sim.auto_upgrade = false;
    let (w, _) = sim.control(upgrade(None));
    let out = sim.signal(SignalEvent::Stop);
    rolled_back(&sim, w, &out, "the cluster is stopping");
    sim.exit_all();
    assert!(sim.core.finished());
}

#[test]
fn a_stop_signal_while_committing_waits_for_the_answer() {
    // The commit is out: the new master may be taking over right now. The stop waits for
    // its answer instead of aborting (two masters must never both serve).
    let (mut sim, w) = upgrading();
    sim.upgrade_ready();
    let out = sim.signal(SignalEvent::Stop);
    assert!(aborts(&out).is_empty());
    assert!(drains(&out).is_empty());
    // The ack: this master retires (drains everything), the stop is satisfied.
    let done = sim.feed(Event::UpgradeCommitted);
    assert!(has(&done, |a| matches!(a, Action::Retire)));
    assert_eq!(drains(&done), [0, 1]);
    let _ = w;
}

#[test]
fn a_stop_while_committing_then_a_failure_rolls_back_and_stops() {
    let (mut sim, w) = upgrading();
    sim.upgrade_ready();
    sim.signal(SignalEvent::Stop);
    let out = sim.feed(Event::UpgradeFailed {
        reason: "the new master exited".into(),
    });
    rolled_back(&sim, w, &out, "the new master exited");
    assert!(has(&out, |a| matches!(
        a,
        Action::AbortUpgrade { kill: true, .. }
    )));
    assert_eq!(drains(&out), [0, 1]);
}

#[test]
fn a_stop_with_a_before_shutdown_hook_rolls_back_at_once() {
    let mut cfg = settings(6, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::running(cfg);
    let (w, _) = sim.control(upgrade(None));
    let out = sim.signal(SignalEvent::Stop);
    rolled_back(&sim, w, &out, "the cluster is stopping");
    assert_eq!(sim.hooks.front(), Some(&Hook::BeforeShutdown));
    assert!(drains(&out).is_empty());
}

#[test]
fn a_stop_after_the_handover_kills_at_once() {
    let (mut sim, _) = upgrading();
    sim.upgrade_ready();
    sim.feed(Event::UpgradeCommitted);
    let out = sim.signal(SignalEvent::Stop);
    assert!(aborts(&out).is_empty());
    assert_eq!(signals(&out), [(0, Sig::Kill), (1, Sig::Kill)]);
    sim.exit(0, None);
    sim.exit(1, None);
    assert!(sim.core.finished());
}

#[test]
fn old_workers_that_crash_are_respawned_in_their_own_slots() {
    let (mut sim, w) = upgrading();
    let out = sim.exit(0, Some(1));
    assert_eq!(spawns(&out), [(0, 1)]);
    assert!(has(&out, |a| matches!(
        a,
        Action::SlotRestarted { slot: 0 }
    )));
    sim.ready(0);
    sim.upgrade_ready();
    let out = sim.exit(1, None);
    assert_eq!(spawns(&out), [(1, 1)]);
    assert!(sim.core.upgrading());
    sim.feed(Event::UpgradeCommitted);
    assert_eq!(sim.report_of(w).outcome, Outcome::Success);
}

#[test]
fn a_crash_while_the_respawn_backs_off_keeps_its_slot_out_of_the_lent_ones() {
    let mut sim = Sim::running(settings(6, 2));
    // Two quick crashes: the second respawn waits for its backoff.
    sim.exit(0, Some(1));
    sim.exit(0, Some(1));
    assert!(!sim.live.contains_key(&0));
    let (_, out) = sim.control(upgrade(None));
    let (_, lent, workers, ..) = spawn_upgrades(&out).remove(0);
    assert_eq!(lent, [2, 3, 4, 5]);
    assert_eq!(workers, [(1, sim.pid(1))]);
    let out = sim.advance(Duration::from_secs(30));
    assert!(spawns(&out).contains(&(0, 1)));
}

#[test]
fn recycles_do_not_start_during_an_upgrade() {
    let mut cfg = settings(6, 2);
    cfg.guards.max_requests = Some(10);
    let mut sim = Sim::running(cfg);
    sim.control(upgrade(None));
    assert!(recycles(&sim.beat(0, 20)).is_empty());
    sim.upgrade_ready();
    assert!(recycles(&sim.beat(0, 1)).is_empty());
    sim.upgrade_failed("hung up");
    // Rolled back: the lent slots are held until the new master is gone.
    assert!(recycles(&sim.beat(0, 1)).is_empty());
    // Gone: the due recycle begins at once, in a slot it lent.
    let out = sim.upgrade_gone();
    assert_eq!(recycles(&out).len(), 1);
    assert_eq!(spawns(&out), [(2, 1)]);
}

#[test]
fn autoscaling_does_not_move_during_an_upgrade_or_after_the_handover() {
    let mut cfg = settings(6, 2);
    cfg.autoscale = Some(Autoscale::new(1, 4, Duration::from_secs(3)));
    let mut sim = Sim::running(cfg);
    sim.control(upgrade(None));
    let load = |sim: &mut Sim, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            sim.now += Duration::from_millis(250);
            let (busy, in_flight, queued) = (2, 8, 5);
            out.extend(sim.feed(Event::Load {
                busy,
                in_flight,
                queued,
            }));
        }
        out
    };
    let moved = |out: &[Action]| has(out, |a| matches!(a, Action::SetTarget(_)));
    assert!(!moved(&load(&mut sim, 20)));
    sim.upgrade_ready();
    sim.feed(Event::UpgradeCommitted);
    assert!(!moved(&load(&mut sim, 20)));
    assert_eq!(sim.core.target(), 2);
}

#[test]
fn autoscaling_moves_again_after_a_rollback() {
    let mut cfg = settings(6, 2);
    cfg.autoscale = Some(Autoscale::new(1, 4, Duration::from_secs(3)));
    let mut sim = Sim::running(cfg);
    sim.control(upgrade(None));
    sim.upgrade_failed("refused");
    sim.upgrade_gone();
    let mut out = Vec::new();
    for _ in 0..8 {
        sim.now += Duration::from_millis(250);
        out.extend(sim.feed(Event::Load {
            busy: 2,
            in_flight: 8,
            queued: 5,
        }));
    }
    assert!(has(&out, |a| matches!(a, Action::SetTarget(3))));
}

#[test]
fn a_reload_while_the_slots_are_held_waits_for_the_new_master_to_go() {
    let (mut sim, _) = upgrading();
    sim.upgrade_failed("hung up");
    let (r, out) = sim.control(Request::Reload);
    assert!(spawns(&out).is_empty());
    assert!(!sim.replies.contains_key(&r));
    assert!(logs(&out, Level::Info).iter().any(|l| l
        == "reload waits for 0 draining workers and the other master of the upgrade (4 slots) \
            to free their slots"));
    let out = sim.upgrade_gone();
    assert_eq!(spawns(&out), [(2, 2), (3, 2)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(r), "success");
}

#[test]
fn a_reload_waiting_for_held_slots_rolls_back_at_its_deadline_naming_them() {
    let (mut sim, _) = upgrading();
    sim.upgrade_failed("hung up");
    let (r, _) = sim.control(Request::Reload);
    sim.advance(SHUTDOWN_TIMEOUT + Duration::from_secs(2));
    assert_eq!(
        sim.reload_reason(r),
        "waited 12s for draining workers to free the slots it needs; 0 still draining, \
         4 slots still held by the other master of an upgrade"
    );
}

#[test]
fn sigusr2_during_an_upgrade_to_another_binary_is_logged() {
    let mut sim = Sim::running(settings(6, 2));
    let (w, _) = sim.control(upgrade(Some("/opt/flora/new")));
    let out = sim.signal(SignalEvent::Upgrade);
    assert!(spawn_upgrades(&out).is_empty());
    assert_eq!(
        logs(&out, Level::Warn),
        ["upgrade refused: an upgrade to another binary is under way; try again when it ends"]
    );
    assert!(sim.core.upgrading());
    assert!(!sim.replies.contains_key(&w));
}

/// `n` load samples a quarter second apart.
fn loads(sim: &mut Sim, n: usize, in_flight: u64) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        sim.now += Duration::from_millis(250);
        let busy = usize::try_from(in_flight).unwrap_or(usize::MAX).min(2);
        let queued = 0;
        out.extend(sim.feed(Event::Load {
            busy,
            in_flight,
            queued,
        }));
    }
    out
}

#[test]
fn the_load_during_an_upgrade_counts_in_the_idle_window_after_it() {
    let mut cfg = settings(6, 2);
    cfg.autoscale = Some(Autoscale::new(1, 4, Duration::from_secs(3)));
    let mut sim = Sim::running(cfg);
    loads(&mut sim, 4, 0);
    sim.control(upgrade(None));
    // Busy all through the upgrade: nothing moves.
    assert!(!has(&loads(&mut sim, 20, 8), |a| matches!(
        a,
        Action::SetTarget(_)
    )));
    sim.upgrade_failed("refused");
    sim.upgrade_gone();
    // One calm sample after a busy window is not an idle window.
    let out = loads(&mut sim, 1, 0);
    assert!(!has(&out, |a| matches!(a, Action::SetTarget(_))), "{out:?}");
    assert_eq!(sim.core.target(), 2);
}
