//! The old master's side: start the new master with one end of a socket pair, send it the
//! state and the descriptors, and report what it says (or that it exited) to the shell.
//! Every wait has a deadline; the core's own deadline covers the whole upgrade.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::wire::{FromNew, FromOld, State, PROTOCOL};
use super::{write_blob, ENV_UPGRADE_FD};
use crate::ipc::{Channel, MAX_FDS};

/// How long the new master may take to say hello, and to accept the state.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the new master's exit status after it hung up (for the reason).
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// What the old master reports to its shell.
#[derive(Debug)]
pub(in crate::master) enum Report {
    /// The new master has every worker ready.
    Ready {
        /// Its version.
        version: String,
    },
    /// It took over.
    Committed,
    /// The handover failed.
    Failed(String),
    /// The new master process exited (how).
    Exited(String),
}

/// What the shell tells the handover task.
#[derive(Debug)]
pub(in crate::master) enum Cmd {
    /// Send the final state (a blob and its length): the old master accepts no more.
    Commit(OwnedFd, u64),
    /// Tell the new master to give up.
    Abort(String),
}

/// A started new master.
#[derive(Debug)]
pub(in crate::master) struct Handle {
    /// Its pid.
    pub pid: u32,
    /// Commands to the handover task.
    pub cmd: mpsc::UnboundedSender<Cmd>,
    /// Signals to it: `false` SIGTERM, `true` SIGKILL.
    pub signal: mpsc::UnboundedSender<bool>,
}

/// The binary a new master runs: an absolute path to a regular, executable file of root or
/// ours that nobody else can write (a group- or world-writable binary would let another
/// user choose the code of the master).
///
/// # Errors
/// Why it is refused.
pub(in crate::master) fn check_binary(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        Err(format!("{} is not a regular file", path.display()))
    } else if mode & 0o111 == 0 {
        Err(format!("{} is not executable", path.display()))
    } else if meta.uid() != 0 && meta.uid() != euid {
        Err(format!(
            "{} belongs to uid {}, not to root or us ({euid})",
            path.display(),
            meta.uid()
        ))
    } else if mode & 0o022 != 0 {
        Err(format!(
            "{} is writable by group or others (mode {:04o}); refusing to run it as the master",
            path.display(),
            mode & 0o7777
        ))
    } else {
        Ok(())
    }
}

/// Starts `binary` with `argv` (argv\[0\] first) and runs the handover of `state` and `fds`
/// (in the order of `state.fds`) in tasks that send [`Report`]s through `report`.
///
/// # Errors
/// When the socket pair or the process cannot be made.
pub(in crate::master) fn start(
    binary: &Path,
    argv: &[OsString],
    state: &State,
    fds: Vec<OwnedFd>,
    report: impl Fn(Report) + Send + Sync + 'static,
) -> std::io::Result<Handle> {
    let state_json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let (ours, theirs) = crate::ipc::pair()?;
    let mut cmd = tokio::process::Command::new(binary);
    if let Some((arg0, rest)) = argv.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env(ENV_UPGRADE_FD, theirs.as_raw_fd().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .kill_on_drop(false);
    crate::scoreboard::raw::fd::inherit_in_child(&mut cmd, vec![theirs.as_raw_fd()]);
    let mut child = cmd.spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    let channel = Channel::new(ours)?;
    let report = std::sync::Arc::new(report);
    let (exit_tx, exit_rx) = watch::channel(None::<String>);
    // Set when the conversation ended: its reason (what the new master said) goes first.
    let (talk_tx, mut talk_rx) = watch::channel(false);
    let (signal, mut signals) = mpsc::unbounded_channel::<bool>();
    let r = report.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                status = child.wait() => {
                    let how = match status {
                        Ok(s) => describe(s),
                        Err(e) => format!("could not be waited for ({e})"),
                    };
                    let _ = exit_tx.send(Some(how.clone()));
                    let _ = tokio::time::timeout(EXIT_GRACE, talk_rx.wait_for(|done| *done)).await;
                    r(Report::Exited(how));
                    return;
                }
                Some(kill) = signals.recv() => {
                    if kill {
                        let _ = child.start_kill();
                    } else if let Some(p) = child.id() {
                        // Not reaped yet (this task reaps it): the pid is still this child.
                        let p = nix::unistd::Pid::from_raw(p as i32);
                        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
                    }
                }
            }
        }
    });
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut exit = exit_rx;
        let result = converse(&channel, state_json, fds, cmd_rx, &*report).await;
        if let Err(reason) = result {
            // It hung up: most likely it exited; say how.
            let how = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| v.clone()));
            let reason = match how {
                Some(how) if reason.contains("hung up") => {
                    format!("the new master (pid {pid}) {how} {}", step_of(&reason))
                }
                _ => reason,
            };
            report(Report::Failed(reason));
        }
        let _ = talk_tx.send(true);
    });
    Ok(Handle {
        pid,
        cmd: cmd_tx,
        signal,
    })
}

