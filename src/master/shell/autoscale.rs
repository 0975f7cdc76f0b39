//! The shell's part of autoscaling: it samples the load from the scoreboard and feeds it to
//! the core, and counts the core's `RecordScale`. The decisions are the core's
//! (`core/autoscale.rs`).

use std::time::Duration;

use super::Shell;
use crate::config::Config;
use crate::master::core::{self, Event, ScaleDirection, ScaleReason};
use crate::scoreboard::SlotState;

/// How often the master samples the load (with autoscaling on).
pub(super) const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The core's autoscaling settings from the configuration (`None`: off).
pub(super) fn settings_of(cfg: &Config) -> Option<core::Autoscale> {
    let (min, max) = cfg.autoscale_bounds()?;
    Some(core::Autoscale::new(min, max, cfg.scale_down_after()))
}

impl Shell {
    /// Reads the load from the scoreboard: ready workers with a request in flight, their
    /// requests, and the connections waiting in the listen queues.
    pub(super) fn sample_load(&mut self) {
        let snap = self.sb.snapshot();
        let (mut busy, mut in_flight) = (0usize, 0u64);
        for s in snap.slots.iter().filter(|s| s.state == SlotState::Ready) {
            let n = s.counters.requests_active;
            if n > 0 {
                busy += 1;
                in_flight = in_flight.saturating_add(n);
            }
        }
        // Connections no worker accepted yet, from the listen-queue sampler's last reading.
        let queued = snap
            .listen_queues
            .iter()
            .fold(0u64, |a, q| a.saturating_add(q.length));
        self.feed(Event::Load {
            busy,
            in_flight,
            queued,
        });
    }

    /// The target moved while autoscaling: counts it.
    pub(super) fn record_scale(&self, direction: ScaleDirection, reason: ScaleReason) {
        self.sb.record_scale(direction.as_str(), reason.as_str());
    }
}
