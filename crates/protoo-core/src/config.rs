//! [`PeerConfig`]: each peer's limits and timers (request timeout, event
//! queue, incoming budget and rates, fan-out rate, presence size), with
//! their defaults.

use std::time::Duration;

use crate::Rate;

/// Settings of one peer.
///
/// # Overload: what a remote can make the server hold, and what happens past it
///
/// Incoming traffic is bounded in two ways. The [event queue](Self::event_queue)
/// is backpressure: an application that falls behind stops the reading of
/// the socket, and TCP slows the remote down. The [byte budget](Self::incoming_budget)
/// and the [unanswered-request cap](Self::max_unanswered_requests) are not:
/// past them the peer keeps reading, answers each further request at once
/// with 503 `incoming budget exceeded`, and drops (and counts) each further
/// notification. The [rate limits](Self::message_rate) do the same with 429.
///
/// Why not backpressure for the budget too: the requests that fill it are
/// those waiting for something, often for this peer itself (the server
/// asked it a question and the answer comes on the same socket). A reader
/// that stopped would never see that answer: the peer and its requests
/// would sit until they time out. Answering at once keeps every request's
/// one response, keeps responses to this side's requests flowing, costs
/// nothing for a peer within its budget, and touches no other peer. A
/// protoo client sees an ordinary error response it can retry.
///
/// For comparison: jsonrpsee bounds each connection's outgoing messages
/// (`set_message_buffer_capacity`, 1024 by default) and, when that buffer is
/// full, stops taking new messages from the connection until the client
/// reads (backpressure, as our event queue does); request and response
/// bodies are capped (`max_request_body_size`, `max_response_body_size`,
/// 10 MiB each; a response over the cap is replaced by the error "Response
/// is too big"), and earlier versions answered calls past their resource
/// limits with the error "Server is busy, try again later" (as our budget
/// answers 503). Centrifugo caps a client's request size
/// (`client_request_max_size`) and its outgoing queue
/// (`client_queue_max_size`, 10 MB by default), and disconnects a client
/// whose queue passes it with code 3008 `slow` (as our outbound queue closes
/// 1008). Neither holds a per-connection byte budget for what a client sent
/// and the application has not answered yet: that is the hole protoo's
/// request/response shape (either side asks the other) leaves open.
///
/// ```
/// use std::time::Duration;
/// use protoo_core::PeerConfig;
///
/// let config = PeerConfig::default()
///     .with_event_queue(64)
///     .with_request_timeout(Duration::from_secs(5));
/// assert_eq!(config.request_timeout_for(10), Duration::from_secs(5));
/// assert_eq!(PeerConfig::default().request_timeout_for(0), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerConfig {
    /// How many incoming requests and notifications wait for the application
    /// in [`PeerEvents`](crate::PeerEvents) before the peer stops reading
    /// its transport. Default: 256.
    ///
    /// When the application falls behind, the peer waits for room in this
    /// queue instead of buffering without limit: the remote is slowed down
    /// (TCP back-pressure on a WebSocket) and server memory stays bounded.
    /// Responses to this side's own requests are read by the same task, so
    /// they wait too: an application that awaits a request to a peer inside
    /// that peer's event loop should spawn it if the remote may send more
    /// than this many messages meanwhile. A value of 0 counts as 1.
    ///
    /// The queue takes memory only while events wait in it: a peer whose
    /// application keeps up (or an idle one) holds no buffer for it.
    pub event_queue: usize,
    /// How long [`Peer::request`](crate::Peer::request) waits for the
    /// response. Default: `None`, protoo's rule: `2000 × (15 + 0.1 ×
    /// pending)` milliseconds, where `pending` is the number of requests to
    /// that peer still waiting when this one is sent (30 s for the first,
    /// 200 ms more for each one pending), so that peers keep their JavaScript
    /// counterparts' behaviour. `Some(duration)` uses that fixed duration.
    pub request_timeout: Option<Duration>,
    /// Bytes of incoming frames the peer may make this side hold: the
    /// events waiting in [`PeerEvents`](crate::PeerEvents) plus the requests
    /// handed to the application and not yet answered, each counted by the
    /// length of its whole frame (a zero-copy payload keeps its frame
    /// alive). Default: [`DEFAULT_INCOMING_BUDGET`], 4 MiB.
    ///
    /// Past it, a request is answered at once with
    /// [`OVER_BUDGET_CODE`](crate::OVER_BUDGET_CODE) (503 `incoming budget
    /// exceeded`) without reaching the application, and a notification is
    /// dropped and counted (a rate-limited warning): every request still
    /// gets exactly one response, responses to this side's requests are
    /// still read, and a peer within its budget loses nothing. A frame that
    /// arrives while nothing is held is always taken, so a peer holds at
    /// most this budget or one message, whichever is larger.
    ///
    /// 4 MiB holds four messages of the largest size the WebSocket
    /// transport takes by default (1 MiB), or thousands of ordinary
    /// signaling messages (mediasoup's are under a few KiB), in flight at
    /// once; it matches the outbound queue's default, so a hostile peer
    /// costs a bounded few MiB in each direction.
    pub incoming_budget: usize,
    /// Incoming requests at most handed to the application and not yet
    /// answered; past it, further requests are answered at once like
    /// requests over [`incoming_budget`](Self::incoming_budget). Default:
    /// [`DEFAULT_MAX_UNANSWERED_REQUESTS`] (1024: four times the event
    /// queue, so that a client pipelining faster than the application's
    /// loop is slowed by the queue's backpressure, not refused; the cap
    /// bounds what the application itself holds, such as requests handed
    /// to spawned handlers). A value of 0 counts as 1.
    pub max_unanswered_requests: usize,
    /// After this many invalid messages (frames that are not protoo
    /// messages, responses to no request sent, binary messages), the peer
    /// is closed with [`close_code::POLICY_VIOLATION`](crate::close_code::POLICY_VIOLATION)
    /// (1008, [`TOO_MANY_INVALID_REASON`](crate::TOO_MANY_INVALID_REASON)).
    /// Default: `None`, never (protoo drops them and keeps the peer);
    /// invalid messages are always dropped, and their warnings are rate
    /// limited per source (the client's address) either way
    /// ([`transport::log`](crate::transport::log)).
    pub max_invalid_messages: Option<u32>,
    /// Incoming requests and notifications per second. Default: `None`,
    /// no limit. Past it, a request is answered at once with
    /// [`RATE_LIMITED_CODE`](crate::RATE_LIMITED_CODE) (429 `rate limit
    /// exceeded`) and a notification is dropped and counted (a rate-limited
    /// warning). Responses to this side's requests are not limited.
    pub message_rate: Option<Rate>,
    /// Incoming request and notification bytes per second (frame
    /// lengths), handled as [`message_rate`](Self::message_rate). Default:
    /// `None`, no limit. A message larger than the burst passes when the
    /// bucket is full.
    pub byte_rate: Option<Rate>,
    /// Bytes per second the application may deliver on this peer's behalf:
    /// each broadcast aimed with [`Broadcast::from`](crate::Broadcast::from)
    /// this peer costs its frame length × the peers it reached. Default:
    /// `None`, no limit.
    ///
    /// The limit of fan-out in bytes, which the incoming limits above cannot
    /// be: within 2 MiB/s of incoming bytes, one sender in a room of 500
    /// makes the server write 1 GB/s. A broadcast is let through while the
    /// sender owes nothing and charged its whole cost after it is delivered
    /// (so one broadcast larger than the burst still goes out, and puts the
    /// sender in debt). While in debt, the sender's further broadcasts are
    /// dropped ([`BroadcastReport::rate_limited`](crate::BroadcastReport::rate_limited))
    /// and what the incoming rate limits do is done to it: its requests are
    /// answered at once with [`RATE_LIMITED_CODE`](crate::RATE_LIMITED_CODE)
    /// (429 `rate limit exceeded`), its notifications dropped, both counted
    /// ([`Peer::refused_messages`](crate::Peer::refused_messages)) with a
    /// rate-limited warning, until the debt is paid back at
    /// [`Rate::per_second`]. Over any interval `t`, what is delivered on a
    /// sender's behalf is at most `burst + per_second × t` plus one
    /// broadcast.
    ///
    /// In a room spanning several processes, the sender is charged for the
    /// recipients on its own node only: the frame goes once to the cluster
    /// backend, and the other nodes' recipients (not known when it is sent)
    /// are not counted. The budget then bounds each sender's egress from
    /// its own node.
    pub fan_out_rate: Option<Rate>,
    /// Bytes at most of the information this peer may be listed with in its
    /// room ([`Room::set_presence`](crate::Room::set_presence), the encoded
    /// JSON). Default: [`DEFAULT_MAX_PRESENCE_BYTES`], 4 KiB.
    ///
    /// Presence is sent back whole to whoever asks for the member list (a
    /// mediasoup-demo `join` answers with every listed peer): without a cap,
    /// 16 peers listed with 1 MiB names make an 84-byte request cost 16 MiB
    /// of output. Over it, `set_presence` fails with
    /// [`PeerError::PresenceTooLarge`](crate::PeerError::PresenceTooLarge),
    /// which a handler's error turns into 400 `presence too large`, and the
    /// peer stays listed as it was (or unlisted).
    pub max_presence_bytes: usize,
    /// How long the peer's session outlives a lost transport. Default:
    /// `None`, protoo's behaviour: the peer closes with its transport.
    ///
    /// With a window, a transport that is lost rather than closed (no close
    /// frame: a reset, an I/O error, a keepalive timeout; or a close with
    /// 1001, 1006 or 1012, which intermediaries send; see
    /// [`CloseReason::is_lost`](protoo_transport::CloseReason::is_lost))
    /// leaves the peer in its room, listed, with its data, for the window:
    /// the other members see nothing, the application gets
    /// [`PeerEvent::Disconnected`](crate::PeerEvent::Disconnected). What is
    /// sent to the peer meanwhile (notifications, requests, responses) is
    /// held, up to [`PeerConfig::resume_buffer`] bytes. A connection for the
    /// same room and peer id (and identity) within the window resumes the
    /// session ([`Rooms::admit`](crate::Rooms::admit),
    /// [`Peer::resume`](crate::Peer::resume)): what was held is written to
    /// it first, in order, then [`PeerEvent::Resumed`](crate::PeerEvent::Resumed).
    /// At the end of the window the peer closes as it would have at the
    /// loss. A clean close by the remote (a close frame with another code,
    /// such as protoo-client's 1000) closes the peer at once, as without a
    /// window.
    ///
    /// Frames written to the lost transport that its remote had not
    /// confirmed are written again (see
    /// [`FrameSink::take_unconfirmed`](protoo_transport::FrameSink::take_unconfirmed)):
    /// at least once for those, exactly once for everything sent after the
    /// loss.
    pub resume_window: Option<Duration>,
    /// Bytes at most held for a peer whose session waits for it (frame text
    /// plus [`FRAME_OVERHEAD`](protoo_transport::FRAME_OVERHEAD) each), as
    /// its outbound queue limit bounds it while it is connected. Past it,
    /// the session ends as a slow consumer would (1008
    /// [`SLOW_CONSUMER_REASON`](protoo_transport::SLOW_CONSUMER_REASON)).
    /// Default: [`DEFAULT_RESUME_BUFFER`], 4 MiB (the WebSocket transport's
    /// default outbound queue limit).
    pub resume_buffer: usize,
}

