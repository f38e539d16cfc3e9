//! The connection task: one tokio task per WebSocket connection that reads
//! incoming frames into a small bounded inbox and writes the outbound queue.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use super::WsConfig;
use crate::queue::{Outbound, OutboundQueue, Work};
use crate::{
    CloseReason, Frame, FrameSink, FrameStream, Inbound, Initiator, SLOW_CONSUMER_REASON,
    Transport, TransportError, async_trait, close_code,
};

/// Incoming messages the task holds for a reader that is behind. When the
/// inbox is full (this many messages, or `max_message_size` bytes) the task
/// stops reading the socket, so TCP flow control slows the remote down.
pub(crate) const INBOX_FRAMES: usize = 32;
/// Most bytes of queued frames (counted like the queue counts them) taken
/// into one write batch; the rest stays counted in the queue.
const BATCH_BYTES: usize = 64 * 1024;
/// Messages read in one step before the task lets the writer and the timer
/// have a turn.
const READ_BUDGET: usize = 64;
/// Steps in one poll before the task yields to other tasks.
const ROUNDS: usize = 8;
/// A write batch that grew past this many frames gives its buffer back.
const KEEP_BATCH: usize = 16;
/// Close reasons are cut to this many bytes (a close frame's payload is at
/// most 125 bytes, two of which are the code).
const MAX_CLOSE_REASON: usize = 123;
/// Received close frame without a status code (RFC 6455 7.1.5).
const NO_STATUS: u16 = 1005;
/// The queue's close code for ends that carry no close code.
const ABNORMAL: u16 = 1006;

/// The reason reported when the connection ends without a close frame.
const CONNECTION_LOST: &str = "connection lost";
/// The reason reported when the remote did not answer a keepalive ping.
const KEEPALIVE_TIMEOUT: &str = "keepalive timeout";

/// State shared by the sink, the stream and the connection task.
pub(crate) struct Shared {
    /// Outbound frames, and the close request of the application.
    queue: OutboundQueue,
    /// Incoming messages for the reader, and how the transport ended.
    inbox: Mutex<Inbox>,
    /// The inbox's byte limit.
    inbox_bytes: usize,
    /// The sink and the stream still alive (2, 1, 0): when both are gone
    /// nobody can use the connection, and it is closed.
    handles: AtomicU8,
    /// [`WsConfig::binary_messages`].
    binary: bool,
}

/// An incoming message waiting for the reader.
struct Incoming {
    binary: bool,
    data: Bytes,
}

