//! One `NETLINK_SOCK_DIAG` socket, connected to the kernel, and a bounded request/reply
//! exchange over it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag};
use nix::sys::socket::{SockProtocol, SockType};
use nix::sys::time::TimeVal;

use super::wire::{self, Message};

/// Longest wait for one datagram of a reply.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest time for a whole reply (a dump spans several datagrams).
const REPLY_DEADLINE: Duration = Duration::from_secs(1);
/// Receive buffer: the kernel sends dump datagrams of at most 32 KiB.
const BUF_LEN: usize = 64 * 1024;

/// An `io::Error` of the same kind as `errno`, saying what failed.
pub(super) fn error(what: &str, errno: Errno) -> io::Error {
    let source = io::Error::from(errno);
    io::Error::new(source.kind(), format!("sock_diag: {what}: {source}"))
}

/// A sock_diag socket; the sequence number tells this request's replies from late ones.
pub(super) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens the socket (close-on-exec), connected to the kernel, with a receive timeout.
    pub(super) fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(|e| error("open netlink socket", e))?;
        let timeout = TimeVal::new(0, RECV_TIMEOUT.as_micros() as _);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| error("set receive timeout", e))?;
        socket::connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| error("connect to the kernel", e))?;
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; BUF_LEN],
        })
    }

    /// The socket, for tests.
    #[cfg(test)]
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// The next sequence number (never 0, which unsolicited messages carry).
    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `request` (built with sequence number `seq`) and hands each reply message to
    /// `each`, until the reply ends: `NLMSG_DONE`, an error or ack, or a single-part answer.
    pub(super) fn exchange(
        &mut self,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        socket::send(self.fd.as_raw_fd(), request, MsgFlags::empty())
            .map_err(|e| error("send request", e))?;
        let deadline = Instant::now() + REPLY_DEADLINE;
        loop {
            let n = self.recv(deadline)?;
            for m in wire::messages(&self.buf[..n]).filter(|m| m.seq == seq) {
                if end_of_reply(&m)? {
                    return Ok(());
                }
                if m.kind == wire::SOCK_DIAG_BY_FAMILY {
                    each(m.payload);
                    if m.flags & wire::NLM_F_MULTI == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One datagram into the buffer; an error past the deadline or on truncation.
    fn recv(&mut self, deadline: Instant) -> io::Result<usize> {
        loop {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sock_diag: no complete reply within {REPLY_DEADLINE:?}"),
                ));
            }
            match socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("sock_diag: reply of {n} bytes truncated to {BUF_LEN}"),
                    ))
                }
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("sock_diag: no reply within {RECV_TIMEOUT:?}"),
                    ))
                }
                Err(e) => return Err(error("receive reply", e)),
            }
        }
    }
}

/// Whether `m` ends the reply: `Ok(true)` on `NLMSG_DONE` or an ack, the errno on an error.
fn end_of_reply(m: &Message<'_>) -> io::Result<bool> {
    match m.kind {
        wire::NLMSG_DONE => Ok(true),
        wire::NLMSG_ERROR => match wire::error_code(m.payload) {
            Some(0) => Ok(true),
            Some(code) => Err(error("kernel answered", Errno::from_raw(-code))),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sock_diag: short error message",
            )),
        },
        _ => Ok(false),
    }
}