/// The default of [`PeerConfig::resume_buffer`]: 4 MiB.
pub const DEFAULT_RESUME_BUFFER: usize = 4 << 20;

/// The default of [`PeerConfig::max_presence_bytes`]: 4 KiB.
pub const DEFAULT_MAX_PRESENCE_BYTES: usize = 4 << 10;

/// The default of [`PeerConfig::incoming_budget`]: 4 MiB.
pub const DEFAULT_INCOMING_BUDGET: usize = 4 << 20;

/// The default of [`PeerConfig::max_unanswered_requests`].
pub const DEFAULT_MAX_UNANSWERED_REQUESTS: usize = 1024;

/// The default of [`PeerConfig::event_queue`].
pub const DEFAULT_EVENT_QUEUE: usize = 256;

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            event_queue: DEFAULT_EVENT_QUEUE,
            request_timeout: None,
            incoming_budget: DEFAULT_INCOMING_BUDGET,
            max_unanswered_requests: DEFAULT_MAX_UNANSWERED_REQUESTS,
            max_invalid_messages: None,
            message_rate: None,
            byte_rate: None,
            fan_out_rate: None,
            max_presence_bytes: DEFAULT_MAX_PRESENCE_BYTES,
            resume_window: None,
            resume_buffer: DEFAULT_RESUME_BUFFER,
        }
    }
}

