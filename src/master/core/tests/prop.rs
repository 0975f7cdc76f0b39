//! Random event sequences: after every step the invariants of [`Sim::check`] hold (one
//! process per slot, one reply per waiter, no spawn once stopping began, the generation
//! never goes back), the core's workers are the live processes, and a stop followed by
//! every exit finishes the master with every waiter answered. Without a stop (which answers
//! every waiter with "stopping" and so hides a stranded one), a settled core has answered
//! every waiter, ended every reload and restored its worker count.

use proptest::prelude::*;

use super::*;

const SLOTS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
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
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let mostly = || proptest::bool::weighted(0.8);
    prop_oneof![
        8 => slot.clone().prop_map(Op::Ready),
        8 => Just(Op::ReadyAll),
        3 => slot.clone().prop_map(Op::Crash),
        1 => slot.clone().prop_map(Op::Killed),
        1 => slot.prop_map(Op::Broken),
        4 => (0..500u64).prop_map(Op::Advance),
        2 => (0..40_000u64).prop_map(Op::Advance),
        4 => Just(Op::Reload),
        2 => Just(Op::SignalReload),
        2 => (1..=SLOTS).prop_map(Op::Scale),
        1 => Just(Op::Status),
        6 => mostly().prop_map(Op::Prepared),
        5 => mostly().prop_map(Op::HookDone),
        1 => mostly().prop_map(|ok| Op::SpawnsFail(!ok)),
        // Stops end the interesting part: rarer than the rest.
        1 => Just(Op::Stop),
        1 => Just(Op::SignalStop),
    ]
}

fn apply(sim: &mut Sim, op: Op) {
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
        _ => {}
    }
}

/// The core's workers are exactly the live processes, and no spawn is left unanswered.
fn check_state(sim: &Sim, generation: &mut u64) {
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
fn stop_and_settle(sim: &mut Sim) {
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
    sim.exit_all();
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
    ) {
        let mut cfg = settings(SLOTS, workers);
        cfg.before_reload = before_reload;
        cfg.before_shutdown = before_shutdown;
        let mut sim = if running { Sim::running(cfg) } else { Sim::new(cfg) };
        sim.auto_prepare = auto_prepare;
        if !running {
            sim.feed(Event::Start);
        }
        let mut generation = 0;
        for op in ops {
            apply(&mut sim, op);
            check_state(&sim, &mut generation);
        }
        stop_and_settle(&mut sim);
    }
}

/// Without a stop: every hook and copy finishes, spawns work, workers get ready and drained
/// ones exit, time passes. Then every waiter has its answer, no reload is left and every
/// slot of the serving generation has a ready worker.
fn settle_running(sim: &mut Sim) {
    sim.spawn_error = None;
    for _ in 0..200 {
        while !sim.hooks.is_empty() {
            sim.hook_done(Ok(()));
        }
        while !sim.prepares.is_empty() {
            sim.prepared(Ok(()));
        }
        sim.ready_all();
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
    ) {
        let mut cfg = settings(SLOTS, workers);
        cfg.before_reload = before_reload;
        let mut sim = Sim::running(cfg);
        sim.auto_prepare = auto_prepare;
        for op in ops {
            apply(&mut sim, op);
        }
        settle_running(&mut sim);
        if sim.core.stop == super::super::Stop::No {
            for w in &sim.waiters {
                prop_assert_eq!(sim.replies.get(w).map(Vec::len), Some(1), "{:?} unanswered", w);
            }
            prop_assert!(sim.core.reload.is_none(), "a reload never ends");
            let g = sim.core.generation();
            let serving = sim.core.workers.values().filter(|w| w.generation == g && w.ready && !w.draining).count();
            prop_assert_eq!(serving, sim.core.target(), "target not restored");
        }
    }
}
