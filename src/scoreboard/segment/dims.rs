//! The dimensions of a segment: its slot count and route limit, checked, and the layout a
//! worker attaches by.

use super::layout;
use super::{Result, ScoreboardError, MAX_SLOTS};

/// What a worker is told about the segment it inherits (env [`crate::ipc::ENV_SCOREBOARD_LAYOUT`]):
/// it attaches by these, never by the header another worker could have scribbled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Slots in the segment.
    pub slots: usize,
    /// The layout hash (`raw::layout::layout_hash`) of the master's build.
    pub hash: u64,
    /// Routes the segment counts (0 = per-route metrics off).
    pub routes: usize,
}

impl SegmentLayout {
    /// `slots:hash:routes` (hash in hex).
    pub fn encode(&self) -> String {
        format!("{}:{:x}:{}", self.slots, self.hash, self.routes)
    }

    /// Parses [`SegmentLayout::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let layout = Self {
            slots: parts.next()?.parse().ok()?,
            hash: u64::from_str_radix(parts.next()?, 16).ok()?,
            routes: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(layout)
    }
}

pub(super) fn check_routes(routes: usize) -> Result<()> {
    if routes > layout::MAX_ROUTES {
        return Err(ScoreboardError::Layout(format!(
            "route limit {routes} above {}",
            layout::MAX_ROUTES
        )));
    }
    Ok(())
}

pub(super) fn check_slots(slots: usize) -> Result<()> {
    if slots == 0 || slots > MAX_SLOTS {
        return Err(ScoreboardError::SlotCount(slots));
    }
    Ok(())
}
