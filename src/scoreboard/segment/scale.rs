//! The master's count of autoscaling's target changes, kept with the guards' records in
//! [`super::Truth`] (never in the segment: a worker cannot forge or erase them).

use super::super::Scoreboard;

impl Scoreboard {
    /// The target moved `direction` (`up`, `down`) for `reason` (`busy`, `queue`, `idle`,
    /// `manual`) (master; a no-op in other processes).
    pub(crate) fn record_scale(&self, direction: &str, reason: &str) {
        let Some(truth) = self.segment().truth.as_ref() else {
            return;
        };
        if let Some(n) = truth
            .guards()
            .shown_mut()
            .scale_events
            .get_mut(direction, reason)
        {
            *n = n.saturating_add(1);
        }
    }
}
