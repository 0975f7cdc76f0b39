//! Worker guards: the heartbeat kill ([`heartbeat`]) and the graceful recycles for memory,
//! request count and age ([`recycle`]). Diagrams in the module docs of [`super`].
//!
//! The core decides only from what the master measured or was told on a worker's own
//! control channel: heartbeats (time of arrival, and the request count they carry), RSS
//! samples from `/proc`, and its own spawn time. Nothing here reads the scoreboard.

pub(super) mod heartbeat;
mod recycle;

use std::time::{Duration, Instant};

use super::{Core, KillReason};

pub(super) use recycle::Recycle;

/// The guards' limits (all off by default; the shell fills them from the flags).
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

/// What the guards keep of one worker.
#[derive(Debug, Clone, Default)]
pub(super) struct Watch {
    /// When its last heartbeat arrived, or when it turned ready (the later).
    pub(super) last_beat: Option<Instant>,
    /// Not killed before then: the master itself missed its heartbeat deadline.
    pub(super) stall_grace: Option<Instant>,
    /// A heartbeat came (a worker built with a library that sends none is not watched).
    pub(super) beats: bool,
    /// The "sends no heartbeats" warning was logged.
    pub(super) silent_logged: bool,
    /// Requests it reported in its latest heartbeat.
    pub(super) requests: u64,
    /// Memory samples over the limit in a row.
    pub(super) over_memory: u32,
    /// Its latest RSS sample in bytes.
    pub(super) rss: u64,
    /// Recycled once its heartbeat reports this many requests (limit + its jitter).
    pub(super) requests_limit: Option<u64>,
    /// Recycled from then on (spawn time + age limit + its jitter); `None` also when the
    /// sum does not fit an `Instant`.
    pub(super) retire_at: Option<Instant>,
    /// Why it was killed: its one [`super::Action::RecordKill`] is out.
    pub(super) killed: Option<KillReason>,
    /// No recycle before then (the last one failed).
    pub(super) retry_at: Option<Instant>,
    /// Its recycle was recorded (a retry after a failed replacement is not counted again).
    pub(super) recycle_recorded: bool,
    /// The "no free slot for a recycle" warning was logged.
    pub(super) wait_logged: bool,
}

/// The per-worker jitter: a small deterministic generator (splitmix64) seeded by the core,
/// so that the core stays pure and a test can replay it.
#[derive(Debug, Clone)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub(super) fn upto(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next() % n,
            None => self.next(),
        }
    }

    /// A duration in `0..=max` (nanosecond steps, capped at `u64::MAX` ns).
    pub(super) fn duration_upto(&mut self, max: Duration) -> Duration {
        let ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.upto(ns))
    }
}

/// Bytes as MiB with one decimal, for log lines.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

impl Core {
    /// The guard state of a worker spawned now: its limits with their jitter drawn.
    pub(super) fn new_watch(&mut self) -> Watch {
        let (g, jitter) = (&self.cfg.guards, &mut self.jitter);
        let requests_limit = g
            .max_requests
            .map(|m| m.saturating_add(jitter.upto(g.max_requests_jitter)));
        let retire_at = g.max_age.and_then(|age| {
            let extra = jitter.duration_upto(g.max_age_jitter);
            self.now.checked_add(age.checked_add(extra)?)
        });
        Watch {
            requests_limit,
            retire_at,
            ..Watch::default()
        }
    }

    /// A memory sample of the worker in `slot`: counts the samples over the limit in a row.
    pub(super) fn on_memory_sample(&mut self, slot: usize, pid: u32, rss: u64) {
        let max = self.cfg.guards.max_memory;
        let Some(w) = self.worker_mut(slot, pid) else {
            return;
        };
        w.watch.rss = rss;
        w.watch.over_memory = match max {
            Some(max) if rss > max => w.watch.over_memory.saturating_add(1),
            _ => 0,
        };
    }

    /// Runs after every event: kills silent workers, begins the recycles that are due.
    pub(super) fn run_guards(&mut self) {
        self.kill_silent();
        self.begin_due_recycles();
    }

    /// The guards' next deadlines (heartbeats, replacements, ages, retries) for
    /// [`Core::poll_timeout`].
    pub(super) fn guard_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.heartbeat_deadlines().chain(self.recycle_deadlines())
    }
}
