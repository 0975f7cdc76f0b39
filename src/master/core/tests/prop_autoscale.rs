//! Autoscaling under random events: the target stays within the bounds and the slots, and
//! every invariant of `prop.rs` holds with load samples among the events, and each change of
//! the target has exactly one scale record in its direction (the counts are exact). Under a constant
//! signal the target moves one way only, then stays: no scale-up and scale-down both.

use proptest::prelude::*;

use super::super::{Autoscale, ScaleDirection};
use super::prop::{apply_checked, check_state, op, stop_and_settle, Op, SLOTS};
use super::*;

const SAMPLE: Duration = Duration::from_millis(250);

/// Random ops with load samples weighted in, and time passing in sample steps.
fn auto_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => op(),
        4 => (0..=SLOTS + 1, proptest::bool::weighted(0.2))
            .prop_map(|(busy, q)| Op::Load(busy, u64::from(q))),
        2 => Just(Op::Advance(250)),
    ]
}

/// Bounds `(min, max, start)` that fit in [`SLOTS`].
fn bounds() -> impl Strategy<Value = (usize, usize, usize)> {
    (1..=SLOTS)
        .prop_flat_map(|max| (1..=max, Just(max)))
        .prop_flat_map(|(min, max)| (Just(min), Just(max), min..=max))
}

fn auto(min: usize, max: usize, start: usize, idle_ms: u64) -> Settings {
    let mut cfg = settings(SLOTS, start);
    let idle = Duration::from_millis(idle_ms);
    cfg.autoscale = Some(Autoscale::new(min, max, idle));
    cfg
}

/// The directions of the scale records so far.
fn directions(sim: &Sim) -> Vec<ScaleDirection> {
    sim.all
        .iter()
        .filter_map(|a| match a {
            Action::RecordScale { direction, .. } => Some(*direction),
            _ => None,
        })
        .collect()
}

/// The directions of the target's changes so far (`SetTarget` to another value).
fn changes(sim: &Sim) -> Vec<ScaleDirection> {
    let mut last = None;
    let mut out = Vec::new();
    for a in &sim.all {
        if let Action::SetTarget(n) = a {
            match last {
                Some(l) if *n > l => out.push(ScaleDirection::Up),
                Some(l) if *n < l => out.push(ScaleDirection::Down),
                _ => {}
            }
            last = Some(*n);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_target_stays_within_the_bounds_and_the_slots(
        ops in proptest::collection::vec(auto_op(), 0..120),
        (min, max, start) in bounds(),
        idle_ms in 500..5_000u64,
        reload_batch in proptest::option::of(1..=2usize),
    ) {
        let mut cfg = auto(min, max, start, idle_ms);
        cfg.reload_batch = reload_batch;
        let mut sim = Sim::running(cfg);
        let mut generation = 0;
        for op in ops {
            apply_checked(&mut sim, op);
            check_state(&sim, &mut generation);
            let target = sim.core.target();
            prop_assert!((min..=max).contains(&target), "target {} out of {}..={}", target, min, max);
            prop_assert!(target <= SLOTS);
            // Every change of the target is recorded once, in its direction.
            prop_assert_eq!(changes(&sim), directions(&sim));
        }
        stop_and_settle(&mut sim);
    }

    #[test]
    fn a_constant_signal_never_scales_both_ways(
        (min, max, start) in bounds(),
        busy in 0..=SLOTS + 2,
        extra in 0..12u64,
        queued in proptest::bool::weighted(0.2),
        idle_ms in 500..5_000u64,
        samples in 20..400usize,
        slow_ready in any::<bool>(),
    ) {
        let mut sim = Sim::running(auto(min, max, start, idle_ms));
        let queued = u64::from(queued);
        // At least one request per busy worker, maybe many (keep-alive clients).
        let in_flight = busy as u64 + extra;
        for i in 0..samples {
            sim.now += SAMPLE;
            sim.feed(Event::Load { busy, in_flight, queued });
            // New workers get ready at once, or every few samples.
            if !slow_ready || i % 5 == 0 {
                sim.ready_all();
            }
        }
        let dirs = directions(&sim);
        let ups = dirs.iter().filter(|d| **d == ScaleDirection::Up).count();
        prop_assert!(ups == 0 || ups == dirs.len(), "up and down under a constant signal: {:?}", dirs);
        prop_assert!((min..=max).contains(&sim.core.target()));
    }
}
