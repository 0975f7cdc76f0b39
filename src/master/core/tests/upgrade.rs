//! The master upgrade on the old master's side: the request, every refusal, joining,
//! commit, rollback at every step, deadlines, what is refused meanwhile, stops, crashes.

use std::path::PathBuf;

use super::super::Notify;
use super::*;
use crate::control::{Outcome, UpgradeReport};

/// The handover deadline when the request names no timeout.
pub(super) const HANDOVER: Duration = Duration::from_secs(40);
pub(super) const VERSION: &str = "9.9.9";

pub(super) fn upgrade(binary: Option<&str>) -> Request {
    Request::Upgrade {
        binary: binary.map(PathBuf::from),
        timeout_secs: None,
    }
}

/// A `SpawnUpgrade`: binary, lent slots, workers (slot, pid), generation, target.
pub(super) type SpawnUpgrade = (Option<PathBuf>, Vec<usize>, Vec<(usize, u32)>, u64, usize);

/// Every `SpawnUpgrade` in `actions`.
pub(super) fn spawn_upgrades(actions: &[Action]) -> Vec<SpawnUpgrade> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SpawnUpgrade {
                binary,
                lent,
                workers,
                generation,
                target,
            } => Some((
                binary.clone(),
                lent.clone(),
                workers.clone(),
                *generation,
                *target,
            )),
            _ => None,
        })
        .collect()
}

pub(super) fn count(actions: &[Action], want: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| want(a)).count()
}

pub(super) fn records(actions: &[Action]) -> Vec<UpgradeReport> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordUpgrade(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn aborts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AbortUpgrade { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

impl Sim {
    /// The error of `waiter`'s reply.
    pub(super) fn error_of(&self, waiter: WaiterId) -> String {
        let r = self.reply(waiter);
        assert!(!r.ok, "{r:?}");
        r.error.clone().expect("an error")
    }

    /// The upgrade report of `waiter`'s reply.
    pub(super) fn report_of(&self, waiter: WaiterId) -> UpgradeReport {
        let r = self.reply(waiter);
        assert!(r.ok, "{r:?}");
        r.upgrade.clone().expect("an upgrade report")
    }

    pub(super) fn upgrade_ready(&mut self) -> Vec<Action> {
        let version = VERSION.to_string();
        self.feed(Event::UpgradeReady { version })
    }

    pub(super) fn upgrade_failed(&mut self, reason: &str) -> Vec<Action> {
        let reason = reason.to_string();
        self.feed(Event::UpgradeFailed { reason })
    }
}

/// Running with 2 workers in 6 slots, an upgrade asked for on the control socket.
pub(super) fn upgrading() -> (Sim, WaiterId) {
    let mut sim = Sim::running(settings(6, 2));
    let (w, _) = sim.control(upgrade(None));
    assert!(sim.core.upgrading());
    (sim, w)
}

/// Checks a rollback's actions and the waiter's reply; returns the report.
pub(super) fn rolled_back(sim: &Sim, w: WaiterId, out: &[Action], reason: &str) -> UpgradeReport {
    assert_eq!(aborts(out), [reason]);
    let recorded = records(out);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].outcome, Outcome::Rollback);
    assert_eq!(recorded[0].reason.as_deref(), Some(reason));
    assert!(has(out, |a| matches!(
        a,
        Action::Notify(Notify::UpgradeRolledBack)
    )));
    let report = sim.report_of(w);
    assert_eq!(report, recorded[0]);
    assert!(!sim.core.upgrading());
    assert!(!sim.core.retiring());
    report
}

#[test]
fn a_control_request_lends_the_free_slots_and_names_the_workers() {
    let mut sim = Sim::running(settings(6, 2));
    let (w, out) = sim.control(upgrade(Some("/opt/flora/new")));
    let (p0, p1) = (sim.pid(0), sim.pid(1));
    assert_eq!(
        spawn_upgrades(&out),
        [(
            Some(PathBuf::from("/opt/flora/new")),
            vec![2, 3, 4, 5],
            vec![(0, p0), (1, p1)],
            1,
            2
        )]
    );
    let notify = out
        .iter()
        .position(|a| matches!(a, Action::Notify(Notify::Upgrading)));
    let spawn = out
        .iter()
        .position(|a| matches!(a, Action::SpawnUpgrade { .. }));
    assert!(notify.is_some() && notify < spawn);
    assert!(!sim.replies.contains_key(&w), "answered at the end");
    // The lent slots are not free any more.
    assert!(sim.core.free_slots().is_empty());
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + HANDOVER));
}

