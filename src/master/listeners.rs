//! The master's listening sockets: each address is bound once and kept for every later
//! generation, so reloads never close a socket (closing one drops its queued connections).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

/// Listen backlog: large enough for bursts while workers are busy or being replaced.
const BACKLOG: i32 = 1024;

/// Listening sockets by the address workers asked for (and by the address bound).
#[derive(Debug, Default)]
pub struct Listeners {
    by_request: HashMap<String, SocketAddr>,
    bound: HashMap<SocketAddr, TcpListener>,
}

impl Listeners {
    /// The socket for `addr`, bound now if this is the first time it is asked for. Resolves a
    /// host name in place: for start-up only (`--listen`); the running master resolves off
    /// its loop and calls [`Listeners::bind_resolved`].
    ///
    /// # Errors
    /// Resolution or bind errors.
    pub fn get_or_bind(&mut self, addr: &str) -> io::Result<(SocketAddr, BorrowedFd<'_>)> {
        let resolved = match self.known(addr) {
            Some(a) => a,
            None => addr.to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
            })?,
        };
        self.bind_resolved(addr, resolved)
    }

    /// The bound address serving `addr` without resolving anything: one asked for before, an
    /// inherited socket, or an IP literal (`None`: a host name to resolve).
    pub fn known(&self, addr: &str) -> Option<SocketAddr> {
        self.by_request
            .get(addr)
            .copied()
            .or_else(|| self.inherited_for(addr))
            .or_else(|| addr.parse().ok())
    }

    /// Whether `addr` was declared by the operator (`--listen`, socket activation): the only
    /// addresses unprivileged workers get.
    pub fn declared(&self, addr: &str) -> bool {
        self.by_request.contains_key(addr) || self.inherited_for(addr).is_some()
    }

    /// The socket for `addr`, which resolved to `resolved`, bound now if new.
    ///
    /// # Errors
    /// Bind errors.
    pub fn bind_resolved(
        &mut self,
        addr: &str,
        resolved: SocketAddr,
    ) -> io::Result<(SocketAddr, BorrowedFd<'_>)> {
        let key = self.inherited_for(addr).unwrap_or(resolved);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.bound.entry(key) {
            let l = bind(key)?;
            tracing::info!("listening on {}", l.local_addr()?);
            slot.insert(l);
        }
        self.by_request.insert(addr.to_string(), key);
        let l = self
            .bound
            .get(&key)
            .ok_or_else(|| io::Error::other("listener table out of sync"))?;
        Ok((l.local_addr()?, l.as_fd()))
    }
}

impl Listeners {
    /// Takes a listening socket the master inherited (systemd socket activation).
    ///
    /// # Errors
    /// When the descriptor is not a bound TCP socket.
    pub fn adopt(&mut self, fd: std::os::fd::OwnedFd) -> io::Result<SocketAddr> {
        let l = TcpListener::from(fd);
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        tracing::info!("listening on {addr} (socket activation)");
        self.bound.insert(addr, l);
        Ok(addr)
    }

    /// An already-bound socket that serves `addr`: the same address, or the same port on the
    /// unspecified address (a socket-activated `0.0.0.0:80` serves a worker asking for `:80`).
    fn inherited_for(&self, addr: &str) -> Option<SocketAddr> {
        let wanted: SocketAddr = addr.parse().ok()?;
        self.bound.keys().copied().find(|b| {
            *b == wanted
                || (b.port() == wanted.port()
                    && b.ip().is_unspecified()
                    && b.is_ipv4() == wanted.is_ipv4())
        })
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    let l = TcpListener::from(fd);
    // Workers use it from async code; O_NONBLOCK is shared by every holder of the socket.
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_once_per_address() {
        let mut l = Listeners::default();
        let (a, _) = l.get_or_bind("127.0.0.1:0").unwrap();
        let (b, _) = l.get_or_bind("127.0.0.1:0").unwrap();
        assert_eq!(a, b);
        assert_eq!(l.bound.len(), 1);
        assert!(l.get_or_bind("256.0.0.1:80").is_err());
        assert!(l.declared("127.0.0.1:0"));
        assert!(!l.declared("127.0.0.1:1"));
        assert!(l.known("127.0.0.1:0").is_some());
        assert_eq!(
            l.known("localhost:80"),
            None,
            "a name is never resolved here"
        );
    }
}
