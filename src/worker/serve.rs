//! The accept loop and hyper connection serving, with load spreading and graceful drain.
//!
//! # Load spreading
//! All workers of a generation accept from one shared listening socket. Left alone, the
//! worker that wakes first can take a whole burst of connections and keep them. Before each
//! accept a worker compares its open connections with the least loaded *ready* worker of its
//! generation (read from the scoreboard: a few atomic loads, no syscall). If it holds more than
//! [`FAIR_SLACK`] above that, it lets the connection wait for up to [`YIELD_MAX`] so a peer can
//! take it; a connection still pending after that is taken anyway, so a busy or stuck peer
//! never strands clients. The listener is never closed, so zero-downtime reload is unaffected.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::unix::AsyncFd;

use super::track::{CountingIo, TrackedService};
use super::{Worker, WorkerError};
use crate::scoreboard::{SlotState, SlotWriter};

/// Open connections a worker may hold above the least loaded peer before it yields accepts.
pub const FAIR_SLACK: u64 = 2;
/// Pause between fairness re-checks while yielding.
const YIELD_STEP: Duration = Duration::from_millis(1);
/// Longest a pending connection waits for a less loaded peer before this worker takes it.
pub const YIELD_MAX: Duration = Duration::from_millis(4);
/// Pause after EMFILE/ENFILE before accepting again (fds may free up as connections close).
const FD_EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);
/// On drain, how long busy keep-alive connections get to send their next request (answered
/// with `Connection: close`) before the idle ones are closed. Closing an idle connection can
/// race with a request the client is sending; after this grace only connections idle that long
/// are exposed to that race.
const DRAIN_GRACE: Duration = Duration::from_millis(1000);
/// Poll interval while waiting for connections to close during the grace.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Longest time to read a request's headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listening TCP socket handed to [`Worker::serve`].
#[derive(Debug)]
pub struct Listener {
    fd: AsyncFd<StdListener>,
    local: SocketAddr,
    /// HTTPS on accepted connections (`Listener::with_tls`).
    #[cfg(feature = "tls")]
    pub(super) tls: Option<super::tls::TlsConfig>,
}

/// TEMP (worker unix, replaced by engineer B's Listener): a listener the master handed over
/// that is a Unix socket.
#[derive(Debug)]
pub struct UnixListenerTemp(tokio::net::UnixListener);

/// TEMP: what `Worker::listen` returns.
#[derive(Debug)]
pub enum AnyListener {
    /// TCP.
    Tcp(Listener),
    /// Unix.
    Unix(UnixListenerTemp),
}

impl AnyListener {
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        use nix::sys::socket::{getsockname, SockaddrStorage};
        let addr = getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(io::Error::from)?;
        if addr.as_unix_addr().is_some() {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            return Ok(Self::Unix(UnixListenerTemp(
                tokio::net::UnixListener::from_std(std)?,
            )));
        }
        Ok(Self::Tcp(Listener::from_fd(fd)?))
    }
}

impl From<Listener> for AnyListener {
    fn from(l: Listener) -> Self {
        Self::Tcp(l)
    }
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
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts the next connection, yielding to less loaded peers (see the module docs).
    async fn accept_fair(
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

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

impl Worker {
    /// Serves HTTP/1.1 and HTTP/2 on `listener` with `service` until shutdown, tracking every
    /// connection and request into this worker's slot. Marks the worker ready once it accepts.
    ///
    /// On shutdown it stops accepting (the master keeps the socket, so nothing is refused) and
    /// answers every further HTTP/1 request with `Connection: close`, so busy keep-alive
    /// connections end cleanly after their next response; after a short grace the idle ones are
    /// closed (HTTP/2: GOAWAY) and it returns when in-flight requests are done or the shutdown
    /// timeout passed.
    ///
    /// # Errors
    /// [`WorkerError::Channel`] when the master cannot be told the worker is ready.
    pub async fn serve<S, B>(
        &self,
        listener: impl Into<AnyListener>,
        service: S,
    ) -> Result<(), crate::Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = match listener.into() {
            AnyListener::Tcp(l) => l,
            AnyListener::Unix(u) => return self.serve_unix_temp(u, service).await,
        };
        let writer = self.slot_writer().clone();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        self.ready().await?;
        let mut shutdown = std::pin::pin!(self.shutdown_requested());
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                res = listener.accept_fair(&writer) => res,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) if is_fd_exhaustion(&e) => {
                    tracing::warn!("accept: {e}; retrying");
                    tokio::time::sleep(FD_EXHAUSTED_BACKOFF).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            };
            let Ok(stream) = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream))
            else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            #[cfg(feature = "tls")]
            if let Some(tls) = &listener.tls {
                self.spawn_tls(tls, stream, peer, &builder, &graceful, &service);
                continue;
            }
            if !self.tracking() {
                // Benchmark baseline only: no scoreboard writes at all.
                let served = graceful.watch(
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                        .into_owned(),
                );
                tokio::spawn(async move {
                    let _ = served.await;
                });
                continue;
            }
            let conn = writer.conn_open(peer);
            let io = TokioIo::new(CountingIo::new(stream, writer.clone()));
            let svc = TrackedService::new(service.clone(), conn.clone(), self.show_query());
            let served =
                graceful.watch(builder.serve_connection_with_upgrades(io, svc).into_owned());
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::trace!("connection from {peer}: {e}");
                }
                drop(conn);
            });
        }
        drop(listener);
        // From now on HTTP/1 responses carry `Connection: close` (see `TrackedFuture`).
        writer.set_state(SlotState::Draining);
        let timeout = self.shutdown_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let grace_end = tokio::time::Instant::now() + DRAIN_GRACE.min(timeout);
        while graceful.count() > 0 && tokio::time::Instant::now() < grace_end {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain did not finish within {timeout:?}; closing the remaining connections"
            );
        }
        Ok(())
    }
}

impl Worker {
    /// TEMP: serves a Unix listener (no fairness yield; client recorded as 0.0.0.0:0).
    async fn serve_unix_temp<S, B>(
        &self,
        listener: UnixListenerTemp,
        service: S,
    ) -> Result<(), crate::Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let writer = self.slot_writer().clone();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        self.ready().await?;
        let mut shutdown = std::pin::pin!(self.shutdown_requested());
        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                res = listener.0.accept() => res,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(FD_EXHAUSTED_BACKOFF).await;
                continue;
            };
            let conn = writer.conn_open(peer);
            let io = TokioIo::new(CountingIo::new(stream, writer.clone()));
            let svc = TrackedService::new(service.clone(), conn.clone(), self.show_query());
            let served =
                graceful.watch(builder.serve_connection_with_upgrades(io, svc).into_owned());
            tokio::spawn(async move {
                let _ = served.await;
                drop(conn);
            });
        }
        drop(listener);
        writer.set_state(SlotState::Draining);
        let timeout = self.shutdown_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let grace_end = tokio::time::Instant::now() + DRAIN_GRACE.min(timeout);
        while graceful.count() > 0 && tokio::time::Instant::now() < grace_end {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let _ = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
        Ok(())
    }
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
