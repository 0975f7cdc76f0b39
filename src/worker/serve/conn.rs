//! The connection stage: one accepted stream, of any transport, served by hyper with tracking.
//!
//! [`ConnStage::serve`] is generic over the stream type, so a TCP stream, a Unix stream or a
//! TLS stream wrapping either goes through the same code. It reads the first bytes to tell
//! HTTP/2 (the client preface) from HTTP/1 and hands the stream to hyper's `http1` or `http2`
//! connection directly, under the worker's drain ([`super::drain`]) and, for HTTP/1, with the
//! header-read timeout on the coarse timer ([`super::timer`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::drain::{Drain, Graceful};
use super::service::BoxError;
use super::timer::CoarseTimer;
use crate::scoreboard::{ConnGuard, SlotWriter};
use crate::worker::counting::CountingIo;
use crate::worker::track::TrackedService;

/// A stream a connection is served on: TCP, Unix, or TLS over either.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// The hyper service a connection runs (the app's, wrapped for tracking or not).
pub(super) trait ConnService<B>:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Send
    + 'static
{
}
impl<S, B> ConnService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Send
        + 'static
{
}

/// A response body hyper can send from any thread.
pub(super) trait ConnBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}
impl<B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static> ConnBody for B {}

/// Interval of HTTP/2 keep-alive pings, and how long an answer may take.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every connection of one `serve` call shares: the HTTP settings, the drain and the
/// coarse timer.
pub(super) struct ConnStage {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    pub(super) drain: Arc<Drain>,
    /// Longest wait for a request's headers (also for the first bytes of a connection).
    header_timeout: Duration,
    show_query: bool,
    /// The request timeout (`None`: none; see `worker::deadline`).
    request_timeout: Option<Duration>,
}

