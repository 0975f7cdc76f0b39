//! One TLS connection: the handshake (bounded, in the connection's task) and serving the
//! HTTP version ALPN picked.

use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::{TlsConfig, TlsError};
use crate::worker::track::{CountingIo, TrackedService};
use crate::worker::Worker;

/// The HTTP version a TLS client chose by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// ALPN `http/1.1`.
    Http1,
    /// ALPN `h2`.
    Http2,
    /// No ALPN: the version is detected from the first bytes.
    Detect,
}

impl Protocol {
    fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            _ => Self::Detect,
        }
    }

    /// `builder` limited to this protocol.
    fn builder(self, builder: &auto::Builder<TokioExecutor>) -> auto::Builder<TokioExecutor> {
        match self {
            Self::Http1 => builder.clone().http1_only(),
            Self::Http2 => builder.clone().http2_only(),
            Self::Detect => builder.clone(),
        }
    }
}

/// Why a TLS connection ended with an error.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The handshake failed or timed out: nothing was served.
    Handshake(TlsError),
    /// HTTP serving failed after the handshake (a reset, a protocol error).
    Http(Box<dyn std::error::Error + Send + Sync>),
}

impl TlsConfig {
    /// Runs the server side of the handshake on `io`, bounded by the handshake timeout.
    ///
    /// # Errors
    /// [`TlsError::Handshake`] when the client sent something that is not TLS or the
    /// handshake failed; [`TlsError::HandshakeTimeout`] when it did not finish in time.
    pub(crate) async fn handshake<IO>(&self, io: IO) -> Result<(TlsStream<IO>, Protocol), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let accept = self.acceptor.accept(io);
        match tokio::time::timeout(self.handshake_timeout, accept).await {
            Err(_elapsed) => Err(TlsError::HandshakeTimeout(self.handshake_timeout)),
            Ok(Err(e)) => Err(TlsError::Handshake(e)),
            Ok(Ok(stream)) => {
                let protocol = Protocol::from_alpn(stream.get_ref().1.alpn_protocol());
                Ok((stream, protocol))
            }
        }
    }

    /// Handshake, then serve `service` on `io` with the HTTP version ALPN chose, watched by
    /// `watcher` for a graceful drain.
    pub(crate) async fn serve_connection<IO, S, B>(
        &self,
        io: IO,
        builder: &auto::Builder<TokioExecutor>,
        service: S,
        watcher: Watcher,
    ) -> Result<(), ConnError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (stream, protocol) = self.handshake(io).await.map_err(ConnError::Handshake)?;
        let builder = protocol.builder(builder);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        watcher.watch(conn).await.map_err(ConnError::Http)
    }
}

impl Worker {
    /// Serves one accepted connection over TLS in its own task: the handshake runs there,
    /// never in the accept loop. Tracked like a plain connection, with bytes counted on the
    /// wire (under TLS).
    pub(crate) fn spawn_tls<S, B>(
        &self,
        tls: &TlsConfig,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        service: &S,
    ) where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        if !self.tracking() {
            // Benchmark baseline only: no scoreboard writes at all.
            let svc = service.clone();
            tokio::spawn(async move {
                let _ = tls.serve_connection(stream, &builder, svc, watcher).await;
            });
            return;
        }
        let writer = self.slot_writer().clone();
        let conn = writer.conn_open(peer);
        let io = CountingIo::new(stream, writer.clone());
        let svc = TrackedService::new(service.clone(), conn.clone(), self.show_query());
        tokio::spawn(async move {
            match tls.serve_connection(io, &builder, svc, watcher).await {
                Ok(()) => {}
                Err(ConnError::Handshake(e)) => {
                    tracing::debug!("connection from {peer}: {e}");
                    writer.tls_handshake_failed();
                }
                Err(ConnError::Http(e)) => tracing::trace!("connection from {peer}: {e}"),
            }
            drop(conn);
        });
    }
}
