//! The connection task: one tokio task per WebSocket connection that reads
//! incoming frames into a small bounded inbox and writes the outbound queue.
//!
//! - this file: the task's state ([`Conn`]), its poll loop, and how it is
//!   started and spawned;
//! - [`shared`]: the state the task shares with the transport's two halves
//!   (the outbound queue, the inbox, the close report);
//! - [`halves`]: the sink and the stream the application holds;
//! - [`read`]: the read side (incoming messages, the remote's close, read
//!   failures and the drain after them);
//! - [`reader`]: the decoder under it (frames into messages, a read buffer
//!   that exists only while the connection is busy);
//! - [`write`]: the write side (queued frames written with vectored writes,
//!   one flush);
//! - [`codec`]: frames on the wire (headers, masking);
//! - [`timer`]: the one timer: keepalive pings, then the close deadline
//!   (and the confirmation pings' due time);
//! - [`unconfirmed`]: the frames kept until the remote confirms them
//!   (`retain_unconfirmed`, `take_unconfirmed`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

mod codec;
mod halves;
mod read;
mod reader;
mod shared;
mod timer;
mod unconfirmed;
mod write;

use codec::{Kept, Wire};
use reader::{Event, ReadError, Reader};

use super::WsConfig;
use crate::queue::{Outbound, OutboundQueue, Work};
use crate::{
    CloseReason, Frame, FrameSink, FrameStream, Inbound, Initiator, KEEPALIVE_TIMEOUT_REASON,
    SLOW_CONSUMER_REASON, Transport, TransportError, close_code,
};

/// Incoming messages the task holds for a reader that is behind. When the
/// inbox is full (this many messages, or `max_message_size` bytes) the task
/// stops reading the socket, so TCP flow control slows the remote down.
pub(crate) const INBOX_FRAMES: usize = 32;
/// Most bytes of queued frames (counted like the queue counts them) taken
/// into one write batch; the rest stays counted in the queue. The frames
/// are the queue's (shared), so the batch costs its frame list; 128 KiB
/// rather than 64 halves the write calls of a busy 4 KB broadcast (0.07 ->
/// 0.05 per delivery in S3; the floor's 128 KiB write buffer: 0.05).
const BATCH_BYTES: usize = 128 * 1024;
/// Messages read in one step before the task lets the writer and the timer
/// have a turn.
const READ_BUDGET: usize = 64;
/// Steps in one poll before the task yields to other tasks.
const ROUNDS: usize = 8;
/// Most slices in one vectored write.
const MAX_SLICES: usize = 128;
/// Close reasons are cut to this many bytes (a close frame's payload is at
/// most 125 bytes, two of which are the code).
const MAX_CLOSE_REASON: usize = 123;
/// Received close frame without a status code (RFC 6455 7.1.5).
const NO_STATUS: u16 = 1005;
/// The queue's close code for ends that carry no close code.
const ABNORMAL: u16 = 1006;

/// The reason reported when the connection ends without a close frame.
const CONNECTION_LOST: &str = "connection lost";
use halves::{WsSink, WsStream};
use shared::{Shared, close};

/// A transport over `io`, a stream past its WebSocket handshake (`leftover`:
/// bytes read past the handshake), and the connection task that drives it.
pub(crate) fn start<S>(
    io: S,
    leftover: Vec<u8>,
    role: Role,
    config: &WsConfig,
) -> (Transport, Conn<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared::new(config));
    let transport = Transport::new(
        WsSink {
            shared: shared.clone(),
        },
        WsStream {
            shared: shared.clone(),
        },
    );
    (transport, Conn::new(io, leftover, role, shared, config))
}

