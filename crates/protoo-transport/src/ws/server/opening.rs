//! Connections whose transport exists before the client sees the WebSocket
//! open: the application can put the peer in its room first, so that
//! nothing sent to the room after the client's `open` misses it (as in
//! protoo-server, where `accept()` returns the transport synchronously and
//! the `101` goes out afterwards).
//!
//! - [`ServerTransportBuilder::accept_pending`]: a connection this crate
//!   reads itself; the `101` is written by [`PendingOpen::open`].
//! - [`ServerTransportBuilder::upgrade`]: a connection upgraded by an HTTP
//!   framework, whose `101` the framework writes once its handler returns:
//!   the transport is built over the upgrade still to come.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

#[cfg(doc)]
use super::ServerTransportBuilder;
use super::{linger, respond};
use crate::ws::conn;
use crate::{CloseReason, Initiator, TransportError};

/// The reason a pending connection's transport reports when it was never
/// opened.
const NOT_OPENED: &str = "connection not opened";

/// An accepted WebSocket connection whose `101 Switching Protocols` is not
/// written yet: [`open`](PendingOpen::open) it, or
/// [`reject`](PendingOpen::reject) it with an HTTP error after all.
/// Dropped, it is neither: the socket is closed and the transport reports
/// its close. Given by [`ServerTransportBuilder::accept_pending`], with the
/// builder's guard, kept by the connection task once opened.
pub struct PendingOpen<S, G = ()> {
    pub(super) conn: Option<conn::Conn<S>>,
    pub(super) response: String,
    pub(super) had_leftover: bool,
    pub(super) guard: Option<G>,
}

impl<S, G> PendingOpen<S, G>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    /// Writes the `101` and starts the connection task (which keeps the
    /// builder's guard until it ends).
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] when the `101` could not be written; the
    /// transport then reports a lost connection.
    pub async fn open(mut self) -> Result<(), TransportError> {
        // The connection stays in `self` while the `101` is written: if
        // this future is dropped meanwhile, `Drop` ends the transport.
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let stream = conn.stream_mut();
        let written = async {
            stream.write_all(self.response.as_bytes()).await?;
            stream.flush().await
        };
        if let Err(error) = written.await {
            if let Some(mut conn) = self.conn.take() {
                conn.abandon(CloseReason::new(None, "connection lost", Initiator::Remote));
            }
            return Err(error.into());
        }
        if let Some(conn) = self.conn.take() {
            conn::spawn(conn, self.guard.take());
        }
        Ok(())
    }

    /// Answers the upgrade with an HTTP error instead (as
    /// [`UpgradeRequest::reject`](super::UpgradeRequest::reject) does); the transport reports a close with
    /// no code and `reason`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] when the answer could not be written.
    pub async fn reject(mut self, status: u16, reason: &str) -> Result<(), TransportError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        conn.abandon(CloseReason::new(None, reason, Initiator::Local));
        let status = if (200..=999).contains(&status) {
            status
        } else {
            500
        };
        let stream = conn.stream_mut();
        respond(stream, status, reason, &[]).await?;
        if self.had_leftover {
            linger(stream).await;
        }
        Ok(())
    }
}

impl<S, G> Drop for PendingOpen<S, G> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.abandon(CloseReason::new(None, NOT_OPENED, Initiator::Local));
        }
    }
}

impl<S, G> fmt::Debug for PendingOpen<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOpen")
            .field("pending", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// I/O that is an upgrade still to come, then the upgraded stream.
pub(super) enum LateIo<S> {
    Upgrading(Pin<Box<dyn Future<Output = io::Result<S>> + Send>>),
    Ready(S),
    Failed,
}

impl<S: Unpin> LateIo<S> {
    /// The stream, once the upgrade is done.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut S>> {
        if let LateIo::Upgrading(upgrade) = self {
            match upgrade.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => *self = LateIo::Ready(stream),
                Poll::Ready(Err(error)) => {
                    *self = LateIo::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match self {
            LateIo::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LateIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_read(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LateIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self, LateIo::Ready(stream) if stream.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_flush(cx),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(stream)) => Pin::new(stream).poll_shutdown(cx),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}
