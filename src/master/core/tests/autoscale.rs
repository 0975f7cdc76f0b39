//! Autoscaling: up after a sustained load (in flight per ready worker, or a queue), the
//! cooldown, down after an idle window, the bounds, refusals tried again later, manual
//! `scale` within the bounds.

use super::super::{Autoscale, ScaleDirection, ScaleReason};
use super::*;

const IDLE: Duration = Duration::from_secs(3);
const SAMPLE: Duration = Duration::from_millis(250);

/// Autoscaling `min..=max` from `min` workers, `slots` slots.
fn auto(slots: usize, min: usize, max: usize) -> Settings {
    let mut cfg = settings(slots, min);
    cfg.autoscale = Some(Autoscale::new(min, max, IDLE));
    cfg
}

impl Sim {
    /// A load sample after one sample interval.
    fn load(&mut self, busy: usize, queued: u64) -> Vec<Action> {
        self.now += SAMPLE;
        let in_flight = busy as u64;
        self.feed(Event::Load {
            busy,
            in_flight,
            queued,
        })
    }

    /// `n` samples of the same load.
    fn loads(&mut self, n: usize, busy: usize, queued: u64) -> Vec<Action> {
        (0..n).flat_map(|_| self.load(busy, queued)).collect()
    }

    /// Every live worker that is not ready turns ready.
    fn ready_new(&mut self) {
        let fresh: Vec<usize> = self
            .live
            .keys()
            .copied()
            .filter(|s| self.core.workers.get(s).is_some_and(|w| !w.ready))
            .collect();
        for slot in fresh {
            self.ready(slot);
        }
    }
}

fn scale_events(actions: &[Action]) -> Vec<(ScaleDirection, ScaleReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordScale { direction, reason } => Some((*direction, *reason)),
            _ => None,
        })
        .collect()
}

fn targets(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetTarget(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sustained_busy_cluster_gets_one_worker_more() {
    let mut sim = Sim::running(auto(8, 2, 5));
    // Busy for less than a second: nothing yet.
    let early = sim.loads(3, 2, 0);
    assert!(scale_events(&early).is_empty());
    let out = sim.loads(2, 2, 0);
    assert_eq!(
        scale_events(&out),
        [(ScaleDirection::Up, ScaleReason::Busy)]
    );
    assert_eq!(targets(&out), [3]);
    assert_eq!(spawns(&out).len(), 1, "one worker spawned");
    assert!(logs(&out, Level::Info)
        .iter()
        .any(|l| l == "autoscale up: 2 -> 3 workers (busy)"));
    assert_eq!(sim.core.target(), 3);
}

#[test]
fn a_calm_sample_restarts_the_busy_time() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.loads(3, 2, 0);
    sim.load(1, 0);
    let out = sim.loads(4, 2, 0);
    assert!(scale_events(&out).is_empty(), "busy for 1 s counted anew");
    assert_eq!(
        scale_events(&sim.load(2, 0)),
        [(ScaleDirection::Up, ScaleReason::Busy)]
    );
}

#[test]
fn the_threshold_is_three_quarters_of_a_request_per_ready_worker() {
    let mut sim = Sim::running(auto(10, 4, 6));
    assert!(
        scale_events(&sim.loads(20, 2, 0)).is_empty(),
        "2 in flight, 4 workers"
    );
    assert_eq!(
        scale_events(&sim.loads(5, 3, 0)),
        [(ScaleDirection::Up, ScaleReason::Busy)],
        "3 in flight, 4 workers"
    );
}

#[test]
fn old_workers_holding_the_load_keep_the_cluster_growing() {
    // Keep-alive clients stay with the workers that accepted them: the new worker stays
    // idle, but the in-flight count shows the load.
    let mut sim = Sim::running(auto(8, 2, 5));
    let pressed = |sim: &mut Sim| {
        sim.now += SAMPLE;
        sim.feed(Event::Load {
            busy: 2,
            in_flight: 50,
            queued: 0,
        })
    };
    for _ in 0..40 {
        pressed(&mut sim);
        sim.ready_new();
    }
    assert_eq!(sim.core.target(), 5);
    let ups = scale_events(&sim.all);
    assert_eq!(ups, [(ScaleDirection::Up, ScaleReason::Busy); 3]);
}

#[test]
fn no_second_worker_before_the_new_one_is_ready_and_the_cooldown_passed() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.loads(5, 2, 0);
    assert_eq!(sim.core.target(), 3);
    // The new worker is not ready: however long the load lasts, no other is added.
    let waiting = sim.loads(20, 2, 0);
    assert!(scale_events(&waiting).is_empty());
    sim.ready_new();
    let out = sim.load(3, 0);
    assert_eq!(
        scale_events(&out),
        [(ScaleDirection::Up, ScaleReason::Busy)]
    );
    assert_eq!(sim.core.target(), 4);
    // Ready at once, but the cooldown (1 s) holds the next one back.
    sim.ready_new();
    assert!(scale_events(&sim.loads(3, 4, 0)).is_empty());
    assert_eq!(
        scale_events(&sim.loads(2, 4, 0)),
        [(ScaleDirection::Up, ScaleReason::Busy)]
    );
}

