//! Serving: the accept loop, the connection stage, and the graceful drain.
//!
//! - `listener.rs`: the listening socket (TCP or Unix) and the fair accept (load spreading, below);
//! - `service.rs`: [`ServeService`], what `serve` accepts (hyper or tower services);
//! - `conn.rs`: the connection stage, generic over the stream type (TCP, Unix, TLS): the
//!   HTTP/2 preface check, then hyper's `http1` or `http2` connection directly;
//! - `drain.rs`: open connections and the graceful drain (one flag checked per poll);
//! - `timer.rs`: the coarse timer behind hyper's header-read timeout (slowloris guard).
//!
//! # Load spreading
//! All workers of a generation accept from one shared listening socket. Left alone, the
//! worker that wakes first can take a whole burst of connections and keep them. Before each
//! accept a worker compares its open connections with the least loaded *ready* worker of its
//! generation (read from the scoreboard: a few atomic loads, no syscall). If it holds more than
//! [`FAIR_SLACK`](listener::FAIR_SLACK) above that, it lets the connection wait for up to [`YIELD_MAX`](listener::YIELD_MAX) so a peer can
//! take it; a connection still pending after that is taken anyway, so a busy or stuck peer
//! never strands clients. The listener is never closed, so zero-downtime reload is unaffected.

mod conn;
mod drain;
mod listener;
mod service;
mod timer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use conn::{ConnBody, ConnService, ConnStage, Stream};
use listener::Accepted;
pub use listener::{ListenAddr, Listener, UNIX_PREFIX};
pub use service::{BoxError, HyperMarker, ServeService, TowerMarker};

use super::Worker;

use crate::scoreboard::{ConnGuard, SlotState, SlotWriter};

/// Pause after EMFILE/ENFILE before accepting again (fds may free up as connections close).
const FD_EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);
/// On drain, how long busy keep-alive connections get to send their next request (answered
/// with `Connection: close`) before the idle ones are closed. Closing an idle connection can
/// race with a request the client is sending; after this grace only connections idle that long
/// are exposed to that race.
const DRAIN_GRACE: Duration = Duration::from_millis(1000);
/// Poll interval while waiting for connections to close during the grace.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Longest wait for a request's headers, idle keep-alive time included (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable overriding the header-read limit of 30 s (a number of milliseconds),
/// read once per [`Worker::serve`] call: for tests of the slowloris guard.
pub const HEADER_READ_TIMEOUT_ENV: &str = "FLORA_HEADER_READ_TIMEOUT_MS";

/// The header-read timeout: [`HEADER_READ_TIMEOUT_ENV`] when set to a number of ms, else
/// [`HEADER_READ_TIMEOUT`].
fn header_read_timeout() -> Duration {
    std::env::var(HEADER_READ_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(HEADER_READ_TIMEOUT, Duration::from_millis)
}

/// Aborts the task it holds when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// Serves HTTP/1.1 and HTTP/2 on `listener` with `service` until shutdown, tracking every
    /// connection and request into this worker's slot. Marks the worker ready once it accepts.
    ///
    /// `service` is a hyper service (`hyper::service::service_fn`) or a tower service (an
    /// `axum::Router`, a service built with tower layers); see [`ServeService`].
    ///
    /// On shutdown it stops accepting (the master keeps the socket, so nothing is refused) and
    /// answers every further HTTP/1 request with `Connection: close`, so busy keep-alive
    /// connections end cleanly after their next response; after a short grace the idle ones are
    /// closed (HTTP/2: GOAWAY) and it returns when in-flight requests are done or the shutdown
    /// timeout passed.
    ///
    /// A request still without a response head after the request timeout
    /// ([`Worker::set_request_timeout`]) is answered 503 and its handler dropped.
    ///
    /// # Errors
    /// [`super::WorkerError::Channel`] when the master cannot be told the worker is ready.
    pub async fn serve<S, M>(&self, listener: Listener, service: S) -> Result<(), crate::Error>
    where
        S: ServeService<M> + 'static,
    {
        #[cfg(feature = "axum")]
        let service = super::routes::with_routes(service);
        let service = service.into_service();
        let writer = self.slot_writer().clone();
        let header_timeout = header_read_timeout();
        let timer = timer::CoarseTimer::new(header_timeout);
        // Read once: the stage's deadlines and their sweeper agree.
        let request_timeout = self.request_timeout();
        let stage = Arc::new(ConnStage::new(
            self.show_query(),
            header_timeout,
            timer.clone(),
            request_timeout,
        ));
        let sweeper = timer.run_sweeper(stage.drain.clone());
        let _sweeper = AbortOnDrop(tokio::spawn(sweeper));
        // Request deadlines are swept while this call serves (the clock is fresh from now).
        let _deadlines = super::deadline::timeout_ms(request_timeout).map(|ms| {
            super::deadline::refresh_clock();
            AbortOnDrop(tokio::spawn(super::deadline::sweep(ms)))
        });
        self.ready().await?;
        let mut shutdown = std::pin::pin!(self.shutdown_requested());
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                res = listener.accept_fair(&writer) => res,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(e) if listener::is_fd_exhaustion(&e) => {
                    tracing::warn!("accept: {e}; retrying");
                    tokio::time::sleep(FD_EXHAUSTED_BACKOFF).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    continue;
                }
            };
            // Untracked: the benchmarks' baseline, no scoreboard writes at all.
            let tracking = self.tracking();
            match accepted {
                Accepted::Tcp(stream, peer) => {
                    let Ok(stream) = stream
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpStream::from_std(stream))
                    else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = tracking.then(|| (writer.clone(), writer.conn_open(peer)));
                    spawn_stream(&listener, &stage, stream, service.clone(), conn);
                }
                Accepted::Unix(stream) => {
                    let Ok(stream) = stream
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::UnixStream::from_std(stream))
                    else {
                        continue;
                    };
                    let conn = tracking.then(|| (writer.clone(), writer.conn_open_unix()));
                    spawn_stream(&listener, &stage, stream, service.clone(), conn);
                }
            }
        }
        drop(listener);
        // From now on HTTP/1 responses carry `Connection: close` (see `TrackedFuture`).
        writer.set_state(SlotState::Draining);
        let timeout = self.shutdown_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let grace_end = tokio::time::Instant::now() + DRAIN_GRACE.min(timeout);
        while stage.drain.open() > 0 && tokio::time::Instant::now() < grace_end {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if tokio::time::timeout_at(deadline, stage.drain.shut_down_all())
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

/// Serves one accepted stream in its own task: over TLS when the listener has it.
fn spawn_stream<IO, S, B>(
    listener: &Listener,
    stage: &Arc<ConnStage>,
    io: IO,
    svc: S,
    conn: Option<(SlotWriter, ConnGuard)>,
) where
    IO: Stream,
    S: ConnService<B>,
    B: ConnBody,
{
    #[cfg(feature = "tls")]
    if let Some(tls) = &listener.tls {
        spawn_conn(stage.clone().serve_tls(tls.clone(), io, svc, conn));
        return;
    }
    #[cfg(not(feature = "tls"))]
    let _ = listener;
    spawn_conn(stage.clone().serve(io, svc, conn));
}

/// Runs one connection in its own task.
fn spawn_conn(served: impl Future<Output = Result<(), BoxError>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::trace!("connection: {e}");
        }
    });
}