impl PeerConfig {
    /// Sets [`PeerConfig::event_queue`].
    pub fn with_event_queue(mut self, events: usize) -> Self {
        self.event_queue = events;
        self
    }

    /// Sets a fixed [`PeerConfig::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets [`PeerConfig::incoming_budget`].
    pub fn with_incoming_budget(mut self, bytes: usize) -> Self {
        self.incoming_budget = bytes;
        self
    }

    /// Sets [`PeerConfig::max_unanswered_requests`].
    pub fn with_max_unanswered_requests(mut self, requests: usize) -> Self {
        self.max_unanswered_requests = requests;
        self
    }

    /// Sets [`PeerConfig::max_invalid_messages`].
    pub fn with_max_invalid_messages(mut self, messages: u32) -> Self {
        self.max_invalid_messages = Some(messages);
        self
    }

    /// Sets [`PeerConfig::message_rate`].
    pub fn with_message_rate(mut self, rate: Rate) -> Self {
        self.message_rate = Some(rate);
        self
    }

    /// Sets [`PeerConfig::byte_rate`].
    pub fn with_byte_rate(mut self, rate: Rate) -> Self {
        self.byte_rate = Some(rate);
        self
    }

    /// Sets [`PeerConfig::fan_out_rate`].
    pub fn with_fan_out_rate(mut self, rate: Rate) -> Self {
        self.fan_out_rate = Some(rate);
        self
    }

