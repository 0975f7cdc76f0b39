//! The old master's shell during an upgrade: it starts the new master and runs the handover
//! (`crate::master::handover::old`), stops and resumes the fronts, and feeds what happens
//! back to the core, which decides.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::{Shell, TaskEvent};
use crate::control::{Outcome, UpgradeReport};
use crate::master::core::{Action, Event};
use crate::master::handover::old::{self, Cmd, Report};
use crate::master::handover::wire::{FdRole, State, PROTOCOL};
use crate::master::handover::write_blob;
use crate::scoreboard::{UpgradeOutcomeKind, UpgradeRecord};

/// What the final state carries besides the master's memory.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(in crate::master) struct Final {
    /// `crate::scoreboard::Carried`.
    pub carried: serde_json::Value,
    /// The old master's workers at the commit (slot, pid).
    pub workers: Vec<(usize, u32)>,
    /// The upgrade's record, for the new master to keep.
    pub record: Option<UpgradeRecord>,
}

/// The record kept of an upgrade's report.
pub(super) fn record_of(r: &UpgradeReport) -> UpgradeRecord {
    UpgradeRecord {
        outcome: match r.outcome {
            Outcome::Success => UpgradeOutcomeKind::Success,
            Outcome::Rollback => UpgradeOutcomeKind::Rollback,
        },
        from_pid: r.from_pid,
        to_pid: r.to_pid,
        from_version: r.from_version.clone(),
        to_version: r.to_version.clone(),
        duration_ms: r.duration_ms,
        reason: r.reason.clone(),
        finished_unix_ms: crate::scoreboard::unix_ms(),
    }
}

