//! What the core is configured with.

use std::time::Duration;

use super::{Autoscale, Guards};

/// What the core is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Instance name (for the status document).
    pub name: String,
    /// The master's pid (for the status document).
    pub master_pid: u32,
    /// Slots in the scoreboard.
    pub slots: usize,
    /// Workers wanted at start.
    pub workers: usize,
    /// How long a new worker may take to become ready.
    pub ready_timeout: Duration,
    /// How long a worker may drain before it is killed.
    pub shutdown_timeout: Duration,
    /// Whether a before-reload hook is set.
    pub before_reload: bool,
    /// Whether a before-shutdown hook is set.
    pub before_shutdown: bool,
    /// Heartbeat kill and recycle limits.
    pub guards: Guards,
    /// Rolling reloads: the new generation starts this many workers at a time (`None`: all
    /// at once).
    pub reload_batch: Option<usize>,
    /// Canary reloads: the limits a request leaves out.
    pub canary_limits: crate::canary::CanaryLimits,
    /// Autoscaling between bounds (`None`: the target moves only on `scale`).
    pub autoscale: Option<Autoscale>,
    /// Why this master cannot be upgraded at all (PID 1), if it cannot.
    pub upgrade_refused: Option<String>,
}
