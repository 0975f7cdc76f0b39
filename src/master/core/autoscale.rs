//! Autoscaling (`--workers-min A --workers-max B`): the target follows the load, between
//! the bounds.
//!
//! The signal is the **load**: requests in flight in the ready workers (the shell samples
//! the scoreboard about every 250 ms and feeds [`Event::Load`](super::Event::Load)), taken
//! per ready worker of the serving generation; and the listen queue: connections waiting
//! that no worker accepted yet. A worker with one request in flight counts 1, with ten 10:
//! keep-alive connections stay with the worker that accepted them, so only the in-flight
//! count shows that the old workers still carry the load after new ones started.
//!
//! ```text
//!            load ≥ 3/4 per ready worker (or a queue) in every sample for up_after,
//!            every worker of the target ready, cooldown over, target < max
//!   steady ───────────────────────────────────────────────────────────────► target + 1
//!     ▲  │                                                    (reason busy or queue)
//!     │  │ the peak load of the last scale_down_after is ≤ (target − 1) / 2,
//!     │  │ no queue in it, target > min
//!     │  └────────────────────────────────────────────────────────────────► target − 1
//!     │                                                        (reason idle)
//!     └── after each change (a manual `scale` too): the samples are forgotten, the idle
//!         window starts again, and no scale-up before the cooldown is over
//! ```
//!
//! Hysteresis: after a scale-up from t at a load L ≥ 3t/4, a scale-down from t + 1 needs
//! L ≤ t/2; after a scale-down to t at L ≤ t/2, a scale-up needs L ≥ 3t/4. So under a steady
//! load (a constant in-flight count, as a constant request rate and latency give whatever the
//! worker count) the target moves one way only, then stays. A scale refused for the moment
//! (a reload, a recycle, the start, a rollback's restore, no free slot) is simply tried again
//! at a later sample. The core counts ready workers itself; the in-flight counts come from
//! the scoreboard, so a worker that lies about its requests moves the target at most within
//! the bounds the operator set.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Action, Core, Level, Phase, ScaleDirection, ScaleReason, Stop};
use crate::control::Reply;

/// The autoscaler's settings (`--workers-min`, `--workers-max`, `--scale-down-after`).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Fewest workers.
    pub min: usize,
    /// Most workers.
    pub max: usize,
    /// A worker is removed after the cluster was idle for this long.
    pub scale_down_after: Duration,
    /// In-flight requests per ready worker at or over which the cluster is busy.
    pub up_per_worker: f64,
    /// In-flight requests per worker, with one worker fewer, at or under which the cluster
    /// is idle (below `up_per_worker`: the gap is the hysteresis).
    pub down_per_worker: f64,
    /// How long the cluster must be busy before a worker is added.
    pub up_after: Duration,
    /// No scale-up sooner than this after a change (and never before every worker of the
    /// target is ready).
    pub cooldown: Duration,
}

impl Autoscale {
    /// Bounds `min..=max` and `scale_down_after`, the rest at their defaults.
    pub fn new(min: usize, max: usize, scale_down_after: Duration) -> Self {
        Self {
            min,
            max,
            scale_down_after,
            up_per_worker: 0.75,
            down_per_worker: 0.5,
            up_after: Duration::from_secs(1),
            cooldown: Duration::from_secs(1),
        }
    }
}

/// What the autoscaler remembers between samples.
#[derive(Debug, Clone, Default)]
pub(super) struct ScaleState {
    /// Since when every sample was busy, and why the latest was.
    hot_since: Option<(Instant, ScaleReason)>,
    /// The last change (the cooldown starts there).
    changed_at: Option<Instant>,
    /// The last change, or the first sample: the idle window is full once it is
    /// `scale_down_after` old.
    window_start: Option<Instant>,
    /// The samples' loads (a queue counts as the highest load), kept as a sliding maximum:
    /// decreasing values, each with its time.
    peaks: VecDeque<(Instant, u64)>,
    /// The latest sample, for the status answer.
    last: Option<Sample>,
}

/// One load sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    busy: usize,
    in_flight: u64,
    queued: u64,
}

impl ScaleState {
    /// Forgets the samples after a change at `now`.
    fn restart(&mut self, now: Instant) {
        self.hot_since = None;
        self.changed_at = Some(now);
        self.window_start = Some(now);
        self.peaks.clear();
    }

    /// Adds `load` at `now` to the sliding maximum of the samples less than `window` old.
    fn push_peak(&mut self, now: Instant, load: u64, window: Duration) {
        while self.peaks.back().is_some_and(|&(_, v)| v <= load) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((now, load));
        while self
            .peaks
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= window)
        {
            self.peaks.pop_front();
        }
    }
}

