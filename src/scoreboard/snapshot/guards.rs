//! What the worker guards left to show: recycles and kills by reason, each slot's last guard
//! event and event-loop lag, and the kill records. The master keeps them in its own memory
//! (never in the segment, see `segment::guards`); a reader in another process gets them from
//! the master as a [`GuardsReport`] (the control socket's `status` answer) and
//! [`Snapshot::apply_guards`] them.

use serde::{Deserialize, Serialize};

use super::{ClientAddr, RequestSnapshot, Snapshot};

/// Recycles by reason (`flora_worker_recycles_total{reason}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecycleCounts {
    /// Resident memory stayed over `--max-memory`.
    pub memory: u64,
    /// Served `--max-requests` (plus jitter).
    pub max_requests: u64,
    /// Lived `--max-worker-age` (plus jitter).
    pub age: u64,
}

impl RecycleCounts {
    /// The reasons, as label values, in label order.
    pub const REASONS: [&'static str; 3] = ["memory", "max_requests", "age"];

    /// `(reason, count)` of every reason, in label order.
    pub fn by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("memory", self.memory),
            ("max_requests", self.max_requests),
            ("age", self.age),
        ]
    }

    /// The counter of `reason` (`None` for an unknown one).
    pub(crate) fn get_mut(&mut self, reason: &str) -> Option<&mut u64> {
        match reason {
            "memory" => Some(&mut self.memory),
            "max_requests" => Some(&mut self.max_requests),
            "age" => Some(&mut self.age),
            _ => None,
        }
    }
}

/// Kills by reason (`flora_worker_kills_total{reason}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillCounts {
    /// No heartbeat within `--heartbeat-timeout` (a blocked event loop).
    pub heartbeat: u64,
    /// Still draining when the shutdown timeout ran out.
    pub shutdown_timeout: u64,
}

impl KillCounts {
    /// The reasons, as label values, in label order.
    pub const REASONS: [&'static str; 2] = ["heartbeat", "shutdown_timeout"];

    /// `(reason, count)` of every reason, in label order.
    pub fn by_reason(&self) -> [(&'static str, u64); 2] {
        [
            ("heartbeat", self.heartbeat),
            ("shutdown_timeout", self.shutdown_timeout),
        ]
    }

    /// All kills.
    pub fn total(&self) -> u64 {
        self.heartbeat.saturating_add(self.shutdown_timeout)
    }

    /// The counter of `reason` (`None` for an unknown one).
    pub(crate) fn get_mut(&mut self, reason: &str) -> Option<&mut u64> {
        match reason {
            "heartbeat" => Some(&mut self.heartbeat),
            "shutdown_timeout" => Some(&mut self.shutdown_timeout),
            _ => None,
        }
    }
}

/// Whether a guard recycled or killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardKind {
    /// A graceful replacement (memory, requests, age).
    Recycle,
    /// A kill (heartbeat, shutdown timeout).
    Kill,
}

impl GuardKind {
    /// `recycle` or `kill`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recycle => "recycle",
            Self::Kill => "kill",
        }
    }
}

/// The last thing a guard did to a slot's worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardEvent {
    /// Recycle or kill.
    pub kind: GuardKind,
    /// The reason's label (`memory`, `heartbeat`, …).
    pub reason: String,
    /// When, ms since the epoch.
    pub unix_ms: u64,
}

/// One in-flight request of a killed worker: the request as the connection table showed it,
/// and its client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KilledRequest {
    /// The request (the same fields as a connection's `request`).
    #[serde(flatten)]
    pub request: RequestSnapshot,
    /// The client's address.
    pub client: ClientAddr,
}

/// One thread of a killed worker, from `/proc/<pid>/task/<tid>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadSnapshot {
    /// Thread id.
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// Its scheduler state from `stat` (`R`, `S`, `D`, …).
    pub state: String,
    /// The kernel function it waits in (`wchan`; `0` or empty when running).
    pub wchan: String,
    /// The system call it is in (`syscall`: number and arguments, `running`, or empty when
    /// it could not be read).
    pub syscall: String,
}

/// What a worker was doing when the master killed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRecord {
    /// Its slot.
    pub slot: usize,
    /// Its pid.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
    /// Why (`heartbeat`, `shutdown_timeout`).
    pub reason: String,
    /// One line from the master (e.g. "no heartbeat for 3.0s").
    pub detail: String,
    /// When, ms since the epoch.
    pub unix_ms: u64,
    /// Its requests in flight, as the scoreboard showed them.
    pub requests: Vec<KilledRequest>,
    /// Its threads, as `/proc` showed them.
    pub threads: Vec<ThreadSnapshot>,
}

/// The guards' counts and the last kill records (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardsSnapshot {
    /// Recycles by reason.
    pub recycles: RecycleCounts,
    /// Kills by reason.
    pub kills: KillCounts,
    /// The last kill records, oldest first.
    pub kill_records: Vec<KillRecord>,
    /// Autoscaling's target changes by direction and reason (all 0 without autoscaling).
    #[serde(default)]
    pub scale_events: super::ScaleCounts,
}

/// The guard fields of one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotGuards {
    /// The slot.
    pub slot: usize,
    /// Its worker's event-loop lag, seconds.
    pub event_loop_lag_seconds: Option<f64>,
    /// The last thing a guard did to it.
    pub last_guard_event: Option<GuardEvent>,
}

/// The guard records a master sends to readers in other processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardsReport {
    /// The master they belong to.
    pub master_pid: u32,
    /// Counts and kill records.
    pub guards: GuardsSnapshot,
    /// Per slot (slots with nothing to show are left out).
    pub slots: Vec<SlotGuards>,
}

impl GuardsReport {
    /// Drops the oldest kill records until the report's JSON is at most `max_bytes` long
    /// (the counts and slots always stay).
    pub fn fit(mut self, max_bytes: usize) -> Self {
        let len = |r: &Self| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
        while !self.guards.kill_records.is_empty() && len(&self) > max_bytes {
            self.guards.kill_records.remove(0);
        }
        self
    }
}

impl Snapshot {
    /// The guard records of this snapshot, when it has them (the master's own).
    pub fn guards_report(&self) -> Option<GuardsReport> {
        let guards = self.guards.clone()?;
        let slots = self
            .slots
            .iter()
            .filter(|s| s.event_loop_lag_seconds.is_some() || s.last_guard_event.is_some())
            .map(|s| SlotGuards {
                slot: s.index,
                event_loop_lag_seconds: s.event_loop_lag_seconds,
                last_guard_event: s.last_guard_event.clone(),
            })
            .collect();
        Some(GuardsReport {
            master_pid: self.master_pid,
            guards,
            slots,
        })
    }

    /// Takes the guard records of `report` when it comes from this snapshot's master
    /// (a reader in another process). Returns whether it did.
    pub fn apply_guards(&mut self, report: GuardsReport) -> bool {
        if report.master_pid != self.master_pid || self.master_pid == 0 {
            return false;
        }
        for g in report.slots {
            if let Some(s) = self.slots.get_mut(g.slot) {
                s.event_loop_lag_seconds = g.event_loop_lag_seconds;
                s.last_guard_event = g.last_guard_event;
            }
        }
        self.guards = Some(report.guards);
        true
    }
}
