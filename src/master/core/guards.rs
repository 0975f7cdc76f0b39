//! Worker guards: the heartbeat kill and the graceful recycles (memory, request count, age).

use std::time::Duration;

use super::Core;

/// The guards' limits (all off by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guards {
    /// Kill a ready worker whose last heartbeat is older than this.
    pub heartbeat_timeout: Option<Duration>,
    /// Recycle a worker whose RSS is over this many bytes for [`Guards::memory_samples`]
    /// samples in a row.
    pub max_memory: Option<u64>,
    /// Samples in a row over [`Guards::max_memory`] before a recycle (a spike does not count).
    pub memory_samples: u32,
    /// Recycle a worker after this many requests (plus up to the jitter, drawn per worker).
    pub max_requests: Option<u64>,
    /// Up to this many more requests, drawn per worker.
    pub max_requests_jitter: u64,
    /// Recycle a worker after it lived this long (plus up to the jitter, drawn per worker).
    pub max_age: Option<Duration>,
    /// Up to this much longer, drawn per worker.
    pub max_age_jitter: Duration,
    /// Recycles running at once.
    pub max_recycling: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            heartbeat_timeout: None,
            max_memory: None,
            memory_samples: 3,
            max_requests: None,
            max_requests_jitter: 0,
            max_age: None,
            max_age_jitter: Duration::ZERO,
            max_recycling: 1,
        }
    }
}

impl Core {
    /// A heartbeat from the worker in `slot`.
    pub(super) fn on_heartbeat(&mut self, slot: usize, pid: u32, lag: Duration, requests: u64) {
        let _ = (slot, pid, lag, requests);
    }

    /// A memory sample of the worker in `slot`.
    pub(super) fn on_memory_sample(&mut self, slot: usize, pid: u32, rss: u64) {
        let _ = (slot, pid, rss);
    }
}
