//! A listener for `axum::serve` with the limits a bound server applies
//! before the upgrade: a cap on connections (503 beyond it), a head-size
//! limit (431 beyond it) and a header timeout, for the protoo mount and
//! any other axum application (an operations endpoint).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::{Listener, ListenerExt, TapIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::ServerConfig;
use crate::descriptors::{self, AcceptErrors};

/// How long a connection answered 431 is read (input discarded) before it
/// is closed, so that the client reads the answer instead of a reset.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// What `axum::serve` takes: a [`LimitedListener`] whose connections get
/// `TCP_NODELAY`. (Wrapped in axum's [`TapIo`] so that
/// `into_make_service_with_connect_info::<SocketAddr>()` works as with a
/// plain `TcpListener`.)
pub type ServeListener = TapIo<LimitedListener, fn(&mut LimitedIo)>;

/// Wraps `listener` for `axum::serve` with the limits of `config`:
///
/// - at most [`ServerConfig::max_connections`] connections (fitted to the
///   file-descriptor limit, as a bound server does); one more is answered
///   503 `too many connections` and closed;
/// - a request head longer than [`WsConfig::max_handshake_bytes`] is
///   answered 431 and the connection closed: a head still arriving holds at
///   most that many bytes;
/// - a request head must be complete within
///   [`WsConfig::handshake_timeout`] of the connection's start (or of the
///   last answer, on a kept-alive connection), else the connection is
///   closed;
/// - accept errors (descriptors exhausted) pause the listener and are
///   logged once in a while, with a count.
///
/// [`Mount::listener`](super::Mount::listener) does this with the mounted
/// server's configuration.
///
/// [`WsConfig::max_handshake_bytes`]: crate::WsConfig::max_handshake_bytes
/// [`WsConfig::handshake_timeout`]: crate::WsConfig::handshake_timeout
///
/// ```no_run
/// use protoo_server::ServerConfig;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
/// let config = ServerConfig::default().with_max_connections(64);
/// axum::serve(protoo_server::axum::limited(listener, &config), app).await
/// # }
/// ```
pub fn limited(listener: TcpListener, config: &ServerConfig) -> ServeListener {
    let cap = descriptors::connection_cap(config.max_connections).max(1);
    let nodelay: fn(&mut LimitedIo) = |io| {
        // Small protoo messages go out at once.
        let _ = io.io.set_nodelay(true);
    };
    LimitedListener {
        listener,
        slots: Arc::new(Semaphore::new(cap)),
        max_head: config.ws.max_handshake_bytes,
        head_timeout: config.ws.handshake_timeout,
        errors: AcceptErrors::default(),
    }
    .tap_io(nodelay)
}

/// A TCP listener with a connection cap, a head-size limit and a header
/// timeout: see [`limited`].
pub struct LimitedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_head: usize,
    head_timeout: Duration,
    errors: AcceptErrors,
}

impl fmt::Debug for LimitedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedListener")
            .field("listener", &self.listener)
            .field("free_slots", &self.slots.available_permits())
            .field("max_head", &self.max_head)
            .field("head_timeout", &self.head_timeout)
            .finish()
    }
}

