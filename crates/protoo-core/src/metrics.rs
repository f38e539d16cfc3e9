//! What peers and rooms report through the `metrics` facade (the `metrics`
//! feature). Without the feature every item here is empty and compiles to
//! nothing.
//!
//! What a message touches is counted in a shard of the current thread's
//! and handed to the recorder every second, and whenever [`flush`] is
//! called (right before a scrape, to make it exact): counting a message is
//! an add to a counter no other thread touches, not a registry lookup nor
//! a contended atomic.
//!
//! No label comes from anything a remote sends (method names, peer ids,
//! room ids, close reasons): label values are the fixed strings written
//! here, and close codes and error codes are bucketed to a fixed set.

#[cfg(feature = "metrics")]
use ::metrics::{Gauge, counter, gauge, histogram};

#[cfg(feature = "metrics")]
mod shards;
use protoo_transport::CloseReason;
#[cfg(feature = "metrics")]
use protoo_transport::Initiator;

/// Peers open (gauge): from their creation to their close.
pub const PEERS: &str = "protoo_peers";
/// Rooms open (gauge): from their creation to their close.
pub const ROOMS: &str = "protoo_rooms";
/// protoo messages received (counter, label `kind`: `request`, `response`,
/// `notification`).
pub const MESSAGES_RECEIVED: &str = "protoo_messages_received_total";
/// protoo messages queued to peers (counter, label `kind`: `request`,
/// `response`, `notification`, `other` for a frame of the application's
/// that is none of these). A broadcast counts once per peer it reaches.
pub const MESSAGES_SENT: &str = "protoo_messages_sent_total";
/// Bytes of the protoo messages received (counter).
pub const BYTES_RECEIVED: &str = "protoo_received_bytes_total";
/// Bytes of the protoo messages queued to peers (counter).
pub const BYTES_SENT: &str = "protoo_sent_bytes_total";
/// Requests received and answered (counter, label `outcome`: `ok`,
/// `rejected_4xx`, `rejected_5xx`, `rejected_other`).
pub const REQUESTS_ANSWERED: &str = "protoo_requests_answered_total";
/// Requests sent to peers, by how they ended (counter, label `outcome`:
/// `ok`, `rejected_4xx`, `rejected_5xx`, `rejected_other`, `timeout`,
/// `closed`).
pub const REQUESTS_SENT: &str = "protoo_requests_sent_total";
/// How long requests sent to peers took until their response, in seconds
/// (histogram; requests that timed out or whose peer closed are not
/// recorded).
pub const REQUEST_DURATION: &str = "protoo_request_duration_seconds";
/// Peers closed (counter, labels `code`: a known close code or `other` or
/// `none`, and `initiator`: `local`, `remote`, `replaced`).
pub const PEERS_CLOSED: &str = "protoo_peers_closed_total";
/// Incoming messages dropped as invalid (counter, label `reason`: `decode`,
/// `unknown_response`, `binary`).
pub const INVALID_MESSAGES: &str = protoo_transport::metrics::INVALID_MESSAGES;
/// Incoming requests answered at once and notifications dropped because a
/// peer was over its rate limits or incoming budget, or sent a method its
/// identity does not allow (counter, labels `reason`: `rate_limited`,
/// `over_budget`, `not_allowed`, and `kind`: `request`, `notification`).
pub const MESSAGES_REFUSED: &str = "protoo_messages_refused_total";
/// Sessions waiting for their peer to come back (gauge): peers with a
/// resume window whose transport was lost
/// ([`PeerConfig::resume_window`](crate::PeerConfig::resume_window)).
pub const SESSIONS_WAITING: &str = "protoo_sessions_waiting";
/// Bytes held for the sessions waiting for their peer (gauge).
pub const SESSION_HELD_BYTES: &str = "protoo_session_held_bytes";
/// Sessions that waited for their peer, by how the wait ended (counter,
/// label `outcome`: `resumed`, a new connection took the session over;
/// `expired`, the window ended; `evicted`, the server-wide bound ended it;
/// `overflow`, it held more than its buffer; `closed`, the application
/// closed the peer meanwhile).
pub const SESSIONS_ENDED: &str = "protoo_sessions_total";

/// The close codes labelled as themselves; any other is `other`.
pub const KNOWN_CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 4000, 4001,
];

/// The `code` label of a close code.
pub fn close_code_label(code: Option<u16>) -> &'static str {
    const LABELS: [&str; 12] = [
        "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1011", "4000",
        "4001",
    ];
    match code {
        None => "none",
        Some(code) => KNOWN_CLOSE_CODES
            .iter()
            .position(|known| *known == code)
            .map_or("other", |at| LABELS[at]),
    }
}

