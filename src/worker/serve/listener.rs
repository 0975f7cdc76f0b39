//! The listening socket (TCP or Unix) and the fair accept (see the parent module's docs on load spreading).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
use tokio::io::unix::AsyncFd;

use crate::scoreboard::SlotWriter;
use crate::unix_socket::{bind as bind_unix, unix_path, SocketFile, UnixOptions, UnixSocketError};
use crate::worker::WorkerError;

/// Open connections a worker may hold above the least loaded peer before it yields accepts.
pub const FAIR_SLACK: u64 = 2;
/// Pause between fairness re-checks while yielding.
const YIELD_STEP: Duration = Duration::from_millis(1);
/// Longest a pending connection waits for a less loaded peer before this worker takes it.
pub const YIELD_MAX: Duration = Duration::from_millis(4);

/// A listening socket handed to [`crate::Worker::serve`]: TCP, or a Unix stream socket.
#[derive(Debug)]
pub struct Listener {
    family: Family,
    /// HTTPS on accepted connections ([`Listener::with_tls`]).
    #[cfg(feature = "tls")]
    pub(in crate::worker) tls: Option<crate::worker::TlsConfig>,
}

#[derive(Debug)]
enum Family {
    Tcp {
        fd: AsyncFd<StdListener>,
        local: SocketAddr,
    },
    Unix {
        fd: AsyncFd<UnixListener>,
        path: Option<PathBuf>,
        /// The socket file this process created (standalone): removed when the listener is
        /// dropped, if the path still names that socket.
        _file: Option<SocketFile>,
    },
}

/// The address a [`Listener`] is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket: its path (`None` for an unnamed or abstract socket).
    Unix(Option<PathBuf>),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(Some(p)) => write!(f, "{UNIX_PREFIX}{}", p.display()),
            Self::Unix(None) => write!(f, "{UNIX_PREFIX}(unnamed)"),
        }
    }
}

/// How an address names a Unix socket path: `unix:/run/app/http.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// One accepted connection.
pub(super) enum Accepted {
    Tcp(std::net::TcpStream, SocketAddr),
    Unix(std::os::unix::net::UnixStream),
}

