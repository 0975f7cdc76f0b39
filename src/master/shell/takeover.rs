//! The new master's shell during a takeover: its generation starts in the lent slots while
//! the old master serves; once every worker is ready it tells the old master, and on the
//! commit it takes over (the final state, the lock's pid, the scoreboard link, the fronts,
//! systemd's main pid). The old master's workers keep their slots until they exit.

use std::sync::Arc;
use std::time::Duration;

use super::{Shell, TaskEvent};
use crate::ipc::Channel;
use crate::master::core::{Event, SignalEvent};
use crate::master::handover::new::{self, Later};
use crate::master::handover::wire::FromNew;
use crate::master::systemd;

/// How often the old master's workers are looked for in `/proc` after the commit.
const FOREIGN_POLL: Duration = Duration::from_millis(100);

/// Where a takeover stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The new generation starts.
    Starting,
    /// Ready was sent; waiting for the commit.
    AwaitCommit,
    /// This master serves.
    Done,
}

/// A takeover under way (or done).
#[derive(Debug)]
pub(super) struct Takeover {
    pub(super) channel: Arc<Channel>,
    pub(super) step: Step,
    /// The old master hung up before the commit.
    pub(super) orphaned: bool,
    /// Wakes the watch of the old workers at once (the old master exited: its workers
    /// were reaped, so the next look finds them gone without waiting for the poll).
    pub(super) look_now: Arc<tokio::sync::Notify>,
}

impl Shell {
    /// Starts listening to the old master (after the state was accepted).
    pub(in crate::master) fn begin_takeover(&mut self, channel: Channel) {
        let channel = Arc::new(channel);
        let tasks = self.tasks.clone();
        tokio::spawn(new::listen(channel.clone(), move |later| {
            let _ = tasks.send(TaskEvent::Takeover(later));
        }));
        self.takeover = Some(Takeover {
            channel,
            step: Step::Starting,
            orphaned: false,
            look_now: Arc::new(tokio::sync::Notify::new()),
        });
    }

