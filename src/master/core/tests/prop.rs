//! Random event sequences: after every step the invariants of [`Sim::check`] hold (one
//! process per slot, one reply per waiter, no spawn once stopping began, the generation
//! never goes back, every SIGKILL of a live worker comes after its one kill record unless a
//! broken channel or a second stop asked for it), the core's workers are the live
//! processes, at most `max_recycling` recycles run, a recycle never lowers the ready workers
//! of the serving generation below the target, and a stop followed by every exit finishes
//! the master with every waiter answered. Without a stop (which answers every waiter with
//! "stopping" and so hides a stranded one), a settled core has answered every waiter, ended
//! every reload and restored its worker count (after a rolling rollback too). With a random
//! `reload_batch` K, a rolling reload and the restore after its rollback keep at most
//! target + K live workers that are not draining. Random canary reloads (good or bad
//! figures): before the verdict the old generation owns all its slots and no batch is done;
//! their peak is target + the canaries. The guards are on in most cases: random
//! heartbeats, memory samples and ticks drive kills and recycles.

use proptest::prelude::*;

use super::super::Guards;
use super::prop_upgrade;
use super::*;

pub(super) const SLOTS: usize = 4;

#[derive(Debug, Clone)]
pub(super) enum Op {
    Ready(usize),
    ReadyAll,
    Crash(usize),
    Killed(usize),
    Broken(usize),
    Advance(u64),
    Reload,
    SignalReload,
    Scale(usize),
    Stop,
    SignalStop,
    Status,
    Prepared(bool),
    HookDone(bool),
    SpawnsFail(bool),
    /// A heartbeat with this many more requests.
    Beat(usize, u64),
    /// A memory sample, over the limit or not.
    Sample(usize, bool),
    /// Every SIGKILLed process exits.
    Reap,
    /// Every draining worker exits.
    Drained,
    /// A canary reload of this many workers (1 s window).
    Canary(usize),
    /// The next canary is judged on bad figures, or good ones.
    CanaryBad(bool),
    /// A load sample: busy workers, queued connections (autoscaling's signal).
    Load(usize, u64),
    /// A master upgrade's request or one of the shell's answers.
    Upgrade(prop_upgrade::UpgradeOp),
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    op_with(4, 2)
}

/// Ops with reloads weighted `reloads` (reload signals half as much, rounded up) and
/// upgrade requests and answers about `upgrades` each.
pub(super) fn op_with(reloads: u32, upgrades: u32) -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let mostly = || proptest::bool::weighted(0.8);
    prop_oneof![
        8 => slot.clone().prop_map(Op::Ready),
        8 => Just(Op::ReadyAll),
        3 => slot.clone().prop_map(Op::Crash),
        1 => slot.clone().prop_map(Op::Killed),
        1 => slot.clone().prop_map(Op::Broken),
        4 => (0..500u64).prop_map(Op::Advance),
        2 => (0..40_000u64).prop_map(Op::Advance),
        reloads => Just(Op::Reload),
        reloads.div_ceil(2) => Just(Op::SignalReload),
        reloads.div_ceil(2) => (1..=2usize).prop_map(Op::Canary),
        1 => any::<bool>().prop_map(Op::CanaryBad),
        2 => (1..=SLOTS).prop_map(Op::Scale),
        1 => Just(Op::Status),
        6 => mostly().prop_map(Op::Prepared),
        5 => mostly().prop_map(Op::HookDone),
        1 => mostly().prop_map(|ok| Op::SpawnsFail(!ok)),
        10 => (slot.clone(), 0..30u64).prop_map(|(s, n)| Op::Beat(s, n)),
        10 => (slot.clone(), proptest::bool::weighted(0.7)).prop_map(|(s, o)| Op::Sample(s, o)),
        2 => Just(Op::Reap),
        3 => Just(Op::Drained),
        // Stops end the interesting part: rarer than the rest.
        1 => Just(Op::Stop),
        1 => Just(Op::SignalStop),
        // A commit ends the interesting part too.
        upgrades * 6 => prop_upgrade::op().prop_map(Op::Upgrade),
    ]
}

