//! What a peer hands the application: [`PeerEvent`]s (requests,
//! notifications, the close) through its [`PeerEvents`], and the reasons
//! and codes it answers with by itself. The queue behind them is in
//! `queue`; a request waiting for its answer, and a notification, in
//! `request`.

mod queue;
mod request;

pub(crate) use queue::EventQueue;
pub use request::{IncomingNotification, IncomingRequest, IntoErrorData};

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use protoo_codec::Frame;
use protoo_transport::{CloseReason, Initiator, TransportError, close_code};

use crate::metrics::RequestEnd;

/// What a peer's events, and the requests they carry, reach of their peer:
/// its state implements it, so this module stays below the peer's.
pub(crate) trait EventSource: Send + Sync + 'static {
    /// The peer's id.
    fn id(&self) -> &str;
    /// The queue the peer's reader fills.
    fn events(&self) -> &EventQueue;
    /// Why the peer closed, once it has.
    fn close_reason(&self) -> Option<&CloseReason>;
    /// Whether the peer has closed.
    fn is_closed(&self) -> bool;
    /// Closes the peer from this side.
    fn close_locally(self: Arc<Self>, code: u16, reason: &str);
    /// The application is done with the events.
    fn events_handled(&self);
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

/// The events of one peer, for the application's per-peer loop.
///
/// [`PeerEvents::next`] yields every incoming request and notification in
/// order, then [`PeerEvent::Closed`](crate::PeerEvent::Closed) once, then `None`. Up to
/// [`PeerConfig::event_queue`](crate::PeerConfig::event_queue) events wait
/// here; past that the peer stops reading its transport until the
/// application catches up.
///
/// Dropping it before it yielded [`PeerEvent::Closed`](crate::PeerEvent::Closed) means nobody handles
/// the peer any more (its handler returned early, or its task panicked): the
/// events still queued are dropped (their requests answer 500 `request not
/// answered`), then the peer is closed with [`close_code::INTERNAL_ERROR`]
/// (1011, [`EVENTS_DROPPED_REASON`]) and leaves its room, so no orphan stays
/// there receiving broadcasts. To keep a peer without handling its events,
/// say so with [`PeerEvents::detach`].
pub struct PeerEvents {
    core: Arc<dyn EventSource>,
    closed_reported: bool,
    detached: bool,
    /// A resumed admission's handle: yields nothing, does nothing.
    inert: bool,
}

impl PeerEvents {
    pub(crate) fn new(core: Arc<dyn EventSource>) -> Self {
        PeerEvents {
            core,
            closed_reported: false,
            detached: false,
            inert: false,
        }
    }

    /// The events of a resumed admission ([`Joined::resumed`](crate::Joined::resumed)):
    /// none; the peer's real events go on where they went.
    pub(crate) fn inert(core: Arc<dyn EventSource>) -> Self {
        PeerEvents {
            core,
            closed_reported: true,
            detached: true,
            inert: true,
        }
    }

    /// Gives up the events and keeps the peer open: it keeps working
    /// (requests sent to it still get their responses, it stays in its
    /// room), and the requests it receives from then on are answered 500
    /// `request not answered`, notifications dropped. It closes as usual
    /// (by either side, or by itself once every [`Peer`](crate::Peer)
    /// handle is dropped too).
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// The next event; `None` after [`PeerEvent::Closed`](crate::PeerEvent::Closed). Cancel-safe.
    pub async fn next(&mut self) -> Option<PeerEvent> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next event, as [`PeerEvents::next`] waits for it (also
    /// available as [`futures_core::Stream::poll_next`]).
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<PeerEvent>> {
        if self.inert {
            return Poll::Ready(None);
        }
        if self.closed_reported {
            // The application came back after the close: it is done with it.
            self.core.events_handled();
            return Poll::Ready(None);
        }
        match self.core.events().poll_pop(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(event)) => Poll::Ready(Some(event)),
            Poll::Ready(None) => {
                // The peer is closed (or its reader task ended) and every
                // event queued before was handed out.
                self.closed_reported = true;
                let reason =
                    self.core.close_reason().cloned().unwrap_or_else(|| {
                        CloseReason::new(None, "peer task ended", Initiator::Local)
                    });
                Poll::Ready(Some(PeerEvent::Closed(reason)))
            }
        }
    }

    /// The id of the peer these events come from.
    pub fn peer_id(&self) -> &str {
        self.core.id()
    }
}

impl futures_core::Stream for PeerEvents {
    type Item = PeerEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PeerEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl futures_core::FusedStream for PeerEvents {
    fn is_terminated(&self) -> bool {
        self.closed_reported
    }
}

impl Drop for PeerEvents {
    fn drop(&mut self) {
        if self.inert {
            return;
        }
        // Queued requests answer 500 while the transport is still open.
        self.core.events().consumer_dropped();
        if !self.detached && !self.closed_reported && !self.core.is_closed() {
            tracing::warn!(
                peer_id = %protoo_transport::log::Remote(self.core.id()),
                "peer events dropped before the peer closed: closing it"
            );
            (self.core.clone()).close_locally(close_code::INTERNAL_ERROR, EVENTS_DROPPED_REASON);
        }
        self.core.events_handled();
    }
}

impl fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEvents")
            .field("peer_id", &self.core.id())
            .field("queued", &self.core.events().len())
            .field("closed_reported", &self.closed_reported)
            .finish()
    }
}