#[derive(Default)]
struct Inbox {
    frames: VecDeque<Incoming>,
    bytes: usize,
    closed: Option<CloseReason>,
    /// The reader waiting for a message.
    reader: Option<Waker>,
    /// The connection task waiting for room.
    task: Option<Waker>,
    /// The stream was dropped: incoming messages are discarded.
    reader_gone: bool,
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Shared {
    fn new(config: &WsConfig) -> Self {
        Shared {
            queue: OutboundQueue::new(config.max_queued_bytes),
            inbox: Mutex::new(Inbox::default()),
            inbox_bytes: config.max_message_size.max(1),
            handles: AtomicU8::new(2),
            binary: config.binary_messages,
        }
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Every critical section is a few field updates: a panic cannot
        // leave the inbox inconsistent.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the task may read another message; registers the task's
    /// waker when not.
    fn has_room(&self, cx: &Context<'_>) -> bool {
        let mut inbox = self.inbox();
        if inbox.frames.len() < INBOX_FRAMES && inbox.bytes < self.inbox_bytes {
            return true;
        }
        register(&mut inbox.task, cx);
        false
    }

    fn deliver(&self, binary: bool, data: Bytes) {
        let mut inbox = self.inbox();
        if inbox.closed.is_some() || inbox.reader_gone {
            return;
        }
        inbox.bytes += data.len();
        inbox.frames.push_back(Incoming { binary, data });
        let reader = inbox.reader.take();
        drop(inbox);
        wake(reader);
    }

    /// Records how the transport ended (the first report wins). A local end
    /// discards messages not read yet, like the memory transport; a remote
    /// one delivers them first.
    fn set_closed(&self, reason: CloseReason) {
        let mut inbox = self.inbox();
        if inbox.closed.is_some() {
            return;
        }
        if reason.initiator == Initiator::Local {
            inbox.frames = VecDeque::new();
            inbox.bytes = 0;
        }
        inbox.closed = Some(reason);
        let reader = inbox.reader.take();
        let task = inbox.task.take();
        drop(inbox);
        wake(reader);
        wake(task);
    }

    /// Ends the transport from the task's side: closes the queue (freeing
    /// what it held) and reports `reason`, unless the application or an
    /// overflow closed it first.
    fn end(&self, reason: CloseReason) {
        let code = reason.code.unwrap_or(ABNORMAL);
        if self.queue.close_and_clear(code, &reason.reason) {
            self.set_closed(reason);
        }
    }

    fn poll_recv(&self, cx: &Context<'_>) -> Poll<Inbound> {
        let mut inbox = self.inbox();
        if let Some(Incoming { binary, data }) = inbox.frames.pop_front() {
            inbox.bytes -= data.len();
            if inbox.frames.is_empty() && inbox.frames.capacity() > 8 {
                inbox.frames = VecDeque::new();
            }
            let task = inbox.task.take();
            drop(inbox);
            wake(task);
            return Poll::Ready(if binary {
                Inbound::Binary(data)
            } else {
                Inbound::Text(data)
            });
        }
        if let Some(reason) = &inbox.closed {
            return Poll::Ready(Inbound::Closed(reason.clone()));
        }
        // The reader goes idle: an idle connection keeps no inbox buffer.
        if inbox.frames.capacity() > 0 {
            inbox.frames = VecDeque::new();
        }
        register(&mut inbox.reader, cx);
        Poll::Pending
    }

    /// One of the two halves was dropped; the last one closes the
    /// connection (frames already queued are still sent).
    fn handle_dropped(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            close(self, close_code::NORMAL, "");
        }
    }

    fn reader_dropped(&self) {
        let mut inbox = self.inbox();
        inbox.reader_gone = true;
        inbox.frames = VecDeque::new();
        inbox.bytes = 0;
        let task = inbox.task.take();
        drop(inbox);
        wake(task);
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inbox = self.inbox();
        f.debug_struct("Shared")
            .field("queue", &self.queue)
            .field("inbox_frames", &inbox.frames.len())
            .field("inbox_bytes", &inbox.bytes)
            .field("closed", &inbox.closed)
            .finish()
    }
}

/// A close code this side may send: the reserved ones (1005, 1006, 1015,
/// out of range) become 1000.
fn sendable_code(code: u16) -> u16 {
    if CloseCode::from(code).is_allowed() {
        code
    } else {
        close_code::NORMAL
    }
}

/// `reason` cut to fit a close frame, at a character boundary.
fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The sending half of a WebSocket transport.
#[derive(Debug)]
struct WsSink {
    shared: Arc<Shared>,
}

/// The application's close: see [`FrameSink::close`].
fn close(shared: &Shared, code: u16, reason: &str) {
    let code = sendable_code(code);
    let reason = close_reason(reason);
    if shared.queue.close(code, reason) {
        shared.set_closed(CloseReason::new(Some(code), reason, Initiator::Local));
    }
}

impl WsSink {
    /// After a refused push: when it overflowed the queue, the queue closed
    /// itself and dropped its frames; report the close (the task sees it
    /// and gives up on a socket that does not drain).
    fn after_push(&self, result: Result<(), TransportError>) -> Result<(), TransportError> {
        if matches!(
            &result,
            Err(TransportError::QueueFull(_)) | Err(TransportError::BinaryNotSent { .. })
        ) && self
            .shared
            .queue
            .close_reason()
            .is_some_and(|(code, reason)| {
                code == close_code::POLICY_VIOLATION && reason == SLOW_CONSUMER_REASON
            })
        {
            self.shared.set_closed(CloseReason::new(
                Some(close_code::POLICY_VIOLATION),
                SLOW_CONSUMER_REASON,
                Initiator::Local,
            ));
        }
        result
    }
}

impl FrameSink for WsSink {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let result = self.shared.queue.push(frame);
        self.after_push(result)
    }

