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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::SlotState;

    #[test]
    fn only_the_creator_samples_and_keeps_a_history() {
        let sb = Scoreboard::create_sealed("h", 2).expect("create");
        sb.slot_spawned(0, 4100, 1);
        let w = sb.writer(0).expect("writer");
        w.set_state(SlotState::Ready);
        sb.sample_history();
        let conn = w.conn_open(([127, 0, 0, 1], 9).into());
        conn.request_begin("GET", "/", 11).finish(503, 1);
        // The next reading must be a later millisecond.
        std::thread::sleep(std::time::Duration::from_millis(5));
        sb.sample_history();
        let h = sb.history();
        assert_eq!(h.len(), 1);
        let s = h.seconds[0];
        let per_s = h.requests_per_second_by_class.c5xx[0];
        assert!((per_s * s - 1.0).abs() < 0.01, "{per_s}/s over {s} s");
        assert!(h.p99_seconds[0].is_some());
        // A worker's attachment (not the creator) neither samples nor shows one.
        let fd = sb.fd().try_clone_to_owned().expect("dup");
        let other = Scoreboard::from_fd_with_layout(fd, sb.layout()).expect("attach");
        other.sample_history();
        assert!(other.history().is_empty());
        assert_eq!(other.history().capacity, 900);
    }
}