impl ConnStage {
    /// The stage of one `serve` call; `timer`'s sweeper must run while connections do.
    pub(super) fn new(
        show_query: bool,
        header_timeout: Duration,
        timer: CoarseTimer,
        request_timeout: Option<Duration>,
    ) -> Self {
        let mut h1 = http1::Builder::new();
        // `writev(false)`: the head and a body chunk are copied into one buffer and sent with
        // one write(2). For the small answers most requests get, that is cheaper than hyper's
        // queue of buffers for writev(2) (about 500 instructions per request; see
        // BENCHMARKS.md); a large body costs one copy.
        h1.timer(timer.clone())
            .header_read_timeout(header_timeout)
            .writev(false);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        // Pings find HTTP/2 peers that are gone (HTTP/1 idle connections have the
        // header-read timeout).
        h2.timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE);
        Self {
            http1: h1,
            http2: h2,
            drain: Arc::new(Drain::new(timer.clock())),
            header_timeout,
            show_query,
            request_timeout,
        }
    }

    /// Serves one connection until it ends; run it as the connection's own task. `conn` is
    /// its scoreboard entry (`None`: untracked, the benchmarks' baseline).
    ///
    /// This is the one place any transport joins: a TLS stage hands its stream here after
    /// the handshake (in the connection's task).
    pub(super) async fn serve<IO, S, B>(
        self: Arc<Self>,
        io: IO,
        svc: S,
        conn: Option<(SlotWriter, ConnGuard)>,
    ) -> Result<(), BoxError>
    where
        IO: Stream,
        S: ConnService<B>,
        B: ConnBody,
    {
        let _open = self.drain.enter();
        let Some((writer, conn)) = conn else {
            return match self.request_timeout {
                None => self.serve_http(io, svc).await,
                Some(_) => self.serve_http(io, self.untracked(svc)).await,
            };
        };
        let io = CountingIo::new(io, writer);
        let svc = self.tracked(svc, conn.clone());
        let res = self.serve_http(io, svc).await;
        drop(conn);
        res
    }

    /// The app's service tracked into `conn`, under the request timeout.
    fn tracked<S>(&self, svc: S, conn: ConnGuard) -> TrackedService<S> {
        TrackedService::new(svc, Some(conn), self.show_query, self.request_timeout)
    }

    /// The app's service under the request timeout only (tracking off).
    fn untracked<S>(&self, svc: S) -> TrackedService<S> {
        TrackedService::new(svc, None, false, self.request_timeout)
    }

    async fn serve_http<IO, S, B>(&self, mut io: IO, svc: S) -> Result<(), BoxError>
    where
        IO: Stream,
        S: ConnService<B>,
        B: ConnBody,
    {
        let mut pre = Prefixed::default();
        let detect = tokio::time::timeout(self.header_timeout, pre.read_preface(&mut io));
        // Only a connection with no request bytes yet (or part of the HTTP/2 preface) waits
        // here: one that has sent nothing within the header-read timeout, or by the time the
        // worker drains, is closed.
        let h2 = tokio::select! {
            biased;
            detected = detect => match detected {
                Ok(h2) => h2?,
                Err(_elapsed) => return Ok(()),
            },
            () = self.drain.started() => return Ok(()),
        };
        self.serve_version(pre.with(io), svc, h2).await
    }

    /// Serves `io` with hyper's HTTP/2 (`h2`) or HTTP/1 connection, under the drain.
    async fn serve_version<IO, S, B>(&self, io: IO, svc: S, h2: bool) -> Result<(), BoxError>
    where
        IO: Stream,
        S: ConnService<B>,
        B: ConnBody,
    {
        let io = TokioIo::new(io);
        if h2 {
            let served = self.http2.serve_connection(io, svc);
            self.drain.watch(served).await?;
        } else {
            let served = self.http1.serve_connection(io, svc).with_upgrades();
            self.drain.watch(served).await?;
        }
        Ok(())
    }

    /// [`ConnStage::serve`] behind a TLS handshake (in the connection's task, bounded by the
    /// handshake timeout): bytes are counted on the wire, under TLS; a failed handshake is
    /// counted (`flora_tls_handshake_failures_total`) and closes this connection only; ALPN
    /// picks the HTTP version (none: told from the first bytes).
    #[cfg(feature = "tls")]
    pub(super) async fn serve_tls<IO, S, B>(
        self: Arc<Self>,
        tls: crate::worker::TlsConfig,
        io: IO,
        svc: S,
        conn: Option<(SlotWriter, ConnGuard)>,
    ) -> Result<(), BoxError>
    where
        IO: Stream,
        S: ConnService<B>,
        B: ConnBody,
    {
        let _open = self.drain.enter();
        let Some((writer, conn)) = conn else {
            return match self.request_timeout {
                None => self.tls_http(&tls, io, svc, None).await,
                Some(_) => self.tls_http(&tls, io, self.untracked(svc), None).await,
            };
        };
        let io = CountingIo::new(io, writer.clone());
        let svc = self.tracked(svc, conn.clone());
        let res = self.tls_http(&tls, io, svc, Some(&writer)).await;
        drop(conn);
        res
    }

    #[cfg(feature = "tls")]
    async fn tls_http<IO, S, B>(
        &self,
        tls: &crate::worker::TlsConfig,
        io: IO,
        svc: S,
        writer: Option<&SlotWriter>,
    ) -> Result<(), BoxError>
    where
        IO: Stream,
        S: ConnService<B>,
        B: ConnBody,
    {
        use crate::worker::tls::Protocol;
        let handshake = tokio::select! {
            biased;
            done = tls.handshake(io) => done,
            // A drain does not wait for handshakes: the client has sent no request yet.
            () = self.drain.started() => return Ok(()),
        };
        let (stream, protocol) = match handshake {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!("tls: {e}");
                if let (Some(w), true) = (writer, e.counts_as_failure()) {
                    w.tls_handshake_failed();
                }
                return Ok(());
            }
        };
        match protocol {
            Protocol::Http1 => self.serve_version(stream, svc, false).await,
            // ALPN h2 or none: the HTTP/2 preface must still come within the header-read
            // timeout (a client that completes the handshake and sends nothing is closed).
            Protocol::Http2 | Protocol::Detect => self.serve_http(stream, svc).await,
        }
    }
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The first bytes of a connection (read to tell the protocol), replayed before the stream.
#[derive(Debug, Default)]
struct Prefixed<IO> {
    buf: [u8; 24],
    len: usize,
    pos: usize,
    io: IO,
}

impl Prefixed<()> {
    /// Reads until the bytes stop matching the HTTP/2 preface (`false`), match it whole
    /// (`true`), or the stream ends (`false`: hyper's HTTP/1 sees the end).
    async fn read_preface<IO: AsyncRead + Unpin>(&mut self, io: &mut IO) -> std::io::Result<bool> {
        loop {
            let n = io.read(&mut self.buf[self.len..]).await?;
            self.len += n;
            if n == 0 || self.buf[..self.len] != H2_PREFACE[..self.len] {
                return Ok(false);
            }
            if self.len == H2_PREFACE.len() {
                return Ok(true);
            }
        }
    }

    fn with<IO>(self, io: IO) -> Prefixed<IO> {
        Prefixed {
            buf: self.buf,
            len: self.len,
            pos: 0,
            io,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = buf.remaining().min(this.len - this.pos);
            buf.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