impl Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, SocketAddr) {
        loop {
            let (tcp, remote_addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    self.errors.failed(&error).await;
                    continue;
                }
            };
            self.errors.accepted();
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::debug!(%remote_addr, "connection limit reached");
                crate::metrics::upgrade_rejected(503);
                tokio::spawn(descriptors::answer_over_limit(tcp));
                continue;
            };
            let io = LimitedIo {
                io: tcp,
                phase: Phase::Head(Scan::default()),
                max_head: self.max_head,
                head_timeout: self.head_timeout,
                deadline: Some(Box::pin(tokio::time::sleep(self.head_timeout))),
                _slot: slot,
            };
            return (io, remote_addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection of a [`LimitedListener`]: counts the bytes of each request
/// head until its end (answering 431 and closing past the limit, closing
/// at the header timeout), then passes everything through; holds its place
/// under the connection cap until it is dropped (for an upgraded
/// connection, when the WebSocket ends).
pub struct LimitedIo {
    io: TcpStream,
    phase: Phase,
    max_head: usize,
    head_timeout: Duration,
    /// The header timeout, then the linger of a refusal; freed once the
    /// connection is upgraded (an idle WebSocket keeps no timer).
    deadline: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl fmt::Debug for LimitedIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedIo")
            .field("io", &self.io)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Where a connection is.
#[derive(Debug)]
enum Phase {
    /// Reading a request head.
    Head(Scan),
    /// The head is complete; the next write starts its answer.
    Answer,
    /// Answered `101`: a WebSocket now, passed through.
    Upgraded,
    /// Over the limit: writing the 431 (this many bytes written).
    Refusing(Vec<u8>, usize),
    /// 431 written: shutting the write side down.
    ShuttingDown,
    /// Discarding input until the client closes or the linger ends.
    Lingering,
    /// Done: reads end, writes fail.
    Closed,
}

/// Finds the end of a request head (an empty line after at least one
/// byte of content; `\r` is ignored, as HTTP parsers accept bare `\n`).
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of this head so far.
    len: usize,
    /// Whether a byte other than `\r` and `\n` was seen.
    content: bool,
    /// Whether the last byte other than `\r` was `\n`.
    line_start: bool,
}

impl Scan {
    /// Scans `bytes`: the length of the head's part in them when it ends
    /// there. Line by line (the newlines found with `memchr`), not byte by
    /// byte: every connection's head passes here.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            let line_end = memchr::memchr(b'\n', rest);
            let line = &rest[..line_end.unwrap_or(rest.len())];
            if line.iter().any(|&byte| byte != b'\r') {
                self.line_start = false;
                self.content = true;
            }
            let Some(end) = line_end else {
                self.len += bytes.len();
                return None;
            };
            at += end + 1;
            if self.line_start && self.content {
                self.len += at;
                return Some(at);
            }
            self.line_start = true;
        }
    }
}