#[test]
fn the_target_never_goes_over_max() {
    let mut sim = Sim::running(auto(8, 2, 3));
    for _ in 0..40 {
        sim.load(8, 0);
        sim.ready_new();
    }
    assert_eq!(sim.core.target(), 3);
    let ups = scale_events(&sim.all);
    assert_eq!(ups, [(ScaleDirection::Up, ScaleReason::Busy)]);
}

#[test]
fn a_listen_queue_scales_up_with_reason_queue() {
    let mut sim = Sim::running(auto(8, 2, 5));
    let out = sim.loads(5, 0, 3);
    assert_eq!(
        scale_events(&out),
        [(ScaleDirection::Up, ScaleReason::Queue)]
    );
}

#[test]
fn an_idle_window_removes_one_worker_then_starts_again() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.control(Request::Scale { workers: 4 });
    sim.ready_new();
    // Not yet: the window is 3 s of samples.
    assert!(scale_events(&sim.loads(11, 1, 0)).is_empty());
    let out = sim.load(1, 0);
    assert_eq!(
        scale_events(&out),
        [(ScaleDirection::Down, ScaleReason::Idle)]
    );
    assert_eq!(targets(&out), [3]);
    assert_eq!(drains(&out).len(), 1, "one worker drains");
    // The window starts again after the change: 1 busy of 3 is ≤ (3 − 1) / 2.
    assert!(scale_events(&sim.loads(11, 1, 0)).is_empty());
    assert_eq!(
        scale_events(&sim.load(1, 0)),
        [(ScaleDirection::Down, ScaleReason::Idle)]
    );
    assert_eq!(sim.core.target(), 2);
    // Never below min.
    assert!(scale_events(&sim.loads(40, 0, 0)).is_empty());
    assert_eq!(sim.core.target(), 2);
}

#[test]
fn one_busy_peak_in_the_window_keeps_the_workers() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.control(Request::Scale { workers: 4 });
    sim.ready_new();
    sim.loads(4, 0, 0);
    // 2 busy of 4: over (4 − 1) / 2, for one sample.
    sim.load(2, 0);
    let out = sim.loads(11, 0, 0);
    assert!(
        scale_events(&out).is_empty(),
        "the peak is still in the window"
    );
    assert_eq!(
        scale_events(&sim.load(0, 0)),
        [(ScaleDirection::Down, ScaleReason::Idle)],
        "the peak left the window"
    );
}

#[test]
fn a_queue_in_the_window_keeps_the_workers() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.control(Request::Scale { workers: 3 });
    sim.ready_new();
    sim.load(0, 1);
    assert!(scale_events(&sim.loads(11, 0, 0)).is_empty());
    assert_eq!(
        scale_events(&sim.load(0, 0)),
        [(ScaleDirection::Down, ScaleReason::Idle)]
    );
}

