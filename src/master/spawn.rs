//! Building and starting one worker process.
//!
//! The worker inherits two descriptors: its end of the control channel and the scoreboard
//! segment. Their numbers travel in environment variables ([`crate::ipc`]). Both stay
//! close-on-exec in the master; the flag is cleared in the child only, between fork and exec
//! ([`crate::scoreboard::raw::fd::inherit_in_child`]), so a process that any other thread of the
//! master (or of an app embedding it) forks never inherits them.
//!
//! The parent-death signal a worker arms is tied to the thread that forked it, so that thread
//! must live as long as the master: `flora-cluster` runs the loop on the main thread (a
//! current-thread runtime).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::ipc;

/// What the workers of one generation are started with.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The file to execute (the generation's copy of the program, or the program itself).
    pub exe: std::path::PathBuf,
    /// Whether `exe` is our copy (removed when the generation is gone).
    pub copied: bool,
    /// `argv[0]`: the program as configured.
    pub argv0: String,
    /// Further arguments.
    pub args: Vec<String>,
    /// Instance name.
    pub instance: String,
    /// Drain time the worker is told about.
    pub shutdown_timeout: Duration,
    /// Whether workers record query strings.
    pub show_query: bool,
    /// User and group the workers run as (none: the master's).
    pub credentials: Option<(u32, u32)>,
    /// Certificate and key files the workers serve HTTPS with (`--tls-cert`, `--tls-key`).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `--request-timeout`, told to the worker in [`ipc::ENV_REQUEST_TIMEOUT_MS`].
    pub request_timeout: Option<Duration>,
    /// How often the worker sends a heartbeat ([`ipc::ENV_HEARTBEAT_MS`]; always set, so the
    /// event-loop lag is shown also without `--heartbeat-timeout`).
    pub heartbeat_interval: Duration,
    /// `--max-requests` (without jitter), told to the worker in [`ipc::ENV_MAX_REQUESTS`].
    pub max_requests: Option<u64>,
}

/// Whole milliseconds of `d`, rounded up so that a short but non-zero duration stays non-zero.
fn ceil_ms(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000).max(1)
}

/// Starts one worker for `slot` of `generation`, handing it `control` and `scoreboard`.
///
/// # Errors
/// The spawn error (program missing, not executable, …).
pub fn spawn(
    spec: &SpawnSpec,
    slot: usize,
    generation: u64,
    control: OwnedFd,
    scoreboard: BorrowedFd<'_>,
    layout: crate::scoreboard::SegmentLayout,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.exe);
    cmd.arg0(&spec.argv0)
        .args(&spec.args)
        .env_remove(super::handover::ENV_UPGRADE_FD)
        .env(ipc::ENV_CONTROL_FD, control.as_raw_fd().to_string())
        .env(ipc::ENV_SCOREBOARD_FD, scoreboard.as_raw_fd().to_string())
        .env(ipc::ENV_SCOREBOARD_LAYOUT, layout.encode())
        .env(ipc::ENV_SLOT, slot.to_string())
        .env(ipc::ENV_GENERATION, generation.to_string())
        .env(ipc::ENV_MASTER_PID, std::process::id().to_string())
        .env(ipc::ENV_INSTANCE, &spec.instance)
        .env(
            ipc::ENV_SHUTDOWN_TIMEOUT_MS,
            spec.shutdown_timeout.as_millis().to_string(),
        )
        .env(ipc::ENV_SHOW_QUERY, if spec.show_query { "1" } else { "0" })
        .env(
            ipc::ENV_HEARTBEAT_MS,
            ceil_ms(spec.heartbeat_interval).to_string(),
        )
        .stdin(Stdio::null())
        // Own process group: a terminal's Ctrl-C reaches only the master, which stops the
        // workers in order.
        .process_group(0)
        .kill_on_drop(false);
    // Guards: the config is the one source, never a variable the master inherited.
    match spec.request_timeout {
        Some(t) => cmd.env(ipc::ENV_REQUEST_TIMEOUT_MS, ceil_ms(t).to_string()),
        None => cmd.env_remove(ipc::ENV_REQUEST_TIMEOUT_MS),
    };
    match spec.max_requests {
        Some(n) => cmd.env(ipc::ENV_MAX_REQUESTS, n.to_string()),
        None => cmd.env_remove(ipc::ENV_MAX_REQUESTS),
    };
    // TLS files: the config is the one source, never a variable the master inherited.
    match &spec.tls {
        Some((cert, key)) => cmd.env(ipc::ENV_TLS_CERT, cert).env(ipc::ENV_TLS_KEY, key),
        None => cmd
            .env_remove(ipc::ENV_TLS_CERT)
            .env_remove(ipc::ENV_TLS_KEY),
    };
    if let Some((uid, gid)) = spec.credentials {
        // std drops the supplementary groups too when it changes the user.
        cmd.uid(uid).gid(gid);
    }
    // The master is the service's main process: workers do not talk to systemd.
    for var in super::systemd::ENV_VARS {
        cmd.env_remove(var);
    }
    crate::scoreboard::raw::fd::inherit_in_child(
        &mut cmd,
        vec![control.as_raw_fd(), scoreboard.as_raw_fd()],
    );
    let child = cmd.spawn();
    drop(control); // the worker has its copy
    child
}
