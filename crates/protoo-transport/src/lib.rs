//! Transports: how encoded protoo frames travel between two peers.
//!
//! The second layer of protoo-rs, on [`protoo_codec`]. A transport carries
//! already-encoded [`Frame`]s out and hands incoming text frames in; it knows
//! nothing of requests or rooms (that is `protoo-core`). Every peer, whatever
//! carries it, is a [`Transport`], so one room can hold peers on WebSockets,
//! in-process [`memory`] pairs, or a transport of your own.
//!
//! A transport is two halves:
//! - a [`FrameSink`], shared by every task that sends to the peer: `send`
//!   queues a frame without waiting (a bounded queue, counted in bytes) and
//!   `close` ends the transport with a close code and reason;
//! - a [`FrameStream`], owned by the one task that reads: `recv` yields each
//!   incoming text frame and, exactly once at the end, the [`CloseReason`]
//!   (including the remote's close code and reason when it sent one).
//!
//! Provided here:
//! - [`memory::pair`]: two connected transports inside one process (tests,
//!   bots, recorders, other Rust services);
//! - the WebSocket transport (tokio-tungstenite) in [`ws`]: server side from
//!   an accepted stream, client side with [`ws::connect`], and `wss` with the
//!   `tls` feature.
//!
//! # WebSocket
//!
//! The server reads the upgrade request ([`ws::read_upgrade_request`]),
//! decides, and accepts (or rejects with an HTTP status); the client
//! connects with [`ws::connect`]. Both sides get a [`Transport`] driven by
//! one tokio task per connection, with the limits, keepalive and buffer
//! sizes of [`ws::WsConfig`] (sized for many mostly idle peers). The
//! [`ws`] module documents the close codes and reasons each end reports.
//!
//! ```
//! use protoo_transport::{ws, Frame, Inbound};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ws::WsConfig::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/?peerId=bob", listener.local_addr()?);
//! let client = tokio::spawn({
//!     let config = config.clone();
//!     async move { ws::connect(&url, &config).await }
//! });
//!
//! let (socket, _) = listener.accept().await?;
//! socket.set_nodelay(true)?;
//! let request = ws::read_upgrade_request(socket, &config).await?;
//! assert!(request.wants_protoo());
//! let mut server_side = ws::ServerTransport::builder(&config).accept(request).await?;
//!
//! let client = client.await??;
//! client.send(Frame::from_static(r#"{"notification":true,"method":"hello","data":{}}"#))?;
//! assert!(matches!(server_side.recv().await, Inbound::Text(_)));
//! # Ok(())
//! # }
//! ```
//!
//! # A custom transport
//!
//! Implement the two traits and wrap them with [`Transport::new`]. Here, a
//! transport that carries frames over tokio channels (a stand-in for a
//! message bus):
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use protoo_transport::{
//!     Bytes, CloseReason, Frame, FrameSink, FrameStream, Inbound, Initiator, Transport,
//!     TransportError,
//! };
//! use std::task::{Context, Poll};
//! use tokio::sync::mpsc;
//!
//! #[derive(Debug)]
//! struct BusSink { tx: mpsc::Sender<Frame>, closed: AtomicBool }
//!
//! impl FrameSink for BusSink {
//!     fn send(&self, frame: Frame) -> Result<(), TransportError> {
//!         if self.is_closed() {
//!             return Err(TransportError::Closed(frame));
//!         }
//!         self.tx.try_send(frame).map_err(|e| match e {
//!             mpsc::error::TrySendError::Full(f) => TransportError::QueueFull(f),
//!             mpsc::error::TrySendError::Closed(f) => TransportError::Closed(f),
//!         })
//!     }
//!     fn close(&self, _code: u16, _reason: &str) {
//!         self.closed.store(true, Ordering::Release);
//!     }
//!     fn is_closed(&self) -> bool {
//!         self.closed.load(Ordering::Acquire)
//!     }
//!     fn queued_bytes(&self) -> usize {
//!         0
//!     }
//! }
//!
//! #[derive(Debug)]
//! struct BusStream { rx: mpsc::Receiver<Frame> }
//!
//! impl FrameStream for BusStream {
//!     fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
//!         self.rx.poll_recv(cx).map(|frame| match frame {
//!             Some(frame) => Inbound::Text(frame.into_bytes()),
//!             None => Inbound::Closed(CloseReason::new(None, "bus closed", Initiator::Remote)),
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, rx) = mpsc::channel(16);
//! let mut transport = Transport::new(
//!     BusSink { tx, closed: AtomicBool::new(false) },
//!     BusStream { rx },
//! );
//! transport.send(Frame::from_static(r#"{"notification":true,"method":"hi","data":{}}"#)).unwrap();
//! let Inbound::Text(text) = transport.recv().await else { panic!() };
//! assert!(text.starts_with(b"{\"notification\""));
//! # }
//! ```
//!
//! # Features
//!
//! - `tls`: `wss://` with rustls.
//! - `metrics`: WebSocket connections, outbound-queue closes, dropped
//!   binary messages and unconfirmed frames let go, reported through the
//!   `metrics` facade (see [`metrics`]).

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use bytes::Bytes;
pub use protoo_codec::Frame;

