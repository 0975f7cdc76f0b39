//! The handshake of one TLS connection (bounded, run in the connection's task by the serve
//! stage, `serve/conn.rs`) and the HTTP version ALPN picked.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::{TlsConfig, TlsError};

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
}

impl TlsError {
    /// Whether a failed handshake counts in `flora_tls_handshake_failures_total`: not when the
    /// client closed before finishing its hello (a TCP health check that connects and closes
    /// sends nothing), which is not a failure of anything.
    pub(crate) fn counts_as_failure(&self) -> bool {
        !matches!(self, Self::Handshake(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }
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
}
