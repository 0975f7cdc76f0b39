//! The master's record of canary reloads: the last comparison and the verdicts, kept in its
//! own memory (never the segment) and shown by its snapshots.

use super::Scoreboard;
use crate::canary::CanaryReport;

impl Scoreboard {
    /// Records a canary reload's comparison and counts its verdict (master).
    pub(crate) fn record_canary(&self, report: &CanaryReport) {
        self.update_header(|t| {
            t.canary_counts.count(report);
            t.last_canary = Some(report.clone());
        });
    }
}