/// "before it said hello" from "the new master hung up before it said hello".
fn step_of(reason: &str) -> &str {
    reason.find("before").map_or("", |i| &reason[i..])
}

/// How a process ended, for a person.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited (exit code {c})"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

async fn recv(channel: &Channel, step: &str) -> Result<FromNew, String> {
    match channel.recv::<FromNew>().await {
        Ok(Some((msg, _fds))) => Ok(msg),
        Ok(None) => Err(format!("the new master hung up {step}")),
        Err(e) => Err(format!("the new master broke the protocol {step}: {e}")),
    }
}

async fn recv_within(channel: &Channel, step: &str) -> Result<FromNew, String> {
    tokio::time::timeout(STEP_TIMEOUT, recv(channel, step))
        .await
        .map_err(|_| {
            format!(
                "the new master did not answer within {} s {step}",
                STEP_TIMEOUT.as_secs()
            )
        })?
}

async fn send(
    channel: &Channel,
    msg: &FromOld,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(), String> {
    channel
        .send_fds(msg, fds)
        .await
        .map_err(|e| format!("cannot send to the new master: {e}"))
}

/// The whole conversation; `Err` is the reason the upgrade failed.
async fn converse(
    channel: &Channel,
    state: Vec<u8>,
    fds: Vec<OwnedFd>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    report: &(dyn Fn(Report) + Send + Sync),
) -> Result<(), String> {
    use std::os::fd::AsFd;
    match recv_within(channel, "before it said hello").await? {
        FromNew::Hello {
            protocol,
            version,
            layout_hash,
            ..
        } => {
            let ours = crate::scoreboard::raw::layout::layout_hash();
            let refusal = if protocol != PROTOCOL {
                Some(format!(
                    "the new master ({version}) speaks handover protocol {protocol}, this one {PROTOCOL}"
                ))
            } else if layout_hash != ours {
                Some(format!(
                    "the new master ({version}) has another scoreboard layout \
                     ({layout_hash:#x}, ours {ours:#x}): its workers could not share the \
                     segment with ours; a restart is needed for this version"
                ))
            } else {
                None
            };
            if let Some(reason) = refusal {
                let _ = send(
                    channel,
                    &FromOld::Refused {
                        reason: reason.clone(),
                    },
                    &[],
                )
                .await;
                return Err(reason);
            }
        }
        other => return Err(format!("the new master sent {other:?} instead of hello")),
    }
    let blob = write_blob(&state).map_err(|e| format!("cannot write the state: {e}"))?;
    let offer = FromOld::Offer {
        state_len: state.len() as u64,
        fds: fds.len(),
    };
    send(channel, &offer, &[blob.as_fd()]).await?;
    for batch in fds.chunks(MAX_FDS) {
        let borrowed: Vec<_> = batch.iter().map(AsFd::as_fd).collect();
        send(channel, &FromOld::Fds { count: batch.len() }, &borrowed).await?;
    }
    drop(fds);
    match recv_within(channel, "before it accepted the state").await? {
        FromNew::Accepted => {}
        FromNew::Refused { reason } => return Err(format!("the new master refused: {reason}")),
        other => {
            return Err(format!(
                "the new master sent {other:?} instead of accepting"
            ))
        }
    }
    let mut committed = false;
    loop {
        tokio::select! {
            msg = recv(channel, if committed { "after it took over" } else { "before it was ready" }) => {
                match msg {
                    Ok(FromNew::Ready { version }) => report(Report::Ready { version }),
                    Ok(FromNew::Committed) => {
                        committed = true;
                        report(Report::Committed);
                    }
                    Ok(FromNew::Refused { reason }) => {
                        return Err(format!("the new master gave up: {reason}"));
                    }
                    Ok(other) => return Err(format!("the new master sent {other:?} out of turn")),
                    // After the takeover its channel may close at any time.
                    Err(_) if committed => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Some(cmd) = cmds.recv() => match cmd {
                Cmd::Commit(blob, len) => {
                    send(channel, &FromOld::Commit { state_len: len }, &[blob.as_fd()]).await?;
                }
                Cmd::Abort(reason) => {
                    let _ = send(channel, &FromOld::Abort { reason }, &[]).await;
                    return Ok(());
                }
            },
        }
    }
}

/// The path this process was started from and its arguments, read at start (later the path
/// may say "(deleted)" after a package upgrade).
#[derive(Debug, Clone)]
pub(in crate::master) struct Origin {
    /// The binary.
    pub exe: Option<PathBuf>,
    /// argv, argv\[0\] first.
    pub argv: Vec<OsString>,
}

impl Origin {
    /// This process's.
    pub(in crate::master) fn current() -> Self {
        Self {
            exe: std::env::current_exe().ok(),
            argv: std::env::args_os().collect(),
        }
    }
}

#[cfg(test)]
mod tests;
