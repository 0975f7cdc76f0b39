//! The history sampler: a task that has the scoreboard take one reading a second
//! ([`crate::Scoreboard::sample_history`]), off the event loop. It stops when dropped.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::scoreboard::history::HISTORY_INTERVAL_MS;
use crate::Scoreboard;

/// The running sampler; dropping it stops it.
#[derive(Debug)]
pub(crate) struct HistorySampler(tokio::task::JoinHandle<()>);

impl HistorySampler {
    /// Starts sampling `sb` once a second (the first reading now).
    pub(crate) fn start(sb: Scoreboard) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(HISTORY_INTERVAL_MS));
            // A late tick is skipped, not made up: the history shows the gap.
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                sb.sample_history();
            }
        }))
    }
}

impl Drop for HistorySampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}
