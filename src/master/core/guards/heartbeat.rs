//! The heartbeat kill and the kill records: a ready worker whose event loop stopped
//! turning gets a [`Action::RecordKill`], SIGTERM, and SIGKILL after the shutdown timeout;
//! a worker still draining at its deadline gets its record before the SIGKILL. One record
//! per worker: the heartbeat record stands for the SIGKILL that may follow it.

use std::time::{Duration, Instant};

use super::super::workers::Worker;
use super::super::{Action, Core, KillReason, Level, Sig};

/// How long past a heartbeat deadline the core may handle it and still trust that the shell
/// read every heartbeat sent before it. Later, the master itself did not run (stopped,
/// paused, starved) and the workers' heartbeats may wait unread: they get this long again
/// instead of a kill for the master's own stall.
pub(in crate::master::core) const STALL_GRACE: Duration = Duration::from_millis(500);

impl Core {
    /// A heartbeat from the worker in `slot`: it beat now, and reports its request count.
    pub(in crate::master::core) fn on_heartbeat(
        &mut self,
        slot: usize,
        pid: u32,
        _lag: Duration,
        requests: u64,
    ) {
        let now = self.now;
        if let Some(w) = self.worker_mut(slot, pid) {
            w.watch.last_beat = Some(now);
            w.watch.beats = true;
            w.watch.requests = requests;
        }
    }

    /// When `w` must have beaten by: only a ready, not draining, not yet killed worker
    /// (of any generation) with a heartbeat timeout set, once it sent a heartbeat.
    fn beat_due(&self, w: &Worker) -> Option<Instant> {
        let timeout = self.cfg.guards.heartbeat_timeout?;
        if !w.ready || w.draining || w.watch.killed.is_some() || w.pid.is_none() {
            return None;
        }
        let due = w.watch.last_beat?.checked_add(timeout)?;
        let due = due.max(w.watch.stall_grace.unwrap_or(due));
        // A worker that never beat: one deadline, for the warning only.
        (w.watch.beats || !w.watch.silent_logged).then_some(due)
    }

    pub(in crate::master::core) fn heartbeat_deadlines(
        &self,
    ) -> impl Iterator<Item = Instant> + '_ {
        self.workers.values().filter_map(|w| self.beat_due(w))
    }

    /// Kills every worker whose heartbeat deadline has come (see [`STALL_GRACE`]); a worker
    /// that never sent one is warned about once and not watched.
    pub(in crate::master::core) fn kill_silent(&mut self) {
        let now = self.now;
        let timeout = self.cfg.guards.heartbeat_timeout.unwrap_or_default();
        let silent: Vec<(usize, Instant)> = self
            .workers
            .iter()
            .filter_map(|(s, w)| self.beat_due(w).map(|t| (*s, t)))
            .filter(|(_, t)| *t <= now)
            .collect();
        for (slot, due) in silent {
            let Some(w) = self.workers.get_mut(&slot) else {
                continue;
            };
            if !w.watch.beats {
                w.watch.silent_logged = true;
                let (pid, generation) = (w.pid, w.generation);
                let msg = format!(
                    "worker sent no heartbeat within {timeout:?} of its ready (built with an \
                     older flora-cluster library?): --heartbeat-timeout does not apply to it"
                );
                self.log_about(Level::Warn, msg, Some(slot), pid, Some(generation));
            } else if now.saturating_duration_since(due) > STALL_GRACE {
                // The master missed this deadline itself: heartbeats may wait unread.
                w.watch.stall_grace = Some(now + STALL_GRACE);
            } else {
                self.kill_for_heartbeat(slot);
            }
        }
    }

    /// `RecordKill`, then SIGTERM now and SIGKILL after the shutdown timeout (a blocked
    /// loop may not handle SIGTERM). Its exit respawns the slot like any other.
    fn kill_for_heartbeat(&mut self, slot: usize) {
        let (now, shutdown) = (self.now, self.cfg.shutdown_timeout);
        let timeout = self.cfg.guards.heartbeat_timeout.unwrap_or_default();
        let Some(w) = self.workers.get_mut(&slot) else {
            return;
        };
        let (Some(pid), Some(beat)) = (w.pid, w.watch.last_beat) else {
            return;
        };
        w.watch.killed = Some(KillReason::Heartbeat);
        let kill_at = now + shutdown;
        w.kill_at = Some(w.kill_at.map_or(kill_at, |k| k.min(kill_at)));
        let generation = w.generation;
        let silent = now.saturating_duration_since(beat);
        let detail = format!("no heartbeat for {silent:.1?} (timeout {timeout:?})");
        let msg = format!("worker killed: {detail}; SIGTERM now, SIGKILL in {shutdown:?}");
        self.out.push(Action::RecordKill {
            slot,
            pid,
            reason: KillReason::Heartbeat,
            detail,
        });
        self.log_about(Level::Warn, msg, Some(slot), Some(pid), Some(generation));
        self.signal(slot, Sig::Term);
    }

    /// Before a SIGKILL at the drain deadline: the worker's `RecordKill` with
    /// [`KillReason::ShutdownTimeout`] unless it already has one (a heartbeat kill).
    /// Returns the log line for the SIGKILL.
    pub(in crate::master::core) fn record_overdue_kill(&mut self, slot: usize) -> String {
        let t = self.cfg.shutdown_timeout;
        let Some(w) = self.workers.get_mut(&slot) else {
            return String::new();
        };
        if w.watch.killed.is_some() {
            return format!("worker did not exit within {t:?} of SIGTERM: killing it");
        }
        if let Some(pid) = w.pid {
            w.watch.killed = Some(KillReason::ShutdownTimeout);
            self.out.push(Action::RecordKill {
                slot,
                pid,
                reason: KillReason::ShutdownTimeout,
                detail: format!("still running after the shutdown timeout ({t:?})"),
            });
        }
        format!("worker still draining after {t:?}: killing it")
    }
}
