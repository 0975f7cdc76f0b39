//! The listening socket and the fair accept (see the parent module's docs on load spreading).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::scoreboard::SlotWriter;
use crate::worker::WorkerError;

/// Open connections a worker may hold above the least loaded peer before it yields accepts.
pub const FAIR_SLACK: u64 = 2;
/// Pause between fairness re-checks while yielding.
const YIELD_STEP: Duration = Duration::from_millis(1);
/// Longest a pending connection waits for a less loaded peer before this worker takes it.
pub const YIELD_MAX: Duration = Duration::from_millis(4);

/// A listening TCP socket handed to [`crate::Worker::serve`].
#[derive(Debug)]
pub struct Listener {
    fd: AsyncFd<StdListener>,
    local: SocketAddr,
}

impl Listener {
    pub(crate) async fn bind(addr: &str) -> Result<Self, WorkerError> {
        let err = |source| WorkerError::Io {
            context: format!("bind {addr}"),
            source,
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(err)?.collect();
        let std = StdListener::bind(&addrs[..]).map_err(err)?;
        Self::from_std(std).map_err(err)
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Self::from_std(StdListener::from(fd))
    }

    fn from_std(std: StdListener) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        let local = std.local_addr()?;
        Ok(Self {
            fd: crate::scoreboard::raw::fd::register_async(std)?,
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts the next connection, yielding to less loaded peers (see the module docs).
    pub(super) async fn accept_fair(
        &self,
        writer: &SlotWriter,
    ) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        let mut yielding_since: Option<Instant> = None;
        loop {
            let mut guard = self.fd.readable().await?;
            if should_yield(writer.conn_share()) {
                let since = *yielding_since.get_or_insert_with(Instant::now);
                if since.elapsed() < YIELD_MAX {
                    drop(guard);
                    tokio::time::sleep(YIELD_STEP).await;
                    continue;
                }
            }
            match guard.try_io(|l| l.get_ref().accept()) {
                Ok(res) => return res,
                Err(_would_block) => yielding_since = None,
            }
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
}
