//! A read buffer that exists only while a connection is busy.
//!
//! tungstenite reads at most its configured read buffer size per call
//! (1 KiB here, for the idle-memory target), so a 16 KB message would take
//! sixteen `read` system calls. [`ReadAhead`] sits between the socket and
//! tungstenite: while reads come back small it passes them straight through
//! (no buffer, no copy); once a read fills tungstenite's whole request
//! (more is likely waiting), it reads up to [`CHUNK`] bytes at a time into a
//! buffer of its own and serves tungstenite from it. When the socket has
//! nothing more (`Pending`), the buffer is given back: an idle connection
//! holds none. A connection whose last burst was larger than one
//! pass-through read starts its next burst reading ahead (one read for a
//! 4 KB request instead of two); one whose last burst was small goes back
//! to passing through, allocating nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once while busy.
pub(crate) const CHUNK: usize = 32 * 1024;

/// A stream whose reads go through a read-ahead buffer while busy (see the
/// module docs). Writes pass through.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    io: S,
    /// Read from the socket, not yet handed over; no capacity when idle.
    buf: BytesMut,
    /// Reading ahead: a pass-through read came back full, or the last
    /// burst was large.
    ahead: bool,
    /// Bytes read since the socket last had nothing more.
    burst: usize,
    /// The last burst was larger than [`LARGE_BURST`]: start the next one
    /// reading ahead.
    large: bool,
}

/// A burst larger than this starts the next one reading ahead: more than
/// tungstenite's own reads (1 KiB) take.
const LARGE_BURST: usize = 1024;

impl<S> ReadAhead<S> {
    pub(crate) fn new(io: S) -> Self {
        ReadAhead {
            io,
            buf: BytesMut::new(),
            ahead: false,
            burst: 0,
            large: false,
        }
    }

    /// The capacity held for read-ahead (0 when idle).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Hands over what is buffered, as much as `out` takes.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.buf.len());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
    }

    /// The socket has nothing more for now: the buffer is given back, and
    /// the next burst reads ahead from its start if this one was large.
    fn idle(&mut self) {
        self.large = self.burst > LARGE_BURST;
        self.burst = 0;
        self.ahead = self.large;
        self.buf = BytesMut::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if !this.ahead {
            let (before, wanted) = (out.filled().len(), out.remaining());
            match Pin::new(&mut this.io).poll_read(cx, out) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    this.idle();
                    return Poll::Pending;
                }
            }
            let read = out.filled().len() - before;
            this.burst += read;
            if wanted > 0 && read == wanted {
                this.ahead = true;
            }
            return Poll::Ready(Ok(()));
        }
        this.buf.reserve(CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
            Poll::Ready(Ok(0)) => {
                // The end of the stream: `out` left unfilled says so.
                this.buf = BytesMut::new();
                this.ahead = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(read)) => {
                this.burst += read;
                this.serve(out);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                this.buf = BytesMut::new();
                this.ahead = false;
                Poll::Ready(Err(error))
            }
            Poll::Pending => {
                // Nothing more for now: the connection idles without it.
                this.idle();
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the inner stream.
    struct Counted<S> {
        io: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let result = Pin::new(&mut this.io).poll_read(cx, out);
            if result.is_ready() {
                this.reads += 1;
            }
            result
        }
    }

    #[tokio::test]
    async fn small_reads_pass_through_and_a_burst_is_read_ahead_then_released() {
        let (mut remote, local) = tokio::io::duplex(1 << 20);
        let mut stream = ReadAhead::new(Counted {
            io: local,
            reads: 0,
        });
        let mut chunk = [0u8; 1024];

        // A small message: one read, straight into the caller's buffer.
        remote.write_all(b"hello").await.unwrap();
        let n = stream.read(&mut chunk).await.unwrap();
        assert_eq!(&chunk[..n], b"hello");
        assert_eq!((stream.io.reads, stream.buffered_capacity()), (1, 0));

        // 16 KB in 1 KiB reads: one full pass-through read, then one read
        // ahead serves the other fifteen.
        let message: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
        remote.write_all(&message).await.unwrap();
        let mut got = Vec::new();
        while got.len() < message.len() {
            let n = stream.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, message);
        assert_eq!(stream.io.reads, 3);
        assert!(stream.buffered_capacity() > 0);

        // The socket has nothing more: the buffer is given back.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = ReadBuf::new(&mut chunk);
        assert!(
            Pin::new(&mut stream)
                .poll_read(&mut cx, &mut out)
                .is_pending()
        );
        assert_eq!(stream.buffered_capacity(), 0);

        // The end of the stream reads as the end.
        drop(remote);
        assert_eq!(stream.read(&mut chunk).await.unwrap(), 0);
    }
}
