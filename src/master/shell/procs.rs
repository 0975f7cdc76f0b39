//! Worker processes: starting one with its control channel and the tasks that reap it and
//! read its messages, and signalling or draining it.

use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::{Shell, TaskEvent};
use crate::ipc::{self, Channel, ToMaster, ToWorker};
use crate::master::core::Sig;
use crate::master::spawn;

/// The shell's handle on one live worker.
#[derive(Debug)]
pub(super) struct Proc {
    pub(super) pid: u32,
    pub(super) channel: Arc<Channel>,
    /// Signals for the task that owns the child (it never signals a reaped pid).
    signals: mpsc::UnboundedSender<Signal>,
}

impl Shell {
    /// The live worker `pid` in `slot`.
    pub(super) fn proc(&self, slot: usize, pid: u32) -> Option<&Proc> {
        self.procs.get(&slot).filter(|p| p.pid == pid)
    }

    /// Starts a worker of `generation` in `slot`; returns its pid.
    pub(super) fn spawn_worker(&mut self, slot: usize, generation: u64) -> std::io::Result<u32> {
        let spec = self.specs.get(&generation).cloned().ok_or_else(|| {
            std::io::Error::other(format!("generation {generation} has no program"))
        })?;
        if spec.copied {
            self.dir.verify()?;
        }
        let (master_end, worker_end) = ipc::pair()?;
        // Everything that can fail happens before the fork: a worker is never left running
        // unknown to the master.
        let channel = Arc::new(Channel::new(master_end)?);
        // The header a new worker's readers see is the master's, whatever was scribbled on it.
        self.sb.restamp();
        let child = spawn::spawn(
            &spec,
            slot,
            generation,
            worker_end,
            self.sb.fd(),
            self.sb.layout(),
        )?;
        let pid = child.id().unwrap_or(0);
        self.sb.slot_spawned(slot, pid, generation);
        let (signals, sig_rx) = mpsc::unbounded_channel::<Signal>();
        tokio::spawn(reap(child, slot, pid, sig_rx, self.tasks.clone()));
        tokio::spawn(read(channel.clone(), slot, pid, self.tasks.clone()));
        let handle = Proc {
            pid,
            channel,
            signals,
        };
        self.procs.insert(slot, handle);
        Ok(pid)
    }

    pub(super) fn signal_worker(&self, slot: usize, pid: u32, sig: Sig) {
        if let Some(p) = self.proc(slot, pid) {
            let _ = p.signals.send(match sig {
                Sig::Term => Signal::SIGTERM,
                Sig::Kill => Signal::SIGKILL,
            });
        }
    }

    /// Asks for a drain over the control channel; SIGTERM if that fails.
    pub(super) fn drain_worker(&self, slot: usize, pid: u32) {
        let Some(p) = self.proc(slot, pid) else {
            return;
        };
        let (channel, signals) = (p.channel.clone(), p.signals.clone());
        tokio::spawn(async move {
            if channel.send(&ToWorker::Shutdown, None).await.is_err() {
                let _ = signals.send(Signal::SIGTERM);
            }
        });
    }
}

/// Owns the child: signals it on request until it exits, then reports the exit.
async fn reap(
    mut child: tokio::process::Child,
    slot: usize,
    pid: u32,
    mut sig_rx: mpsc::UnboundedReceiver<Signal>,
    tasks: mpsc::UnboundedSender<TaskEvent>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let _ = tasks.send(TaskEvent::Exited { slot, pid, status: status.ok() });
                return;
            }
            Some(sig) = sig_rx.recv() => {
                // id() is None once reaped: never signals a recycled pid.
                if let Some(id) = child.id() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id as i32), sig);
                }
            }
        }
    }
}

/// Heartbeats closer together than this are dropped (a worker past `--max-requests` sends one
/// every 50 ms; one that floods its channel must not flood the master's loop).
const MIN_BEAT_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// Forwards a worker's control messages until its channel closes.
async fn read(
    reader: Arc<Channel>,
    slot: usize,
    pid: u32,
    tasks: mpsc::UnboundedSender<TaskEvent>,
) {
    let mut last_beat: Option<std::time::Instant> = None;
    loop {
        match reader.recv::<ToMaster>().await {
            Ok(Some((msg, _fds))) => {
                if let ToMaster::Heartbeat { .. } = msg {
                    let now = std::time::Instant::now();
                    if last_beat.is_some_and(|t| now.duration_since(t) < MIN_BEAT_GAP) {
                        continue;
                    }
                    last_beat = Some(now);
                }
                if tasks.send(TaskEvent::Control { slot, pid, msg }).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            // The worker is gone (killed with unread messages): its exit event follows.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => {
                let error = e.to_string();
                let _ = tasks.send(TaskEvent::ControlBroken { slot, pid, error });
                return;
            }
        }
    }
}
