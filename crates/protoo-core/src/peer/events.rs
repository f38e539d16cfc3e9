//! [`PeerEvents`]: the application's side of a peer's event queue, beside
//! the peer state it reads (the events themselves are in `events`, which
//! stays below the peer).

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use protoo_transport::{CloseReason, Initiator, close_code};

use super::PeerState;
use crate::events::{EVENTS_DROPPED_REASON, PeerEvent};

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
    core: Arc<PeerState>,
    closed_reported: bool,
    detached: bool,
    /// A resumed admission's handle: yields nothing, does nothing.
    inert: bool,
}

impl PeerEvents {
    pub(crate) fn new(core: Arc<PeerState>) -> Self {
        PeerEvents {
            core,
            closed_reported: false,
            detached: false,
            inert: false,
        }
    }

    /// The events of a resumed admission ([`Joined::resumed`](crate::Joined::resumed)):
    /// none; the peer's real events go on where they went.
    pub(crate) fn inert(core: Arc<PeerState>) -> Self {
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
        match self.core.events.poll_pop(cx) {
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
        &self.core.id
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
        self.core.events.consumer_dropped();
        if !self.detached && !self.closed_reported && !self.core.is_closed() {
            tracing::warn!(
                peer_id = %protoo_transport::log::Remote(&self.core.id),
                "peer events dropped before the peer closed: closing it"
            );
            self.core
                .close_locally(close_code::INTERNAL_ERROR, EVENTS_DROPPED_REASON);
        }
        self.core.events_handled();
    }
}

impl fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEvents")
            .field("peer_id", &self.core.id)
            .field("queued", &self.core.events.len())
            .field("closed_reported", &self.closed_reported)
            .finish()
    }
}