/// The kind of a protoo message, by the first bytes of its encoding (the
/// encoder always starts with the kind's flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Request = 0,
    Response = 1,
    Notification = 2,
    Other = 3,
}

impl Kind {
    /// The kind of an encoded frame.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn of(frame: &[u8]) -> Kind {
        match frame.get(..5) {
            Some(b"{\"req") => Kind::Request,
            Some(b"{\"res") => Kind::Response,
            Some(b"{\"not") => Kind::Notification,
            _ => Kind::Other,
        }
    }
}

/// A frame about to be queued, as counted once it is (nothing without the
/// feature).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    #[cfg(feature = "metrics")]
    kind: Kind,
    #[cfg(feature = "metrics")]
    len: usize,
}

impl Sent {
    /// What `frame` counts as.
    #[inline]
    pub(crate) fn of(_frame: &[u8]) -> Sent {
        Sent {
            #[cfg(feature = "metrics")]
            kind: Kind::of(_frame),
            #[cfg(feature = "metrics")]
            len: _frame.len(),
        }
    }
}

/// How a request ended, as labelled.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum RequestEnd {
    Ok,
    /// Answered with an error of this code.
    Rejected(u16),
    Timeout,
    Closed,
}

#[cfg(feature = "metrics")]
impl RequestEnd {
    fn index(self) -> usize {
        match self {
            RequestEnd::Ok => 0,
            RequestEnd::Rejected(400..=499) => 1,
            RequestEnd::Rejected(500..=599) => 2,
            RequestEnd::Rejected(_) => 3,
            RequestEnd::Timeout => 4,
            RequestEnd::Closed => 5,
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) const OUTCOMES: [&str; 6] = [
    "ok",
    "rejected_4xx",
    "rejected_5xx",
    "rejected_other",
    "timeout",
    "closed",
];

/// The counts of one peer: nothing per peer, in fact. What a message
/// touches is counted in the current thread's shard (see [`flush`]); a peer
/// only remembers whether it is still counted as open.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    /// Still counted in [`PEERS`].
    #[cfg(feature = "metrics")]
    open: std::sync::atomic::AtomicBool,
}

/// When a request was sent (nothing without the feature).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started {
    #[cfg(feature = "metrics")]
    at: tokio::time::Instant,
}

impl Started {
    #[inline]
    pub(crate) fn now() -> Self {
        Started {
            #[cfg(feature = "metrics")]
            at: tokio::time::Instant::now(),
        }
    }
}

impl PeerMetrics {
    /// Counts a new peer open.
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            shards::add(shards::PEERS_DELTA, 1);
            PeerMetrics {
                open: std::sync::atomic::AtomicBool::new(true),
            }
        }
        #[cfg(not(feature = "metrics"))]
        PeerMetrics {}
    }

    /// A message of `len` bytes was received.
    #[inline]
    pub(crate) fn received(&self, _kind: Kind, _len: usize) {
        #[cfg(feature = "metrics")]
        shards::add2(
            shards::RECEIVED + (_kind as usize).min(2),
            1,
            shards::RECEIVED_BYTES,
            _len as u64,
        );
    }

    /// A frame was queued to the peer.
    #[inline]
    pub(crate) fn sent(&self, _sent: Sent) {
        #[cfg(feature = "metrics")]
        shards::add2(
            shards::SENT + _sent.kind as usize,
            1,
            shards::SENT_BYTES,
            _sent.len as u64,
        );
    }

    /// `count` copies of a frame were queued (a broadcast): counted at
    /// once rather than peer by peer.
    #[inline]
    pub(crate) fn sent_many(&self, _sent: Sent, _count: usize) {
        #[cfg(feature = "metrics")]
        if _count > 0 {
            let count = _count as u64;
            shards::add2(
                shards::SENT + _sent.kind as usize,
                count,
                shards::SENT_BYTES,
                _sent.len as u64 * count,
            );
        }
    }

    /// A request of the peer was answered (`outcome` is never a timeout or
    /// a close).
    #[inline]
    pub(crate) fn answered(&self, _outcome: RequestEnd) {
        #[cfg(feature = "metrics")]
        shards::add(shards::ANSWERED + _outcome.index().min(3), 1);
    }

    /// A request sent to the peer ended.
    #[inline]
    pub(crate) fn request_ended(&self, _started: Started, _outcome: RequestEnd) {
        #[cfg(feature = "metrics")]
        {
            shards::add(shards::REQUESTS + _outcome.index(), 1);
            if matches!(_outcome, RequestEnd::Ok | RequestEnd::Rejected(_)) {
                histogram!(REQUEST_DURATION).record(_started.at.elapsed().as_secs_f64());
            }
        }
    }

    /// The peer closed (counted once, however often called).
    pub(crate) fn closed(&self, _reason: &CloseReason) {
        #[cfg(feature = "metrics")]
        if self.leave() {
            let initiator = match _reason.initiator {
                Initiator::Local => "local",
                Initiator::Remote => "remote",
                Initiator::Replaced => "replaced",
                Initiator::Moved => "moved",
                _ => "other",
            };
            counter!(
                PEERS_CLOSED,
                "code" => close_code_label(_reason.code),
                "initiator" => initiator
            )
            .increment(1);
        }
    }

    /// Stops counting the peer as open; whether this call did.
    #[cfg(feature = "metrics")]
    fn leave(&self) -> bool {
        let left = self.open.swap(false, std::sync::atomic::Ordering::AcqRel);
        if left {
            shards::add(shards::PEERS_DELTA, u64::MAX);
        }
        left
    }
}

