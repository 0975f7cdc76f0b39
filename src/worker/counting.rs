//! Byte counting on a connection's socket, batched: one slot update per request cycle.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::scoreboard::SlotWriter;

/// Bytes a connection moved since they were last added to the slot.
struct Unflushed {
    writer: SlotWriter,
    bytes_in: u64,
    bytes_out: u64,
}

impl Unflushed {
    /// Adds the bytes to the slot's counters (one lane lookup for both).
    #[inline(never)]
    fn flush(&mut self) {
        if self.bytes_in | self.bytes_out != 0 {
            self.writer.add_bytes(self.bytes_in, self.bytes_out);
            self.bytes_in = 0;
            self.bytes_out = 0;
        }
    }
}

impl Drop for Unflushed {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Bytes written without a flush after which they are added anyway (a long response whose
/// connection is never idle on reads).
const FLUSH_OUT_AT: u64 = 64 * 1024;

pin_project_lite::pin_project! {
    /// A socket that adds the bytes it reads and writes to the slot's counters. They are
    /// kept on the connection and added when a read finds nothing to read (the connection
    /// waits for its client: once per request on a keep-alive connection), when
    /// [`FLUSH_OUT_AT`] bytes were written, and when the connection closes.
    pub(crate) struct CountingIo<T> {
        #[pin]
        inner: T,
        unflushed: Unflushed,
    }
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, writer: SlotWriter) -> Self {
        Self {
            inner,
            unflushed: Unflushed {
                writer,
                bytes_in: 0,
                bytes_out: 0,
            },
        }
    }
}

impl<T: AsyncRead> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.unflushed.bytes_in += n as u64;
        } else {
            // Nothing to read (pending, end of stream, error): the connection waits.
            this.unflushed.flush();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = ready!(this.inner.poll_write(cx, buf));
        if let Ok(n) = &res {
            this.unflushed.wrote(*n);
        }
        Poll::Ready(res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = ready!(this.inner.poll_write_vectored(cx, bufs));
        if let Ok(n) = &res {
            this.unflushed.wrote(*n);
        }
        Poll::Ready(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl Unflushed {
    #[inline]
    fn wrote(&mut self, n: usize) {
        self.bytes_out += n as u64;
        if self.bytes_out >= FLUSH_OUT_AT {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::Scoreboard;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn bytes(sb: &Scoreboard) -> (u64, u64) {
        let c = &sb.snapshot().slots[0].counters;
        (c.bytes_in, c.bytes_out)
    }

    #[tokio::test]
    async fn bytes_are_added_when_the_connection_waits_on_a_threshold_and_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("segment");
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut io = CountingIo::new(server, sb.writer(0).expect("writer"));

        client.write_all(b"request").await.expect("send");
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.expect("read"), 7);
        io.write_all(b"response").await.expect("write");
        assert_eq!(
            bytes(&sb),
            (0, 0),
            "kept on the connection while it is busy"
        );

        // The next read finds nothing: the connection waits, its bytes are added.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), io.read(&mut buf));
        assert!(idle.await.is_err(), "nothing to read");
        assert_eq!(bytes(&sb), (7, 8));

        // A long response is added as it goes.
        io.write_all(&vec![b'x'; FLUSH_OUT_AT as usize])
            .await
            .expect("write");
        assert_eq!(bytes(&sb), (7, 8 + FLUSH_OUT_AT));

        // The rest at close.
        io.write_all(b"tail").await.expect("write");
        drop(io);
        assert_eq!(bytes(&sb), (7, 12 + FLUSH_OUT_AT));
    }
}
