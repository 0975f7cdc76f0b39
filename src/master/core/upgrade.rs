//! The master upgrade, as the core sees it: one coordinator job beside the reload. The old
//! master lends its free slots, the shell starts the new master and runs the handover
//! (`crate::upgrade`); the core only decides when to commit, when to roll back, and what
//! nothing else may do meanwhile. On the new master's side, [`Core::resume`] starts a core
//! whose slots of the old workers are held until those workers exit.
//!
//! ```text
//!  Upgrade request ── refused now: stopping, starting, a reload/restore/recycle/queued
//!    │                reload, fewer free slots than the target, PID 1; another upgrade
//!    │                under way: the waiter joins it
//!    ▼
//!  SpawnUpgrade (lent = free slots, held until the new master is gone) + RELOADING=1
//!    │ UpgradeSpawned                           │ UpgradeFailed, or the deadline
//!    ▼                                          ▼
//!  Handing: the new master starts its workers   rollback: AbortUpgrade, RecordUpgrade,
//!    │ UpgradeReady                             answer every waiter (exit 1 at the CLI),
//!    ▼                                          READY=1; lent slots back at UpgradeGone
//!  Committing: CommitUpgrade (stop accepting, final state) ── UpgradeFailed / deadline ──┘
//!    │ UpgradeCommitted
//!    ▼
//!  Retire: RecordUpgrade, answer every waiter, every worker drains, exit 0
//! ```
//! While an upgrade runs, reloads, canaries and scales are refused (one coordinator); the
//! old workers are respawned in their own slots as always. After a rollback, a reload waits
//! for the held slots like for draining workers, and a stop finishes only once the new
//! master is gone (it shares the instance lock).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::stop::StopHow;
use super::{Action, Core, Level, Notify, Stop, WaiterId};
use crate::control::{Outcome, Reply, UpgradeReport};

/// How long the handover itself may take on top of the ready timeout, when the request
/// names no timeout.
pub(super) const HANDOVER_SLACK: Duration = Duration::from_secs(10);
/// How long the new master may take to answer the commit.
pub(super) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Waiting for the new master to start and say ready.
    Handing,
    /// Committed on our side (accepting stopped); waiting for the new master's ack.
    Committing,
}

/// An upgrade under way.
#[derive(Debug)]
pub(super) struct UpgradeTx {
    pub(super) waiters: Vec<WaiterId>,
    pub(super) binary: Option<PathBuf>,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    pub(super) step: Step,
    pub(super) new_pid: Option<u32>,
    pub(super) new_version: Option<String>,
}

impl Core {
    /// A new master's core after a takeover: `generation` serves in the old master's
    /// `foreign` slots (never spawned into until [`super::Event::ForeignExited`]); the start
    /// spawns generation + 1 into free slots.
    pub fn resume(&mut self, generation: u64, target: usize, foreign: &[usize]) {
        self.next_generation = generation + 1;
        self.target = target.min(self.cfg.slots);
        self.held = foreign
            .iter()
            .copied()
            .filter(|s| *s < self.cfg.slots)
            .collect();
    }

    /// Whether this master handed over to a new one and only drains.
    #[cfg(test)]
    pub(super) fn retiring(&self) -> bool {
        self.retiring
    }

    /// Whether the commit went out and is not answered yet.
    pub(super) fn commit_sent(&self) -> bool {
        self.upgrade
            .as_ref()
            .is_some_and(|tx| tx.step == Step::Committing)
    }

    /// Whether an upgrade is under way.
    pub(super) fn upgrading(&self) -> bool {
        self.upgrade.is_some()
    }