#[test]
fn a_scale_refused_during_a_reload_happens_after_it() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.control(Request::Reload);
    let during = sim.loads(8, 2, 0);
    assert!(scale_events(&during).is_empty());
    assert!(
        logs(&during, Level::Error).is_empty(),
        "no error per sample"
    );
    assert!(
        logs(&during, Level::Warn).is_empty(),
        "no warning per sample"
    );
    sim.ready_new();
    assert!(sim.core.reload.is_none(), "the reload committed");
    assert_eq!(
        scale_events(&sim.load(2, 0)),
        [(ScaleDirection::Up, ScaleReason::Busy)]
    );
}

#[test]
fn no_free_slot_means_no_scale_up_and_no_error() {
    // 2 slots, bounds 2..=3 (a configuration check forbids this; the core holds anyway).
    let mut sim = Sim::running(auto(2, 2, 3));
    let out = sim.loads(20, 2, 0);
    assert!(scale_events(&out).is_empty());
    assert!(logs(&out, Level::Error).is_empty());
    assert_eq!(sim.core.target(), 2);
}

#[test]
fn load_during_the_start_changes_nothing() {
    let mut sim = Sim::new(auto(8, 2, 5));
    sim.feed(Event::Start);
    let out = sim.loads(20, 2, 5);
    assert!(scale_events(&out).is_empty());
    assert_eq!(sim.core.target(), 2);
}

#[test]
fn busy_is_capped_at_the_ready_workers() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.loads(5, 1000, 0);
    assert_eq!(sim.core.target(), 3, "one step, as any busy cluster");
    let Some(serde_json::Value::Object(doc)) =
        sim.control(Request::Status).1.iter().find_map(|a| match a {
            Action::Reply { reply, .. } => reply.status.clone(),
            _ => None,
        })
    else {
        panic!("a status document");
    };
    assert_eq!(doc["autoscale"]["busy"], 2);
    assert_eq!(doc["autoscale"]["min"], 2);
    assert_eq!(doc["autoscale"]["max"], 5);
}

#[test]
fn a_manual_scale_within_the_bounds_counts_as_manual() {
    let mut sim = Sim::running(auto(8, 2, 5));
    let (w, out) = sim.control(Request::Scale { workers: 4 });
    assert!(sim.reply(w).ok);
    assert_eq!(
        scale_events(&out),
        [(ScaleDirection::Up, ScaleReason::Manual)]
    );
    let (_, same) = sim.control(Request::Scale { workers: 4 });
    assert!(scale_events(&same).is_empty(), "no change, no event");
    let (_, down) = sim.control(Request::Scale { workers: 2 });
    assert_eq!(
        scale_events(&down),
        [(ScaleDirection::Down, ScaleReason::Manual)]
    );
}

#[test]
fn a_manual_scale_outside_the_bounds_is_refused() {
    let mut sim = Sim::running(auto(8, 2, 5));
    for n in [1, 6] {
        let (w, out) = sim.control(Request::Scale { workers: n });
        let reply = sim.reply(w);
        assert!(!reply.ok);
        let error = reply.error.clone().unwrap_or_default();
        assert!(error.contains("within 2..=5"), "{error}");
        assert!(targets(&out).is_empty() && scale_events(&out).is_empty());
    }
    assert_eq!(sim.core.target(), 2);
}

#[test]
fn a_manual_scale_restarts_the_idle_window() {
    let mut sim = Sim::running(auto(8, 2, 5));
    sim.control(Request::Scale { workers: 4 });
    sim.ready_new();
    sim.loads(10, 0, 0);
    sim.control(Request::Scale { workers: 3 });
    let out = sim.loads(11, 0, 0);
    assert!(scale_events(&out).is_empty(), "3 s from the manual scale");
    assert_eq!(
        scale_events(&sim.load(0, 0)),
        [(ScaleDirection::Down, ScaleReason::Idle)]
    );
}

#[test]
fn without_autoscaling_load_samples_do_nothing() {
    let mut sim = Sim::running(settings(8, 2));
    let out = sim.loads(40, 2, 4);
    assert!(scale_events(&out).is_empty() && targets(&out).is_empty());
    let (w, _) = sim.control(Request::Scale { workers: 6 });
    assert!(sim.reply(w).ok, "scale is not bounded");
}