impl LimitedIo {
    /// Whether the deadline has passed (registering the waker otherwise).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// The deadline, `after` from now.
    fn restart_deadline(&mut self, after: Duration) {
        let at = Instant::now() + after;
        match &mut self.deadline {
            Some(deadline) => deadline.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// The answer to a head over the limit.
    fn refusal(&self) -> Vec<u8> {
        let reason = format!("request head larger than {} bytes", self.max_head);
        format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n\
             X-WebSocket-Reject-Reason: {reason}\r\n\r\n{reason}",
            reason.len()
        )
        .into_bytes()
    }

    /// Reads in the head phase: at most one byte past the limit, counted
    /// and scanned for the head's end.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.deadline_passed(cx) {
            tracing::debug!("request head not complete in time: connection closed");
            self.phase = Phase::Closed;
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let Phase::Head(scan) = &mut self.phase else {
            return Poll::Ready(Ok(()));
        };
        let room = (self.max_head + 1).saturating_sub(scan.len).max(1);
        let before = buf.filled().len();
        if buf.remaining() <= room {
            ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        } else {
            // Never more than the room: the head's bytes held above are
            // bounded by the limit.
            let mut scratch = [0u8; 1024];
            let want = room.min(scratch.len());
            let mut small = ReadBuf::new(&mut scratch[..want]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut small))?;
            buf.put_slice(small.filled());
        }
        let new = &buf.filled()[before..];
        if new.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let ended = scan.feed(new);
        if scan.len > self.max_head {
            tracing::debug!(limit = self.max_head, "request head too large: 431");
            buf.set_filled(before);
            self.phase = Phase::Refusing(self.refusal(), 0);
            return self.poll_refuse(cx);
        }
        if ended.is_some() {
            self.phase = Phase::Answer;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the 431, shuts the write side, discards input for a while,
    /// then ends the connection with an error (hyper drops it).
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.phase {
                Phase::Refusing(answer, written) => {
                    let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *written += n;
                    if *written == answer.len() {
                        self.phase = Phase::ShuttingDown;
                    }
                }
                Phase::ShuttingDown => {
                    ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
                    self.restart_deadline(REFUSE_LINGER);
                    self.phase = Phase::Lingering;
                }
                Phase::Lingering => {
                    if self.deadline_passed(cx) {
                        self.phase = Phase::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 1024];
                    let mut sink = ReadBuf::new(&mut scratch);
                    ready!(Pin::new(&mut self.io).poll_read(cx, &mut sink))?;
                    if sink.filled().is_empty() {
                        self.phase = Phase::Closed;
                    }
                }
                _ => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(Err(io::Error::other("request head too large")));
                }
            }
        }
    }

    /// Before a write: the first write after a head tells whether the
    /// connection was upgraded (`101`) or the next head starts; a write in
    /// a head phase (an answer still being written) restarts the header
    /// timeout, which bounds the client's silence, not the server's work.
    fn before_write(&mut self, first: &[u8]) -> io::Result<()> {
        match &self.phase {
            Phase::Upgraded => {}
            Phase::Answer if first.starts_with(b"HTTP/1.1 101 ") => {
                self.phase = Phase::Upgraded;
                self.deadline = None;
            }
            Phase::Answer | Phase::Head(_) => {
                if matches!(self.phase, Phase::Answer) {
                    self.phase = Phase::Head(Scan::default());
                }
                self.restart_deadline(self.head_timeout);
            }
            _ => return Err(io::ErrorKind::BrokenPipe.into()),
        }
        Ok(())
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Upgraded | Phase::Answer => Pin::new(&mut this.io).poll_read(cx, buf),
            Phase::Head(_) => this.poll_read_head(cx, buf),
            Phase::Refusing(..) | Phase::ShuttingDown | Phase::Lingering => this.poll_refuse(cx),
            Phase::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Upgraded) {
            this.before_write(buf)?;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Upgraded) {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            this.before_write(first)?;
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
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

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut scan = Scan::default();
        assert_eq!(scan.feed(b"\r\nGET / HTTP/1.1\r\nHost: x\r"), None);
        assert_eq!(scan.feed(b"\n\r"), None);
        assert_eq!(scan.feed(b"\nrest"), Some(1));
        assert_eq!(scan.len, 29);
        let mut bare = Scan::default();
        assert_eq!(bare.feed(b"GET / HTTP/1.1\nHost: x\n\nnext"), Some(24));
    }

    /// The head's end, byte by byte: the definition the scan must match.
    fn reference(input: &[u8]) -> Option<usize> {
        let (mut content, mut line_start) = (false, false);
        for (i, &byte) in input.iter().enumerate() {
            match byte {
                b'\n' if line_start && content => return Some(i + 1),
                b'\n' => line_start = true,
                b'\r' => {}
                _ => {
                    line_start = false;
                    content = true;
                }
            }
        }
        None
    }

    #[test]
    fn the_scan_finds_the_end_the_byte_by_byte_definition_finds() {
        let inputs: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest",
            b"\r\n\n\r\nGET / HTTP/1.1\n\r\r\nafter",
            b"GET\n\rX\n\r\r\r\n",
            b"\n\n\n\r\n",
            b"a\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
            b"x\r\n\ry\r\n\r\n",
            b"",
        ];
        for input in inputs {
            let want = reference(input);
            // Fed whole, and cut in two at every point.
            for cut in 0..=input.len() {
                let mut scan = Scan::default();
                let got = match scan.feed(&input[..cut]) {
                    Some(end) => Some(end),
                    None => scan.feed(&input[cut..]).map(|end| cut + end),
                };
                assert_eq!(
                    got,
                    want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
                if let Some(end) = want {
                    assert_eq!(scan.len, end);
                }
            }
        }
    }
}