    pub(super) fn request_upgrade(
        &mut self,
        binary: Option<PathBuf>,
        timeout: Option<Duration>,
        waiter: Option<WaiterId>,
    ) {
        if let Some(tx) = &mut self.upgrade {
            if tx.binary == binary {
                tx.waiters.extend(waiter);
                let msg = "upgrade requested while one is under way: joined it";
                self.log(Level::Info, msg.into());
            } else {
                let msg = "an upgrade to another binary is under way; try again when it ends";
                match waiter {
                    Some(w) => self.reply(w, Reply::error(msg)),
                    None => self.log(Level::Warn, format!("upgrade refused: {msg}")),
                }
            }
            return;
        }
        if let Err(why) = self.upgrade_refusal() {
            self.log(Level::Warn, format!("upgrade refused: {why}"));
            if let Some(w) = waiter {
                self.reply(w, Reply::error(why));
            }
            return;
        }
        let lent = self.free_slots();
        let timeout = timeout.unwrap_or(self.cfg.ready_timeout + HANDOVER_SLACK);
        let workers: Vec<(usize, u32)> = self
            .workers
            .iter()
            .filter_map(|(slot, w)| w.pid.map(|pid| (*slot, pid)))
            .collect();
        let msg = format!(
            "upgrading the master: {} lent slots, timeout {timeout:?}",
            lent.len()
        );
        self.log(Level::Info, msg);
        self.held = lent.iter().copied().collect();
        self.upgrade = Some(UpgradeTx {
            waiters: waiter.into_iter().collect(),
            binary: binary.clone(),
            started: self.now,
            deadline: self.now + timeout,
            step: Step::Handing,
            new_pid: None,
            new_version: None,
        });
        self.out.push(Action::Notify(Notify::Upgrading));
        self.out.push(Action::SpawnUpgrade {
            binary,
            lent,
            workers,
            generation: self.generation,
            target: self.target,
        });
    }

    /// Why an upgrade cannot begin now.
    fn upgrade_refusal(&self) -> Result<(), String> {
        if let Some(why) = &self.cfg.upgrade_refused {
            return Err(why.clone());
        }
        if self.stop != Stop::No || self.retiring {
            return Err("the cluster is stopping".into());
        }
        if self.start_deadline.is_some() {
            return Err("the cluster is still starting; try again once it is ready".into());
        }
        if self.reload.is_some() || self.queued.is_some() || self.restoring > 0 {
            return Err("a reload is in progress; try again when it ends".into());
        }
        if !self.recycles.is_empty() {
            return Err("a worker recycle is in progress; try again in a moment".into());
        }
        if !self.held.is_empty() {
            // A failed upgrade's new master, or (after a takeover) the old master's workers.
            return Err(format!(
                "the other master of the last upgrade still holds {} slots while it stops; \
                 try again in a moment",
                self.held.len()
            ));
        }
        let free = self.free_slots().len();
        if free < self.target {
            return Err(format!(
                "an upgrade needs {} free slots for the new master's workers and {free} are \
                 free (--slots {}): raise --slots or scale down first",
                self.target, self.cfg.slots
            ));
        }
        Ok(())
    }

    pub(super) fn on_upgrade_spawned(&mut self, pid: u32) {
        if let Some(tx) = &mut self.upgrade {
            tx.new_pid = Some(pid);
            self.log(Level::Info, format!("new master started (pid {pid})"));
        }
    }

    pub(super) fn on_upgrade_ready(&mut self, version: String) {
        let Some(tx) = &mut self.upgrade else { return };
        if tx.step != Step::Handing {
            return;
        }
        tx.step = Step::Committing;
        tx.deadline = self.now + COMMIT_TIMEOUT;
        let pid = tx.new_pid.unwrap_or(0);
        tx.new_version = Some(version.clone());
        let msg = format!("new master {pid} ({version}) is ready: handing over");
        self.log(Level::Info, msg);
        let report = match &self.upgrade {
            Some(tx) => self.upgrade_report(tx, Outcome::Success, None),
            None => return,
        };
        self.out.push(Action::CommitUpgrade(report));
    }

    pub(super) fn on_upgrade_committed(&mut self) {
        let Some(tx) = self.upgrade.take() else {
            return;
        };
        if tx.step != Step::Committing {
            // Not asked for: treat as a broken protocol.
            self.upgrade = Some(tx);
            self.fail_upgrade("the new master committed before it was asked to".into());
            return;
        }
        let report = self.upgrade_report(&tx, Outcome::Success, None);
        let msg = format!(
            "master upgraded: {} serves now; draining {} workers and exiting",
            report.to_pid.unwrap_or(0),
            self.workers.len()
        );
        self.log(Level::Info, msg);
        self.out.push(Action::RecordUpgrade(report.clone()));
        let reply = Reply {
            ok: true,
            upgrade: Some(report),
            ..Reply::default()
        };
        self.answer_all(tx.waiters, &reply);
        // A stop that waited for the commit's answer: retiring drains everything anyway.
        self.stop_after_upgrade = false;
        self.retiring = true;
        self.out.push(Action::Retire);
        self.enter_stopping("handed over to the new master", StopHow::Drain);
    }