impl Shell {
    /// Carries out an upgrade action; returns the event that answers it at once, if any.
    pub(super) fn upgrade_action(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::SpawnUpgrade {
                binary,
                lent,
                workers,
                generation,
                target,
            } => {
                let state = (lent, workers, generation, target);
                return Some(match self.spawn_upgrade(binary, state) {
                    Ok(pid) => Event::UpgradeSpawned { pid },
                    Err(reason) => Event::UpgradeFailed { reason },
                });
            }
            Action::CommitUpgrade(report) => {
                if let Err(reason) = self.commit_upgrade(&report) {
                    return Some(Event::UpgradeFailed { reason });
                }
            }
            Action::AbortUpgrade { reason, kill } => self.abort_upgrade(reason, kill),
            Action::RecordUpgrade(report) => self.record_upgrade(&report),
            Action::Retire => self.retire(),
            _ => {}
        }
        None
    }

    fn spawn_upgrade(
        &mut self,
        binary: Option<std::path::PathBuf>,
        (lent, workers, generation, target): (Vec<usize>, Vec<(usize, u32)>, u64, usize),
    ) -> Result<u32, String> {
        let binary = binary.or_else(|| self.origin.exe.clone()).ok_or(
            "cannot tell which binary this master was started from; name one with --binary",
        )?;
        old::check_binary(&binary)?;
        let (state, fds) = self
            .offer(lent.clone(), workers, generation, target)
            .map_err(|e| format!("cannot describe the state to hand over: {e}"))?;
        let tasks = self.tasks.clone();
        let report = move |r: Report| {
            let _ = tasks.send(TaskEvent::Upgrade(r));
        };
        let handle = old::start(&binary, &self.origin.argv, &state, fds, report)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        for slot in &lent {
            let _ = self.sb.set_slot_foreign(*slot, true);
        }
        self.lent = lent;
        let pid = handle.pid;
        self.new_master = Some(handle);
        Ok(pid)
    }

    /// The state and every descriptor to hand over, in the same order.
    fn offer(
        &self,
        lent: Vec<usize>,
        workers: Vec<(usize, u32)>,
        generation: u64,
        target: usize,
    ) -> std::io::Result<(State, Vec<OwnedFd>)> {
        let fronts = self
            .fronts
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the fronts are not up"))?;
        let lock = self
            .lock
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no instance lock"))?;
        let mut roles = vec![
            FdRole::Lock,
            FdRole::Segment,
            FdRole::Control {
                path: fronts.control_path().to_owned(),
                file: fronts.control_file_id(),
            },
        ];
        let mut fds = vec![
            lock.fd().try_clone_to_owned()?,
            self.sb.fd().try_clone_to_owned()?,
            fronts.control_fd().try_clone_to_owned()?,
        ];
        if let Some((fd, addr)) = fronts.status_fd() {
            roles.push(FdRole::Status { addr });
            fds.push(fd.try_clone_to_owned()?);
        }
        for (role, fd) in self.listeners.describe() {
            roles.push(role);
            fds.push(fd.try_clone_to_owned()?);
        }
        let carried = serde_json::to_value(self.sb.carried()).map_err(std::io::Error::other)?;
        let state = State {
            protocol: PROTOCOL,
            from_pid: std::process::id(),
            from_version: env!("CARGO_PKG_VERSION").to_string(),
            name: self.name.clone(),
            slots: self.sb.slot_count(),
            routes: self.sb.layout().routes,
            runtime_dir: self.dir.path().to_owned(),
            status_requested: self.status_requested.clone(),
            generation,
            target,
            lent,
            workers,
            fds: roles,
            carried,
        };
        Ok((state, fds))
    }

    /// Stops accepting and sends the final state.
    fn commit_upgrade(&mut self, report: &UpgradeReport) -> Result<(), String> {
        let handle = self.new_master.as_ref().ok_or("no new master")?;
        if let Some(f) = &mut self.fronts {
            f.stop();
        }
        self.sb.set_header_frozen(true);
        let workers = self.procs.iter().map(|(slot, p)| (*slot, p.pid)).collect();
        let fin = Final {
            carried: serde_json::to_value(self.sb.carried()).map_err(|e| e.to_string())?,
            workers,
            record: Some(record_of(report)),
        };
        let bytes = serde_json::to_vec(&fin).map_err(|e| e.to_string())?;
        let blob = write_blob(&bytes).map_err(|e| format!("cannot write the final state: {e}"))?;
        handle
            .cmd
            .send(Cmd::Commit(blob, bytes.len() as u64))
            .map_err(|_| "the handover ended before the commit".to_string())
    }

    /// Tells the new master to give up (or stops it), and serves on.
    fn abort_upgrade(&mut self, reason: String, kill: bool) {
        if let Some(h) = &self.new_master {
            if kill {
                tracing::warn!("stopping new master {} at once: the commit was out", h.pid);
                let _ = h.signal.send(true);
            }
            if h.cmd.send(Cmd::Abort(reason)).is_err() {
                let _ = h.signal.send(false);
            }
            // Its ready workers drain; whatever is left after that is killed.
            let signal = h.signal.clone();
            let grace = self.shutdown_timeout + Duration::from_secs(5);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = signal.send(true);
            });
        }
        self.sb.set_header_frozen(false);
        if let Some(f) = &mut self.fronts {
            if let Err(e) = f.start() {
                tracing::error!("cannot accept on the control socket or status server again: {e}");
            }
        }
    }

    fn record_upgrade(&self, r: &UpgradeReport) {
        self.sb.record_upgrade(record_of(r));
    }

    /// The new master serves: leave it the sockets' files and the lock.
    fn retire(&mut self) {
        self.retired = true;
        if let Some(f) = &mut self.fronts {
            f.disarm();
        }
        self.listeners.disarm();
        if let Some(l) = &mut self.lock {
            l.hand_over();
        }
    }

    /// A report of the handover tasks.
    pub(super) fn on_upgrade_report(&mut self, r: Report) {
        match r {
            Report::Ready { version } => self.feed(Event::UpgradeReady { version }),
            Report::Committed => self.feed(Event::UpgradeCommitted),
            Report::Failed(reason) => self.feed(Event::UpgradeFailed { reason }),
            Report::Exited(how) => {
                let pid = self.new_master.take().map_or(0, |h| h.pid);
                if !self.retired {
                    tracing::info!("new master {pid} {how}");
                    for slot in std::mem::take(&mut self.lent) {
                        let _ = self.sb.set_slot_foreign(slot, false);
                    }
                }
                self.feed(Event::UpgradeFailed {
                    reason: format!("the new master (pid {pid}) {how}"),
                });
                self.feed(Event::UpgradeGone);
            }
        }
    }
}