pub(super) fn apply(sim: &mut Sim, op: Op) {
    let live = |sim: &Sim, slot| sim.live.contains_key(&slot);
    match op {
        Op::Ready(slot) if live(sim, slot) => drop(sim.ready(slot)),
        Op::ReadyAll => drop(sim.ready_all()),
        Op::Crash(slot) if live(sim, slot) => drop(sim.exit(slot, Some(1))),
        Op::Killed(slot) if live(sim, slot) => drop(sim.exit(slot, None)),
        Op::Broken(slot) if live(sim, slot) => {
            let (pid, error) = (sim.pid(slot), "garbage".to_string());
            sim.feed(Event::WorkerBroken { slot, pid, error });
        }
        Op::Advance(ms) => drop(sim.advance(Duration::from_millis(ms))),
        Op::Reload => drop(sim.control(Request::Reload)),
        Op::SignalReload => drop(sim.signal(SignalEvent::Reload)),
        Op::Canary(k) => drop(sim.control(Request::canary(k, 1.0))),
        Op::CanaryBad(bad) => {
            let errors = if bad { 50 } else { 0 };
            sim.canary_figures.1 = crate::canary::GenerationFigures::new(0, 100, errors, None);
        }
        Op::Scale(workers) => drop(sim.control(Request::Scale { workers })),
        Op::Stop => drop(sim.control(Request::Stop)),
        Op::SignalStop => drop(sim.signal(SignalEvent::Stop)),
        Op::Status => drop(sim.control(Request::Status)),
        Op::Prepared(ok) if !sim.prepares.is_empty() => {
            drop(sim.prepared(if ok {
                Ok(())
            } else {
                Err("copy failed".into())
            }));
        }
        Op::HookDone(ok) if !sim.hooks.is_empty() => {
            drop(sim.hook_done(if ok {
                Ok(())
            } else {
                Err("hook failed".into())
            }));
        }
        Op::SpawnsFail(fail) => sim.spawn_error = fail.then(|| "spawn failed".into()),
        Op::Beat(slot, more) if live(sim, slot) => drop(sim.beat(slot, more)),
        Op::Sample(slot, over) if live(sim, slot) => {
            drop(sim.sample(slot, if over { MEMORY + 1 } else { MEMORY }));
        }
        Op::Reap => reap(sim),
        Op::Upgrade(op) => prop_upgrade::apply(sim, op),
        Op::Load(busy, queued) => {
            let in_flight = busy as u64;
            drop(sim.feed(Event::Load {
                busy,
                in_flight,
                queued,
            }));
        }
        Op::Drained => {
            let gone: Vec<usize> = sim
                .core
                .workers
                .iter()
                .filter(|(_, w)| w.draining)
                .map(|(s, _)| *s)
                .collect();
            for slot in gone {
                sim.exit(slot, Some(0));
            }
        }
        _ => {}
    }
}

/// Every process that got SIGKILL exits.
fn reap(sim: &mut Sim) {
    let dead: Vec<usize> = sim
        .live
        .iter()
        .filter(|(_, pid)| sim.sigkilled.contains(pid))
        .map(|(slot, _)| *slot)
        .collect();
    for slot in dead {
        sim.exit(slot, None);
    }
}

/// The memory limit of the random guards.
const MEMORY: u64 = 100;

/// Random guards: each one on or off; `None` for none at all.
pub(super) fn guards() -> impl Strategy<Value = Option<Guards>> {
    let secs = |r: std::ops::Range<u64>| r.prop_map(Duration::from_secs);
    let on = (
        // At least 2 s: the settling loop beats every second.
        proptest::option::weighted(0.5, secs(2..6)),
        proptest::option::weighted(0.8, 1..=3u32),
        proptest::option::weighted(0.8, (5..40u64, 0..10u64)),
        proptest::option::of((secs(5..120), secs(0..30))),
        1..=2usize,
    )
        .prop_map(
            |(heartbeat, samples, requests, age, max_recycling)| Guards {
                heartbeat_timeout: heartbeat,
                max_memory: samples.map(|_| MEMORY),
                memory_samples: samples.unwrap_or(3),
                max_requests: requests.map(|r| r.0),
                max_requests_jitter: requests.map_or(0, |r| r.1),
                max_age: age.map(|a| a.0),
                max_age_jitter: age.map_or(Duration::ZERO, |a| a.1),
                max_recycling,
            },
        );
    proptest::option::weighted(0.8, on)
}

/// Ready, not draining workers of the serving generation (and of a rolling reload's new
/// one: its ready batches serve too).
fn serving(sim: &Sim) -> usize {
    let g = sim.core.generation();
    let rolling = sim.core.reload.as_ref().is_some_and(|r| r.batch.is_some());
    let new = sim.core.reload.as_ref().map(|r| r.generation);
    let mine = |gen: u64| gen == g || (rolling && Some(gen) == new);
    let ok = |w: &&super::super::Worker| w.ready && !w.draining && mine(w.generation);
    sim.core.workers.values().filter(ok).count()
}

/// Reloads rolled back so far.
fn rollbacks(sim: &Sim) -> usize {
    let rolled = |a: &&Action| matches!(a, Action::RecordReload(r) if r.outcome == crate::control::Outcome::Rollback);
    sim.all.iter().filter(rolled).count()
}