    /// Rolls an upgrade back: the new master is told to give up (or stopped); every waiter
    /// learns why. The lent slots stay held until the new master is gone.
    pub(super) fn fail_upgrade(&mut self, reason: String) {
        let Some(tx) = self.upgrade.take() else {
            return;
        };
        let report = self.upgrade_report(&tx, Outcome::Rollback, Some(reason.clone()));
        self.log(
            Level::Error,
            format!("upgrade rolled back: {reason}; this master serves on"),
        );
        self.out.push(Action::AbortUpgrade {
            reason: reason.clone(),
            kill: tx.step == Step::Committing,
        });
        self.out.push(Action::RecordUpgrade(report.clone()));
        self.out.push(Action::Notify(Notify::UpgradeRolledBack));
        let reply = Reply {
            ok: true,
            upgrade: Some(report),
            ..Reply::default()
        };
        self.answer_all(tx.waiters, &reply);
        if tx.new_pid.is_none() {
            // Nothing was started: nothing can hold the lent slots.
            self.held.clear();
        } else {
            // It holds the instance lock too: this master exits only once it is gone.
            self.abandoned = true;
        }
        if std::mem::take(&mut self.stop_after_upgrade) {
            self.request_stop("stop requested during the upgrade's commit");
        }
    }

    /// The failed upgrade's new master is gone: its slots are free again.
    pub(super) fn on_upgrade_gone(&mut self) {
        if self.upgrade.is_some() {
            self.fail_upgrade("the new master exited".into());
        }
        self.abandoned = false;
        if !self.retiring {
            self.held.clear();
            self.slot_freed();
        }
    }

    /// After a takeover: a worker of the previous master is gone.
    pub(super) fn on_foreign_exited(&mut self, slot: usize) {
        if self.upgrade.is_none() && self.held.remove(&slot) {
            self.slot_freed();
        }
    }

    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        self.upgrade.as_ref().map(|tx| tx.deadline)
    }

    /// The deadline check of [`Self::on_tick`].
    pub(super) fn check_upgrade_deadline(&mut self) {
        let Some(tx) = &self.upgrade else { return };
        if tx.deadline > self.now {
            return;
        }
        let waited = self.now.saturating_duration_since(tx.started);
        let reason = match tx.step {
            Step::Handing => format!(
                "the new master{} was not ready within {:.1} s",
                tx.new_pid
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                waited.as_secs_f64()
            ),
            Step::Committing => format!(
                "the new master did not take over within {} s of the commit",
                COMMIT_TIMEOUT.as_secs()
            ),
        };
        self.fail_upgrade(reason);
    }

    /// A refusal while an upgrade runs (reloads, canaries, scales), if one does.
    pub(super) fn refuse_during_upgrade(&mut self, waiter: Option<WaiterId>, what: &str) -> bool {
        if self.upgrade.is_none() && !self.retiring {
            return false;
        }
        let why = if self.retiring {
            "this master has handed over to a new one; ask the new master".to_string()
        } else if waiter.is_some() {
            format!("a master upgrade is in progress; {what} again when it ends")
        } else {
            "a master upgrade is in progress".to_string()
        };
        match waiter {
            Some(w) => self.reply(w, Reply::error(why)),
            None => self.log(Level::Warn, format!("{what} ignored: {why}")),
        }
        true
    }

    fn upgrade_report(
        &self,
        tx: &UpgradeTx,
        outcome: Outcome,
        reason: Option<String>,
    ) -> UpgradeReport {
        let elapsed = self.now.saturating_duration_since(tx.started);
        UpgradeReport {
            outcome,
            from_pid: self.cfg.master_pid,
            to_pid: tx.new_pid,
            from_version: env!("CARGO_PKG_VERSION").to_string(),
            to_version: tx.new_version.clone(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            reason,
        }
    }
}

/// The slots held by the other master: never free.
pub(super) type Held = BTreeSet<usize>;