#[test]
fn sigusr2_upgrades_the_own_binary_without_a_waiter() {
    let mut sim = Sim::running(settings(4, 2));
    let out = sim.signal(SignalEvent::Upgrade);
    let (binary, lent, ..) = spawn_upgrades(&out).remove(0);
    assert_eq!((binary, lent), (None, vec![2, 3]));
    sim.upgrade_ready();
    let out = sim.feed(Event::UpgradeCommitted);
    assert_eq!(records(&out)[0].outcome, Outcome::Success);
    assert_eq!(count(&out, |a| matches!(a, Action::Reply { .. })), 0);
}

#[test]
fn the_request_timeout_sets_the_deadline_and_bad_ones_are_refused() {
    let mut sim = Sim::running(settings(4, 2));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 86_401.0] {
        let request = Request::Upgrade {
            binary: None,
            timeout_secs: Some(bad),
        };
        let (w, out) = sim.control(request);
        assert!(spawn_upgrades(&out).is_empty());
        assert_eq!(
            sim.error_of(w),
            "timeout_secs must be a number of seconds in (0, 86400]"
        );
    }
    let request = Request::Upgrade {
        binary: None,
        timeout_secs: Some(5.5),
    };
    sim.control(request);
    assert_eq!(
        sim.core.poll_timeout(),
        Some(sim.now + Duration::from_millis(5500))
    );
}

/// Asks for an upgrade on `sim` and checks it is refused with `why`.
fn refused(sim: &mut Sim, why: &str) {
    let (w, out) = sim.control(upgrade(None));
    assert!(spawn_upgrades(&out).is_empty(), "{out:?}");
    assert_eq!(sim.error_of(w), why);
    assert!(!sim.core.upgrading());
    // SIGUSR2 is refused the same way, in the log.
    let out = sim.signal(SignalEvent::Upgrade);
    assert!(spawn_upgrades(&out).is_empty());
    assert_eq!(logs(&out, Level::Warn), [format!("upgrade refused: {why}")]);
}

#[test]
fn refused_while_stopping() {
    let mut cfg = settings(6, 2);
    cfg.before_shutdown = true;
    let mut sim = Sim::running(cfg);
    sim.signal(SignalEvent::Stop);
    refused(&mut sim, "the cluster is stopping");
    sim.hook_done(Ok(()));
    refused(&mut sim, "the cluster is stopping");
}

#[test]
fn refused_while_starting() {
    let mut sim = Sim::new(settings(6, 2));
    sim.feed(Event::Start);
    refused(
        &mut sim,
        "the cluster is still starting; try again once it is ready",
    );
}

#[test]
fn refused_while_a_reload_runs() {
    let mut sim = Sim::running(settings(6, 2));
    sim.control(Request::Reload);
    refused(&mut sim, "a reload is in progress; try again when it ends");
}

#[test]
fn refused_while_a_reload_is_queued_behind_a_recycle() {
    let mut cfg = settings(6, 2);
    cfg.guards.max_requests = Some(10);
    let mut sim = Sim::running(cfg);
    assert_eq!(recycles(&sim.beat(0, 10)).len(), 1);
    refused(
        &mut sim,
        "a worker recycle is in progress; try again in a moment",
    );
    sim.control(Request::Reload);
    assert!(sim.core.queued.is_some());
    refused(&mut sim, "a reload is in progress; try again when it ends");
}

#[test]
fn refused_while_a_rollback_restores_old_workers() {
    let mut cfg = settings(5, 4);
    cfg.reload_batch = Some(1);
    let mut sim = Sim::running(cfg);
    sim.control(Request::Reload);
    for (new, old) in [(4, 0), (0, 1)] {
        sim.ready(new);
        sim.exit(old, Some(0));
    }
    sim.exit(1, Some(3));
    assert_eq!(sim.core.restoring, 1);
    refused(&mut sim, "a reload is in progress; try again when it ends");
}