/// During a rolling reload (and the restore after its rollback), at most target + K live
/// workers are not draining.
fn check_peak(sim: &Sim) {
    let canary = sim.core.reload.as_ref().and_then(|r| r.canary.as_ref());
    let Some(k) = canary.map(|c| c.spec.workers).or(sim.core.cfg.reload_batch) else {
        return;
    };
    if sim.core.reload.is_none() && sim.core.restoring == 0 {
        return;
    }
    let live = sim.core.workers.values().filter(|w| !w.draining).count();
    let peak = sim.core.target() + k;
    assert!(
        live <= peak,
        "{live} live workers not draining, over {peak}"
    );
}

/// Between reloads and recycles, the serving generation owns the target's slots, less the
/// old workers a rollback still has to respawn.
fn check_owned(sim: &Sim) {
    let c = &sim.core;
    let idle = c.reload.is_none() && c.recycles.is_empty() && c.start_deadline.is_none();
    if !idle || c.stop != Stop::No {
        return;
    }
    let g = c.generation();
    let owned = c.owner.iter().filter(|o| **o == Some(g)).count();
    assert_eq!(
        owned + c.restoring,
        c.target(),
        "slots of the serving generation"
    );
}

/// A canary before its verdict never retires an old worker: the old generation owns the
/// target's slots (its crashed workers are respawned in place).
fn check_canary(sim: &Sim) {
    let c = &sim.core;
    let Some(tx) = c.reload.as_ref().filter(|r| r.observing()) else {
        return;
    };
    let old = tx.canary.as_ref().expect("observing is a canary's").old;
    assert_eq!(old, c.generation(), "compared with the serving generation");
    let owned = c.owner.iter().filter(|o| **o == Some(old)).count();
    assert_eq!(
        owned,
        c.target(),
        "an old worker retired before the verdict"
    );
    assert!(tx.done.is_empty(), "no batch done before the verdict");
}

/// Ops after which the serving workers can only fall because of a recycle (no exit, no
/// scale, no stop).
fn keeps_serving(op: &Op) -> bool {
    !matches!(
        op,
        Op::Crash(_)
            | Op::Killed(_)
            | Op::Broken(_)
            | Op::Scale(_)
            | Op::Stop
            | Op::SignalStop
            | Op::Reap
            | Op::Drained
            | Op::Load(..)
    )
}

/// Applies `op` and checks the recycles' invariants around it.
pub(super) fn apply_checked(sim: &mut Sim, op: Op) {
    let (before, generation) = (serving(sim), sim.core.generation());
    let stop = sim.core.stop;
    let neutral = keeps_serving(&op);
    let rolled_back = rollbacks(sim);
    apply(sim, op);
    check_peak(sim);
    check_owned(sim);
    check_canary(sim);
    prop_upgrade::check(sim);
    // A rollback drains the ready new workers: the floor below is for the rest.
    let neutral = neutral && rollbacks(sim) == rolled_back;
    let max = sim.core.cfg.guards.max_recycling;
    assert!(sim.core.recycles.len() <= max, "more than {max} recycles");
    for (old, r) in &sim.core.recycles {
        assert!(
            sim.core.workers.contains_key(old),
            "recycle of a gone worker"
        );
        let owner = sim.core.owner[r.replacement];
        assert_eq!(
            owner,
            Some(sim.core.generation()),
            "a replacement of another generation"
        );
    }
    let same = sim.core.generation() == generation && stop == Stop::No;
    if neutral && same && sim.core.stop == Stop::No {
        let floor = before.min(sim.core.target());
        assert!(
            serving(sim) >= floor,
            "serving fell from {before} to {}",
            serving(sim)
        );
    }
}

/// The core's workers are exactly the live processes, and no spawn is left unanswered.
pub(super) fn check_state(sim: &Sim, generation: &mut u64) {
    let known: BTreeMap<usize, u32> = sim
        .core
        .workers
        .iter()
        .map(|(slot, w)| (*slot, w.pid.expect("every spawn answered")))
        .collect();
    assert_eq!(known, sim.live);
    assert!(sim.live.len() <= SLOTS);
    assert!(sim.core.generation() >= *generation, "generation went back");
    *generation = sim.core.generation();
}