    fn send_binary(&self, data: Bytes) -> Result<(), TransportError> {
        if !self.shared.binary {
            return Err(TransportError::BinaryNotSent {
                data,
                reason: "binary messages are not enabled (WsConfig::binary_messages)",
            });
        }
        let result = self.shared.queue.push_binary(data);
        self.after_push(result)
    }

    fn close(&self, code: u16, reason: &str) {
        close(&self.shared, code, reason);
    }

    fn is_closed(&self) -> bool {
        self.shared.queue.is_closed()
    }

    fn queued_bytes(&self) -> usize {
        self.shared.queue.queued_bytes()
    }
}

impl Drop for WsSink {
    fn drop(&mut self) {
        self.shared.handle_dropped();
    }
}

/// The receiving half of a WebSocket transport.
#[derive(Debug)]
struct WsStream {
    shared: Arc<Shared>,
}

#[async_trait]
impl FrameStream for WsStream {
    async fn recv(&mut self) -> Inbound {
        poll_fn(|cx| self.shared.poll_recv(cx)).await
    }
}

impl Drop for WsStream {
    /// Nobody reads any more: incoming messages are discarded from now on
    /// (the task keeps reading, so pings and the close handshake work).
    fn drop(&mut self) {
        self.shared.reader_dropped();
        self.shared.handle_dropped();
    }
}

/// A transport over `ws` and the connection task that drives it.
pub(crate) fn start<S>(ws: WebSocketStream<S>, config: &WsConfig) -> (Transport, Conn<S>)
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
    (transport, Conn::new(ws, shared, config))
}

/// Runs `conn` on a new tokio task, in the caller's tracing span, keeping
/// `guard` alive until the task ends (the task drops its future, and so the
/// guard, as soon as the connection is done).
pub(crate) fn spawn<S, G>(conn: Conn<S>, guard: G)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    tokio::spawn(Holding {
        task: conn.instrument(tracing::Span::current()),
        _guard: guard,
    });
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
    /// The remote's close frame arrived: tungstenite answers it; we read
    /// until the end of the stream.
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
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    /// Frames taken from the queue; `batch[..sent]` were written.
    batch: Vec<Outbound>,
    sent: usize,
    /// Written since the last flush.
    flush: bool,
    /// A keepalive ping to write.
    ping: bool,
    /// A close frame to write after the batch.
    close: Option<CloseFrame>,
    /// Our close frame was flushed.
    close_flushed: bool,
    state: State,
    keepalive: Keepalive,
    /// Reading stopped because the inbox was full, since the last ping.
    paused: bool,
    /// The deadline is a close deadline (not a keepalive one).
    linger: bool,
    /// A dropped binary message, kept until the next read so that
    /// tungstenite does not reclaim (and keep) its large buffer.
    held: Option<Bytes>,
    /// When the timer fires; `None`: off.
    deadline: Option<Instant>,
    /// `deadline` changed since the timer was last set.
    rearm: bool,
    /// The one timer: keepalive, then the close deadline. Boxed so that the
    /// connection (the task's future) is `Unpin`.
    sleep: Pin<Box<Sleep>>,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    close_timeout: Duration,
}

