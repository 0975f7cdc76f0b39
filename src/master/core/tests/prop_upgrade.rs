//! Master upgrades under random events: requests (control socket or SIGUSR2, the own binary
//! or another), the shell's answers in any order it can send them (a spawn answered once,
//! ready and the ack racing with a rollback or stray, failures, the new master's exit) among
//! every other event of `prop.rs`. After every step: one coordinator (an upgrade never runs
//! with a reload, a queued reload, a restore or a recycle), an upgrade always has its
//! deadline in `poll_timeout`, held slots have no owner and no worker, nothing spawns into a
//! lent or held slot (`Sim::check`), every waiter gets one reply. Without a stop, every
//! upgrade ends and its slots come back once the new master is gone.

use proptest::prelude::*;

use super::prop::{
    apply_checked, check_state, guards, op_with, settle_running, stop_and_settle, Op, SLOTS,
};
use super::*;
use crate::control::Outcome;

/// A master upgrade's request or one of the shell's answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum UpgradeOp {
    /// A request on the control socket (to another binary, or the own).
    Request(bool),
    Signal,
    /// Whether the shell answers `SpawnUpgrade` at once.
    Auto(bool),
    /// A pending `SpawnUpgrade` is answered: started, or failed.
    Spawned(bool),
    Ready,
    Committed,
    Failed,
    /// The new master exits.
    Gone,
}

/// Upgrade ops, weighted so that some upgrades commit and most roll back.
pub(super) fn op() -> impl Strategy<Value = UpgradeOp> {
    let mostly = || proptest::bool::weighted(0.8);
    prop_oneof![
        4 => proptest::bool::weighted(0.2).prop_map(UpgradeOp::Request),
        2 => Just(UpgradeOp::Signal),
        1 => mostly().prop_map(UpgradeOp::Auto),
        4 => mostly().prop_map(UpgradeOp::Spawned),
        5 => Just(UpgradeOp::Ready),
        4 => Just(UpgradeOp::Committed),
        2 => Just(UpgradeOp::Failed),
        2 => Just(UpgradeOp::Gone),
    ]
}

/// Feeds `op`, only when the shell could: a spawn answered once, ready and the ack from a
/// started new master (racing with a rollback, or stray), a failure while it may be
/// starting, its exit before it took over.
pub(super) fn apply(sim: &mut Sim, op: UpgradeOp) {
    let pending = sim.lent.is_some() && sim.new_master.is_none() && sim.core.upgrading();
    let started = sim.new_master.is_some() && !sim.core.retiring();
    match op {
        UpgradeOp::Request(other) => {
            let binary = other.then_some("/opt/other");
            drop(sim.control(super::upgrade::upgrade(binary)));
        }
        UpgradeOp::Signal => drop(sim.signal(SignalEvent::Upgrade)),
        UpgradeOp::Auto(on) => sim.auto_upgrade = on,
        UpgradeOp::Spawned(true) if pending => {
            let pid = sim.next_pid;
            sim.next_pid += 1;
            sim.new_master = Some(pid);
            drop(sim.feed(Event::UpgradeSpawned { pid }));
        }
        UpgradeOp::Spawned(false) if pending => {
            let reason = "cannot exec the new master".to_string();
            drop(sim.feed(Event::UpgradeFailed { reason }));
        }
        UpgradeOp::Ready if started => {
            let version = "9.9.9".to_string();
            drop(sim.feed(Event::UpgradeReady { version }));
        }
        UpgradeOp::Committed if started => drop(sim.feed(Event::UpgradeCommitted)),
        UpgradeOp::Failed if started => {
            let reason = "the new master hung up".to_string();
            drop(sim.feed(Event::UpgradeFailed { reason }));
        }
        UpgradeOp::Gone if started => drop(sim.upgrade_gone()),
        _ => {}
    }
}

/// After a stop and every worker's exit: a new master that did not take over exits too
/// (after its abort); the master is not finished before.
pub(super) fn gone_after_stop(sim: &mut Sim) {
    if sim.new_master.is_some() && !sim.core.retiring() {
        assert!(
            !sim.core.finished(),
            "finished before the new master is gone"
        );
        sim.upgrade_gone();
    }
}