/// Stop, let every hook and copy finish and every timer fire, every process exit: the
/// master must be done.
pub(super) fn stop_and_settle(sim: &mut Sim) {
    sim.signal(SignalEvent::Stop);
    while !sim.hooks.is_empty() || !sim.prepares.is_empty() {
        if sim.hooks.is_empty() {
            sim.prepared(Ok(()));
        } else {
            sim.hook_done(Ok(()));
        }
    }
    // Every timer left fires: nothing may spawn any more.
    sim.advance(Duration::from_secs(60));
    // A stop that waited for an upgrade's commit runs its hook only now.
    while let Some(_hook) = sim.hooks.front() {
        sim.hook_done(Ok(()));
    }
    sim.advance(Duration::from_secs(60));
    sim.exit_all();
    prop_upgrade::gone_after_stop(sim);
    assert!(
        sim.core.finished(),
        "not finished after a stop and every exit"
    );
    sim.advance(Duration::from_secs(60));
    for w in &sim.waiters {
        assert_eq!(
            sim.replies.get(w).map(Vec::len),
            Some(1),
            "{w:?} unanswered"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_event_sequences_keep_the_invariants(
        ops in proptest::collection::vec(op(), 0..80),
        before_reload in any::<bool>(),
        before_shutdown in any::<bool>(),
        workers in 1..=3usize,
        running in any::<bool>(),
        auto_prepare in any::<bool>(),
        guards in guards(),
        reload_batch in proptest::option::of(1..=3usize),
    ) {
        let mut cfg = settings(SLOTS, workers);
        cfg.reload_batch = reload_batch;
        cfg.before_reload = before_reload;
        cfg.before_shutdown = before_shutdown;
        cfg.guards = guards.unwrap_or_default();
        let mut sim = if running { Sim::running(cfg) } else { Sim::new(cfg) };
        sim.auto_prepare = auto_prepare;
        if !running {
            sim.feed(Event::Start);
        }
        let mut generation = 0;
        for op in ops {
            apply_checked(&mut sim, op);
            check_state(&sim, &mut generation);
        }
        stop_and_settle(&mut sim);
    }
}

/// Without a stop: every hook and copy finishes, spawns work, workers get ready, beat and
/// stay under the memory limit, drained and SIGKILLed ones exit, time passes. Then every
/// waiter has its answer, no reload is left and every slot of the serving generation has a
/// ready worker.
pub(super) fn settle_running(sim: &mut Sim) {
    sim.spawn_error = None;
    for _ in 0..200 {
        while !sim.hooks.is_empty() {
            sim.hook_done(Ok(()));
        }
        while !sim.prepares.is_empty() {
            sim.prepared(Ok(()));
        }
        sim.ready_all();
        // Live workers beat and stay under the memory limit: no new kills.
        let slots: Vec<usize> = sim.live.keys().copied().collect();
        for slot in slots {
            sim.beat(slot, 0);
            sim.sample(slot, MEMORY);
        }
        reap(sim);
        apply(sim, Op::Drained);
        prop_upgrade::gone_after_rollback(sim);
        sim.advance(Duration::from_secs(1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn without_a_stop_every_waiter_is_answered_and_the_target_restored(
        ops in proptest::collection::vec(op().prop_filter("no stop", |o| !matches!(o, Op::Stop | Op::SignalStop)), 0..80),
        before_reload in any::<bool>(),
        workers in 1..=3usize,
        auto_prepare in any::<bool>(),
        guards in guards(),
        reload_batch in proptest::option::of(1..=3usize),
    ) {
        let mut cfg = settings(SLOTS, workers);
        cfg.reload_batch = reload_batch;
        cfg.before_reload = before_reload;
        cfg.guards = guards.unwrap_or_default();
        let mut sim = Sim::running(cfg);
        sim.auto_prepare = auto_prepare;
        for op in ops {
            apply_checked(&mut sim, op);
        }
        settle_running(&mut sim);
        if sim.core.stop == super::super::Stop::No {
            for w in &sim.waiters {
                prop_assert_eq!(sim.replies.get(w).map(Vec::len), Some(1), "{:?} unanswered", w);
            }
            prop_assert!(sim.core.reload.is_none(), "a reload never ends");
            prop_assert!(!sim.core.upgrading(), "an upgrade never ends");
            prop_assert!(sim.core.held.is_empty(), "slots held after the new master is gone");
            // After a rollback too: the old workers its batches retired are back.
            prop_assert_eq!(sim.core.restoring, 0, "old workers not restored");
            let g = sim.core.generation();
            let serving = sim.core.workers.values().filter(|w| w.generation == g && w.ready && !w.draining).count();
            prop_assert_eq!(serving, sim.core.target(), "target not restored");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The guards always on and reloads rare, so that most sequences kill and recycle.
    #[test]
    fn guards_under_random_events_keep_the_invariants(
        ops in proptest::collection::vec(op_with(1, 1), 0..80),
        workers in 1..=3usize,
        guards in guards().prop_filter("guards on", Option::is_some),
    ) {
        let mut cfg = settings(SLOTS, workers);
        cfg.guards = guards.unwrap_or_default();
        let mut sim = Sim::running(cfg);
        let mut generation = 0;
        for op in ops {
            apply_checked(&mut sim, op);
            check_state(&sim, &mut generation);
        }
        stop_and_settle(&mut sim);
    }
}
