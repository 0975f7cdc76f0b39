//! What one reading of the scoreboard gives the history: the counters and gauges it keeps.

use super::super::snapshot::Snapshot;

/// The figures of one snapshot the history differences (counters) or keeps (gauges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// When, ms since the epoch.
    pub unix_ms: u64,
    /// Finished requests (counter).
    pub requests: u64,
    /// Finished requests by class: 1xx..5xx, no response (counters).
    pub classes: [u64; 6],
    /// Request-duration histogram counts per bucket (counters, not cumulative).
    pub histogram: Vec<u64>,
    /// Requests in flight.
    pub in_flight: u64,
    /// Workers ready, starting, draining.
    pub workers: [u64; 3],
    /// The longest accept queue over the listeners (none when none was sampled).
    pub queue_length: Option<u64>,
    /// The listeners' drops summed (counter; none when no listener counts drops).
    pub queue_drops: Option<u64>,
}

impl Reading {
    /// The reading of `snap`, at its `taken_unix_ms`.
    pub fn of(snap: &Snapshot) -> Self {
        let t = &snap.totals;
        let c = &t.counters;
        let queues = &snap.listen_queues;
        let drops = queues.iter().filter_map(|q| q.drops);
        let queue_drops = drops
            .clone()
            .next()
            .map(|_| drops.fold(0u64, u64::wrapping_add));
        Self {
            unix_ms: snap.taken_unix_ms,
            requests: c.requests_total,
            classes: c.status,
            histogram: c.histogram.counts.clone(),
            in_flight: c.requests_active,
            workers: [t.workers_ready, t.workers_starting, t.workers_draining],
            queue_length: queues.iter().map(|q| q.length).max(),
            queue_drops,
        }
    }
}
