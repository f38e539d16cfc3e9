//! [`WsConfig`]: the limits, timers and buffer sizes of WebSocket
//! connections, client and server side, with their defaults.

use std::time::Duration;

/// The default of [`WsConfig::confirm_interval`]: 25 ms.
pub const DEFAULT_CONFIRM_INTERVAL: Duration = Duration::from_millis(25);

/// Limits, timers and buffer sizes of WebSocket connections, client and
/// server side.
///
/// Start from [`WsConfig::default`] and change what you need with the
/// `with_*` methods (or by assigning the public fields):
///
/// ```
/// use std::time::Duration;
/// use protoo_transport::ws::WsConfig;
///
/// let config = WsConfig::default()
///     .with_max_message_size(256 * 1024)
///     .with_ping_interval(Some(Duration::from_secs(20)));
/// assert_eq!(config.max_frame_size, 1 << 20);
/// ```
///
/// # Memory per connection
///
/// The defaults are chosen for a signaling server: many peers, mostly idle,
/// exchanging messages of a few hundred bytes to a few tens of kilobytes.
/// An idle connection holds no read or write buffer, whatever the size of
/// the messages it exchanged before: buffers exist only while it is busy
/// (see [`read_buffer_size`](Self::read_buffer_size)). What it holds is its
/// connection task (a few hundred bytes of state and a timer), the state
/// shared with the transport's halves and tokio's per-socket registration
/// (measured by `tests/idle_memory.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest incoming message in bytes (all its fragments together).
    /// A larger one closes the connection with
    /// [`close_code::MESSAGE_TOO_BIG`](crate::close_code::MESSAGE_TOO_BIG)
    /// (1009) as soon as the running total passes the limit, before the
    /// rest is read.
    ///
    /// Default: 1 MiB, the same as protoo-server's WebSocket library
    /// (websocket-node's `maxReceivedMessageSize`). Signaling messages
    /// (SDP, RTP capabilities) are far smaller.
    pub max_message_size: usize,
    /// Largest incoming frame payload in bytes. A frame whose header
    /// announces more is refused with 1009 before its payload is read.
    ///
    /// Default: 1 MiB, the same as the message limit. websocket-node uses
    /// 64 KiB, but browsers send each message as one frame, so a frame limit
    /// below the message limit would only refuse messages the message limit
    /// allows.
    pub max_frame_size: usize,
    /// Byte limit of a peer's outbound queue (frame text plus
    /// [`FRAME_OVERHEAD`](crate::FRAME_OVERHEAD) per frame). A send while
    /// the queue already holds this much closes the connection with
    /// [`close_code::POLICY_VIOLATION`](crate::close_code::POLICY_VIOLATION)
    /// (1008, `outbound queue limit exceeded`) and frees the queue at once.
    /// A queue under the limit takes a frame of any size, so a peer that
    /// keeps up is never closed because one message is large (a 70 KB
    /// broadcast with a 64 KiB limit): the queue holds at most this limit
    /// plus one frame.
    ///
    /// Default: 4 MiB: several seconds of a busy room for a peer on a slow
    /// link, while a peer that stopped reading costs at most this much (plus
    /// the batch being written: about 128 KiB).
    pub max_queued_bytes: usize,
    /// How often to send a keepalive ping; `None` disables keepalive.
    ///
    /// Default: 60 s, like protoo-server (`keepaliveInterval`). Pings keep
    /// NAT and proxy mappings alive and find dead peers. Keepalive is also
    /// what bounds a peer that stops in the middle of a frame: with `None`,
    /// such a connection stays open until the peer goes away.
    pub ping_interval: Option<Duration>,
    /// How long to wait, after a keepalive ping, for the pong or any other
    /// complete message or control frame (fragments and partial frames do
    /// not count, so a peer dribbling one byte at a time is dropped too).
    /// When nothing arrives the peer is considered dead: the
    /// connection is dropped without a close handshake and reports
    /// `CloseReason { code: None, reason: "keepalive timeout", initiator: Local }`
    /// ([`KEEPALIVE_TIMEOUT_REASON`](crate::KEEPALIVE_TIMEOUT_REASON); a lost
    /// connection for [`CloseReason::is_lost`](crate::CloseReason::is_lost)).
    /// Time during which this side stopped reading (its reader is behind) is
    /// never held against the peer.
    ///
    /// Default: 30 s: long enough for a congested mobile link, short enough
    /// that a vanished peer leaves its room within 90 s.
    pub pong_timeout: Duration,
    /// How long a closing connection waits for the remote's close frame
    /// (after its own close frame and the frames queued before it were
    /// written), or for a peer to finish the close handshake, before
    /// dropping the socket.
    ///
    /// Default: 5 s, websocket-node's `closeTimeout`.
    pub close_timeout: Duration,
    /// Bytes read from the socket by the first read after the connection
    /// was idle. The read buffer exists only while the connection is busy:
    /// it is allocated when a read starts, grows to 32 KiB once a read fills
    /// it (and starts at 32 KiB after a burst larger than 1 KiB), grows to
    /// hold a frame larger than that, and is given back as soon as the
    /// socket has nothing more. An idle connection holds no read buffer,
    /// whatever the size of the messages it received before.
    ///
    /// Default: 4 KiB: one read takes a few typical signaling messages or a
    /// 4 KB one. Values below 139 bytes (the largest control frame) are
    /// raised to it.
    pub read_buffer_size: usize,
    /// No effect any more: queued frames are written with vectored writes
    /// straight from the queue (large payloads as they are, shared with
    /// every peer they go to; headers and small frames gathered into a
    /// per-thread staging buffer for the call), with no write buffer per
    /// connection to size. Kept so that code setting it still builds.
    ///
    /// Default: 2 KiB (no effect).
    pub write_buffer_size: usize,
    /// How long the server side waits for the upgrade request and answers
    /// it, and the client side for connecting, TLS and the handshake. The
    /// server facade applies it around
    /// [`read_upgrade_request`](super::read_upgrade_request) and the
    /// decision (and protoo-server's axum listener to each request head);
    /// [`connect`](super::connect) applies it itself.
    ///
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// Largest HTTP upgrade request head (request line and headers) the
    /// server reads, in bytes; a larger one is answered with 431 (by
    /// [`read_upgrade_request`](super::read_upgrade_request), and by
    /// protoo-server's axum listener for every request head it serves).
    ///
    /// Default: 16 KiB: browsers' upgrade requests with cookies are a few
    /// KiB; the limit keeps a slow or hostile client from making the server
    /// buffer more.
    pub max_handshake_bytes: usize,
    /// Whether binary messages are delivered and may be sent: incoming ones
    /// as [`Inbound::Binary`](crate::Inbound::Binary), outgoing ones with
    /// [`FrameSink::send_binary`](crate::FrameSink::send_binary) (queued and
    /// limited like text frames). For WebSocket endpoints that are not
    /// protoo (a conformance test's echo server, say).
    ///
    /// Default: `false`: protoo uses text messages only, so binary messages
    /// are dropped with a warning (as protoo-server does) and
    /// `send_binary` fails.
    pub binary_messages: bool,
    /// How often, at most, a connection that keeps unconfirmed frames
    /// ([`FrameSink::retain_unconfirmed`](crate::FrameSink::retain_unconfirmed))
    /// asks the remote to confirm what it received: a ping whose payload is
    /// the 8-byte big-endian count of frames written before it, which the
    /// remote's WebSocket stack answers (with the same payload) once it has
    /// read every frame before the ping. The answer lets go of the frames
    /// it covers.
    ///
    /// When the pings go:
    /// - a frame written after a pause (nothing written for an interval)
    ///   takes a ping along in its own write: it is confirmed one round
    ///   trip after it is written, at no extra write call;
    /// - frames that follow within the interval are confirmed by the next
    ///   ping, one interval after the last;
    /// - under a steady stream, each ping goes twice as long after the one
    ///   before, up to 4 intervals (100 ms at the default); the first
    ///   pause brings the spacing back to one interval;
    /// - whatever the spacing, every 64 KiB of frames held for this
    ///   connection alone (answers, not broadcasts) make a ping due at
    ///   once, so that a fast stream of large answers holds little memory.
    ///
    /// It bounds how old a duplicate can be: a resumed session replays what
    /// was written after the last confirmation, which the remote may have
    /// read already. A message now and then is confirmed within a round
    /// trip; frames that follow closely within about one interval plus a
    /// round trip; a steady stream's, within about 4. It costs at most one
    /// ping (10 bytes out, 10 or 14 back) per spacing per connection that
    /// receives traffic, and nothing for an idle one (a ping is sent only
    /// while written frames wait for confirmation) or for one that does not
    /// retain. Keepalive pings are unchanged (empty, [`ping_interval`](Self::ping_interval)).
    ///
    /// Default: 25 ms. With 1 s, a chat burst read just before a cut came
    /// back whole (100 of 100 twice in the interop suite); with 25 ms the
    /// repeats are those of the last few milliseconds. With a flat 100 ms,
    /// the `newPeer` notifications written just before a chat stream were
    /// repeated after a cut, which the stream spacing avoids: it grows only
    /// once the stream has gone on for an interval. A connection that
    /// receives a message a second pays one ping per message; one that
    /// receives a steady stream pays 10 pings a second.
    pub confirm_interval: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_queued_bytes: 4 << 20,
            ping_interval: Some(Duration::from_secs(60)),
            pong_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 4096,
            write_buffer_size: 2048,
            handshake_timeout: Duration::from_secs(10),
            max_handshake_bytes: 16 * 1024,
            binary_messages: false,
            confirm_interval: DEFAULT_CONFIRM_INTERVAL,
        }
    }
}

impl WsConfig {
    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size).
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`max_queued_bytes`](Self::max_queued_bytes).
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval) (`None` disables
    /// keepalive).
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`pong_timeout`](Self::pong_timeout).
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`read_buffer_size`](Self::read_buffer_size).
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Sets [`write_buffer_size`](Self::write_buffer_size).
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`max_handshake_bytes`](Self::max_handshake_bytes).
    pub fn with_max_handshake_bytes(mut self, bytes: usize) -> Self {
        self.max_handshake_bytes = bytes;
        self
    }

    /// Sets [`binary_messages`](Self::binary_messages).
    pub fn with_binary_messages(mut self, enabled: bool) -> Self {
        self.binary_messages = enabled;
        self
    }

    /// Sets [`confirm_interval`](Self::confirm_interval).
    pub fn with_confirm_interval(mut self, interval: Duration) -> Self {
        self.confirm_interval = interval;
        self
    }
}
