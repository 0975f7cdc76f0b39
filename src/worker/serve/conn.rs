//! The connection stage: one accepted stream, of any transport, served by hyper with tracking.
//!
//! [`ConnStage::serve`] is generic over the stream type, so a TCP stream, a Unix stream or a
//! TLS stream wrapping either goes through the same code.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};

use super::service::{BoxError, ServeService};
use crate::scoreboard::{ConnGuard, SlotWriter};
use crate::worker::track::{CountingIo, TrackedService};

/// Longest time to read a request's headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection of one `serve` call shares: the HTTP settings and the drain.
pub(super) struct ConnStage {
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    show_query: bool,
}

impl ConnStage {
    pub(super) fn new(show_query: bool) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        Self {
            builder,
            graceful: GracefulShutdown::new(),
            show_query,
        }
    }

    /// The future serving one connection until it ends; spawn it as the connection's task.
    /// `conn` is its scoreboard entry (`None`: untracked, the benchmarks' baseline).
    pub(super) fn serve<IO, S, M>(
        &self,
        io: IO,
        svc: S::Service,
        conn: Option<(SlotWriter, ConnGuard)>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send + 'static
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: ServeService<M>,
    {
        let (untracked, tracked) = match conn {
            None => {
                let served = self
                    .builder
                    .serve_connection_with_upgrades(TokioIo::new(io), svc);
                (Some(self.graceful.watch(served.into_owned())), None)
            }
            Some((writer, conn)) => {
                let io = TokioIo::new(CountingIo::new(io, writer));
                let svc = TrackedService::new(svc, conn.clone(), self.show_query);
                let served = self.builder.serve_connection_with_upgrades(io, svc);
                (None, Some((self.graceful.watch(served.into_owned()), conn)))
            }
        };
        async move {
            if let Some(served) = untracked {
                return served.await;
            }
            if let Some((served, conn)) = tracked {
                let res = served.await;
                drop(conn);
                return res;
            }
            Ok(())
        }
    }

    /// Connections still open.
    pub(super) fn open(&self) -> usize {
        self.graceful.count()
    }

    /// Ends every connection gracefully (HTTP/1 idle ones closed, HTTP/2 GOAWAY) and waits.
    pub(super) async fn shutdown(self) {
        self.graceful.shutdown().await;
    }
}