/// Runs `conn` on a new tokio task, in the caller's tracing span, keeping
/// `guard` alive until the task ends (the task drops its future, and so the
/// guard, as soon as the connection is done).
///
/// Outside any enabled span (the usual case: a server's spans are at
/// DEBUG) the task carries no span: an instrumented future is 40 bytes
/// larger, and in the room example's connections that made the task's
/// allocation 640 bytes instead of 512 (tokio rounds a task up to 128).
pub(crate) fn spawn<S, G>(conn: Conn<S>, guard: G)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let span = tracing::Span::current();
    if span.is_disabled() {
        tokio::spawn(Holding {
            task: conn,
            _guard: guard,
        });
    } else {
        tokio::spawn(Holding {
            task: conn.instrument(span),
            _guard: guard,
        });
    }
}

/// A connection task and what it keeps alive. Polled in place: no box, and
/// no second task to wait for the first.
struct Holding<F, G> {
    task: F,
    _guard: G,
}

// `guard` is never pinned (never polled, only dropped), so `Holding` can
// move whenever its task can.
impl<F: Unpin, G> Unpin for Holding<F, G> {}

impl<F: Future + Unpin, G> Future for Holding<F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.get_mut().task).poll(cx)
    }
}

/// The connection task is this future (hand-written rather than an `async
/// fn`, whose state would hold the connection twice).
impl<S> Future for Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_conn(cx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Frames flow both ways.
    Open,
    /// The application closed: the frames it queued before, then our close
    /// frame, are written; then we read until the remote's close reply and
    /// the end of the stream.
    Closing,
    /// The remote's close frame arrived: what was being written, then the
    /// reply, are written; then the socket is dropped.
    PeerClosed,
    /// Reading failed (a limit, a protocol error): we write our close frame,
    /// shut the socket down and discard input until the remote closes.
    Draining {
        /// The write side is shut down.
        shut: bool,
    },
    /// Finished: the socket is dropped.
    Done,
}

#[derive(Clone, Copy, Debug)]
enum Keepalive {
    /// Waiting to send the next ping.
    Idle,
    /// A ping was sent at `since`; any incoming frame counts as its answer.
    AwaitingPong { since: Instant },
}