/// A rolled-back new master exits.
pub(super) fn gone_after_rollback(sim: &mut Sim) {
    if sim.new_master.is_some() && !sim.core.upgrading() && !sim.core.retiring() {
        sim.upgrade_gone();
    }
}

/// One coordinator: an upgrade runs alone (no reload, queued reload, restore or recycle)
/// and always has a deadline; held slots have no owner and no worker; a retiring master
/// stops.
pub(super) fn check(sim: &Sim) {
    let c = &sim.core;
    if let Some(tx) = &c.upgrade {
        assert!(c.reload.is_none(), "a reload and an upgrade at once");
        assert!(c.queued.is_none(), "a reload queued behind an upgrade");
        assert_eq!(c.restoring, 0, "a restore during an upgrade");
        assert!(c.recycles.is_empty(), "a recycle during an upgrade");
        let due = c.poll_timeout();
        assert!(due.is_some_and(|t| t <= tx.deadline), "no upgrade deadline");
    }
    for &slot in &c.held {
        assert!(c.owner[slot].is_none(), "held slot {slot} owned");
        assert!(
            !c.workers.contains_key(&slot),
            "a worker in held slot {slot}"
        );
    }
    if c.retiring() {
        assert_eq!(c.stop, Stop::Stopping, "retiring without stopping");
    }
}

/// A core with 1 or 2 workers in [`SLOTS`] slots (room for an upgrade), running.
fn cluster(workers: usize, guards: Option<super::super::Guards>, batch: Option<usize>) -> Sim {
    let mut cfg = settings(SLOTS, workers);
    cfg.guards = guards.unwrap_or_default();
    cfg.reload_batch = batch;
    Sim::running(cfg)
}

/// Upgrades recorded with `outcome` so far.
fn upgrades(sim: &Sim, outcome: Outcome) -> usize {
    let mine = |a: &&Action| matches!(a, Action::RecordUpgrade(r) if r.outcome == outcome);
    sim.all.iter().filter(mine).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn upgrades_under_random_events_keep_the_invariants(
        ops in proptest::collection::vec(op_with(1, 8), 0..80),
        workers in 1..=2usize,
        guards in guards(),
        reload_batch in proptest::option::of(1..=2usize),
    ) {
        let mut sim = cluster(workers, guards, reload_batch);
        let mut generation = 0;
        for op in ops {
            apply_checked(&mut sim, op);
            check_state(&sim, &mut generation);
        }
        stop_and_settle(&mut sim);
        // Every upgrade ended once: a record each.
        let spawned = sim.all.iter().filter(|a| matches!(a, Action::SpawnUpgrade { .. })).count();
        let ended = upgrades(&sim, Outcome::Success) + upgrades(&sim, Outcome::Rollback);
        prop_assert_eq!(spawned, ended);
        prop_assert!(upgrades(&sim, Outcome::Success) <= 1, "a retired master upgraded again");
    }

    #[test]
    fn without_a_stop_every_upgrade_ends_and_its_slots_come_back(
        ops in proptest::collection::vec(
            op_with(1, 8).prop_filter("no stop", |o| !matches!(o, Op::Stop | Op::SignalStop)),
            0..80,
        ),
        workers in 1..=2usize,
        guards in guards(),
    ) {
        let mut sim = cluster(workers, guards, None);
        for op in ops {
            apply_checked(&mut sim, op);
        }
        settle_running(&mut sim);
        for w in &sim.waiters {
            prop_assert_eq!(sim.replies.get(w).map(Vec::len), Some(1), "{:?} unanswered", w);
        }
        prop_assert!(!sim.core.upgrading(), "an upgrade never ends");
        if sim.core.retiring() {
            // Handed over: this master only drains.
            prop_assert_eq!(upgrades(&sim, Outcome::Success), 1);
            prop_assert!(sim.live.is_empty() || sim.core.stop == Stop::Stopping);
        } else {
            prop_assert!(sim.core.held.is_empty(), "slots held after the new master is gone");
            let g = sim.core.generation();
            let serving = sim.core.workers.values().filter(|w| w.generation == g && w.ready && !w.draining).count();
            prop_assert_eq!(serving, sim.core.target(), "target not restored");
        }
    }
}