    /// Sets [`PeerConfig::max_presence_bytes`].
    pub fn with_max_presence_bytes(mut self, bytes: usize) -> Self {
        self.max_presence_bytes = bytes;
        self
    }

    /// Sets [`PeerConfig::resume_window`] (a zero window is none).
    pub fn with_resume_window(mut self, window: Duration) -> Self {
        self.resume_window = (!window.is_zero()).then_some(window);
        self
    }

    /// Sets [`PeerConfig::resume_buffer`].
    pub fn with_resume_buffer(mut self, bytes: usize) -> Self {
        self.resume_buffer = bytes;
        self
    }

    /// Goes back to protoo's request timeout rule (the default).
    pub fn with_protoo_request_timeout(mut self) -> Self {
        self.request_timeout = None;
        self
    }

    /// The timeout of a request sent while `pending` other requests to the
    /// same peer wait for their response.
    pub fn request_timeout_for(&self, pending: usize) -> Duration {
        request_timeout(self.request_timeout, pending)
    }
}

/// [`PeerConfig::request_timeout_for`] from the configured timeout alone.
pub(crate) fn request_timeout(configured: Option<Duration>, pending: usize) -> Duration {
    match configured {
        Some(timeout) => timeout,
        // 2000 × (15 + 0.1 × pending) ms, in integers.
        None => {
            Duration::from_millis(30_000u64.saturating_add(200u64.saturating_mul(pending as u64)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protoo_timeout_formula() {
        let config = PeerConfig::default();
        assert_eq!(config.request_timeout_for(0), Duration::from_millis(30_000));
        assert_eq!(config.request_timeout_for(1), Duration::from_millis(30_200));
        assert_eq!(config.request_timeout_for(5), Duration::from_millis(31_000));
        assert_eq!(
            config.request_timeout_for(100),
            Duration::from_millis(2000 * (15 + 10))
        );
        let fixed = config.with_request_timeout(Duration::from_secs(1));
        assert_eq!(fixed.request_timeout_for(1000), Duration::from_secs(1));
        assert_eq!(
            fixed.with_protoo_request_timeout().request_timeout_for(0),
            Duration::from_secs(30)
        );
    }
}
