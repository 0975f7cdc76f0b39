//! The accept queue of a listening socket, read from the kernel: how many connections wait
//! for `accept`, the backlog limit, and how many the listener dropped.
//!
//! Both families go through the kernel's sock_diag netlink interface, parsed from bytes in
//! safe code: TCP listeners by an `inet_diag` dump of the listening sockets (`idiag_rqueue`,
//! `idiag_wqueue`, `sk_drops` from `INET_DIAG_SKMEMINFO`), Unix listeners by an exact
//! `unix_diag` request (`UNIX_DIAG_RQLEN`). A socket is matched by its inode (`fstat` of
//! the descriptor). A [`Reader`] keeps one netlink socket open (close-on-exec, renewed
//! after a failed exchange) and answers for many listeners per call: one dump per IP
//! family, one request per Unix listener. Every reply is bounded in time and size.
//!
//! The kernel takes one connection past the limit (`length` may reach `limit + 1`).
//!
//! Drops: on a TCP listener, `sk_drops` counts SYNs and handshakes refused on a full
//! accept queue (`tcp_listendrop`, also `ListenDrops` in `/proc/net/netstat`), and other
//! segments the listener dropped; it is 32 bits wide and wraps. A Unix listener counts
//! nothing: a client's `connect` to a full queue waits, or fails with `EAGAIN`, on the
//! client's side only, so its `drops` is `None`.

mod netlink;
mod sampler;
#[cfg(test)]
mod tests;
mod wire;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::sys::socket::{self, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage};

use netlink::{error, Netlink};
pub use sampler::Sampler;

/// One reading of a listener's accept queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueInfo {
    /// Connections waiting for `accept`.
    pub length: u32,
    /// The backlog limit (`listen`'s argument, capped by `net.core.somaxconn`).
    pub limit: u32,
    /// The listener's drop counter (`sk_drops`, 32 bits in the kernel, wraps); `None` for
    /// a Unix listener (the kernel counts no refused connections there) or when the kernel
    /// did not send it.
    pub drops: Option<u64>,
}

/// What to look for: a listener's kind and inode, taken once from its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    kind: Kind,
    inode: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A TCP listener of `AF_INET` or `AF_INET6`, on a local port.
    Tcp {
        family: u8,
        port: u16,
    },
    Unix,
}

impl Probe {
    /// The probe for a listening TCP or Unix stream socket.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let inode = nix::sys::stat::fstat(fd)
            .map_err(|e| error("fstat listener", e))?
            .st_ino;
        let inode = u32::try_from(inode).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket inode {inode} over 32 bits"),
            )
        })?;
        let ty = socket::getsockopt(&fd, sockopt::SockType).map_err(|e| error("socket type", e))?;
        let addr: SockaddrStorage =
            socket::getsockname(fd.as_raw_fd()).map_err(|e| error("getsockname", e))?;
        let kind = match (addr.family(), ty) {
            (Some(AddressFamily::Inet), SockType::Stream) => Kind::Tcp {
                family: libc::AF_INET as u8,
                port: port(&addr),
            },
            (Some(AddressFamily::Inet6), SockType::Stream) => Kind::Tcp {
                family: libc::AF_INET6 as u8,
                port: port(&addr),
            },
            (Some(AddressFamily::Unix), SockType::Stream | SockType::SeqPacket) => Kind::Unix,
            (family, ty) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a TCP or Unix stream socket ({family:?}, {ty:?})"),
                ))
            }
        };
        Ok(Self { kind, inode })
    }
}

fn port(addr: &SockaddrStorage) -> u16 {
    addr.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
        .unwrap_or(0)
}

/// Reads accept queues over one sock_diag socket.
pub struct Reader {
    netlink: Netlink,
    /// Whether the kernel was seen to answer `unix_diag` requests.
    unix_diag: bool,
}

impl Reader {
    /// Opens the netlink socket.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            netlink: Netlink::open()?,
            unix_diag: false,
        })
    }

    /// The queue of one listening socket; `NotFound` if it is not listening.
    #[cfg(test)]
    pub fn read(&mut self, fd: BorrowedFd<'_>) -> io::Result<QueueInfo> {
        let probe = Probe::of(fd)?;
        self.read_all(&[probe])?.pop().flatten().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "sock_diag: the socket is not listening",
            )
        })
    }

    /// One answer per probe, in order; `None` for a socket that no longer listens.
    pub fn read_all(&mut self, probes: &[Probe]) -> io::Result<Vec<Option<QueueInfo>>> {
        let result = self.try_read_all(probes);
        if result.is_err() {
            // A timed-out dump may still be running on the old socket: start afresh.
            if let Ok(fresh) = Netlink::open() {
                self.netlink = fresh;
            }
        }
        result
    }

    fn try_read_all(&mut self, probes: &[Probe]) -> io::Result<Vec<Option<QueueInfo>>> {
        let mut out = vec![None; probes.len()];
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            self.read_tcp(family, probes, &mut out)?;
        }
        for (i, probe) in probes.iter().enumerate() {
            if probe.kind == Kind::Unix {
                out[i] = self.read_unix(probe.inode)?;
            }
        }
        Ok(out)
    }

    /// One dump of the TCP listeners of `family`, narrowed to a port when all probes share it.
    fn read_tcp(
        &mut self,
        family: u8,
        probes: &[Probe],
        out: &mut [Option<QueueInfo>],
    ) -> io::Result<()> {
        let ports = probes.iter().filter_map(|p| match p.kind {
            Kind::Tcp { family: f, port } if f == family => Some(port),
            _ => None,
        });
        let Some(first) = ports.clone().next() else {
            return Ok(());
        };
        let port = if ports.clone().all(|p| p == first) {
            first
        } else {
            0
        };
        let seq = self.netlink.next_seq();
        let request = wire::inet_request(seq, family, port);
        self.netlink.exchange(&request, seq, |payload| {
            let Some((inode, queue)) = wire::parse_inet(payload) else {
                return;
            };
            for (i, probe) in probes.iter().enumerate() {
                if probe.inode == inode
                    && matches!(probe.kind, Kind::Tcp { family: f, .. } if f == family)
                {
                    out[i] = Some(queue);
                }
            }
        })
    }

    /// The Unix listener with `inode`; `None` when the kernel knows no such listener.
    fn read_unix(&mut self, inode: u32) -> io::Result<Option<QueueInfo>> {
        self.check_unix_diag()?;
        let seq = self.netlink.next_seq();
        let mut found = None;
        let request = wire::unix_request(seq, inode);
        let result = self.netlink.exchange(&request, seq, |payload| {
            found = wire::parse_unix(payload)
                .filter(|(i, _)| *i == inode)
                .map(|(_, q)| q);
        });
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Ok(found),
        }
    }

    /// Once: an error if the kernel lacks `unix_diag` (module not loaded), so that its
    /// `ENOENT` is not mistaken for a closed listener.
    fn check_unix_diag(&mut self) -> io::Result<()> {
        if self.unix_diag {
            return Ok(());
        }
        let seq = self.netlink.next_seq();
        let request = wire::unix_support_request(seq);
        self.netlink.exchange(&request, seq, |_| {}).map_err(|e| {
            io::Error::new(e.kind(), format!("{e} (unix_diag, for Unix listeners)"))
        })?;
        self.unix_diag = true;
        Ok(())
    }
}

/// The queue of one listening socket, over a netlink socket opened for this call.
#[cfg(test)]
pub fn read(fd: BorrowedFd<'_>) -> io::Result<QueueInfo> {
    Reader::new()?.read(fd)
}