#[test]
fn refused_without_enough_free_slots_naming_the_numbers() {
    let mut sim = Sim::running(settings(3, 2));
    refused(
        &mut sim,
        "an upgrade needs 2 free slots for the new master's workers and 1 are free \
         (--slots 3): raise --slots or scale down first",
    );
}

#[test]
fn refused_as_pid_1() {
    let mut cfg = settings(6, 2);
    let why = "the master runs as PID 1 and cannot hand over; restart the container instead";
    cfg.upgrade_refused = Some(why.into());
    let mut sim = Sim::running(cfg);
    refused(&mut sim, why);
}

#[test]
fn refused_while_the_last_failed_upgrade_holds_its_slots() {
    let (mut sim, w) = upgrading();
    sim.upgrade_failed("refused the state");
    assert_eq!(sim.report_of(w).outcome, Outcome::Rollback);
    refused(
        &mut sim,
        "the other master of the last upgrade still holds 4 slots while it stops; try again in a moment",
    );
    // Once it is gone, the same slots are lent again.
    sim.upgrade_gone();
    let (_, out) = sim.control(upgrade(None));
    assert_eq!(spawn_upgrades(&out)[0].1, [2, 3, 4, 5]);
}

#[test]
fn a_second_request_for_the_same_binary_joins_and_both_get_the_one_reply() {
    let (mut sim, a) = upgrading();
    let (b, out) = sim.control(upgrade(None));
    assert!(spawn_upgrades(&out).is_empty());
    assert!(logs(&out, Level::Info).iter().any(|l| l.contains("joined")));
    // SIGUSR2 joins too (nothing to answer).
    assert!(spawn_upgrades(&sim.signal(SignalEvent::Upgrade)).is_empty());
    assert!(sim.replies.is_empty());
    sim.upgrade_ready();
    sim.feed(Event::UpgradeCommitted);
    assert_eq!(sim.report_of(a), sim.report_of(b));
    assert_eq!(sim.report_of(a).outcome, Outcome::Success);
}

#[test]
fn a_request_for_another_binary_is_refused_and_the_first_goes_on() {
    let (mut sim, a) = upgrading();
    let (b, out) = sim.control(upgrade(Some("/opt/other")));
    assert!(spawn_upgrades(&out).is_empty());
    assert_eq!(
        sim.error_of(b),
        "an upgrade to another binary is under way; try again when it ends"
    );
    assert!(sim.core.upgrading());
    assert!(!sim.replies.contains_key(&a));
}

#[test]
fn ready_commits_exactly_once_and_the_ack_retires_this_master() {
    let (mut sim, w) = upgrading();
    let new_pid = sim.new_master.expect("started");
    sim.now += Duration::from_millis(1500);
    let out = sim.upgrade_ready();
    assert_eq!(count(&out, |a| matches!(a, Action::CommitUpgrade(_))), 1);
    assert!(!sim.replies.contains_key(&w));
    // A second ready changes nothing.
    let again = sim.upgrade_ready();
    assert_eq!(count(&again, |a| matches!(a, Action::CommitUpgrade(_))), 0);
    sim.now += Duration::from_millis(500);
    let out = sim.feed(Event::UpgradeCommitted);
    let want = UpgradeReport {
        outcome: Outcome::Success,
        from_pid: 1,
        to_pid: Some(new_pid),
        from_version: env!("CARGO_PKG_VERSION").into(),
        to_version: Some(VERSION.into()),
        duration_ms: 2000,
        reason: None,
    };
    assert_eq!(records(&out), std::slice::from_ref(&want));
    assert_eq!(sim.report_of(w), want);
    assert!(has(&out, |a| matches!(a, Action::Retire)));
    assert!(aborts(&out).is_empty());
    assert_eq!(drains(&out), [0, 1]);
    assert!(sim.core.retiring());
    assert_eq!(sim.core.phase, Phase::Stopping);
    // A second ack is nothing.
    assert!(records(&sim.feed(Event::UpgradeCommitted)).is_empty());
    sim.exit(0, Some(0));
    assert!(!sim.core.finished());
    sim.exit(1, Some(0));
    assert!(sim.core.finished());
}

#[test]
fn a_commit_ack_before_ready_is_a_broken_protocol_and_rolls_back() {
    let (mut sim, w) = upgrading();
    let out = sim.feed(Event::UpgradeCommitted);
    assert!(!has(&out, |a| matches!(a, Action::Retire)));
    rolled_back(
        &sim,
        w,
        &out,
        "the new master committed before it was asked to",
    );
    assert!(drains(&out).is_empty());
}

