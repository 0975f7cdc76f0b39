//! The handover's messages and the state description, and the checks on them (pure).
//!
//! ```text
//!  new → old  Hello { protocol, version, layout_hash, pid }
//!  old → new  Offer { state_len, fds }     + the state (a sealed memfd)
//!  old → new  Fds { roles }                + up to 64 descriptors, until every role is sent
//!  new → old  Accepted, then Ready { version } once its workers are ready
//!             (or Refused { reason } at any time before the commit)
//!  old → new  Commit { state_len }         + the final state (the old master accepts no more)
//!  new → old  Committed                    (it serves now: MAINPID, control, status)
//!  old → new  Abort { reason }             (rollback, at any time before Committed)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The handover protocol this build speaks.
pub const PROTOCOL: u32 = 1;
/// The largest state accepted, bytes.
pub const MAX_STATE: u64 = 16 << 20;

/// A message of the new master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromNew {
    /// First message: what it speaks.
    Hello {
        /// Protocol version.
        protocol: u32,
        /// Its crate version.
        version: String,
        /// Its scoreboard layout hash (must equal the old master's).
        layout_hash: u64,
        /// Its pid.
        pid: u32,
    },
    /// The state and descriptors check out; it starts its workers.
    Accepted,
    /// Every worker of its generation is ready.
    Ready {
        /// Its crate version.
        version: String,
    },
    /// It took over.
    Committed,
    /// It gives up.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A message of the old master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromOld {
    /// The state follows as the attached memfd; then `fds` descriptors in `Fds` batches.
    Offer {
        /// Bytes of the state.
        state_len: u64,
        /// Descriptors to follow.
        fds: usize,
    },
    /// A batch of descriptors, in the order of the state's `fds`.
    Fds {
        /// How many are attached.
        count: usize,
    },
    /// The old master accepts no more: the final state is attached; take over.
    Commit {
        /// Bytes of the state.
        state_len: u64,
    },
    /// Give up and stop.
    Abort {
        /// Why.
        reason: String,
    },
    /// A handover is impossible (sent instead of the offer).
    Refused {
        /// Why.
        reason: String,
    },
}

/// What a handed-over descriptor is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum FdRole {
    /// The instance lock's open file description.
    Lock,
    /// The scoreboard segment (sealed memfd).
    Segment,
    /// The control socket's listener.
    Control {
        /// Its path.
        path: PathBuf,
        /// Device and inode of its file, when the old master made it.
        file: Option<(u64, u64)>,
    },
    /// The status server's listener.
    Status {
        /// Its local address.
        addr: SocketAddr,
    },
    /// A TCP listener of the workers.
    Tcp {
        /// The addresses workers asked for that it serves.
        requested: Vec<String>,
        /// The address it was bound for (its key in the listener table; port 0: any port).
        local: SocketAddr,
    },
    /// A Unix listener of the workers.
    Unix {
        /// Its path.
        path: PathBuf,
        /// Device and inode of its file when the master made it (`None`: inherited from
        /// systemd, never removed).
        file: Option<(u64, u64)>,
    },
}

/// The old master's state, as handed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Protocol version it was written with.
    pub protocol: u32,
    /// The old master.
    pub from_pid: u32,
    /// Its crate version.
    pub from_version: String,
    /// Instance name.
    pub name: String,
    /// Slots in the scoreboard.
    pub slots: usize,
    /// Routes per slot.
    pub routes: usize,
    /// The runtime directory.
    pub runtime_dir: PathBuf,
    /// The status address as configured (`None`: off).
    pub status_requested: Option<String>,
    /// The serving generation.
    pub generation: u64,
    /// The worker count wanted.
    pub target: usize,
    /// Free slots lent to the new master.
    pub lent: Vec<usize>,
    /// Slot and pid of every live worker of the old master.
    pub workers: Vec<(usize, u32)>,
    /// The descriptors, in the order they are sent.
    pub fds: Vec<FdRole>,
    /// The master's own memory (`crate::scoreboard::Carried`).
    pub carried: serde_json::Value,
}

/// What the new master's configuration says about the things that must not change.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Instance name.
    pub name: String,
    /// Slots.
    pub slots: usize,
    /// Routes per slot.
    pub routes: usize,
    /// Runtime directory.
    pub runtime_dir: PathBuf,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Status address as configured.
    pub status_requested: Option<String>,
}

/// Checks the old master's state against this build and configuration: the reason to refuse
/// it, naming what differs.
///
/// # Errors
/// The refusal.
pub fn validate(state: &State, expect: &Expect) -> Result<(), String> {
    let restart = "(changing it needs a restart, not an upgrade)";
    if state.protocol != PROTOCOL {
        return Err(format!(
            "state protocol {} is not {PROTOCOL}",
            state.protocol
        ));
    }
    if state.name != expect.name {
        return Err(format!(
            "instance {:?} is not {:?} {restart}",
            state.name, expect.name
        ));
    }
    if state.slots != expect.slots {
        return Err(format!(
            "--slots {} is not {} {restart}",
            expect.slots, state.slots
        ));
    }
    if state.routes != expect.routes {
        return Err(format!(
            "--max-routes gives {} route slots, the running master has {} {restart}",
            expect.routes, state.routes
        ));
    }
    if state.runtime_dir != expect.runtime_dir {
        return Err(format!(
            "runtime dir {} is not {} {restart}",
            expect.runtime_dir.display(),
            state.runtime_dir.display()
        ));
    }
    if state.status_requested != expect.status_requested {
        return Err(format!(
            "--status-addr {:?} is not {:?} {restart}",
            expect.status_requested, state.status_requested
        ));
    }
    let control = state.fds.iter().find_map(|f| match f {
        FdRole::Control { path, .. } => Some(path),
        _ => None,
    });
    if control != Some(&expect.control_socket) {
        return Err(format!(
            "control socket {} is not the running master's ({}) {restart}",
            expect.control_socket.display(),
            control.map_or_else(|| "none".into(), |p| p.display().to_string())
        ));
    }
    for role in ["lock", "segment"] {
        let n = state
            .fds
            .iter()
            .filter(|f| {
                matches!(
                    (role, f),
                    ("lock", FdRole::Lock) | ("segment", FdRole::Segment)
                )
            })
            .count();
        if n != 1 {
            return Err(format!("the state lists {n} {role} descriptors, not 1"));
        }
    }
    let free = state
        .lent
        .iter()
        .filter(|s| **s < state.slots && !state.workers.iter().any(|(w, _)| w == *s))
        .count();
    if free < state.target {
        return Err(format!(
            "{free} free slots lent for {} workers",
            state.target
        ));
    }
    if state.workers.iter().any(|(s, _)| *s >= state.slots) {
        return Err("a worker's slot is beyond the slot count".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
