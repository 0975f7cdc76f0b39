//! The master's history of the scoreboard ([`super::history`]): one reading a second, kept
//! in the creator's memory next to its other records (empty in every other process).

use super::history::{HistorySeries, Reading};
use super::Scoreboard;

impl Scoreboard {
    /// Takes one snapshot and adds it to the history (the master's sampler calls this once
    /// a second; a no-op in a process that did not create the segment).
    pub fn sample_history(&self) {
        let Some(t) = &self.inner.truth else { return };
        let reading = Reading::of(&self.snapshot());
        t.history().record(reading);
    }

    /// The history, oldest sample first: the creator's record, empty in any other process.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let sb = Scoreboard::create_sealed("web", 1).unwrap();
    /// sb.sample_history();
    /// assert!(sb.history().is_empty(), "the first reading only primes the rates");
    /// ```
    pub fn history(&self) -> HistorySeries {
        match &self.inner.truth {
            Some(t) => t.history().series(),
            None => HistorySeries::default(),
        }
    }
}
