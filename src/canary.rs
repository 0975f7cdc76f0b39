//! Canary reloads: what is asked for ([`CanarySpec`]), what the master measured of the two
//! generations ([`GenerationFigures`]), and the pure verdict ([`judge`]).
//!
//! A canary reload starts K workers of the new generation next to the whole old one, lets
//! both serve for S seconds, then compares them from the scoreboard (the counters' growth
//! during those seconds, by the generation of each slot's worker) and either promotes the new
//! generation (a rolling reload K at a time, the canaries being its first batch) or rolls it
//! back (the canaries drain; the old generation was never touched).
//!
//! The rules, for the figures of the observation window:
//! - a canary worker that exits during the window: rollback at once (reason `crash`);
//! - fewer than `min_requests` requests in either generation: rollback ("too few requests to
//!   judge": promoting on no evidence is not safe);
//! - canary 5xx ratio > old 5xx ratio + `max_error_ratio`: rollback;
//! - canary p99 > old p99 × `max_p99_ratio`, and above [`P99_FLOOR_SECONDS`] (below it the
//!   histogram buckets are too coarse to tell): rollback;
//! - otherwise promote.
//!
//! ```
//! use flora_cluster::canary::{judge, CanaryLimits, GenerationFigures, Verdict};
//! let limits = CanaryLimits::default();
//! let old = GenerationFigures::new(2, 1000, 0, Some(0.004));
//! let new = GenerationFigures::new(3, 200, 40, Some(0.004));
//! let (verdict, reason) = judge(&limits, &old, &new);
//! assert_eq!(verdict, Verdict::Rollback);
//! assert!(reason.contains("5xx ratio"));
//! ```

use serde::{Deserialize, Serialize};

/// Below this p99 (seconds) latencies are never judged worse: the first histogram buckets
/// are too close together for a ratio to mean anything.
pub const P99_FLOOR_SECONDS: f64 = 0.005;

/// Longest observation window accepted, seconds (a day).
pub const MAX_SECS: f64 = 86_400.0;

/// The limits a canary is judged against (the `[canary]` table of the configuration file:
/// the defaults of canary requests that leave them out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryLimits {
    /// Fail when the canary's 5xx ratio exceeds the old one's by more than this (0..=1).
    pub max_error_ratio: f64,
    /// Fail when the canary's p99 exceeds the old one's times this (> 0).
    pub max_p99_ratio: f64,
    /// Fewer requests than this in either generation: rollback, too few to judge.
    pub min_requests: u64,
}

impl Default for CanaryLimits {
    /// 0.01 (one point of 5xx ratio), 1.5 × p99, 20 requests.
    fn default() -> Self {
        Self {
            max_error_ratio: 0.01,
            max_p99_ratio: 1.5,
            min_requests: 20,
        }
    }
}

impl CanaryLimits {
    /// Checks the limits.
    ///
    /// # Errors
    /// A message naming the bad value: a ratio not in [0, 1], a p99 ratio not finite and > 0.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.max_error_ratio;
        if !(0.0..=1.0).contains(&r) {
            return Err(format!("canary max error ratio {r} must be in [0, 1]"));
        }
        let p = self.max_p99_ratio;
        if !(p.is_finite() && p > 0.0) {
            return Err(format!(
                "canary max p99 ratio {p} must be a finite number > 0"
            ));
        }
        Ok(())
    }
}

/// A canary reload as asked for (the control socket's `canary` command).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// New workers that serve next to the old generation (1..=workers).
    pub workers: usize,
    /// How long both serve before the comparison, seconds (> 0, at most a day).
    pub secs: f64,
    /// The limits.
    pub limits: CanaryLimits,
}

impl CanarySpec {
    /// Checks everything but the worker count against the cluster (the master does that).
    ///
    /// # Errors
    /// A message naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("canary workers must be at least 1".into());
        }
        let s = self.secs;
        if !(s.is_finite() && s > 0.0 && s <= MAX_SECS) {
            return Err(format!(
                "canary seconds {s} must be a finite number in (0, {MAX_SECS}]"
            ));
        }
        self.limits.validate()
    }
}

/// `--canary K`: a whole number ≥ 1.
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn parse_workers(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(k) if k >= 1 => Ok(k),
        _ => Err(format!("{text:?}: must be a whole number of workers >= 1")),
    }
}

/// `--canary-max-error-ratio R`: a number in [0, 1].
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn parse_error_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?}: must be a ratio in [0, 1]")),
    }
}

/// `--canary-max-p99-ratio P`: a finite number > 0.
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn parse_p99_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 => Ok(p),
        _ => Err(format!("{text:?}: must be a finite factor > 0")),
    }
}

/// One generation's figures over the observation window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerationFigures {
    /// The generation.
    pub generation: u64,
    /// Requests finished in the window.
    pub requests: u64,
    /// Of which answered 5xx.
    pub errors_5xx: u64,
    /// `errors_5xx / requests` (0 without requests).
    pub error_ratio: f64,
    /// The 99th percentile of the request durations, seconds (none without requests).
    pub p99_seconds: Option<f64>,
    /// Its workers that exited unexpectedly in the window.
    pub crashes: u64,
}

