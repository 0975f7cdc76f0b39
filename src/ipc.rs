//! The control channel between the master and one worker: a `SOCK_SEQPACKET` Unix socketpair
//! (message boundaries kept by the kernel), one JSON message per packet, descriptors passed
//! with `SCM_RIGHTS`. End of file means the other side is gone.
//!
//! # Wire format
//! Each packet is one JSON object whose `type` names the message ([`ToMaster`], [`ToWorker`],
//! in `snake_case`); the other keys are the variant's fields. A request that expects an answer
//! (`listen`, `register`) carries an `id` chosen by the worker, and the master copies that `id`
//! into its answer, e.g.
//!
//! ```text
//! worker → master  {"type":"listen","id":7,"addr":"127.0.0.1:8080"}
//! master → worker  {"type":"listening","id":7,"addr":"127.0.0.1:8080","local":"127.0.0.1:8080"}  + the socket
//! ```
//!
//! The worker drops an answer whose `id` is not the one it waits for (an answer that came after
//! the worker gave up on it), so a late answer is never taken for the answer to a later
//! request. `id` is left out when absent: a master echoes none to a worker that sent none.

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
/// Environment variable with the request timeout in ms (`--request-timeout`; unset = none).
pub const ENV_REQUEST_TIMEOUT_MS: &str = "FLORA_REQUEST_TIMEOUT_MS";
/// Environment variable with `--max-requests` (without its jitter; unset = none): from this
/// many finished requests on, the worker checks its count every 50 ms and sends a heartbeat
/// as soon as it grew, so that the master's recycle does not wait for the next regular one.
pub const ENV_MAX_REQUESTS: &str = "FLORA_MAX_REQUESTS";
/// Environment variable with the heartbeat interval in ms: the worker sends
/// [`ToMaster::Heartbeat`] this often. The master always sets it (a quarter of
/// `--heartbeat-timeout`, at most 1 s); unset or 0 (a worker run standalone) = no heartbeat.
pub const ENV_HEARTBEAT_MS: &str = "FLORA_HEARTBEAT_MS";

/// Environment variable with the PEM certificate chain file a worker serves HTTPS with
/// (the master's `--tls-cert`; read by `Worker::tls_from_config`).
pub const ENV_TLS_CERT: &str = "FLORA_TLS_CERT";
/// Environment variable with the PEM private key file of [`ENV_TLS_CERT`] (`--tls-key`).
pub const ENV_TLS_KEY: &str = "FLORA_TLS_KEY";

/// Largest control message; a bigger one is a protocol error.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries; a message with more is refused by the sender, and
/// by the receiver as truncated (the descriptors that came are closed).
pub const MAX_FDS: usize = 64;

/// Identifies a request on one control channel; the answer carries the same id.
pub type RequestId = u64;

/// Messages a worker sends to its master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToMaster {
    /// Asks for a listening socket bound to `addr` (the reply carries its fd).
    Listen {
        /// Request id, echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Address as the app wrote it (`host:port`).
        addr: String,
    },
    /// The worker is ready to serve.
    Ready,
    /// The worker's event loop turns: sent every [`ENV_HEARTBEAT_MS`] by a task of its
    /// runtime (no per-request cost).
    Heartbeat {
        /// How late this heartbeat's timer fired, in microseconds (event-loop lag).
        lag_us: u64,
        /// Requests this worker process finished so far (its own count, not the slot's).
        requests: u64,
    },
    /// Registers a custom metric series (answered with `Registered` or `RegisterFailed`).
    Register {
        /// Request id, echoed in the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
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
        /// Id of the request this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Address asked for.
        addr: String,
        /// Address actually bound.
        local: String,
    },
    /// Binding `addr` failed.
    ListenFailed {
        /// Id of the request this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Address asked for.
        addr: String,
        /// Why.
        error: String,
    },
    /// Stop accepting, finish in-flight requests and exit.
    Shutdown,
    /// The series is registered at `at`.
    Registered {
        /// Id of the request this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Where its cells are.
        at: crate::scoreboard::Registered,
    },
    /// The registration was refused.
    RegisterFailed {
        /// Id of the request this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Why.
        error: crate::scoreboard::MetricError,
    },
}

impl ToMaster {
    /// The id of a request that expects an answer.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Self::Listen { id, .. } | Self::Register { id, .. } => *id,
            Self::Ready | Self::Heartbeat { .. } => None,
        }
    }
}