impl<S> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("state", &self.state)
            .field("keepalive", &self.keepalive)
            .field("batch", &self.batch.len())
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
    fn new(ws: WebSocketStream<S>, shared: Arc<Shared>, config: &WsConfig) -> Self {
        let deadline = config
            .ping_interval
            .map(|interval| Instant::now() + interval);
        Conn {
            ws,
            shared,
            batch: Vec::new(),
            sent: 0,
            flush: false,
            ping: false,
            close: None,
            close_flushed: false,
            state: State::Open,
            keepalive: Keepalive::Idle,
            paused: false,
            linger: false,
            held: None,
            deadline,
            rearm: false,
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.unwrap_or_else(Instant::now),
            )),
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            close_timeout: config.close_timeout,
        }
    }

    fn arm(&mut self, at: Instant) {
        self.deadline = Some(at);
        self.rearm = true;
    }

    /// Starts (or keeps) the bound on a closing connection.
    fn arm_close(&mut self) {
        if !self.linger {
            self.linger = true;
            self.arm(Instant::now() + self.close_timeout);
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
                State::Open | State::Closing | State::PeerClosed => {
                    progress |= self.read_step(cx);
                    if matches!(self.state, State::Open | State::Closing) {
                        progress |= self.write_step(cx);
                    }
                }
                State::Draining { .. } => progress |= self.drain_step(cx),
                State::Done => {}
            }
            if self.state == State::Done {
                return Poll::Ready(());
            }
            if self.rearm {
                self.rearm = false;
                if let Some(at) = self.deadline {
                    self.sleep.as_mut().reset(at);
                }
            }
            if self.deadline.is_some() && self.sleep.as_mut().poll(cx).is_ready() {
                self.on_timer();
                if self.state == State::Done {
                    return Poll::Ready(());
                }
                progress = true;
            }
            if !progress {
                // Idle until woken: keep no write batch buffer meanwhile.
                if self.batch.is_empty() && self.batch.capacity() > 0 {
                    self.batch = Vec::new();
                }
                return Poll::Pending;
            }
        }
        // Busy: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    // ----- reading -----

    fn read_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..READ_BUDGET {
            if self.state == State::Open && !self.shared.has_room(cx) {
                // The reader is behind: stop reading (TCP backpressure).
                self.paused = true;
                return progress;
            }
            let held = self.held.take();
            let next = Pin::new(&mut self.ws).poll_next(cx);
            drop(held);
            match next {
                Poll::Pending => return progress,
                Poll::Ready(Some(Ok(message))) => {
                    progress = true;
                    self.on_activity();
                    self.on_message(message);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.on_read_error(error);
                    return true;
                }
                Poll::Ready(None) => {
                    // The close handshake is complete, or the stream ended.
                    self.lost();
                    return true;
                }
            }
            if !matches!(self.state, State::Open | State::Closing | State::PeerClosed) {
                return true;
            }
        }
        progress
    }

    fn on_activity(&mut self) {
        if let Keepalive::AwaitingPong { since } = self.keepalive {
            self.keepalive = Keepalive::Idle;
            if self.state == State::Open
                && !self.linger
                && let Some(interval) = self.ping_interval
            {
                self.arm(since + interval);
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Text(text) => {
                if self.state == State::Open {
                    self.shared.deliver(false, Bytes::from(text));
                }
            }
            Message::Binary(data) if self.shared.binary => {
                if self.state == State::Open {
                    self.shared.deliver(true, data);
                }
            }
            Message::Binary(data) => {
                if self.state == State::Open {
                    tracing::warn!(
                        bytes = data.len(),
                        "binary WebSocket message dropped: protoo uses text messages"
                    );
                }
                self.held = Some(data);
            }
            Message::Close(frame) => self.on_close_frame(frame),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    fn on_close_frame(&mut self, frame: Option<CloseFrame>) {
        // In `Closing` this is the reply to our close frame: the stream ends
        // next.
        if self.state != State::Open {
            return;
        }
        let (code, reason) = match frame {
            Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
            None => (NO_STATUS, String::new()),
        };
        tracing::debug!(code, reason = %reason, "WebSocket closed by the remote");
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Remote));
        // Nothing more may be sent; tungstenite writes its close reply.
        self.abandon_writes();
        self.state = State::PeerClosed;
        self.arm_close();
    }

    fn on_read_error(&mut self, error: WsError) {
        if self.state != State::Open {
            self.state = State::Done;
            return;
        }
        match error {
            WsError::Capacity(error) => {
                tracing::debug!(%error, "WebSocket message over the limit");
                self.fail(close_code::MESSAGE_TOO_BIG, "message too big");
            }
            WsError::Utf8(_) => {
                tracing::debug!("invalid UTF-8 in a WebSocket text message");
                self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8");
            }
            WsError::Io(_)
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed => self.lost(),
            error => {
                tracing::debug!(%error, "WebSocket protocol error");
                self.fail(close_code::PROTOCOL_ERROR, "protocol error");
            }
        }
    }

    /// Closes locally after a read failure: report it, write the close
    /// frame, then drain.
    fn fail(&mut self, code: u16, reason: &'static str) {
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Local));
        self.abandon_writes();
        self.close = Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        });
        self.state = State::Draining { shut: false };
        self.arm_close();
    }

    fn abandon_writes(&mut self) {
        self.batch = Vec::new();
        self.sent = 0;
        self.ping = false;
        self.close = None;
    }

    // ----- writing -----

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Ready {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => Ready::Yes,
            Poll::Ready(Err(_)) => Ready::Failed,
            Poll::Pending => Ready::Blocked,
        }
    }

    /// Feeds one message; `false` when the connection failed.
    fn feed(&mut self, message: Message) -> bool {
        match Pin::new(&mut self.ws).start_send(message) {
            Ok(()) => {
                self.flush = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Writes the ping, the batch, the close frame, flushes once, and takes
    /// more from the queue, until the socket blocks or nothing is left.
    fn write_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            if self.ping {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                if !self.feed(Message::Ping(Bytes::new())) {
                    return self.write_failed();
                }
                self.ping = false;
                progress = true;
            }
            while self.sent < self.batch.len() {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                let item =
                    std::mem::replace(&mut self.batch[self.sent], Outbound::Binary(Bytes::new()));
                let message = match item {
                    // Frames are valid UTF-8 by construction: a raw text
                    // frame skips tungstenite's UTF-8 check of every copy
                    // of a broadcast.
                    Outbound::Text(frame) => Message::Frame(WsFrame::message(
                        frame.into_bytes(),
                        OpCode::Data(Data::Text),
                        true,
                    )),
                    Outbound::Binary(data) => Message::Binary(data),
                };
                if !self.feed(message) {
                    return self.write_failed();
                }
                self.sent += 1;
                progress = true;
            }
            if !self.batch.is_empty() {
                self.batch.clear();
                self.sent = 0;
                if self.batch.capacity() > KEEP_BATCH {
                    self.batch = Vec::new();
                }
            }
            if self.close.is_some() {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                let frame = self.close.take();
                if !self.feed(Message::Close(frame)) {
                    return self.write_failed();
                }
                progress = true;
            }
            if self.flush {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush = false,
                    Poll::Ready(Err(_)) => return self.write_failed(),
                    Poll::Pending => return self.blocked(cx) || progress,
                }
            }
            if self.state != State::Open {
                if self.state == State::Closing && !self.close_flushed {
                    // What was queued and our close frame are out: now
                    // bound the wait for the remote's reply.
                    self.close_flushed = true;
                    self.arm(Instant::now() + self.close_timeout);
                }
                return progress;
            }
            match self
                .shared
                .queue
                .poll_next_items(cx, &mut self.batch, BATCH_BYTES)
            {
                Poll::Ready(Work::Frames) => progress = true,
                Poll::Ready(Work::Close(code, reason)) => {
                    self.begin_close(code, reason);
                    progress = true;
                }
                Poll::Ready(Work::Done) | Poll::Pending => return progress,
            }
        }
    }

    fn begin_close(&mut self, code: u16, reason: String) {
        tracing::debug!(code, reason = %reason, "closing the WebSocket");
        self.close = Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        });
        self.ping = false;
        self.keepalive = Keepalive::Idle;
        self.state = State::Closing;
        self.arm_close();
    }

    /// The socket takes nothing more for now (its waker is registered).
    /// Watches the queue meanwhile: when it overflowed the writer gives up
    /// at once (the task ends and drops the socket); when the application
    /// closed it, the close is bounded by the close timeout.
    fn blocked(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != State::Open || self.shared.queue.poll_closed(cx).is_pending() {
            return false;
        }
        let overflow = matches!(
            self.shared.queue.close_reason(),
            Some((code, reason)) if code == close_code::POLICY_VIOLATION && reason == SLOW_CONSUMER_REASON
        );
        if overflow {
            tracing::debug!("outbound queue overflow on a blocked socket: dropping the connection");
            self.finish(CloseReason::new(
                Some(close_code::POLICY_VIOLATION),
                SLOW_CONSUMER_REASON,
                Initiator::Local,
            ));
            return true;
        }
        self.arm_close();
        false
    }

    fn write_failed(&mut self) -> bool {
        self.lost();
        true
    }

    // ----- draining after a read failure -----

    fn drain_step(&mut self, cx: &mut Context<'_>) -> bool {
        if self.close.is_some() {
            match self.poll_ready(cx) {
                Ready::Yes => {}
                Ready::Blocked => return false,
                Ready::Failed => return self.write_failed(),
            }
            let frame = self.close.take();
            if !self.feed(Message::Close(frame)) {
                return self.write_failed();
            }
        }
        if self.flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(_)) => return self.write_failed(),
                Poll::Pending => return false,
            }
        }
        if self.state == (State::Draining { shut: false }) {
            match Pin::new(self.ws.get_mut()).poll_shutdown(cx) {
                Poll::Pending => return false,
                Poll::Ready(_) => self.state = State::Draining { shut: true },
            }
        }
        // Read and discard until the remote closes, so that closing our
        // socket with unread input does not reset the connection before the
        // remote has read our close frame.
        let mut scratch = [0u8; 512];
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(self.ws.get_mut()).poll_read(cx, &mut buf) {
                Poll::Pending => return false,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.state = State::Done;
                    return true;
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    self.state = State::Done;
                    return true;
                }
            }
        }
        cx.waker().wake_by_ref();
        false
    }

    // ----- timer -----

    fn on_timer(&mut self) {
        self.deadline = None;
        if self.linger || self.state != State::Open {
            tracing::debug!("WebSocket close timed out: dropping the connection");
            self.state = State::Done;
            return;
        }
        let now = Instant::now();
        match self.keepalive {
            Keepalive::Idle => {
                self.ping = true;
                self.paused = false;
                self.keepalive = Keepalive::AwaitingPong { since: now };
                self.arm(now + self.pong_timeout);
            }
            Keepalive::AwaitingPong { .. } if self.paused => {
                // We were not reading: the answer may be waiting unread.
                self.keepalive = Keepalive::Idle;
                if let Some(interval) = self.ping_interval {
                    self.arm(now + interval);
                }
            }
            Keepalive::AwaitingPong { .. } => {
                tracing::debug!("no answer to the keepalive ping: dropping the connection");
                self.finish(CloseReason::new(None, KEEPALIVE_TIMEOUT, Initiator::Local));
            }
        }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert!(cut.len() >= MAX_CLOSE_REASON - 1);
        assert_eq!(close_reason("bye"), "bye");
    }

    #[test]
    fn reserved_codes_are_not_sent() {
        assert_eq!(sendable_code(4000), 4000);
        assert_eq!(sendable_code(1008), 1008);
        assert_eq!(sendable_code(1005), close_code::NORMAL);
        assert_eq!(sendable_code(1006), close_code::NORMAL);
        assert_eq!(sendable_code(0), close_code::NORMAL);
        assert_eq!(sendable_code(5000), close_code::NORMAL);
    }

    /// The bytes one idle connection's task holds inline (the tokio task
    /// adds its header, about 100 bytes).
    #[tokio::test]
    async fn task_future_size() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (a, _b) = tokio::io::duplex(64);
        let config = WsConfig::default();
        let ws =
            WebSocketStream::from_raw_socket(a, Role::Server, Some(config.tungstenite())).await;
        let (_transport, conn) = start(ws, &config);
        let future = conn.instrument(tracing::Span::current());
        let size = std::mem::size_of_val(&future);
        println!(
            "connection task future: {size} bytes inline (WebSocketStream<DuplexStream>: {} bytes), plus a boxed Sleep: {} bytes",
            std::mem::size_of::<WebSocketStream<tokio::io::DuplexStream>>(),
            std::mem::size_of::<Sleep>()
        );
        assert!(size < 1024, "task future grew to {size} bytes");

        let tcp = std::mem::size_of::<Conn<tokio::net::TcpStream>>();
        println!("Conn<TcpStream>: {tcp} bytes");
    }
}
