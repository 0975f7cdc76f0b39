//! The history as one array per series (the JSON's `history`, and what the charts draw).

use serde::{Deserialize, Serialize};

use super::{HistorySample, HISTORY_CAPACITY, HISTORY_INTERVAL_MS};

/// Requests per second by status class, one array each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassSeries {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub c1xx: Vec<f64>,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub c2xx: Vec<f64>,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub c3xx: Vec<f64>,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub c4xx: Vec<f64>,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub c5xx: Vec<f64>,
    /// Requests that ended with no response sent.
    pub errors: Vec<f64>,
}

impl ClassSeries {
    /// `(label, values)` in class order.
    pub fn each(&self) -> [(&'static str, &[f64]); 6] {
        [
            ("1xx", &self.c1xx),
            ("2xx", &self.c2xx),
            ("3xx", &self.c3xx),
            ("4xx", &self.c4xx),
            ("5xx", &self.c5xx),
            ("errors", &self.errors),
        ]
    }

    fn each_mut(&mut self) -> [&mut Vec<f64>; 6] {
        [
            &mut self.c1xx,
            &mut self.c2xx,
            &mut self.c3xx,
            &mut self.c4xx,
            &mut self.c5xx,
            &mut self.errors,
        ]
    }
}

/// The history, oldest sample first: every array has one entry per sample (`unix_ms`).
/// Rates are rounded to 0.001, durations to the microsecond; `null` where a sample has no
/// value (no request finished: no quantile; no listener sampled yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistorySeries {
    /// The sampling interval, seconds (1).
    pub interval_seconds: f64,
    /// Samples kept at most (900: 15 minutes).
    pub capacity: usize,
    /// When each sample was taken, ms since the epoch: a step longer than the interval is
    /// a gap (the sampler skipped).
    pub unix_ms: Vec<u64>,
    /// Seconds each sample covers (the step from the previous reading).
    pub seconds: Vec<f64>,
    /// Finished requests per second.
    pub requests_per_second: Vec<f64>,
    /// Finished requests per second by class.
    pub requests_per_second_by_class: ClassSeries,
    /// Median duration of the requests finished in each sample, seconds.
    pub p50_seconds: Vec<Option<f64>>,
    /// 99th percentile, seconds.
    pub p99_seconds: Vec<Option<f64>>,
    /// Requests in flight.
    pub in_flight: Vec<u64>,
    /// Workers ready.
    pub workers_ready: Vec<u64>,
    /// Workers starting.
    pub workers_starting: Vec<u64>,
    /// Workers draining.
    pub workers_draining: Vec<u64>,
    /// The longest accept queue over the listeners.
    pub listen_queue_length: Vec<Option<u64>>,
    /// Connections dropped by the listeners, per second.
    pub listen_queue_drops_per_second: Vec<Option<f64>>,
}

impl Default for HistorySeries {
    fn default() -> Self {
        Self {
            interval_seconds: HISTORY_INTERVAL_MS as f64 / 1000.0,
            capacity: HISTORY_CAPACITY,
            unix_ms: Vec::new(),
            seconds: Vec::new(),
            requests_per_second: Vec::new(),
            requests_per_second_by_class: ClassSeries::default(),
            p50_seconds: Vec::new(),
            p99_seconds: Vec::new(),
            in_flight: Vec::new(),
            workers_ready: Vec::new(),
            workers_starting: Vec::new(),
            workers_draining: Vec::new(),
            listen_queue_length: Vec::new(),
            listen_queue_drops_per_second: Vec::new(),
        }
    }
}

/// To the thousandth (an integer over 1000 prints short: `12.345`); 0 if not finite.
fn rate(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

fn secs(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite()).map(|v| (v * 1e6).round() / 1e6)
}

impl HistorySeries {
    /// The arrays of `samples` (oldest first).
    pub fn from_samples<'a>(samples: impl Iterator<Item = &'a HistorySample>) -> Self {
        let mut s = Self::default();
        for x in samples {
            s.unix_ms.push(x.unix_ms);
            s.seconds.push((x.seconds * 1000.0).round() / 1000.0);
            s.requests_per_second.push(rate(x.requests));
            for (to, v) in s
                .requests_per_second_by_class
                .each_mut()
                .into_iter()
                .zip(x.classes)
            {
                to.push(rate(v));
            }
            s.p50_seconds.push(secs(x.p50));
            s.p99_seconds.push(secs(x.p99));
            s.in_flight.push(x.in_flight);
            s.workers_ready.push(x.workers[0]);
            s.workers_starting.push(x.workers[1]);
            s.workers_draining.push(x.workers[2]);
            s.listen_queue_length.push(x.queue_length);
            s.listen_queue_drops_per_second
                .push(x.queue_drops.map(rate));
        }
        s
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.unix_ms.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.unix_ms.is_empty()
    }

    /// Only the newest `n` samples (all when there are fewer).
    pub fn newest(&self, n: usize) -> Self {
        fn tail<T: Clone>(v: &[T], n: usize) -> Vec<T> {
            v[v.len().saturating_sub(n)..].to_vec()
        }
        let c = &self.requests_per_second_by_class;
        Self {
            interval_seconds: self.interval_seconds,
            capacity: self.capacity,
            unix_ms: tail(&self.unix_ms, n),
            seconds: tail(&self.seconds, n),
            requests_per_second: tail(&self.requests_per_second, n),
            requests_per_second_by_class: ClassSeries {
                c1xx: tail(&c.c1xx, n),
                c2xx: tail(&c.c2xx, n),
                c3xx: tail(&c.c3xx, n),
                c4xx: tail(&c.c4xx, n),
                c5xx: tail(&c.c5xx, n),
                errors: tail(&c.errors, n),
            },
            p50_seconds: tail(&self.p50_seconds, n),
            p99_seconds: tail(&self.p99_seconds, n),
            in_flight: tail(&self.in_flight, n),
            workers_ready: tail(&self.workers_ready, n),
            workers_starting: tail(&self.workers_starting, n),
            workers_draining: tail(&self.workers_draining, n),
            listen_queue_length: tail(&self.listen_queue_length, n),
            listen_queue_drops_per_second: tail(&self.listen_queue_drops_per_second, n),
        }
    }

    /// The newest samples whose JSON fits in `bytes` (none when not even one does).
    pub fn fit(&self, bytes: usize) -> Self {
        let size = |s: &Self| serde_json::to_vec(s).map_or(usize::MAX, |v| v.len());
        let full = size(self);
        if full <= bytes {
            return self.clone();
        }
        // Samples are about the same size: start from the share that fits, then step down
        // by 5 % (two or three encodings, not a bisection's ten).
        let share = self.len() as u128 * bytes as u128 / full.max(1) as u128;
        let mut n = usize::try_from(share).unwrap_or(0);
        loop {
            let s = self.newest(n);
            if n == 0 || size(&s) <= bytes {
                return s;
            }
            n -= (n / 20).max(1);
        }
    }
}
