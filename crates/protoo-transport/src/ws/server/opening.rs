//! Connections whose transport exists before the client sees the WebSocket
//! open: the application can put the peer in its room first, so that
//! nothing sent to the room after the client's `open` misses it (as in
//! protoo-server, where `accept()` returns the transport synchronously and
//! the `101` goes out afterwards).
//!
//! - [`UpgradeRequest::accept_pending`]: a connection this crate reads
//!   itself; the `101` is written by [`PendingOpen::open`].
//! - [`from_upgrade`]: a connection upgraded by an HTTP framework, whose
//!   `101` the framework writes once its handler returns: the transport
//!   is built over the upgrade still to come.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{UpgradeRequest, linger, respond};
use crate::ws::{WsConfig, conn};
use crate::{CloseReason, Initiator, Transport, TransportError};

/// The reason a pending connection's transport reports when it was never
/// opened.
const NOT_OPENED: &str = "connection not opened";

impl<S> UpgradeRequest<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Accepts the upgrade without answering it yet: returns the transport
    /// (frames sent to it are queued) and the [`PendingOpen`] that writes
    /// the `101 Switching Protocols` and starts the connection. An invalid
    /// upgrade is answered and refused as by [`UpgradeRequest::accept`].
    ///
    /// ```no_run
    /// use protoo_transport::ws::{self, WsConfig};
    ///
    /// # async fn run(socket: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    /// let config = WsConfig::default();
    /// let request = ws::read_upgrade_request(socket, &config).await?;
    /// let (transport, pending) = request.accept_pending(&config).await?;
    /// // ... put the peer on `transport` in its room ...
    /// pending.open().await?; // now the client sees the connection open
    /// # drop(transport);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn accept_pending(
        self,
        config: &WsConfig,
    ) -> Result<(Transport, PendingOpen<S>), TransportError> {
        let had_leftover = !self.leftover.is_empty();
        let (stream, leftover, response) = self.prepare().await?;
        let (transport, conn) = super::upgraded(stream, leftover, config);
        let pending = PendingOpen {
            conn: Some(conn),
            response,
            had_leftover,
        };
        Ok((transport, pending))
    }
}

/// An accepted WebSocket connection whose `101 Switching Protocols` is not
/// written yet: [`open`](PendingOpen::open) it, or
/// [`reject`](PendingOpen::reject) it with an HTTP error after all.
/// Dropped, it is neither: the socket is closed and the transport reports
/// its close.
pub struct PendingOpen<S> {
    conn: Option<conn::Conn<S>>,
    response: String,
    had_leftover: bool,
}

impl<S> PendingOpen<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Writes the `101` and starts the connection task.
    pub async fn open(self) -> Result<(), TransportError> {
        self.open_holding(()).await
    }

    /// Like [`PendingOpen::open`], and the connection task keeps `guard`
    /// until it ends (see [`UpgradeRequest::accept_holding`]).
    pub async fn open_holding<G: Send + 'static>(mut self, guard: G) -> Result<(), TransportError> {
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
            conn::spawn(conn, guard);
        }
        Ok(())
    }

    /// Answers the upgrade with an HTTP error instead (as
    /// [`UpgradeRequest::reject`] does); the transport reports a close with
    /// no code and `reason`.
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

impl<S> Drop for PendingOpen<S> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.abandon(CloseReason::new(None, NOT_OPENED, Initiator::Local));
        }
    }
}

impl<S> fmt::Debug for PendingOpen<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOpen")
            .field("pending", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// A transport over a connection an HTTP framework will upgrade once its
/// handler returns the `101` (hyper's `OnUpgrade`, mapped to the upgraded
/// I/O): the connection task starts now and waits for `upgrade` before
/// its first read or write; frames sent meanwhile are queued. If `upgrade`
/// fails (the handler answered something else, the client went away), the
/// transport reports a lost connection. The task keeps `guard` until it
/// ends.
pub async fn from_upgrade<F, S, G>(upgrade: F, config: &WsConfig, guard: G) -> Transport
where
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let io = LateIo::Upgrading(Box::pin(upgrade));
    let (transport, conn) = conn::start(io, Vec::new(), Role::Server, config);
    conn::spawn(conn, guard);
    transport
}

/// I/O that is an upgrade still to come, then the upgraded stream.
enum LateIo<S> {
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
