//! How a master gets its shared things: made fresh (the lock taken, a new segment, the
//! control socket and the status server bound), or taken over from a predecessor in a master
//! upgrade (every one of them handed over, checked against this build and configuration).

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use super::control_server::{self, SocketFile};
use super::handover::new::Received;
use super::handover::wire::{self, Expect, FdRole, FromNew};
use super::instance::{InstanceLock, RuntimeDir};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ipc::Channel;
use crate::scoreboard::Scoreboard;

/// What a master starts with.
pub(super) struct Started {
    pub lock: InstanceLock,
    pub sb: Scoreboard,
    pub control: (UnixListener, SocketFile),
    pub status: Option<TcpListener>,
    /// After a takeover: the predecessor's state and what is still to adopt.
    pub takeover: Option<Takeover>,
}

/// The rest of a takeover, for the shell.
pub(super) struct Takeover {
    pub channel: Channel,
    pub state: wire::State,
    pub listeners: Vec<(FdRole, OwnedFd)>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// A master of its own: takes the lock, creates the segment, binds the fronts.
pub(super) fn fresh(cfg: &Config, dir: &RuntimeDir, socket_path: &Path) -> Result<Started> {
    let lock = InstanceLock::acquire(dir, &cfg.name)?;
    let sb = Scoreboard::create_sealed_with_routes(&cfg.name, cfg.slot_count(), cfg.route_slots())?;
    let bound = match &cfg.control_socket {
        Some(path) => control_server::bind(path),
        None => control_server::bind_in(dir, &format!("{}.sock", cfg.name)),
    };
    let (control, file) =
        bound.map_err(io(format!("bind control socket {}", socket_path.display())))?;
    let control = control
        .into_std()
        .map_err(io("the control socket".into()))?;
    let status = match cfg.status_socket_addr() {
        Some(addr) => {
            let l = crate::exporter::bind(addr).map_err(io(format!(
                "bind the status server on {addr} (--status-addr; `off` disables it)"
            )))?;
            let l = l.into_std().map_err(io("the status server".into()))?;
            let local = l
                .local_addr()
                .map_or_else(|_| addr.to_string(), |a| a.to_string());
            sb.set_status_addr(&local);
            Some(l)
        }
        None => None,
    };
    Ok(Started {
        lock,
        sb,
        control: (control, file),
        status,
        takeover: None,
    })
}

/// A new master of an upgrade: checks and adopts what its predecessor handed over. A
/// refusal is told to the predecessor (which serves on) and returned.
pub(super) async fn takeover(
    cfg: &Config,
    dir: &RuntimeDir,
    socket_path: &Path,
    mut received: Received,
) -> Result<Started> {
    match adopt(cfg, dir, socket_path, &mut received) {
        Ok(started) => Ok(Started {
            takeover: Some(Takeover {
                channel: received.channel,
                state: received.state,
                listeners: received.fds,
            }),
            ..started
        }),
        Err(reason) => {
            let refused = FromNew::Refused {
                reason: reason.clone(),
            };
            let _ = received.channel.send(&refused, None).await;
            Err(Error::StartFailed(format!("upgrade refused: {reason}")))
        }
    }
}

fn adopt(
    cfg: &Config,
    dir: &RuntimeDir,
    socket_path: &Path,
    r: &mut Received,
) -> std::result::Result<Started, String> {
    let expect = Expect {
        name: cfg.name.clone(),
        slots: cfg.slot_count(),
        routes: cfg.route_slots(),
        runtime_dir: dir.path().to_owned(),
        control_socket: socket_path.to_owned(),
        status_requested: cfg.status_socket_addr().map(|a| a.to_string()),
    };
    wire::validate(&r.state, &expect)?;
    let (_, lock) = r.take(|f| *f == FdRole::Lock).ok_or("no lock")?;
    let lock = InstanceLock::adopt(lock).map_err(|e| e.to_string())?;
    let (_, segment) = r.take(|f| *f == FdRole::Segment).ok_or("no segment")?;
    let carried = serde_json::from_value(r.state.carried.clone())
        .map_err(|e| format!("the master's state does not parse: {e}"))?;
    let sb = Scoreboard::adopt(segment, carried).map_err(|e| format!("the scoreboard: {e}"))?;
    let (role, control) = r
        .take(|f| matches!(f, FdRole::Control { .. }))
        .ok_or("no control socket")?;
    let FdRole::Control { path, file } = role else {
        return Err("no control socket".into());
    };
    let control = UnixListener::from(control);
    control
        .set_nonblocking(true)
        .map_err(|e| format!("the control socket: {e}"))?;
    // Its file stays the one the predecessor made (checked again when removed at the end).
    let id = file.ok_or("the control socket's file is unknown")?;
    let file = SocketFile::adopt(&path, id).map_err(|e| format!("{}: {e}", path.display()))?;
    let status = match r.take(|f| matches!(f, FdRole::Status { .. })) {
        Some((FdRole::Status { addr }, fd)) => {
            let l = TcpListener::from(fd);
            if l.local_addr().ok() != Some(addr) {
                return Err(format!("the status server's socket is not bound to {addr}"));
            }
            l.set_nonblocking(true)
                .map_err(|e| format!("the status server: {e}"))?;
            Some(l)
        }
        _ => None,
    };
    if status.is_none() != r.state.status_requested.is_none() {
        return Err("the status server's socket is missing".into());
    }
    Ok(Started {
        lock,
        sb,
        control: (control, file),
        status,
        takeover: None,
    })
}