impl ToWorker {
    /// The id of the request this message answers (`None` for messages that answer nothing).
    pub fn reply_to(&self) -> Option<RequestId> {
        match self {
            Self::Listening { id, .. }
            | Self::ListenFailed { id, .. }
            | Self::Registered { id, .. }
            | Self::RegisterFailed { id, .. } => *id,
            Self::Shutdown => None,
        }
    }
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
            fd: crate::scoreboard::raw::fd::register_async(fd)?,
        })
    }

    /// Sends `msg`, with `fd` attached when given.
    pub async fn send<T: Serialize>(&self, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        self.send_fds(msg, fd.as_slice()).await
    }

    /// Sends `msg` with `fds` attached (at most [`MAX_FDS`]; more is `InvalidInput`, nothing
    /// sent): for handing many descriptors over, in batches.
    pub async fn send_fds<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} descriptors in one message (at most {MAX_FDS})",
                    fds.len()
                ),
            ));
        }
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let raw: Vec<std::os::fd::RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|inner| {
                let cmsgs: Vec<ControlMessage<'_>> = (!raw.is_empty())
                    .then(|| ControlMessage::ScmRights(&raw))
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

/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`). The receive buffer holds
/// that many, so the descriptors of a message are never cut off: a cut-off control message
/// cannot be parsed, and the descriptors the kernel installed for it would stay open.
const SCM_MAX_FD: usize = 253;

fn recv_raw(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; SCM_MAX_FD]);
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
            fds.extend(crate::scoreboard::raw::fd::adopt_received_fds(&raw));
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
    if fds.len() > MAX_FDS {
        // Dropping them closes them.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
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
        let listen = ToMaster::Listen {
            id: Some(3),
            addr: "x:1".into(),
        };
        a.send(&listen, Some(file.as_fd())).await.unwrap();
        let (msg, fds): (ToMaster, _) = b.recv().await.unwrap().unwrap();
        assert_eq!(msg, listen);
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(b.recv::<ToMaster>().await.unwrap().is_none());
    }

    /// A batch of descriptors arrives whole and in order; more than [`MAX_FDS`] is refused
    /// before anything is sent, and a message that still carries more (a peer that does not
    /// use `send_fds`) is an error at the receiver.
    #[tokio::test]
    async fn batches_of_descriptors_up_to_the_limit() {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsFd;
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let files: Vec<std::fs::File> = (0..MAX_FDS)
            .map(|i| {
                let mut f = tempfile::tempfile().unwrap();
                write!(f, "{i}").unwrap();
                f
            })
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
        a.send_fds(&ToMaster::Ready, &fds).await.unwrap();
        let (msg, got): (ToMaster, _) = b.recv().await.unwrap().unwrap();
        assert_eq!(msg, ToMaster::Ready);
        assert_eq!(got.len(), MAX_FDS);
        for (i, fd) in got.into_iter().enumerate() {
            let mut f = std::fs::File::from(fd);
            f.rewind().unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            assert_eq!(text, i.to_string(), "descriptor {i} in order");
        }
        let one_more: Vec<BorrowedFd<'_>> =
            fds.iter().copied().chain(fds.first().copied()).collect();
        let e = a.send_fds(&ToMaster::Ready, &one_more).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    /// A peer that sends more descriptors than a message may carry (a worker does not have to
    /// use `send_fds`) gets an error, and every descriptor that arrived is closed: the write
    /// ends of a pipe, sent 100 times, all close, so its read end sees end of file.
    #[tokio::test]
    async fn too_many_descriptors_are_refused_and_closed() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let copies: Vec<OwnedFd> = (0..100).map(|_| write_end.try_clone().unwrap()).collect();
        let raw: Vec<std::os::fd::RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
        let (c, d) = pair().unwrap();
        let d = Channel::new(d).unwrap();
        sendmsg::<UnixAddr>(
            c.as_raw_fd(),
            &[IoSlice::new(br#"{"msg":"ready"}"#)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop((copies, write_end));
        let e = d.recv::<ToMaster>().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("100 descriptors"), "{e}");
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&read_end, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&read_end, &mut byte),
            Ok(0),
            "a received write end stayed open"
        );
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        a.send(&"not a message", None).await.unwrap();
        let err = b.recv::<ToMaster>().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn wire_format_carries_and_echoes_ids() {
        let req = ToMaster::Listen {
            id: Some(7),
            addr: "127.0.0.1:8080".into(),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"type":"listen","id":7,"addr":"127.0.0.1:8080"}"#);
        assert_eq!(req.id(), Some(7));
        let reply = ToWorker::ListenFailed {
            id: req.id(),
            addr: "127.0.0.1:8080".into(),
            error: "in use".into(),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains(r#""id":7"#), "{json}");
        assert_eq!(reply.reply_to(), Some(7));
        assert_eq!(ToWorker::Shutdown.reply_to(), None);
        assert_eq!(ToMaster::Ready.id(), None);
    }

    #[test]
    fn messages_without_id_still_parse_and_none_is_not_written() {
        // A worker built before ids existed sends none; the master answers without one.
        let old: ToMaster = serde_json::from_str(r#"{"type":"listen","addr":"x:1"}"#).unwrap();
        assert_eq!(old.id(), None);
        let reply = ToWorker::Listening {
            id: old.id(),
            addr: "x:1".into(),
            local: "127.0.0.1:1".into(),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(!json.contains("id"), "{json}");
    }
}