mod error;
pub mod log;
pub mod memory;
pub mod metrics;
mod queue;
mod sync;
mod tracker;
pub mod ws;

pub use error::TransportError;
pub use queue::{FRAME_OVERHEAD, OutboundQueue, Work};
pub use tracker::{Tracker, TrackerGuard};

/// The close codes protoo-rs uses. Applications may send any other code in
/// the 4000-4999 range themselves.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (graceful shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The remote broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer's outbound queue passed its byte limit: it stopped reading
    /// (a slow consumer). Its queued frames are dropped.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// An incoming message or frame was larger than the configured limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server met a condition that kept it from handling the peer: in
    /// protoo-core, the application dropped the peer's events before they
    /// ended (a handler task that panicked, say), so nobody handles it.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is restarting (1012 in IANA's WebSocket close code
    /// registry): a draining server asks its clients to come back, to it or
    /// to another node. [`CloseReason::is_lost`](crate::CloseReason::is_lost) counts it as a lost
    /// connection.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The application closed the peer: protoo's `closed by protoo-server`.
    /// The JavaScript protoo-client does not reconnect after this code.
    pub const PROTOO_CLOSED: u16 = 4000;
}

/// The reason protoo sends with [`close_code::PROTOO_CLOSED`].
pub const PROTOO_CLOSED_REASON: &str = "closed by protoo-server";

/// The reason sent with [`close_code::PROTOO_CLOSED`] to a peer replaced by
/// a new connection with its id: still 4000, so that protoo-client does not
/// reconnect, but told apart from any other close.
pub const REPLACED_REASON: &str = "replaced by a new connection";

/// The reason sent with [`close_code::POLICY_VIOLATION`] when a peer's
/// outbound queue overflows.
pub const SLOW_CONSUMER_REASON: &str = "outbound queue limit exceeded";

/// The reason a WebSocket transport reports when the remote did not answer
/// a keepalive ping in time: `CloseReason { code: None, reason:
/// KEEPALIVE_TIMEOUT_REASON, initiator: Local }` (no close frame is sent;
/// see [`ws::WsConfig::pong_timeout`]). [`CloseReason::is_lost`] counts it
/// as a lost connection.
pub const KEEPALIVE_TIMEOUT_REASON: &str = "keepalive timeout";

/// Which side ended a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Initiator {
    /// This side closed it: the application, a limit, keepalive, shutdown.
    Local,
    /// The remote closed it, or the connection was lost.
    Remote,
    /// This side closed it because a new connection with the same peer id
    /// took its place (sent as 4000 [`REPLACED_REASON`]).
    Replaced,
    /// This side handed the peer's session to another process, where its
    /// remote resumed it: the peer goes on there, nobody left.
    Moved,
}

/// How a transport ended. Reported once, as the last thing its
/// [`FrameStream`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReason {
    /// The close code sent or received; `None` when the connection ended
    /// without a close frame (lost, reset, keepalive timeout).
    pub code: Option<u16>,
    /// The close reason sent or received, or what happened.
    pub reason: String,
    /// Which side ended it.
    pub initiator: Initiator,
}

impl CloseReason {
    /// A close reason.
    pub fn new(code: Option<u16>, reason: impl Into<String>, initiator: Initiator) -> Self {
        CloseReason {
            code,
            reason: reason.into(),
            initiator,
        }
    }

