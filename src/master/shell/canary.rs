//! A canary reload's figures: both generations' counters when the canaries are all ready,
//! and their growth when the observation ends, summed over the slots whose worker is of
//! that generation at both times (slot counters never go down; an old worker respawned in
//! its slot keeps counting there).

use super::Shell;
use crate::canary::GenerationFigures;
use crate::exporter::model::quantile;
use crate::master::core::Event;
use crate::scoreboard::{HistogramSnapshot, SlotSnapshot, Snapshot};

/// One slot's counters at the start of the window.
#[derive(Debug, Clone)]
struct SlotBase {
    index: usize,
    generation: u64,
    requests: u64,
    errors_5xx: u64,
    histogram: Vec<u64>,
}

impl SlotBase {
    fn of(s: &SlotSnapshot) -> Self {
        Self {
            index: s.index,
            generation: s.generation,
            requests: s.counters.requests_total,
            errors_5xx: s.counters.status[4],
            histogram: s.counters.histogram.counts.clone(),
        }
    }
}

/// Both generations' slot counters at the start of the observation window.
#[derive(Debug, Clone)]
pub(super) struct Baseline {
    generation: u64,
    old: u64,
    slots: Vec<SlotBase>,
}

impl Baseline {
    /// The slots of `generation` and `old` in `snap`.
    pub(super) fn take(snap: &Snapshot, generation: u64, old: u64) -> Self {
        let slots = snap
            .slots
            .iter()
            .filter(|s| s.pid != 0 && (s.generation == generation || s.generation == old))
            .map(SlotBase::of)
            .collect();
        Self {
            generation,
            old,
            slots,
        }
    }

    /// (old, new): each generation's growth from the baseline to `snap`.
    pub(super) fn figures(&self, snap: &Snapshot) -> (GenerationFigures, GenerationFigures) {
        (self.one(snap, self.old), self.one(snap, self.generation))
    }

    fn one(&self, snap: &Snapshot, generation: u64) -> GenerationFigures {
        let (mut requests, mut errors) = (0u64, 0u64);
        let mut hist = HistogramSnapshot::empty();
        for base in self.slots.iter().filter(|b| b.generation == generation) {
            let Some(now) = snap
                .slots
                .get(base.index)
                .filter(|s| s.generation == generation)
            else {
                continue;
            };
            let now = SlotBase::of(now);
            requests = requests.wrapping_add(now.requests.wrapping_sub(base.requests));
            errors = errors.wrapping_add(now.errors_5xx.wrapping_sub(base.errors_5xx));
            let counts = now.histogram.iter().zip(&base.histogram);
            for (h, (n, b)) in hist.counts.iter_mut().zip(counts) {
                *h = h.wrapping_add(n.wrapping_sub(*b));
            }
        }
        let p99 = quantile(&hist, 0.99);
        GenerationFigures::new(generation, requests, errors, p99)
    }
}

impl Shell {
    /// Remembers both generations' counters now.
    pub(super) fn canary_baseline(&mut self, generation: u64, old: u64) {
        let snap = self.sb.snapshot();
        self.canary = Some(Baseline::take(&snap, generation, old));
    }

    /// The figures since the baseline (zero without one).
    pub(super) fn judge_canary(&mut self, generation: u64, old: u64) -> Event {
        let snap = self.sb.snapshot();
        let base = self
            .canary
            .take()
            .filter(|b| b.generation == generation && b.old == old)
            .unwrap_or_else(|| Baseline {
                generation,
                old,
                slots: Vec::new(),
            });
        let (old, new) = base.figures(&snap);
        Event::CanaryFigures {
            generation,
            old,
            new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scoreboard;

    #[test]
    fn growth_by_generation_of_the_slots_that_kept_it() {
        let sb = Scoreboard::create_sealed("canary-test", 3).unwrap();
        let mut snap = sb.snapshot();
        let set = |s: &mut SlotSnapshot, g: u64, req: u64, err: u64, fast: u64| {
            s.pid = 10 + s.index as u32;
            s.generation = g;
            s.counters.requests_total = req;
            s.counters.status[4] = err;
            s.counters.histogram.counts[0] = fast;
        };
        set(&mut snap.slots[0], 1, 100, 1, 100);
        set(&mut snap.slots[1], 1, 50, 0, 50);
        set(&mut snap.slots[2], 2, 7, 0, 7);
        let base = Baseline::take(&snap, 2, 1);
        set(&mut snap.slots[0], 1, 130, 1, 130);
        // Slot 1 now holds another generation: left out.
        set(&mut snap.slots[1], 3, 80, 0, 80);
        set(&mut snap.slots[2], 2, 27, 5, 27);
        let (old, new) = base.figures(&snap);
        assert_eq!((old.generation, old.requests, old.errors_5xx), (1, 30, 0));
        assert_eq!((new.generation, new.requests, new.errors_5xx), (2, 20, 5));
        assert_eq!(new.error_ratio, 0.25);
        assert!(new.p99_seconds.unwrap() <= HistogramSnapshot::bounds()[0]);
    }
}
