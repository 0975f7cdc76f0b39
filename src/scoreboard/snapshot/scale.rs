//! Autoscaling's counts: the target's moves by direction and reason
//! (`flora_scale_events_total{direction,reason}`). The master keeps them with the guards'
//! records (its own memory, never the segment) and they travel with them.

use serde::{Deserialize, Serialize};

/// Target changes while autoscaling, by direction and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleCounts {
    /// Up: the cluster stayed busy.
    pub up_busy: u64,
    /// Up: connections waited in a listen queue.
    pub up_queue: u64,
    /// Up: a manual `scale`.
    pub up_manual: u64,
    /// Down: the cluster stayed idle.
    pub down_idle: u64,
    /// Down: a manual `scale`.
    pub down_manual: u64,
}

impl ScaleCounts {
    /// `(direction, reason, count)` of every pair that can happen, in label order.
    pub fn by_label(&self) -> [(&'static str, &'static str, u64); 5] {
        [
            ("up", "busy", self.up_busy),
            ("up", "queue", self.up_queue),
            ("up", "manual", self.up_manual),
            ("down", "idle", self.down_idle),
            ("down", "manual", self.down_manual),
        ]
    }

    /// All changes.
    pub fn total(&self) -> u64 {
        self.by_label()
            .iter()
            .fold(0u64, |n, (_, _, c)| n.saturating_add(*c))
    }

    /// The counter of `direction` and `reason` (`None` for a pair that cannot happen).
    pub(crate) fn get_mut(&mut self, direction: &str, reason: &str) -> Option<&mut u64> {
        match (direction, reason) {
            ("up", "busy") => Some(&mut self.up_busy),
            ("up", "queue") => Some(&mut self.up_queue),
            ("up", "manual") => Some(&mut self.up_manual),
            ("down", "idle") => Some(&mut self.down_idle),
            ("down", "manual") => Some(&mut self.down_manual),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ScaleCounts;

    #[test]
    fn each_pair_counts_in_its_own_field() {
        let mut c = ScaleCounts::default();
        *c.get_mut("up", "busy").unwrap() += 2;
        *c.get_mut("down", "manual").unwrap() += 1;
        assert!(c.get_mut("down", "busy").is_none());
        assert_eq!(c.by_label()[0], ("up", "busy", 2));
        assert_eq!(c.by_label()[4], ("down", "manual", 1));
        assert_eq!(c.total(), 3);
    }
}