    /// Whether the connection was lost rather than closed by someone's
    /// decision: the case where a client is expected to come back (a resume
    /// window applies). True for:
    ///
    /// - initiator [`Initiator::Remote`] without a close code: the
    ///   connection reset, ended (EOF) or failed (an I/O error) without a
    ///   close frame; this is also what a cut [memory pair](memory::Cable)
    ///   reports;
    /// - initiator [`Initiator::Remote`] with 1001 (going away: a browser
    ///   tab closed or navigated away without `protoo.close()`, or an
    ///   intermediary shutting down), 1006 (abnormal closure, reported by
    ///   transports that surface it) or 1012
    ///   ([`close_code::SERVICE_RESTART`]: a proxy or server restarting);
    /// - initiator [`Initiator::Local`] without a close code and with the
    ///   reason [`KEEPALIVE_TIMEOUT_REASON`]: the remote stopped answering;
    /// - initiator [`Initiator::Local`] with 1012: this side is draining (a
    ///   rolling deploy) and asked the remote to come back, to it or to
    ///   another node.
    ///
    /// Everything else is a decision: a close frame the remote sent with any
    /// other code (1000 from protoo-client's `close()`, 1005 without a code,
    /// 4000-4999), a local close (the application, a limit, a slow consumer,
    /// a shutdown with 1001), a replacement, a session moved.
    ///
    /// ```
    /// use protoo_transport::{CloseReason, Initiator, KEEPALIVE_TIMEOUT_REASON};
    ///
    /// assert!(CloseReason::new(None, "connection lost", Initiator::Remote).is_lost());
    /// assert!(CloseReason::new(Some(1001), "", Initiator::Remote).is_lost());
    /// assert!(CloseReason::new(None, KEEPALIVE_TIMEOUT_REASON, Initiator::Local).is_lost());
    /// assert!(!CloseReason::new(Some(1000), "", Initiator::Remote).is_lost());
    /// assert!(!CloseReason::new(Some(1001), "", Initiator::Local).is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        match self.initiator {
            Initiator::Remote => matches!(
                self.code,
                None | Some(
                    close_code::GOING_AWAY | ABNORMAL_CLOSURE | close_code::SERVICE_RESTART
                )
            ),
            Initiator::Local => match self.code {
                None => self.reason == KEEPALIVE_TIMEOUT_REASON,
                Some(code) => code == close_code::SERVICE_RESTART,
            },
            Initiator::Replaced | Initiator::Moved => false,
        }
    }
}

/// 1006: a close code never sent in a close frame (RFC 6455 7.4.1), which
/// some transports report for a connection that ended without one.
const ABNORMAL_CLOSURE: u16 = 1006;

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.initiator {
            Initiator::Local => "locally",
            Initiator::Remote => "by the remote",
            Initiator::Replaced => "for a replacement",
            Initiator::Moved => "as its session moved",
        };
        match self.code {
            Some(code) => write!(f, "closed {by} with {code} \"{}\"", self.reason),
            None => write!(f, "closed {by}: {}", self.reason),
        }
    }
}

/// What a [`FrameStream`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// The UTF-8 text of one incoming text message.
    Text(Bytes),
    /// One incoming binary message. protoo uses text only: transports drop
    /// binary messages with a warning, as protoo does, unless asked to
    /// deliver them (a WebSocket transport with
    /// [`WsConfig::binary_messages`](ws::WsConfig::binary_messages), for a
    /// non-protoo endpoint); protoo-core's `Peer` ignores them.
    Binary(Bytes),
    /// The transport ended. Yielded once; the reader stops here (calls after
    /// it yield the same reason again).
    Closed(CloseReason),
}

