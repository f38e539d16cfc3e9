//! What a peer hands the application: [`PeerEvent`]s (requests,
//! notifications, the close) through its [`PeerEvents`] (in `peer`), and the reasons
//! and codes it answers with by itself. The queue behind them is in
//! `queue`; a request waiting for its answer, and a notification, in
//! `request`.

mod queue;
mod request;

pub(crate) use queue::EventQueue;
pub use request::{IncomingNotification, IncomingRequest, IntoErrorData};

use protoo_codec::Frame;
use protoo_transport::{CloseReason, TransportError};
#[cfg(doc)]
use {crate::PeerEvents, protoo_transport::close_code};

use crate::metrics::RequestEnd;

/// What a request reaches of its peer to answer it: the peer's state
/// implements it, so this module stays below the peer's.
pub(crate) trait Answer: Send + Sync + 'static {
    /// The peer's id.
    fn peer_id(&self) -> &str;
    /// Sends a request's answer, counting it as `outcome`.
    fn answer(&self, frame: Frame, outcome: RequestEnd) -> Result<(), TransportError>;
}

/// The reason of a request dropped without an answer.
pub const NOT_ANSWERED_REASON: &str = "request not answered";

/// The error code of a request answered at once because its peer was over
/// its incoming budget ([`PeerConfig::incoming_budget`](crate::PeerConfig::incoming_budget),
/// [`PeerConfig::max_unanswered_requests`](crate::PeerConfig::max_unanswered_requests)).
pub const OVER_BUDGET_CODE: u16 = 503;

/// The error reason sent with [`OVER_BUDGET_CODE`].
pub const OVER_BUDGET_REASON: &str = "incoming budget exceeded";

/// The error code of a request answered at once because its peer passed
/// its incoming rate ([`PeerConfig::message_rate`](crate::PeerConfig::message_rate),
/// [`PeerConfig::byte_rate`](crate::PeerConfig::byte_rate)).
pub const RATE_LIMITED_CODE: u16 = 429;

/// The error reason sent with [`RATE_LIMITED_CODE`].
pub const RATE_LIMITED_REASON: &str = "rate limit exceeded";

/// The error reason (with code 503) of a request that arrived after a
/// graceful shutdown of its server started: answered at once, not waited
/// for.
pub const SHUTTING_DOWN_REASON: &str = "server shutting down";

/// The close reason (with [`close_code::INTERNAL_ERROR`], 1011) of a peer
/// whose [`PeerEvents`] was dropped before it ended.
pub const EVENTS_DROPPED_REASON: &str = "peer events dropped";

/// The close reason (with
/// [`close_code::POLICY_VIOLATION`], 1008) of a peer that sent
/// [`PeerConfig::max_invalid_messages`](crate::PeerConfig::max_invalid_messages)
/// invalid messages.
pub const TOO_MANY_INVALID_REASON: &str = "too many invalid messages";

/// What a peer receives, in the order it arrived.
#[derive(Debug)]
pub enum PeerEvent {
    /// A request: answer it once with [`IncomingRequest::accept`],
    /// [`IncomingRequest::reject`] or [`IncomingRequest::respond`].
    Request(IncomingRequest),
    /// A notification.
    Notification(IncomingNotification),
    /// The peer's transport was lost and its session waits for it to come
    /// back ([`PeerConfig::resume_window`](crate::PeerConfig::resume_window)),
    /// and why it was lost. The peer stays in its room meanwhile, and what
    /// is sent to it is held. Followed by [`PeerEvent::Resumed`], or, at the
    /// end of the window, by [`PeerEvent::Closed`]. Only peers with a resume
    /// window see it; an application may ignore it.
    Disconnected(CloseReason),
    /// A new connection resumed the peer's session after
    /// [`PeerEvent::Disconnected`], or took it over from a connection that
    /// still looked open: `missed` frames (notifications, requests and
    /// responses sent meanwhile, and those the lost connection had not
    /// confirmed) were written to it first, in order, before anything
    /// newer. The same [`Peer`](crate::Peer), events and room membership go
    /// on.
    Resumed {
        /// How many frames were written again on the new connection.
        missed: usize,
    },
    /// The peer closed, and why. Always the last event, reported exactly
    /// once.
    Closed(CloseReason),
}
