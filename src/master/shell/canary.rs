//! A canary reload's figures: the scoreboard notes both generations' counters when the
//! canaries are all ready and gives their growth when the observation ends
//! (`scoreboard/canary.rs`).

use super::Shell;
use crate::master::core::Event;

impl Shell {
    /// Notes both generations' counters now.
    pub(super) fn canary_baseline(&mut self, generation: u64, old: u64, secs: f64) {
        self.sb.begin_canary_window(generation, old, secs);
    }

    /// The figures since the baseline (zero without one).
    pub(super) fn judge_canary(&mut self, generation: u64, old: u64) -> Event {
        let (old, new) = self.sb.end_canary_window(generation, old);
        Event::CanaryFigures {
            generation,
            old,
            new,
        }
    }
}