/// The sending half of a transport: shared by every task that sends to the
/// peer, never blocks.
pub trait FrameSink: Send + Sync + fmt::Debug + 'static {
    /// Queues `frame` for sending. Fails with the frame given back when the
    /// transport is closed, or when the frame would take the queue past its
    /// byte limit (the transport then closes with
    /// [`close_code::POLICY_VIOLATION`] and drops what it had queued).
    fn send(&self, frame: Frame) -> Result<(), TransportError>;

    /// Closes the transport with `code` and `reason`: frames already queued
    /// are still sent, then the close frame. Idempotent: only the first call
    /// has an effect.
    fn close(&self, code: u16, reason: &str);

    /// Whether the transport is closed (by either side).
    fn is_closed(&self) -> bool;

    /// Bytes queued for sending and not yet handed to the connection (frame
    /// text plus [`FRAME_OVERHEAD`] each).
    fn queued_bytes(&self) -> usize;

    /// Queues a binary message, counted and limited like a frame. protoo
    /// sends text only, so transports need not support this: the default
    /// fails with [`TransportError::BinaryNotSent`]. A WebSocket transport
    /// sends binary messages when
    /// [`WsConfig::binary_messages`](ws::WsConfig::binary_messages) is set
    /// (for a non-protoo endpoint).
    fn send_binary(&self, data: Bytes) -> Result<(), TransportError> {
        Err(TransportError::BinaryNotSent {
            data,
            reason: "binary messages are not supported by this transport",
        })
    }

    /// Starts keeping, from now on, the frames written to the remote whose
    /// receipt it has not confirmed yet, so that
    /// [`take_unconfirmed`](FrameSink::take_unconfirmed) can give them back:
    /// for a session that may resume on another connection after this one
    /// is lost. Idempotent. Frames already handed to the connection when it
    /// is called are not kept.
    ///
    /// What "confirmed" means is the transport's: the in-memory pair
    /// confirms a frame when the remote reads it; the WebSocket transport
    /// when the remote answers a confirmation ping sent after it (see
    /// [`WsConfig::confirm_interval`](ws::WsConfig::confirm_interval)).
    ///
    /// Bounded: the WebSocket transport keeps at most its outbound queue
    /// limit ([`WsConfig::max_queued_bytes`](ws::WsConfig::max_queued_bytes),
    /// counted like the queue) of written frames, plus the batch being
    /// written (128 KiB); past it the oldest written frames are let go
    /// unconfirmed (they can no longer be given back: at most once for
    /// them; counted by the `protoo_transport_unconfirmed_released_total`
    /// metric). A kept frame costs a reference to its bytes (shared with
    /// every other peer a broadcast goes to) and a slot in a ring buffer;
    /// the queued frames of a transport that ended are kept too (instead of
    /// being freed when it ends) until they are taken or the transport is
    /// dropped.
    ///
    /// The default does nothing (nothing is ever confirmed, nor kept).
    fn retain_unconfirmed(&self) {}

    /// Takes back, in order, every frame the remote has not confirmed
    /// receiving: the frames written but not confirmed (only if
    /// [`retain_unconfirmed`](FrameSink::retain_unconfirmed) was called;
    /// on a WebSocket this includes the frames in the batch being written,
    /// and the one partly written when the connection died), then the
    /// frames queued and not yet written. Afterwards the sink writes nothing
    /// more: later sends fail with [`TransportError::Closed`],
    /// [`queued_bytes`](FrameSink::queued_bytes) is 0, and a later
    /// [`close`](FrameSink::close) still sends its close frame
    /// ([`is_closed`](FrameSink::is_closed) is unchanged until then). A
    /// second call returns nothing.
    ///
    /// Works on a transport that already ended (the usual case: called
    /// after the stream reported a [lost](CloseReason::is_lost) connection)
    /// and on one still open (a takeover: the caller closes it next; a
    /// frame the connection was in the middle of writing is finished, so
    /// that the close frame can follow, and is in the result too).
    ///
    /// Replaying the result on a new connection to the same remote gives:
    /// exactly once for every frame confirmed before the loss (never in the
    /// result) and for every frame that never reached the socket; at least
    /// once for the in-flight tail (frames written after the last
    /// confirmation: the remote may have read some of them, and gets them
    /// again). How old a duplicate can be is bounded by the confirmation
    /// delay (on a WebSocket, about
    /// [`confirm_interval`](ws::WsConfig::confirm_interval) plus a round
    /// trip, up to 4 intervals under a steady stream). Frames the bound of `retain_unconfirmed` let go are not in
    /// the result (at most once), nor are the queued frames a slow
    /// consumer's overflow dropped (the transport then ended with
    /// [`close_code::POLICY_VIOLATION`]). Without `retain_unconfirmed`, the
    /// result is only the frames still queued (on a WebSocket, those not
    /// yet taken into the write batch), and nothing once the transport
    /// ended.
    ///
    /// Binary messages are not returned (protoo sends text). The default
    /// returns an empty `Vec` and leaves the sink as it was.
    fn take_unconfirmed(&self) -> Vec<Frame> {
        Vec::new()
    }

    /// Told the remote's address by [`Transport::with_remote_addr`], so that
    /// the warnings the transport itself logs about the remote count against
    /// that address's budget ([`log`]). The default ignores it.
    fn set_remote_addr(&self, addr: SocketAddr) {
        let _ = addr;
    }
}

