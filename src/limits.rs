//! Bounds that layers on both sides of the scoreboard agree on. Imports nothing of ours, so
//! the configuration (above) and the scoreboard (below) can both use it without one
//! importing the other.

/// Most slots a segment may have (keeps a corrupt header from asking for a huge mapping).
/// Public as [`crate::scoreboard::MAX_SLOTS`].
pub const MAX_SLOTS: usize = 4096;
