//! The worker guards' settings (`request_timeout`, `heartbeat_timeout`, `max_memory`,
//! `max_requests` and its jitter, `max_worker_age` and its jitter, `max_recycling`): their
//! checks and durations. All off by default.

use std::time::Duration;

use super::{check_seconds, duration_of, Config, ConfigError, MAX_TIMEOUT_SECS, MAX_WORKERS};

/// Shortest `--heartbeat-timeout`, seconds: the master checks heartbeats on its own timers,
/// and a worker's heartbeat interval is a quarter of the timeout.
pub const MIN_HEARTBEAT_TIMEOUT_SECS: f64 = 1.0;
/// Longest interval between a worker's heartbeats.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Checks a jitter in seconds: finite, at least 0 and at most [`MAX_TIMEOUT_SECS`].
fn check_jitter_seconds(secs: f64) -> Result<f64, String> {
    if secs.is_finite() && (0.0..=MAX_TIMEOUT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!(
            "{secs}: must be seconds in [0, {MAX_TIMEOUT_SECS}]"
        ))
    }
}

/// Parses `--max-worker-age-jitter` (seconds, 0 allowed; a clap `value_parser`).
///
/// # Errors
/// Not a number, or out of range.
pub fn parse_jitter_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    check_jitter_seconds(secs)
}

/// Parses `--heartbeat-timeout` (seconds, at least [`MIN_HEARTBEAT_TIMEOUT_SECS`]).
///
/// # Errors
/// Not a number, or out of range.
pub fn parse_heartbeat_seconds(text: &str) -> Result<f64, String> {
    let secs = super::parse_seconds(text)?;
    check_heartbeat(secs)
}

fn check_heartbeat(secs: f64) -> Result<f64, String> {
    let secs = check_seconds(secs)?;
    if secs < MIN_HEARTBEAT_TIMEOUT_SECS {
        return Err(format!(
            "{secs}: must be at least {MIN_HEARTBEAT_TIMEOUT_SECS} s (the heartbeat is sent \
             every quarter of it)"
        ));
    }
    Ok(secs)
}

impl Config {
    /// The request timeout (`--request-timeout`), if set.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout.map(duration_of)
    }

    /// The heartbeat timeout (`--heartbeat-timeout`), if set.
    pub fn heartbeat_timeout(&self) -> Option<Duration> {
        self.heartbeat_timeout.map(duration_of)
    }

    /// How often each worker sends a heartbeat: a quarter of the heartbeat timeout, at most
    /// [`MAX_HEARTBEAT_INTERVAL`] (also without a timeout: the event-loop lag is always shown).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_timeout()
            .map_or(MAX_HEARTBEAT_INTERVAL, |t| {
                (t / 4).min(MAX_HEARTBEAT_INTERVAL)
            })
            .max(Duration::from_millis(1))
    }

    /// The worker age limit (`--max-worker-age`), if set.
    pub fn max_worker_age(&self) -> Option<Duration> {
        self.max_worker_age.map(duration_of)
    }

    /// The worker age jitter (`--max-worker-age-jitter`; zero when unset).
    pub fn max_worker_age_jitter(&self) -> Duration {
        self.max_worker_age_jitter
            .map_or(Duration::ZERO, |j| duration_of(j.max(0.0)))
    }

    /// Whether a guard that recycles workers (memory, requests, age) is on.
    pub fn recycles(&self) -> bool {
        self.max_memory.is_some() || self.max_requests.is_some() || self.max_worker_age.is_some()
    }

    /// Checks the guard settings.
    pub(super) fn check_guards(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| {
            Err(ConfigError::Invalid {
                key,
                line: None,
                reason,
            })
        };
        let seconds = [
            ("request_timeout", self.request_timeout.map(check_seconds)),
            (
                "heartbeat_timeout",
                self.heartbeat_timeout.map(check_heartbeat),
            ),
            ("max_worker_age", self.max_worker_age.map(check_seconds)),
            (
                "max_worker_age_jitter",
                self.max_worker_age_jitter.map(check_jitter_seconds),
            ),
        ];
        for (key, checked) in seconds {
            if let Some(Err(reason)) = checked {
                return invalid(key, reason);
            }
        }
        if self.max_requests == Some(0) {
            return invalid("max_requests", "0: must be at least 1".into());
        }
        if self.max_memory == Some(0) {
            return invalid("max_memory", "0: must be at least 1 byte".into());
        }
        if !(1..=MAX_WORKERS).contains(&self.max_recycling) {
            return invalid(
                "max_recycling",
                format!("{}: must be 1..={MAX_WORKERS}", self.max_recycling),
            );
        }
        for (key, jitter, base, flag) in [
            (
                "max_requests_jitter",
                self.max_requests_jitter.is_some(),
                self.max_requests.is_some(),
                "max_requests (--max-requests)",
            ),
            (
                "max_worker_age_jitter",
                self.max_worker_age_jitter.is_some(),
                self.max_worker_age.is_some(),
                "max_worker_age (--max-worker-age)",
            ),
        ] {
            if jitter && !base {
                return invalid(key, format!("needs {flag} (a jitter is added to it)"));
            }
        }
        self.check_spare_slot()
    }

    /// A recycle starts the replacement in a free slot before the old worker drains.
    fn check_spare_slot(&self) -> Result<(), ConfigError> {
        let workers = self.peak_workers();
        if !self.recycles() || self.slot_count() > workers {
            return Ok(());
        }
        let guard = [
            (self.max_memory.is_some(), "--max-memory"),
            (self.max_requests.is_some(), "--max-requests"),
            (self.max_worker_age.is_some(), "--max-worker-age"),
        ]
        .into_iter()
        .find_map(|(on, flag)| on.then_some(flag))
        .unwrap_or("a recycle guard");
        Err(ConfigError::Invalid {
            key: "slots",
            line: None,
            reason: format!(
                "{}: {guard} starts each replacement in a spare slot before the old worker \
                 drains, and {} slots for {workers} workers leave none; use --slots {} or \
                 more (the default is 2 × workers + 2)",
                self.slot_count(),
                self.slot_count(),
                workers + 1
            ),
        })
    }
}