/// The receiving half of a transport, owned by the one task that reads.
///
/// A poll method rather than an `async fn`, so that reading a message
/// allocates nothing (a boxed future per message is what an object-safe
/// `async fn` costs) and a reader that is itself a hand-written future can
/// poll it in place. `recv` (on
/// `dyn FrameStream`) and [`Transport::recv`] are the `async` forms.
pub trait FrameStream: Send + fmt::Debug + 'static {
    /// The next incoming text frame, or, once at the end, why the transport
    /// closed (and the same reason again on later calls). `Pending` registers
    /// `cx`'s waker, woken when there is something to read. Nothing is lost
    /// when the caller stops polling.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound>;
}

impl dyn FrameStream {
    /// The next incoming frame or the close reason: the `async` form of
    /// [`FrameStream::poll_recv`]. Cancel-safe: dropping the future loses
    /// nothing.
    pub async fn recv(&mut self) -> Inbound {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// One peer's transport: a [`FrameSink`] and a [`FrameStream`].
pub struct Transport {
    sink: Arc<dyn FrameSink>,
    stream: Box<dyn FrameStream>,
    requests: Option<Tracker>,
    remote_addr: Option<SocketAddr>,
}

impl Transport {
    /// A transport from its two halves.
    pub fn new(sink: impl FrameSink, stream: impl FrameStream) -> Self {
        Transport {
            sink: Arc::new(sink),
            stream: Box::new(stream),
            requests: None,
            remote_addr: None,
        }
    }

    /// A transport from halves already boxed.
    pub fn from_parts(sink: Arc<dyn FrameSink>, stream: Box<dyn FrameStream>) -> Self {
        Transport {
            sink,
            stream,
            requests: None,
            remote_addr: None,
        }
    }

    /// Asks whoever reads this transport to count each incoming request it
    /// is answering in `tracker` (protoo-core's `Peer` does), so that a
    /// graceful shutdown can wait until they are answered.
    pub fn with_request_tracker(mut self, tracker: Tracker) -> Self {
        self.requests = Some(tracker);
        self
    }

    /// The tracker set by [`Transport::with_request_tracker`].
    pub fn request_tracker(&self) -> Option<&Tracker> {
        self.requests.as_ref()
    }

    /// Names the remote's address (the server side of a network transport
    /// knows it from its accept): what the remote triggers in the logs is
    /// then limited per address, across its reconnections ([`log`]);
    /// without it, per connection.
    pub fn with_remote_addr(self, addr: SocketAddr) -> Self {
        self.sink.set_remote_addr(addr);
        Transport {
            remote_addr: Some(addr),
            ..self
        }
    }

    /// The address set by [`Transport::with_remote_addr`].
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The two halves, to send from many tasks and read from one.
    pub fn into_parts(self) -> (Arc<dyn FrameSink>, Box<dyn FrameStream>) {
        (self.sink, self.stream)
    }

    /// The sending half.
    pub fn sink(&self) -> &Arc<dyn FrameSink> {
        &self.sink
    }

    /// Queues a frame; see [`FrameSink::send`].
    pub fn send(&self, frame: Frame) -> Result<(), TransportError> {
        self.sink.send(frame)
    }

    /// Queues a binary message; see [`FrameSink::send_binary`].
    pub fn send_binary(&self, data: Bytes) -> Result<(), TransportError> {
        self.sink.send_binary(data)
    }

    /// The next incoming frame or the close reason; see [`FrameStream::poll_recv`].
    pub async fn recv(&mut self) -> Inbound {
        poll_fn(|cx| self.stream.poll_recv(cx)).await
    }

    /// The poll form of [`Transport::recv`]; see [`FrameStream::poll_recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        self.stream.poll_recv(cx)
    }

    /// Closes with protoo's 4000 `closed by protoo-server`.
    pub fn close(&self) {
        self.sink
            .close(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
    }

    /// Closes with `code` and `reason`; see [`FrameSink::close`].
    pub fn close_with(&self, code: u16, reason: &str) {
        self.sink.close(code, reason);
    }

    /// Whether the transport is closed.
    pub fn is_closed(&self) -> bool {
        self.sink.is_closed()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("sink", &self.sink)
            .field("stream", &self.stream)
            .field("requests", &self.requests)
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}
