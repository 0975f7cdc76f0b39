//! The master's record of canary reloads, in its own memory (never the segment) and shown by
//! its snapshots: the last comparison and the verdicts, and while a canary is observed, every
//! slot's counters at the start of the window. The figures are the growth of those counters
//! since then, summed over the slots whose worker is of that generation at both times (slot
//! counters never go down; an old worker respawned in its slot keeps counting there).

use super::{HistogramSnapshot, Scoreboard, SlotSnapshot};
use crate::canary::{CanaryReport, CanaryWindow, GenerationFigures};

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
pub(crate) struct CanaryBaseline {
    generation: u64,
    old: u64,
    since_unix_ms: u64,
    secs: f64,
    slots: Vec<SlotBase>,
}

impl CanaryBaseline {
    /// The slots with a worker of `generation` or `old`.
    fn take(slots: &[SlotSnapshot], generation: u64, old: u64, since_unix_ms: u64) -> Self {
        let slots = slots
            .iter()
            .filter(|s| s.pid != 0 && (s.generation == generation || s.generation == old))
            .map(SlotBase::of)
            .collect();
        Self {
            generation,
            old,
            since_unix_ms,
            secs: 0.0,
            slots,
        }
    }

    /// (old, new): each generation's growth from the baseline to `slots`.
    fn figures(&self, slots: &[SlotSnapshot]) -> (GenerationFigures, GenerationFigures) {
        (self.one(slots, self.old), self.one(slots, self.generation))
    }

    fn one(&self, slots: &[SlotSnapshot], generation: u64) -> GenerationFigures {
        let (mut requests, mut errors) = (0u64, 0u64);
        let mut hist = HistogramSnapshot::empty();
        for base in self.slots.iter().filter(|b| b.generation == generation) {
            let Some(now) = slots.get(base.index).filter(|s| s.generation == generation) else {
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
        GenerationFigures::new(generation, requests, errors, hist.quantile(0.99))
    }

    /// The figures so far, for the snapshot.
    pub(crate) fn window(&self, slots: &[SlotSnapshot]) -> CanaryWindow {
        let (old, new) = self.figures(slots);
        CanaryWindow {
            since_unix_ms: self.since_unix_ms,
            secs: self.secs,
            old,
            new,
        }
    }
}

impl Scoreboard {
    /// A canary's workers are all ready: notes both generations' counters now (master).
    pub(crate) fn begin_canary_window(&self, generation: u64, old: u64, secs: f64) {
        let Some(t) = &self.segment().truth else {
            return;
        };
        let snap = self.snapshot();
        let mut base = CanaryBaseline::take(&snap.slots, generation, old, snap.taken_unix_ms);
        base.secs = secs;
        *t.canary() = Some(base);
    }

    /// The window ends: (old, new) figures since [`Self::begin_canary_window`] (zero without
    /// one for these generations); the window is closed.
    pub(crate) fn end_canary_window(
        &self,
        generation: u64,
        old: u64,
    ) -> (GenerationFigures, GenerationFigures) {
        let snap = self.snapshot();
        let base = self
            .segment()
            .truth
            .as_ref()
            .and_then(|t| t.canary().take())
            .filter(|b| b.generation == generation && b.old == old)
            .unwrap_or_else(|| CanaryBaseline::take(&[], generation, old, 0));
        base.figures(&snap.slots)
    }

    /// Records a canary reload's comparison and counts its verdict (master); closes a window
    /// still open (a crash ended it).
    pub(crate) fn record_canary(&self, report: &CanaryReport) {
        if let Some(t) = &self.segment().truth {
            t.canary().take();
        }
        self.update_header(|t| {
            t.canary_counts.count(report);
            t.last_canary = Some(report.clone());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let base = CanaryBaseline::take(&snap.slots, 2, 1, 0);
        set(&mut snap.slots[0], 1, 130, 1, 130);
        // Slot 1 now holds another generation: left out.
        set(&mut snap.slots[1], 3, 80, 0, 80);
        set(&mut snap.slots[2], 2, 27, 5, 27);
        let (old, new) = base.figures(&snap.slots);
        assert_eq!((old.generation, old.requests, old.errors_5xx), (1, 30, 0));
        assert_eq!((new.generation, new.requests, new.errors_5xx), (2, 20, 5));
        assert_eq!(new.error_ratio, 0.25);
        assert!(new.p99_seconds.unwrap() <= HistogramSnapshot::bounds()[0]);
    }

    #[test]
    fn the_window_shows_in_the_snapshot_until_it_ends() {
        let sb = Scoreboard::create_sealed("canary-window", 2).unwrap();
        sb.slot_spawned(0, 40, 1);
        sb.slot_spawned(1, 41, 2);
        assert_eq!(sb.snapshot().canary_window, None);
        sb.begin_canary_window(2, 1, 5.0);
        let conn = sb.writer(1).unwrap().conn_open(([127, 0, 0, 1], 1).into());
        for status in [200, 500, 200, 200] {
            conn.request_begin("GET", "/", 11).finish(status, 1);
        }
        let w = sb.snapshot().canary_window.expect("a window");
        assert_eq!(w.secs, 5.0);
        assert_eq!(
            (w.new.generation, w.new.requests, w.new.errors_5xx),
            (2, 4, 1)
        );
        assert_eq!((w.old.generation, w.old.requests), (1, 0));
        let (old, new) = sb.end_canary_window(2, 1);
        assert_eq!((old.requests, new.requests, new.error_ratio), (0, 4, 0.25));
        assert_eq!(sb.snapshot().canary_window, None);
        // Without a window: zeros.
        assert_eq!(sb.end_canary_window(2, 1).1.requests, 0);
    }
}