impl GenerationFigures {
    /// Figures with the ratio computed and no crash.
    pub fn new(generation: u64, requests: u64, errors_5xx: u64, p99: Option<f64>) -> Self {
        let error_ratio = if requests == 0 {
            0.0
        } else {
            errors_5xx as f64 / requests as f64
        };
        Self {
            generation,
            requests,
            errors_5xx,
            error_ratio,
            p99_seconds: p99,
            crashes: 0,
        }
    }
}

/// Promote or roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The new generation replaces the old one.
    Promote,
    /// The canaries drain; the old generation keeps serving.
    Rollback,
}

/// A canary reload being observed: both generations' figures since its workers were all
/// ready (JSON `reloads.canary_window`, the status page).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CanaryWindow {
    /// When the observation began, ms since the epoch.
    pub since_unix_ms: u64,
    /// How long it lasts, seconds.
    pub secs: f64,
    /// The old generation so far.
    pub old: GenerationFigures,
    /// The canaries so far.
    pub new: GenerationFigures,
}

/// Canary reloads by verdict, for the master's life (`flora_canary_reloads_total{verdict}`).
/// A canary that crashed or was not ready counts as a rollback; one ended by a stop is not
/// counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryCounts {
    /// Promoted.
    pub promote: u64,
    /// Rolled back.
    pub rollback: u64,
}

impl CanaryCounts {
    /// `(verdict label, count)`, both always.
    pub fn by_verdict(&self) -> [(&'static str, u64); 2] {
        [("promote", self.promote), ("rollback", self.rollback)]
    }

    /// Counts `report`'s verdict, if it has one.
    pub fn count(&mut self, report: &CanaryReport) {
        match report.verdict {
            Some(Verdict::Promote) => self.promote += 1,
            Some(Verdict::Rollback) => self.rollback += 1,
            None => {}
        }
    }
}

/// What a canary reload found: in the reload outcome, the log and the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// Canary workers.
    pub workers: usize,
    /// The observation window asked for, seconds.
    pub secs: f64,
    /// The limits.
    pub limits: CanaryLimits,
    /// The old generation's figures (none when it ended before the comparison).
    pub old: Option<GenerationFigures>,
    /// The canaries' figures (none when it ended before the comparison).
    pub new: Option<GenerationFigures>,
    /// Promote or rollback (none when the reload ended before the verdict).
    pub verdict: Option<Verdict>,
    /// Why, in one line.
    pub reason: String,
}

impl CanaryReport {
    /// One line with the figures, for the log and the CLI.
    pub fn summary(&self) -> String {
        let fig = |f: &Option<GenerationFigures>| match f {
            Some(f) => format!(
                "gen {}: {} requests, {} 5xx ({:.2}%), p99 {}, {} crashes",
                f.generation,
                f.requests,
                f.errors_5xx,
                f.error_ratio * 100.0,
                f.p99_seconds
                    .map_or_else(|| "-".into(), |p| format!("{:.1} ms", p * 1000.0)),
                f.crashes
            ),
            None => "no figures".into(),
        };
        format!(
            "canary {}: {} | old {} | new {}",
            self.verdict.map_or("ended", |v| match v {
                Verdict::Promote => "promoted",
                Verdict::Rollback => "rolled back",
            }),
            self.reason,
            fig(&self.old),
            fig(&self.new)
        )
    }
}

/// The verdict on `new` (the canaries) against `old` (see the module docs for the rules).
pub fn judge(
    limits: &CanaryLimits,
    old: &GenerationFigures,
    new: &GenerationFigures,
) -> (Verdict, String) {
    if new.crashes > 0 {
        let n = new.crashes;
        return (
            Verdict::Rollback,
            format!("crash: {n} canary workers exited"),
        );
    }
    let min = limits.min_requests;
    if new.requests < min || old.requests < min {
        return (
            Verdict::Rollback,
            format!(
                "too few requests to judge: {} old, {} canary, {min} needed in each",
                old.requests, new.requests
            ),
        );
    }
    let allowed = old.error_ratio + limits.max_error_ratio;
    if new.error_ratio > allowed {
        return (
            Verdict::Rollback,
            format!(
                "5xx ratio {:.4} over {:.4} (old {:.4} + {})",
                new.error_ratio, allowed, old.error_ratio, limits.max_error_ratio
            ),
        );
    }
    if let (Some(o), Some(n)) = (old.p99_seconds, new.p99_seconds) {
        let allowed = o * limits.max_p99_ratio;
        if n > allowed && n > P99_FLOOR_SECONDS {
            return (
                Verdict::Rollback,
                format!(
                    "p99 {:.4}s over {allowed:.4}s (old {o:.4}s × {})",
                    n, limits.max_p99_ratio
                ),
            );
        }
    }
    (Verdict::Promote, "within the limits".into())
}

#[cfg(test)]
mod tests;
