//! The master's listening sockets: each address is bound once and kept for every later
//! generation, so reloads never close a socket (closing one drops its queued connections).
//! Unix sockets (`unix:/path`) are never resolved; their files are removed when the master
//! drops this table at its final stop (only if the name still holds the socket it made).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

mod handover;

use super::listen_queue::Sampler;
use crate::unix_socket::{self, SocketFile, UnixOptions};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// Listening sockets by the address workers asked for (and by the address bound).
#[derive(Debug, Default)]
pub struct Listeners {
    by_request: HashMap<String, SocketAddr>,
    bound: HashMap<SocketAddr, TcpListener>,
    /// Unix listeners by path; the file is `None` for an inherited socket (not ours to remove).
    unix: HashMap<PathBuf, (UnixListener, Option<SocketFile>)>,
    unix_options: UnixOptions,
    /// Samples the accept queue of every listener from the moment it is bound.
    sampler: Option<Sampler>,
}

impl Listeners {
    /// Mode and owner of the Unix socket files bound from now on.
    pub fn set_unix_options(&mut self, options: UnixOptions) {
        self.unix_options = options;
    }

    /// Has `sampler` sample every listener bound or adopted so far and from now on.
    pub fn sample_queues(&mut self, sampler: Sampler) {
        for (addr, l) in &self.bound {
            sampler.watch(&addr.to_string(), l.as_fd());
        }
        for (path, (l, _)) in &self.unix {
            sampler.watch(&unix_name(path), l.as_fd());
        }
        self.sampler = Some(sampler);
    }

    fn watch(&self, name: &str, fd: BorrowedFd<'_>) {
        if let Some(s) = &self.sampler {
            s.watch(name, fd);
        }
    }

    /// The socket for `addr` and its local address, bound now if this is the first time it
    /// is asked for. Resolves a host name in place: for start-up only (`--listen`); the
    /// running master resolves off its loop and calls [`Listeners::bind_resolved`].
    ///
    /// # Errors
    /// Resolution or bind errors.
    pub fn get_or_bind(&mut self, addr: &str) -> io::Result<(String, BorrowedFd<'_>)> {
        if let Some(path) = unix_socket::unix_path(addr) {
            return self.get_or_bind_unix(path?);
        }
        let resolved = match self.known(addr) {
            Some(a) => a,
            None => addr.to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
            })?,
        };
        let (local, fd) = self.bind_resolved(addr, resolved)?;
        Ok((local.to_string(), fd))
    }

    /// The Unix socket at `path` (checked by [`unix_socket::unix_path`]), bound now if new.
    /// Its local address is `unix:PATH`.
    ///
    /// # Errors
    /// [`unix_socket::UnixSocketError`] as an `io::Error`.
    pub fn get_or_bind_unix(&mut self, path: &Path) -> io::Result<(String, BorrowedFd<'_>)> {
        if !self.unix.contains_key(path) {
            let (l, file) = unix_socket::bind(path, &self.unix_options)?;
            tracing::info!(
                "listening on unix:{} (mode {:04o})",
                path.display(),
                self.unix_options.mode
            );
            self.watch(&unix_name(path), l.as_fd());
            self.unix.insert(path.to_owned(), (l, Some(file)));
        }
        let (l, file) = self
            .unix
            .get(path)
            .ok_or_else(|| io::Error::other("listener table out of sync"))?;
        if file.as_ref().is_some_and(|f| !f.is_in_place()) {
            tracing::warn!(
                "{} no longer names the master's socket (removed or replaced): clients cannot \
                 connect by that path until the master is restarted",
                path.display()
            );
        }
        Ok((unix_name(path), l.as_fd()))
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
        if let Some(path) = unix_socket::unix_path(addr) {
            return path.is_ok_and(|p| self.unix.contains_key(p));
        }
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
            let l = bind(key, self.unix_options.backlog)?;
            let local = l.local_addr()?;
            tracing::info!("listening on {local}");
            if let Some(s) = &self.sampler {
                s.watch(&local.to_string(), l.as_fd());
            }
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
    /// Takes a listening socket the master inherited (systemd socket activation): TCP, or a
    /// Unix socket bound at a path (its file is systemd's, never removed here). Returns its
    /// local address.
    ///
    /// # Errors
    /// When the descriptor is not a bound TCP or path-bound Unix socket.
    pub fn adopt(&mut self, fd: OwnedFd) -> io::Result<String> {
        if let Some(path) = unix_path_of(&fd) {
            let l = UnixListener::from(fd);
            l.set_nonblocking(true)?;
            let local = unix_name(&path);
            tracing::info!("listening on {local} (socket activation)");
            self.watch(&local, l.as_fd());
            self.unix.insert(path, (l, None));
            return Ok(local);
        }
        let l = TcpListener::from(fd);
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        tracing::info!("listening on {addr} (socket activation)");
        self.watch(&addr.to_string(), l.as_fd());
        self.bound.insert(addr, l);
        Ok(addr.to_string())
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

/// A Unix listener's name: `unix:PATH`.
fn unix_name(path: &Path) -> String {
    format!("{}{}", unix_socket::PREFIX, path.display())
}

/// The path a Unix socket is bound at; `None` for other sockets (and unnamed or abstract ones).
fn unix_path_of(fd: &OwnedFd) -> Option<PathBuf> {
    let addr: SockaddrStorage = socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(fd)).ok()?;
    let path = addr.as_unix_addr()?.path()?;
    Some(path.to_owned())
}

fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
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
    socket::listen(&fd, crate::config::backlog_arg(backlog))?;
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

    #[test]
    fn unix_sockets_are_bound_once_and_removed_with_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let addr = format!("unix:{}", path.display());
        let mut l = Listeners::default();
        l.set_unix_options(UnixOptions {
            mode: 0o600,
            ..UnixOptions::default()
        });
        assert!(!l.declared(&addr));
        let (local, fd) = l.get_or_bind(&addr).unwrap();
        assert_eq!(local, addr);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let (_, again) = l
            .get_or_bind(&format!("unix:{}//app.sock", dir.path().display()))
            .unwrap();
        assert_eq!(
            std::os::fd::AsRawFd::as_raw_fd(&again),
            raw,
            "the same socket"
        );
        assert!(l.declared(&addr));
        assert!(!l.declared("unix:/elsewhere.sock"));
        assert!(!l.declared("unix:relative.sock"));
        assert!(l.get_or_bind("unix:relative.sock").is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::symlink_metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // An inherited unix socket is served but its file is not ours.
        let other = dir.path().join("activated.sock");
        let inherited = UnixListener::bind(&other).unwrap();
        let local = l.adopt(OwnedFd::from(inherited)).unwrap();
        assert_eq!(local, format!("unix:{}", other.display()));
        assert!(l.declared(&local));
        drop(l);
        assert!(!path.exists(), "ours is removed at the final stop");
        assert!(other.exists(), "an inherited file is left to its owner");

        // Removed behind the master's back: still served by descriptor, never re-created
        // here; what the operator puts there later is not removed at the stop.
        let mut l = Listeners::default();
        l.get_or_bind(&addr).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(l.get_or_bind(&addr).is_ok());
        std::fs::write(&path, "operator's").unwrap();
        drop(l);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "operator's");
    }
}