#[cfg(feature = "metrics")]
impl Drop for PeerMetrics {
    /// A peer that never closed (never started) stops counting as open.
    fn drop(&mut self) {
        self.leave();
    }
}

/// Hands the counts made since the last flush to the recorder.
///
/// What every message touches (messages and bytes in and out, requests
/// answered and sent, peers open) is counted without touching any count
/// another thread touches: each thread adds to a shard of its own (a few
/// hundred bytes), so two cores serving peers never contend for one
/// counter's cache line, which a global counter per message costs (about 5 %
/// of the requests a server answers per second, measured). The shards are
/// handed to the recorder every second by a thread of this crate's (started
/// with the first peer), and by every call of `flush`: call it right before
/// rendering a scrape (`/metrics`) to make the scrape exact to the last
/// message. Nothing happens without the `metrics` feature.
pub fn flush() {
    #[cfg(feature = "metrics")]
    shards::flush();
}

/// An incoming message was dropped as invalid.
#[inline]
pub(crate) fn invalid(_reason: &'static str) {
    #[cfg(feature = "metrics")]
    counter!(INVALID_MESSAGES, "reason" => _reason).increment(1);
}

/// An incoming message was refused (rate limit or budget).
#[inline]
pub(crate) fn refused(_rate_limited: bool, _request: bool) {
    #[cfg(feature = "metrics")]
    counter!(
        MESSAGES_REFUSED,
        "reason" => if _rate_limited { "rate_limited" } else { "over_budget" },
        "kind" => if _request { "request" } else { "notification" }
    )
    .increment(1);
}

/// An incoming message was refused: its method is not allowed by the
/// peer's identity.
#[inline]
pub(crate) fn not_allowed(_request: bool) {
    #[cfg(feature = "metrics")]
    counter!(
        MESSAGES_REFUSED,
        "reason" => "not_allowed",
        "kind" => if _request { "request" } else { "notification" }
    )
    .increment(1);
}

/// Counts one room as open while it lives.
#[derive(Debug)]
pub(crate) struct OpenRoom {
    #[cfg(feature = "metrics")]
    gauge: Gauge,
    #[cfg(feature = "metrics")]
    open: std::sync::atomic::AtomicBool,
}

impl OpenRoom {
    /// Counts a room created now.
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            let gauge = gauge!(ROOMS);
            gauge.increment(1.0);
            OpenRoom {
                gauge,
                open: std::sync::atomic::AtomicBool::new(true),
            }
        }
        #[cfg(not(feature = "metrics"))]
        OpenRoom {}
    }

    /// The room closed (counted once).
    #[inline]
    pub(crate) fn closed(&self) {
        #[cfg(feature = "metrics")]
        if self.open.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.gauge.decrement(1.0);
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for OpenRoom {
    fn drop(&mut self) {
        self.closed();
    }
}

/// A session started waiting for its peer, holding `bytes`.
#[inline]
pub(crate) fn session_parked(_bytes: usize) {
    #[cfg(feature = "metrics")]
    {
        gauge!(SESSIONS_WAITING).increment(1.0);
        gauge!(SESSION_HELD_BYTES).increment(_bytes as f64);
    }
}

/// A waiting session holds `bytes` more.
#[inline]
pub(crate) fn session_held(_bytes: usize) {
    #[cfg(feature = "metrics")]
    gauge!(SESSION_HELD_BYTES).increment(_bytes as f64);
}

/// A session stopped waiting (`outcome`, a label of [`SESSIONS_ENDED`]),
/// giving back `bytes`.
#[inline]
pub(crate) fn session_unparked(_bytes: usize, _outcome: &'static str) {
    #[cfg(feature = "metrics")]
    {
        gauge!(SESSIONS_WAITING).decrement(1.0);
        gauge!(SESSION_HELD_BYTES).decrement(_bytes as f64);
        counter!(SESSIONS_ENDED, "outcome" => _outcome).increment(1);
    }
}