    /// Before this master exits having failed: if it has not taken over yet, tells the old
    /// master why (its rollback then names the reason, not only this process's exit).
    pub(in crate::master) async fn give_up(&self, reason: &str) {
        let Some(t) = &self.takeover else { return };
        if t.step == Step::Done || t.orphaned {
            return;
        }
        let msg = FromNew::Refused {
            reason: reason.to_string(),
        };
        let send = t.channel.send(&msg, None);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), send).await {
            tracing::debug!("cannot tell the old master why: {e}");
        }
    }

    fn send_to_old(&self, msg: FromNew) {
        if let Some(t) = &self.takeover {
            let channel = t.channel.clone();
            tokio::spawn(async move {
                if let Err(e) = channel.send(&msg, None).await {
                    tracing::debug!("cannot tell the old master {msg:?}: {e}");
                }
            });
        }
    }

    /// The core says every worker is ready: during a takeover, that goes to the old master
    /// instead of systemd. Returns whether it was taken.
    pub(super) fn takeover_ready(&mut self) -> bool {
        let Some(t) = &mut self.takeover else {
            return false;
        };
        if t.step != Step::Starting {
            return t.step != Step::Done;
        }
        if t.orphaned {
            tracing::warn!("the old master is gone; taking over without its final state");
            self.take_over(None);
        } else {
            t.step = Step::AwaitCommit;
            let version = env!("CARGO_PKG_VERSION").to_string();
            self.send_to_old(FromNew::Ready { version });
        }
        true
    }

    /// The cluster stops before the takeover: the old master serves on.
    pub(super) fn takeover_stopping(&mut self) {
        if self.takeover.as_ref().is_some_and(|t| t.step != Step::Done) {
            let reason = self
                .core
                .failure()
                .unwrap_or("the new master was stopped")
                .to_string();
            self.send_to_old(FromNew::Refused { reason });
        }
    }

    pub(super) fn on_takeover(&mut self, later: Later) {
        let Some(step) = self.takeover.as_ref().map(|t| t.step) else {
            return;
        };
        match (later, step) {
            (Later::Commit(fin), Step::AwaitCommit) => self.take_over(Some(fin)),
            (Later::Commit(_), _) => {
                tracing::error!("the old master committed out of turn; stopping");
                self.feed(Event::Signal(SignalEvent::Stop));
            }
            (Later::Abort(reason), Step::Starting | Step::AwaitCommit) => {
                tracing::warn!("the old master cancelled the upgrade: {reason}; stopping");
                self.feed(Event::Signal(SignalEvent::Stop));
            }
            (Later::Abort(_), Step::Done) => {}
            (Later::Gone, Step::Starting) => {
                tracing::warn!("the old master exited during the upgrade; taking over once ready");
                if let Some(t) = &mut self.takeover {
                    t.orphaned = true;
                }
            }
            (Later::Gone, Step::AwaitCommit) => {
                tracing::warn!("the old master exited before the commit; taking over");
                self.take_over(None);
            }
            (Later::Gone, Step::Done) => {
                tracing::info!("the previous master has exited");
                if let Some(t) = &self.takeover {
                    t.look_now.notify_one();
                }
            }
        }
    }

    /// This master serves from now on.
    fn take_over(&mut self, fin: Option<serde_json::Value>) {
        let fin: Option<super::upgrade::Final> = fin.and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| {
                    tracing::error!("the final state does not parse ({e}); using the offer's")
                })
                .ok()
        });
        let workers = match fin {
            Some(f) => {
                let imported = serde_json::from_value(f.carried)
                    .map_err(|e| e.to_string())
                    .and_then(|c| self.sb.import_final(c).map_err(|e| e.to_string()));
                if let Err(e) = imported {
                    tracing::error!(
                        "cannot take the old master's final state ({e}); using the offer's"
                    );
                }
                // After the import, which brings the old master's counts.
                if let Some(record) = f.record {
                    self.sb.record_upgrade(crate::scoreboard::UpgradeRecord {
                        finished_unix_ms: crate::scoreboard::unix_ms(),
                        ..record
                    });
                }
                Some(f.workers)
            }
            None => None,
        };
        self.sb.set_header_frozen(false);
        let pid = std::process::id();
        if let Some(l) = &self.lock {
            if let Err(e) = l.write_pid(pid) {
                tracing::warn!("cannot write the pid into the lock file: {e}");
            }
        }
        self.publish_segment();
        self.listeners.arm();
        if let Some(f) = &mut self.fronts {
            f.arm();
            if let Err(e) = f.start() {
                tracing::error!("cannot accept on the control socket or status server: {e}");
            }
        }
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            systemd::notify(&format!(
                "MAINPID={pid}\nREADY=1\nSTATUS=upgraded; {}",
                self.status_line()
            ));
        }
        self.send_to_old(FromNew::Committed);
        if let Some(t) = &mut self.takeover {
            t.step = Step::Done;
        }
        self.sb.restamp();
        tracing::info!("master {pid} took over");
        self.watch_foreign(workers);
    }

    /// Frees each slot of the old master's once its worker is gone (`workers`: as of the
    /// commit; `None`: as handed over).
    fn watch_foreign(&mut self, workers: Option<Vec<(usize, u32)>>) {
        let workers = workers.unwrap_or_else(|| self.foreign.clone());
        for (slot, _) in &self.foreign {
            if !workers.iter().any(|(s, _)| s == slot) {
                let _ = self.tasks.send(TaskEvent::ForeignExited { slot: *slot });
            }
        }
        let tasks = self.tasks.clone();
        let look_now = self.takeover.as_ref().map(|t| t.look_now.clone());
        let mut watched: Vec<(usize, u32, Option<u64>)> = workers
            .into_iter()
            .map(|(slot, pid)| (slot, pid, super::procfs::start_time(pid)))
            .collect();
        tokio::spawn(async move {
            while !watched.is_empty() {
                watched.retain(|(slot, pid, start)| {
                    let alive = start.is_some() && super::procfs::start_time(*pid) == *start;
                    if !alive {
                        let _ = tasks.send(TaskEvent::ForeignExited { slot: *slot });
                    }
                    alive
                });
                match &look_now {
                    Some(now) => {
                        tokio::select! {
                            () = tokio::time::sleep(FOREIGN_POLL) => {}
                            () = now.notified() => {}
                        }
                    }
                    None => tokio::time::sleep(FOREIGN_POLL).await,
                }
            }
        });
    }

    /// A worker of the old master is gone.
    pub(super) fn on_foreign_exited(&mut self, slot: usize) {
        self.sb.release_foreign(slot);
        self.feed(Event::ForeignExited { slot });
    }
}