impl Core {
    /// Ready, not draining workers of the serving generation.
    fn serving(&self) -> usize {
        let g = self.generation;
        let ok = |w: &&super::Worker| w.ready && !w.draining && w.generation == g;
        self.workers.values().filter(ok).count()
    }

    /// A load sample: `busy` ready workers with a request in flight (shown in the status),
    /// `in_flight` requests in the ready workers, `queued` connections in the listen queues.
    pub(super) fn on_load(&mut self, busy: usize, in_flight: u64, queued: u64) {
        let Some(cfg) = self.cfg.autoscale.clone() else {
            return;
        };
        let now = self.now;
        let serving = self.serving();
        let busy = busy.min(serving);
        // Each busy worker has at least one request in flight.
        let load = in_flight.max(busy as u64);
        let st = &mut self.autoscale;
        st.last = Some(Sample {
            busy,
            in_flight,
            queued,
        });
        let reason = if queued > 0 {
            Some(ScaleReason::Queue)
        } else if serving > 0 && load as f64 >= cfg.up_per_worker * serving as f64 {
            Some(ScaleReason::Busy)
        } else {
            None
        };
        st.hot_since = reason.map(|r| (st.hot_since.map_or(now, |(t, _)| t), r));
        let peak = if queued > 0 { u64::MAX } else { load };
        st.push_peak(now, peak, cfg.scale_down_after);
        let start = *st.window_start.get_or_insert(now);
        // During an upgrade the samples count (its windows stay true) but nothing moves.
        if self.phase != Phase::Running || self.stop != Stop::No || self.upgrade.is_some() {
            return;
        }
        if let Some((since, reason)) = self.autoscale.hot_since {
            let cooled = self
                .autoscale
                .changed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= cfg.cooldown);
            let sustained = now.saturating_duration_since(since) >= cfg.up_after;
            if sustained && cooled && serving >= self.target && self.target < cfg.max {
                self.auto_scale(self.target + 1, ScaleDirection::Up, reason);
            }
            return;
        }
        let full = now.saturating_duration_since(start) >= cfg.scale_down_after;
        let peak = self.autoscale.peaks.front().map_or(0, |&(_, v)| v);
        let idle = peak as f64 <= cfg.down_per_worker * self.target.saturating_sub(1) as f64;
        if full && idle && self.target > cfg.min {
            self.auto_scale(self.target - 1, ScaleDirection::Down, ScaleReason::Idle);
        }
    }

    /// Scales to `n` for the autoscaler; a refusal waits for a later sample.
    fn auto_scale(&mut self, n: usize, direction: ScaleDirection, reason: ScaleReason) {
        let from = self.target;
        if !self.scale(n).ok {
            return;
        }
        self.autoscale.restart(self.now);
        self.out.push(Action::RecordScale { direction, reason });
        let msg = format!(
            "autoscale {}: {from} -> {n} workers ({})",
            direction.as_str(),
            reason.as_str()
        );
        self.log(Level::Info, msg);
    }

    /// A `scale` request: while autoscaling, only within the bounds (they stay); it sets the
    /// target like the autoscaler does and counts as reason `manual`.
    pub(super) fn manual_scale(&mut self, n: usize) -> Reply {
        let Some(cfg) = self.cfg.autoscale.as_ref() else {
            return self.scale(n);
        };
        let (min, max) = (cfg.min, cfg.max);
        if !(min..=max).contains(&n) {
            return Reply::error(format!(
                "invalid worker count {n}: autoscaling keeps the workers within {min}..={max} \
                 (--workers-min, --workers-max); scale within them"
            ));
        }
        let from = self.target;
        let reply = self.scale(n);
        if reply.ok && n != from {
            self.autoscale.restart(self.now);
            let direction = if n > from {
                ScaleDirection::Up
            } else {
                ScaleDirection::Down
            };
            let reason = ScaleReason::Manual;
            self.out.push(Action::RecordScale { direction, reason });
        }
        reply
    }

    /// The autoscaler's part of the status answer.
    pub(super) fn autoscale_status(&self) -> serde_json::Value {
        let Some(cfg) = &self.cfg.autoscale else {
            return serde_json::Value::Null;
        };
        let last = self.autoscale.last;
        serde_json::json!({
            "min": cfg.min,
            "max": cfg.max,
            "scale_down_after_seconds": cfg.scale_down_after.as_secs_f64(),
            "busy": last.map(|s| s.busy),
            "in_flight": last.map(|s| s.in_flight),
            "queued": last.map(|s| s.queued),
        })
    }
}