#[test]
fn a_failure_before_the_spawn_answer_frees_the_slots_at_once() {
    let mut sim = Sim::running(settings(6, 2));
    sim.auto_upgrade = false;
    let (w, _) = sim.control(upgrade(None));
    let out = sim.upgrade_failed("cannot exec /opt/flora/new: ENOENT");
    let report = rolled_back(&sim, w, &out, "cannot exec /opt/flora/new: ENOENT");
    assert_eq!((report.to_pid, report.to_version), (None, None));
    assert_eq!(sim.core.free_slots(), [2, 3, 4, 5]);
    assert_eq!(sim.core.poll_timeout(), None);
}

#[test]
fn a_failure_after_the_spawn_holds_the_slots_until_the_new_master_is_gone() {
    let (mut sim, w) = upgrading();
    let new_pid = sim.new_master;
    let out = sim.upgrade_failed("the new master refused the state: layout differs");
    let report = rolled_back(
        &sim,
        w,
        &out,
        "the new master refused the state: layout differs",
    );
    assert_eq!((report.to_pid, report.to_version), (new_pid, None));
    assert!(sim.core.free_slots().is_empty());
    // A scale up finds no free slot meanwhile (nothing spawns into a held one).
    let (s, out) = sim.control(Request::Scale { workers: 3 });
    assert!(spawns(&out).is_empty());
    assert!(sim.error_of(s).starts_with("not enough free slots: 0 free"));
    sim.upgrade_gone();
    assert_eq!(sim.core.free_slots(), [2, 3, 4, 5]);
    // A reload now uses them.
    let (r, out) = sim.control(Request::Reload);
    assert_eq!(spawns(&out), [(2, 2), (3, 2)]);
    sim.ready_all();
    assert_eq!(sim.reload_reason(r), "success");
}

#[test]
fn a_failure_after_ready_aborts_the_commit() {
    let (mut sim, w) = upgrading();
    sim.upgrade_ready();
    let out = sim.upgrade_failed("the new master hung up");
    let report = rolled_back(&sim, w, &out, "the new master hung up");
    assert_eq!(report.to_version.as_deref(), Some(VERSION));
    assert!(drains(&out).is_empty());
    // A late ack of the aborted commit is nothing.
    let late = sim.feed(Event::UpgradeCommitted);
    assert!(!has(&late, |a| matches!(a, Action::Retire)));
    assert!(records(&late).is_empty());
}

#[test]
fn the_new_master_exiting_rolls_back_and_frees_the_slots() {
    let (mut sim, w) = upgrading();
    let out = sim.upgrade_gone();
    rolled_back(&sim, w, &out, "the new master exited");
    assert_eq!(sim.core.free_slots(), [2, 3, 4, 5]);
}

#[test]
fn the_handover_deadline_rolls_back_naming_the_wait() {
    let (mut sim, w) = upgrading();
    let pid = sim.new_master.expect("started");
    sim.advance(HANDOVER - Duration::from_millis(1));
    assert!(sim.core.upgrading());
    let out = sim.advance(Duration::from_millis(1));
    let reason = format!("the new master (pid {pid}) was not ready within 40.0 s");
    rolled_back(&sim, w, &out, &reason);
}

#[test]
fn the_handover_deadline_before_the_spawn_answer_names_no_pid() {
    let mut sim = Sim::running(settings(6, 2));
    sim.auto_upgrade = false;
    let (w, _) = sim.control(upgrade(None));
    let out = sim.advance(HANDOVER);
    rolled_back(&sim, w, &out, "the new master was not ready within 40.0 s");
}

#[test]
fn the_commit_deadline_rolls_back() {
    let (mut sim, w) = upgrading();
    sim.now += Duration::from_secs(5);
    sim.upgrade_ready();
    let commit = sim.now + Duration::from_secs(10);
    assert_eq!(sim.core.poll_timeout(), Some(commit));
    sim.advance(Duration::from_secs(9));
    assert!(sim.core.upgrading());
    let out = sim.advance(Duration::from_secs(1));
    rolled_back(
        &sim,
        w,
        &out,
        "the new master did not take over within 10 s of the commit",
    );
}