/// The state of one connection task.
pub(crate) struct Conn<S> {
    io: S,
    role: Role,
    reader: Reader,
    shared: Arc<Shared>,
    /// Frames to write (taken from the queue, control frames, our close);
    /// `out[..head]` were written, and `partial` bytes of `out[head]`.
    out: Vec<Wire>,
    head: usize,
    partial: usize,
    /// Written since the last flush.
    flush: bool,
    /// A keepalive ping to write.
    ping: bool,
    /// The payload of the last ping received, to answer with a pong.
    pong: Option<Bytes>,
    /// Our close frame was flushed.
    close_flushed: bool,
    state: State,
    keepalive: Keepalive,
    /// Reading stopped because the inbox was full, since the last ping.
    paused: bool,
    /// The last delivery left room in the inbox (see `read_step`).
    room: bool,
    /// The deadline is a close deadline (not a keepalive one).
    linger: bool,
    /// A remote-triggered warning was logged (its source is told when the
    /// connection ends).
    warned: bool,
    /// When the timer fires; `None`: off.
    deadline: Option<Instant>,
    /// `deadline` changed since the timer was last set.
    rearm: bool,
    /// A confirmation ping is due at the tail's `confirm_at` ([`unconfirmed`]):
    /// the timer fires at the earlier of that and `deadline`.
    confirm_armed: bool,
    /// The one timer: keepalive, then the close deadline. Boxed so that the
    /// connection (the task's future) is `Unpin`.
    sleep: Pin<Box<Sleep>>,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    close_timeout: Duration,
    /// Counts the connection as open until the task ends (nothing without
    /// the `metrics` feature).
    _open: crate::metrics::OpenConnection,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The socket, for what is written before the connection runs (the
    /// `101` of a pending open).
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S> Conn<S> {
    /// Ends a connection that never ran: its transport reports `reason`.
    pub(crate) fn abandon(&mut self, reason: CloseReason) {
        self.shared.end(reason);
        self.state = State::Done;
    }
}

impl<S> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("state", &self.state)
            .field("keepalive", &self.keepalive)
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// Whether an I/O-level write is blocked, failed, or went through.
enum Ready {
    Yes,
    Blocked,
    Failed,
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(io: S, leftover: Vec<u8>, role: Role, shared: Arc<Shared>, config: &WsConfig) -> Self {
        let deadline = config
            .ping_interval
            .map(|interval| Instant::now() + interval);
        Conn {
            io,
            role,
            reader: Reader::new(role, config, leftover),
            shared,
            out: Vec::new(),
            head: 0,
            partial: 0,
            flush: false,
            ping: false,
            pong: None,
            close_flushed: false,
            state: State::Open,
            keepalive: Keepalive::Idle,
            paused: false,
            room: false,
            linger: false,
            warned: false,
            deadline,
            rearm: false,
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.unwrap_or_else(Instant::now),
            )),
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            close_timeout: config.close_timeout,
            confirm_armed: false,
            _open: crate::metrics::OpenConnection::new(),
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.shared.end(reason);
        self.state = State::Done;
    }

    fn lost(&mut self) {
        match self.state {
            State::Open => self.finish(CloseReason::new(None, CONNECTION_LOST, Initiator::Remote)),
            _ => self.state = State::Done,
        }
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS {
            let mut progress = false;
            match self.state {
                State::Open | State::Closing => {
                    progress |= self.read_step(cx);
                    if matches!(self.state, State::Open | State::Closing) {
                        progress |= self.write_step(cx);
                    }
                }
                State::PeerClosed => progress |= self.write_step(cx),
                State::Draining { .. } => progress |= self.drain_step(cx),
                State::Done => {}
            }
            if self.state == State::Done {
                return Poll::Ready(());
            }
            if self.rearm {
                self.rearm = false;
                if let Some(at) = self.wake_at() {
                    self.sleep.as_mut().reset(at);
                }
            }
            // The timer is polled when the task is about to wait (to be
            // woken by it) rather than after every round that made
            // progress: one poll of it per wake-up, not two.
            if !progress && self.timer_fired(cx) {
                if self.state == State::Done {
                    return Poll::Ready(());
                }
                progress = true;
            }
            if !progress {
                // Idle until woken: keep no write buffers meanwhile, nor
                // the queue's (an idle peer held 176 bytes of it).
                if self.out.is_empty() {
                    if self.out.capacity() > 0 {
                        self.out = Vec::new();
                    }
                    self.shared.queue.release_if_drained();
                }
                return Poll::Pending;
            }
        }
        // Busy: let other tasks run, then continue. A remote that keeps the
        // task busy does not keep its timer (the close deadline) from
        // firing.
        if self.timer_fired(cx) && self.state == State::Done {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Polls the timer, when one is set; handles it if it fired.
    fn timer_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if (self.deadline.is_some() || self.confirm_armed)
            && self.sleep.as_mut().poll(cx).is_ready()
        {
            self.on_wake();
            return true;
        }
        false
    }
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        // Every end already reported itself; this covers a task dropped or
        // aborted before its end (runtime shutdown).
        self.shared.end(CloseReason::new(
            None,
            "connection task ended",
            Initiator::Local,
        ));
        if self.warned {
            crate::log::closed(self.shared.source());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes one idle connection's task holds inline (the tokio task
    /// adds its header, about 100 bytes).
    #[tokio::test]
    async fn task_future_size() {
        let (a, _b) = tokio::io::duplex(64);
        let config = WsConfig::default();
        let (_transport, conn) = start(a, Vec::new(), Role::Server, &config);
        let future = conn.instrument(tracing::Span::current());
        let size = std::mem::size_of_val(&future);
        println!(
            "connection task future: {size} bytes inline (Reader: {} bytes), plus a boxed Sleep: {} bytes",
            std::mem::size_of::<Reader>(),
            std::mem::size_of::<Sleep>()
        );
        assert!(size < 512, "task future grew to {size} bytes");

        let tcp = std::mem::size_of::<Conn<tokio::net::TcpStream>>();
        println!("Conn<TcpStream>: {tcp} bytes");
        println!(
            "Shared: {} bytes, Wire: {} bytes",
            std::mem::size_of::<Shared>(),
            std::mem::size_of::<Wire>()
        );
    }

    /// A stream that takes at most 7 bytes per write (vectored), so that
    /// frames are cut everywhere: in headers, in staged runs and in
    /// payloads written from where they are.
    struct Trickle(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut out = self.0.lock().unwrap();
            let mut room = 7;
            for buf in bufs {
                let n = buf.len().min(room);
                out.extend_from_slice(&buf[..n]);
                room -= n;
                if room == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(7 - room))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A stream that hands each write call's bytes to the test.
    struct Calls(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

    impl AsyncRead for Calls {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Calls {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let call: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let len = call.len();
            let _ = self.0.send(call);
            Poll::Ready(Ok(len))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A kept frame on a quiet connection and the confirmation ping due
    /// after it leave in one write call, not two.
    #[tokio::test]
    async fn a_due_confirmation_ping_goes_in_the_write_of_its_frames() {
        let (calls, mut written) = tokio::sync::mpsc::unbounded_channel();
        let config = WsConfig::default().with_ping_interval(None);
        let (transport, conn) = start(Calls(calls), Vec::new(), Role::Server, &config);
        transport.sink().retain_unconfirmed();
        transport.send(Frame::from("hello")).unwrap();
        let task = tokio::spawn(conn);
        let call = written.recv().await.unwrap();
        task.abort();
        // The text frame (0x81, 5, "hello"), then a ping (0x89) with the
        // count of kept frames written before it: 1.
        let mut expected = vec![0x81, 5];
        expected.extend_from_slice(b"hello");
        expected.extend_from_slice(&[0x89, 8]);
        expected.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(call, expected);
    }

    /// The confirmation pings in one write call's bytes (whole server
    /// frames: unmasked, under 64 KiB).
    fn pings_in(call: &[u8]) -> usize {
        let (mut at, mut pings) = (0, 0);
        while at + 2 <= call.len() {
            pings += usize::from(call[at] == 0x89);
            at += match call[at + 1] & 0x7f {
                126 => 4 + usize::from(u16::from_be_bytes([call[at + 2], call[at + 3]])),
                len => 2 + usize::from(len),
            };
        }
        pings
    }

    /// A server connection that keeps unconfirmed frames (no keepalive)
    /// over [`Calls`], its task running, and when (in ms since it started)
    /// its write calls carried confirmation pings.
    struct Pinging {
        transport: Transport,
        task: tokio::task::JoinHandle<()>,
        written: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
        start: Instant,
        pinged: Vec<u128>,
    }

    impl Pinging {
        fn start() -> Self {
            let (calls, written) = tokio::sync::mpsc::unbounded_channel();
            let config = WsConfig::default().with_ping_interval(None);
            let (transport, conn) = start(Calls(calls), Vec::new(), Role::Server, &config);
            transport.sink().retain_unconfirmed();
            let task = tokio::spawn(conn);
            Pinging {
                transport,
                task,
                written,
                start: Instant::now(),
                pinged: Vec::new(),
            }
        }

        /// `ms` milliseconds, one at a time, noting the pings written (a
        /// millisecond late at most).
        async fn idle(&mut self, ms: u32) {
            for _ in 0..ms {
                tokio::time::sleep(Duration::from_millis(1)).await;
                while let Ok(call) = self.written.try_recv() {
                    let at = self.start.elapsed().as_millis();
                    self.pinged.extend(std::iter::repeat_n(at, pings_in(&call)));
                }
            }
        }
    }

    /// Under a steady stream (a frame every millisecond, nothing answered)
    /// the pings space out: one with the first frame, then 25, 50 and 100 ms
    /// apart, and no further apart than that. A frame after a pause takes a
    /// ping along in its own write, and the spacing starts again from one
    /// interval.
    #[tokio::test(start_paused = true)]
    async fn confirmation_pings_space_out_under_a_stream_and_not_after_a_pause() {
        let mut conn = Pinging::start();
        for _ in 0..400 {
            conn.transport.send(Frame::from("x")).unwrap();
            conn.idle(1).await;
        }
        // Collected a millisecond late: the first ping went with the first
        // frame.
        let gaps: Vec<u128> = conn.pinged.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            (conn.pinged[0], &gaps[..]),
            (1, &[25, 50, 100, 100, 100][..])
        );
        // The stream stops: the last frames are asked for again at the
        // spacing reached.
        conn.idle(150).await;
        assert_eq!(conn.pinged[6..], [476]);
        // After a pause, one frame takes a ping along in its own write.
        conn.transport.send(Frame::from("y")).unwrap();
        let call = conn.written.recv().await.unwrap();
        let y = conn.start.elapsed().as_millis();
        assert_eq!((call[0], call[3], pings_in(&call)), (0x81, 0x89, 1));
        // Another right after it: a burst, not a stream; the next ping is
        // one interval after the last, and the one after that too.
        conn.transport.send(Frame::from("z")).unwrap();
        conn.pinged.clear();
        conn.idle(60).await;
        conn.task.abort();
        // (Collected a millisecond late.)
        assert_eq!(conn.pinged, [y + 26, y + 51]);
    }

    /// Frames of this connection's own (answers, not broadcasts) make a
    /// ping due every 64 KiB of text, so that a fast stream of large
    /// messages is not held for the whole spacing; frames shared with other
    /// connections (a broadcast: the memory is held anyway) count nothing.
    #[tokio::test(start_paused = true)]
    async fn a_ping_is_due_every_64_kib_of_frames_held_for_this_connection_alone() {
        for shared in [false, true] {
            let mut conn = Pinging::start();
            let mut held = Vec::new();
            for _ in 0..20 {
                let frame = Frame::from("x".repeat(16 * 1024));
                if shared {
                    held.push(frame.clone());
                }
                conn.transport.send(frame).unwrap();
                conn.idle(1).await;
            }
            conn.task.abort();
            // Collected a millisecond late: the first with the first frame,
            // then with every fourth frame of its own; shared, none before
            // the interval.
            let expected: &[u128] = if shared { &[1] } else { &[1, 5, 9, 13, 17] };
            assert_eq!(conn.pinged, expected, "shared: {shared}");
        }
    }

    #[tokio::test]
    async fn frames_cut_anywhere_by_partial_writes_arrive_whole() {
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let config = WsConfig::default();
        let (transport, conn) = start(Trickle(written.clone()), Vec::new(), Role::Server, &config);
        let sizes = [10, 2000, 50, 5000, 0, 130, 1024, 1023, 70_000];
        let texts: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| char::from(b'a' + i as u8).to_string().repeat(n))
            .collect();
        for text in &texts {
            transport.send(Frame::from(text.clone())).unwrap();
        }
        let task = tokio::spawn(conn);
        let total: usize = sizes.iter().map(|n| n + 10).sum();
        for _ in 0..1000 {
            if written.lock().unwrap().len() >= total - 8 * sizes.len() {
                break;
            }
            tokio::task::yield_now().await;
        }
        task.abort();
        let bytes = written.lock().unwrap().clone();
        let (mut remote, mut local) = tokio::io::duplex(1 << 20);
        use tokio::io::AsyncWriteExt;
        remote.write_all(&bytes).await.unwrap();
        let mut reader = Reader::new(Role::Client, &config, Vec::new());
        for text in &texts {
            let event = std::future::poll_fn(|cx| reader.poll_next(&mut local, cx)).await;
            let Ok(Event::Text(got)) = event else {
                panic!("{event:?}")
            };
            assert_eq!(&got[..], text.as_bytes());
        }
    }
}
