//! The control channel between the master and one worker: a `SOCK_SEQPACKET` Unix socketpair
//! (message boundaries kept by the kernel), one JSON message per packet, descriptors passed
//! with `SCM_RIGHTS`. End of file means the other side is gone.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// Environment variable naming the worker's end of the control channel (an fd number).
pub const ENV_CONTROL_FD: &str = "FLORA_CONTROL_FD";
/// Environment variable naming the inherited scoreboard segment fd.
pub const ENV_SCOREBOARD_FD: &str = "FLORA_SCOREBOARD_FD";
/// Environment variable with the segment's layout (`slots:layout hash`): workers attach by it,
/// not by the header in shared memory ([`crate::scoreboard::SegmentLayout`]).
pub const ENV_SCOREBOARD_LAYOUT: &str = "FLORA_SCOREBOARD_LAYOUT";
/// Environment variable with the worker's slot index.
pub const ENV_SLOT: &str = "FLORA_SLOT";
/// Environment variable with the worker's generation.
pub const ENV_GENERATION: &str = "FLORA_GENERATION";
/// Environment variable with the master's pid (the worker re-checks its parent).
pub const ENV_MASTER_PID: &str = "FLORA_MASTER_PID";
/// Environment variable with the instance name.
pub const ENV_INSTANCE: &str = "FLORA_INSTANCE";
/// Environment variable with the shutdown timeout in ms (how long a drain may take).
pub const ENV_SHUTDOWN_TIMEOUT_MS: &str = "FLORA_SHUTDOWN_TIMEOUT_MS";
/// Environment variable set to `1` when the status may show query strings.
pub const ENV_SHOW_QUERY: &str = "FLORA_SHOW_QUERY";

/// Largest control message; a bigger one is a protocol error.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Messages a worker sends to its master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToMaster {
    /// Asks for a listening socket bound to `addr` (the reply carries its fd).
    Listen {
        /// Address as the app wrote it (`host:port`).
        addr: String,
    },
    /// The worker is ready to serve.
    Ready,
    /// Registers a custom metric series (answered with `Registered` or `RegisterFailed`).
    Register {
        /// What to register.
        spec: crate::scoreboard::MetricSpec,
    },
}

/// Messages the master sends to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToWorker {
    /// The listener for `addr` is attached to this message.
    Listening {
        /// Address asked for.
        addr: String,
        /// Address actually bound.
        local: String,
    },
    /// Binding `addr` failed.
    ListenFailed {
        /// Address asked for.
        addr: String,
        /// Why.
        error: String,
    },
    /// Stop accepting, finish in-flight requests and exit.
    Shutdown,
    /// The series is registered at `at`.
    Registered {
        /// Where its cells are.
        at: crate::scoreboard::Registered,
    },
    /// The registration was refused.
    RegisterFailed {
        /// Why.
        error: crate::scoreboard::MetricError,
    },
}

/// Creates a connected pair (both ends close-on-exec and non-blocking).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// One end of a control channel, registered with the tokio reactor.
#[derive(Debug)]
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wraps an end (made non-blocking here). Needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Self {
            fd: crate::scoreboard::raw::register_async(fd)?,
        })
    }

    /// Sends `msg`, with `fd` attached when given.
    pub async fn send<T: Serialize>(&self, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let raw = fd.map(|f| [f.as_raw_fd()]);
        loop {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|inner| {
                let cmsgs: Vec<ControlMessage<'_>> = raw
                    .as_ref()
                    .map(|r| ControlMessage::ScmRights(r))
                    .into_iter()
                    .collect();
                sendmsg::<UnixAddr>(
                    inner.get_ref().as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match res {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message and the descriptors attached to it; `None` at end of file.
    ///
    /// # Errors
    /// I/O errors, and `InvalidData` for a truncated, oversized or undecodable message.
    pub async fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|inner| recv_raw(inner.get_ref(), &mut buf));
            match res {
                Ok(Ok((0, fds))) if fds.is_empty() => return Ok(None),
                Ok(Ok((n, fds))) => {
                    let msg = serde_json::from_slice(&buf[..n]).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad control message: {e}"),
                        )
                    })?;
                    return Ok(Some((msg, fds)));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_raw(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(crate::scoreboard::raw::adopt_received_fds(&raw));
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message too large",
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip_with_fd_and_eof() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsFd;
        a.send(&ToMaster::Listen { addr: "x:1".into() }, Some(file.as_fd()))
            .await
            .unwrap();
        let (msg, fds): (ToMaster, _) = b.recv().await.unwrap().unwrap();
        assert_eq!(msg, ToMaster::Listen { addr: "x:1".into() });
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(b.recv::<ToMaster>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        a.send(&"not a message", None).await.unwrap();
        let err = b.recv::<ToMaster>().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