impl Listener {
    /// Binds `addr` here (standalone mode): `host:port`, or `unix:PATH`.
    pub(crate) async fn bind(addr: &str) -> Result<Self, WorkerError> {
        let err = |source| WorkerError::Io {
            context: format!("bind {addr}"),
            source,
        };
        if let Some(path) = unix_path(addr) {
            let unix_err = |e: UnixSocketError| WorkerError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            };
            let path = path.map_err(unix_err)?;
            let (std, file) = bind_unix(path, &UnixOptions::default()).map_err(unix_err)?;
            let mut listener = Self::from_unix(std).map_err(err)?;
            if let Family::Unix {
                _file, path: named, ..
            } = &mut listener.family
            {
                // Its own name is the temporary path it was bound at.
                *named = Some(path.to_path_buf());
                *_file = Some(file);
            }
            return Ok(listener);
        }
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(err)?.collect();
        let std = StdListener::bind(&addrs[..]).map_err(err)?;
        Self::from_tcp(std).map_err(err)
    }

    /// Adopts a listening socket (from the master): TCP or Unix, told apart by its address.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
        if local.family() == Some(AddressFamily::Unix) {
            Self::from_unix(UnixListener::from(fd))
        } else {
            Self::from_tcp(StdListener::from(fd))
        }
    }

    fn from_tcp(std: StdListener) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        let local = std.local_addr()?;
        let fd = crate::scoreboard::raw::fd::register_async(std)?;
        Ok(Self::of(Family::Tcp { fd, local }))
    }

    fn from_unix(std: UnixListener) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        let path = std.local_addr()?.as_pathname().map(Path::to_path_buf);
        let fd = crate::scoreboard::raw::fd::register_async(std)?;
        Ok(Self::of(Family::Unix {
            fd,
            path,
            _file: None,
        }))
    }

    fn of(family: Family) -> Self {
        Self {
            family,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Names a Unix listener the master passed by the address the worker asked for (the
    /// socket's own name is the temporary path the master bound it at).
    pub(crate) fn named(mut self, addr: &str) -> Self {
        if let (Family::Unix { path, .. }, Some(Ok(asked))) = (&mut self.family, unix_path(addr)) {
            *path = Some(asked.to_path_buf());
        }
        self
    }

    /// The bound TCP address; for a Unix socket the unspecified address `0.0.0.0:0` (see
    /// [`Listener::listen_addr`]).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.family {
            Family::Tcp { local, .. } => *local,
            Family::Unix { .. } => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// The bound address, TCP or Unix.
    ///
    /// ```no_run
    /// # async fn app(worker: flora_cluster::Worker) -> Result<(), flora_cluster::Error> {
    /// use flora_cluster::worker::ListenAddr;
    /// let listener = worker.listen("unix:/run/app/http.sock").await?;
    /// if let ListenAddr::Unix(Some(path)) = listener.listen_addr() {
    ///     println!("serving on {}", path.display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn listen_addr(&self) -> ListenAddr {
        match &self.family {
            Family::Tcp { local, .. } => ListenAddr::Tcp(*local),
            Family::Unix { path, .. } => ListenAddr::Unix(path.clone()),
        }
    }

    /// Accepts the next connection, yielding to less loaded peers (see the module docs).
    pub(super) async fn accept_fair(&self, writer: &SlotWriter) -> io::Result<Accepted> {
        match &self.family {
            Family::Tcp { fd, .. } => {
                let (s, peer) = accept_fair(fd, writer, |l| l.accept()).await?;
                Ok(Accepted::Tcp(s, peer))
            }
            Family::Unix { fd, .. } => {
                let (s, _) = accept_fair(fd, writer, |l| l.accept()).await?;
                Ok(Accepted::Unix(s))
            }
        }
    }
}

/// Waits until `fd` has a connection and accepts it with `accept`, unless this worker should
/// let its peers take it (for at most [`YIELD_MAX`]).
async fn accept_fair<L, T>(
    fd: &AsyncFd<L>,
    writer: &SlotWriter,
    accept: impl Fn(&L) -> io::Result<T>,
) -> io::Result<T>
where
    L: std::os::fd::AsRawFd,
{
    let mut yielding_since: Option<Instant> = None;
    loop {
        let mut guard = fd.readable().await?;
        if should_yield(writer.conn_share()) {
            let since = *yielding_since.get_or_insert_with(Instant::now);
            if since.elapsed() < YIELD_MAX {
                drop(guard);
                tokio::time::sleep(YIELD_STEP).await;
                continue;
            }
        }
        match guard.try_io(|l| accept(l.get_ref())) {
            Ok(res) => return res,
            Err(_would_block) => yielding_since = None,
        }
    }
}

/// Whether a worker with `share = (mine, fewest among ready peers)` should let peers accept.
pub(crate) fn should_yield(share: Option<(u64, u64)>) -> bool {
    share.is_some_and(|(mine, fewest)| mine > fewest.saturating_add(FAIR_SLACK))
}

/// Whether an accept error means descriptors or memory ran out (back off, then retry).
pub(super) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_only_when_ahead_of_the_least_loaded_peer() {
        assert!(!should_yield(None));
        assert!(!should_yield(Some((0, 0))));
        assert!(!should_yield(Some((2, 0))));
        assert!(should_yield(Some((3, 0))));
        assert!(!should_yield(Some((12, 10))));
        assert!(should_yield(Some((13, 10))));
        assert!(!should_yield(Some((5, u64::MAX))));
    }

    #[tokio::test]
    async fn an_adopted_descriptor_keeps_its_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let unix =
            Listener::from_fd(UnixListener::bind(&path).expect("bind").into()).expect("unix");
        assert_eq!(unix.listen_addr(), ListenAddr::Unix(Some(path.clone())));
        assert_eq!(
            unix.listen_addr().to_string(),
            format!("unix:{}", path.display())
        );
        let tcp = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let tcp = Listener::from_fd(tcp.into()).expect("tcp");
        assert_eq!(tcp.local_addr(), addr);
        assert_eq!(tcp.listen_addr(), ListenAddr::Tcp(addr));
    }

    #[tokio::test]
    async fn binding_a_unix_path_never_removes_what_is_not_a_stale_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").expect("write");
        let addr = |p: &Path| format!("unix:{}", p.display());
        Listener::bind(&addr(&file))
            .await
            .expect_err("a regular file is refused");
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), "keep");

        let path = dir.path().join("s.sock");
        let live = Listener::bind(&addr(&path)).await.expect("bind");
        Listener::bind(&addr(&path))
            .await
            .expect_err("a live socket is refused");
        assert_eq!(live.listen_addr(), ListenAddr::Unix(Some(path.clone())));
        drop(live); // the file it created goes with it
        assert!(!path.exists());
        // A stale socket (its server gone, the file left) is taken over.
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let again = Listener::bind(&addr(&path))
            .await
            .expect("stale taken over");
        assert_eq!(again.listen_addr(), ListenAddr::Unix(Some(path)));
        Listener::bind("unix:relative.sock")
            .await
            .expect_err("a relative path is refused");
    }
}
