//! The master's history: one sample a second in a fixed ring of [`HISTORY_CAPACITY`] (15
//! minutes), for the status page's charts and the JSON's `history`.
//!
//! Pure: a [`Reading`] (the counters and gauges of one snapshot, with its time) goes in, the
//! ring keeps [`HistorySample`]s made from the difference to the previous reading. Counters
//! never go down, but a reset (a negative difference) counts as 0. A second the sampler
//! skipped stays a gap: the next sample's time shows it, and its rates are the average over
//! the time since the previous reading (nothing is invented in between).
//!
//! ```
//! use flora_cluster::scoreboard::{History, Reading};
//! let mut h = History::new();
//! h.record(Reading { unix_ms: 1_000, requests: 0, ..Reading::default() });
//! h.record(Reading { unix_ms: 2_000, requests: 40, ..Reading::default() });
//! let s = h.series();
//! assert_eq!(s.unix_ms, vec![2_000]);
//! assert_eq!(s.requests_per_second, vec![40.0]);
//! ```

mod reading;
mod series;
#[cfg(test)]
mod tests;

pub use reading::Reading;
pub use series::{ClassSeries, HistorySeries};

use super::snapshot::HistogramSnapshot;

/// Samples kept: 15 minutes at one a second.
pub const HISTORY_CAPACITY: usize = 900;
/// The sampling interval, ms.
pub const HISTORY_INTERVAL_MS: u64 = 1_000;

/// One second of the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistorySample {
    /// When it was taken, ms since the epoch.
    pub unix_ms: u64,
    /// Seconds since the previous reading (1 normally, more after a gap).
    pub seconds: f64,
    /// Finished requests per second.
    pub requests: f64,
    /// Finished requests per second by class: 1xx, 2xx, 3xx, 4xx, 5xx, and errors (no
    /// response sent).
    pub classes: [f64; 6],
    /// Median duration of the requests that finished in the interval (none when none did).
    pub p50: Option<f64>,
    /// 99th percentile, likewise.
    pub p99: Option<f64>,
    /// Requests in flight at the reading.
    pub in_flight: u64,
    /// Workers ready, starting, draining.
    pub workers: [u64; 3],
    /// The longest accept queue over the listeners (none before the first queue sample).
    pub queue_length: Option<u64>,
    /// Connections the listeners dropped per second (none when no listener counts drops).
    pub queue_drops: Option<f64>,
}

/// The ring: at most [`HISTORY_CAPACITY`] samples, oldest first, plus the last reading to
/// difference the next one against. Its memory is fixed once full; a push is O(1).
#[derive(Debug, Clone, Default)]
pub struct History {
    ring: Vec<HistorySample>,
    /// Where the next sample goes once the ring is full (the oldest one).
    head: usize,
    last: Option<Reading>,
}

/// `now - before`, or 0 when the counter went down (a reset).
fn diff(now: u64, before: u64) -> u64 {
    now.saturating_sub(before)
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Takes one reading: the first only primes the differences; a reading not later than
    /// the previous one (a clock step back) replaces it without a sample.
    pub fn record(&mut self, r: Reading) {
        let Some(prev) = self.last.replace(r.clone()) else {
            return;
        };
        if r.unix_ms <= prev.unix_ms {
            return;
        }
        self.push(sample(&prev, &r));
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, s: HistorySample) {
        if self.ring.len() < HISTORY_CAPACITY {
            if self.ring.capacity() == 0 {
                self.ring.reserve_exact(HISTORY_CAPACITY);
            }
            self.ring.push(s);
        } else {
            self.ring[self.head] = s;
            self.head = (self.head + 1) % HISTORY_CAPACITY;
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &HistorySample> + '_ {
        let (newer, older) = self.ring.split_at(self.head);
        older.iter().chain(newer)
    }

    /// The samples as one array per series.
    pub fn series(&self) -> HistorySeries {
        HistorySeries::from_samples(self.samples())
    }
}

/// The sample for the interval from `prev` to `now` (`now` is later).
fn sample(prev: &Reading, now: &Reading) -> HistorySample {
    let seconds = (now.unix_ms - prev.unix_ms) as f64 / 1000.0;
    let rate = |a: u64, b: u64| diff(a, b) as f64 / seconds;
    let mut classes = [0.0; 6];
    for (i, c) in classes.iter_mut().enumerate() {
        *c = rate(now.classes[i], prev.classes[i]);
    }
    let mut hist = HistogramSnapshot::empty();
    for (i, c) in hist.counts.iter_mut().enumerate() {
        let at = |r: &Reading| r.histogram.get(i).copied().unwrap_or(0);
        *c = diff(at(now), at(prev));
    }
    let queue_drops = match (now.queue_drops, prev.queue_drops) {
        (Some(a), Some(b)) => Some(rate(a, b)),
        _ => None,
    };
    HistorySample {
        unix_ms: now.unix_ms,
        seconds,
        requests: rate(now.requests, prev.requests),
        classes,
        p50: hist.quantile(0.5),
        p99: hist.quantile(0.99),
        in_flight: now.in_flight,
        workers: now.workers,
        queue_length: now.queue_length,
        queue_drops,
    }
}
