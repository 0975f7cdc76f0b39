//! The new master's side: say hello on the inherited socket, receive the state and the
//! descriptors, and later the commit (or an abort) while the shell runs.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

use super::wire::{FdRole, FromNew, FromOld, State, PROTOCOL};
use super::{read_blob, ENV_UPGRADE_FD};
use crate::ipc::Channel;

/// How long the old master may take with each step of the offer.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The descriptor to the predecessor, taken once per process (a second `Master::run` in the
/// same process never takes it again).
pub(in crate::master) fn inherited() -> Option<std::io::Result<OwnedFd>> {
    static TAKEN: OnceLock<()> = OnceLock::new();
    let value = std::env::var(ENV_UPGRADE_FD).ok()?;
    TAKEN.set(()).ok()?;
    Some(
        value
            .parse::<i32>()
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{ENV_UPGRADE_FD}={value:?} is not a descriptor number"),
                )
            })
            .and_then(crate::scoreboard::raw::fd::adopt_inherited_fd),
    )
}

/// What the predecessor handed over.
#[derive(Debug)]
pub(in crate::master) struct Received {
    pub state: State,
    pub channel: Channel,
    /// The descriptors with their roles, in the order of `state.fds`.
    pub fds: Vec<(FdRole, OwnedFd)>,
}

impl Received {
    /// The first descriptor with a role `pick` accepts.
    pub(in crate::master) fn take(
        &mut self,
        pick: impl Fn(&FdRole) -> bool,
    ) -> Option<(FdRole, OwnedFd)> {
        let i = self.fds.iter().position(|(r, _)| pick(r))?;
        Some(self.fds.remove(i))
    }
}

/// A message of the old master after the offer.
#[derive(Debug)]
pub(in crate::master) enum Later {
    /// Take over with this final state (`crate::scoreboard::Carried` as JSON).
    Commit(serde_json::Value),
    /// Give up.
    Abort(String),
    /// It hung up (it exited).
    Gone,
}

async fn recv_within(channel: &Channel, what: &str) -> Result<(FromOld, Vec<OwnedFd>), String> {
    match tokio::time::timeout(STEP_TIMEOUT, channel.recv::<FromOld>()).await {
        Err(_) => Err(format!(
            "the old master sent no {what} within {} s",
            STEP_TIMEOUT.as_secs()
        )),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(format!("the old master hung up before the {what}")),
        Ok(Err(e)) => Err(format!("bad {what} from the old master: {e}")),
    }
}

/// Says hello and receives the state and every descriptor.
///
/// # Errors
/// Why the handover cannot go on (the channel, when it is still usable, to refuse on).
pub(in crate::master) async fn receive(fd: OwnedFd) -> Result<Received, (Option<Channel>, String)> {
    let channel = Channel::new(fd).map_err(|e| (None, format!("the upgrade socket: {e}")))?;
    let hello = FromNew::Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").to_string(),
        layout_hash: crate::scoreboard::raw::layout::layout_hash(),
        pid: std::process::id(),
    };
    if let Err(e) = channel.send(&hello, None).await {
        return Err((None, format!("cannot greet the old master: {e}")));
    }
    let (state, fds) = match receive_offer(&channel).await {
        Ok(v) => v,
        Err(e) => return Err((Some(channel), e)),
    };
    Ok(Received {
        state,
        channel,
        fds,
    })
}

async fn receive_offer(channel: &Channel) -> Result<(State, Vec<(FdRole, OwnedFd)>), String> {
    let (msg, mut blobs) = recv_within(channel, "offer").await?;
    let (state_len, count) = match msg {
        FromOld::Offer { state_len, fds } => (state_len, fds),
        FromOld::Refused { reason } => return Err(format!("the old master refused: {reason}")),
        other => return Err(format!("expected the offer, got {other:?}")),
    };
    let blob = blobs.pop().ok_or("the offer came without its state")?;
    let bytes = read_blob(blob, state_len).map_err(|e| format!("the state: {e}"))?;
    let state: State =
        serde_json::from_slice(&bytes).map_err(|e| format!("the state does not parse: {e}"))?;
    if count != state.fds.len() {
        return Err(format!(
            "the offer announces {count} descriptors, the state lists {}",
            state.fds.len()
        ));
    }
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        let (msg, got) = recv_within(channel, "descriptors").await?;
        match msg {
            FromOld::Fds { count: n } if n == got.len() && fds.len() + n <= count => {
                fds.extend(got);
            }
            other => {
                return Err(format!(
                    "expected descriptors, got {other:?} with {}",
                    got.len()
                ))
            }
        }
    }
    Ok((state.clone(), state.fds.into_iter().zip(fds).collect()))
}

/// Receives what the old master says after the offer, until the commit, an abort or its
/// exit, and hands each to `on` (the commit's state is read here).
pub(in crate::master) async fn listen(channel: std::sync::Arc<Channel>, on: impl Fn(Later)) {
    loop {
        let later = match channel.recv::<FromOld>().await {
            Ok(Some((FromOld::Commit { state_len }, mut fds))) => {
                let parsed = fds
                    .pop()
                    .ok_or_else(|| "the commit came without its state".to_string())
                    .and_then(|blob| read_blob(blob, state_len).map_err(|e| e.to_string()))
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                match parsed {
                    Ok(v) => Later::Commit(v),
                    Err(e) => Later::Abort(format!("bad final state: {e}")),
                }
            }
            Ok(Some((FromOld::Abort { reason }, _))) => Later::Abort(reason),
            Ok(Some((other, _))) => {
                Later::Abort(format!("the old master sent {other:?} out of turn"))
            }
            Ok(None) | Err(_) => {
                on(Later::Gone);
                return;
            }
        };
        on(later);
    }
}
