//! Fixtures shared by the integration tests of the protoo-rs workspace: a
//! dev-dependency only, never published.
//!
//! - [`guard`], [`guard_for`]: a failure guard around one step of a test
//!   (never a way to wait for something);
//! - [`HeldConnection`]: an admission held while its room is ready and
//!   its connection not yet accepted;
//! - [`pair`] and the `expect_*` helpers: peers over in-memory transports,
//!   and the next event of a peer, which must be of a given kind;
//! - [`logs`]: what a test logs, captured (text or JSON lines);
//! - [`proxy`]: [`CutProxy`](proxy::CutProxy), a TCP proxy a test can cut,
//!   black-hole and make refuse connections;
//! - [`protoo_case`]: protoo's own request and notification cases
//!   (versatica/protoo's suite), run by the core's suite over memory
//!   transports and by the server's over real WebSockets.
//!
//! The `expect_*` helpers carry no timeout of their own: tests on paused
//! Tokio time wait for timers longer than any guard. Tests on real time wrap
//! them in [`guard`].

use std::future::Future;
use std::time::Duration;

use protoo_core::transport::{Transport, memory};
use protoo_core::{CloseReason, IncomingNotification, IncomingRequest, PeerEvent, PeerEvents};

mod held_connection;
mod held_room;
pub mod logs;
pub mod protoo_case;
pub mod proxy;

pub use held_connection::{HeldConnection, Release};
pub use held_room::HeldRoom;

/// The longest one step of a test on real time may take (a failure guard).
pub const GUARD: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`].
pub async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    guard_for(GUARD, what, future).await
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn guard_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// An in-memory pair with the default queue limit.
pub fn pair() -> (Transport, Transport) {
    memory::pair(memory::DEFAULT_QUEUE_LIMIT)
}

/// The next event, which must be a request.
pub async fn expect_request(events: &mut PeerEvents) -> IncomingRequest {
    match events.next().await {
        Some(PeerEvent::Request(request)) => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The next event, which must be a notification.
pub async fn expect_notification(events: &mut PeerEvents) -> IncomingNotification {
    match events.next().await {
        Some(PeerEvent::Notification(notification)) => notification,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// The next event, which must be the close; the events end after it.
pub async fn expect_closed(events: &mut PeerEvents) -> CloseReason {
    match events.next().await {
        Some(PeerEvent::Closed(reason)) => {
            assert!(events.next().await.is_none(), "an event after Closed");
            assert!(events.next().await.is_none(), "an event after Closed");
            reason
        }
        other => panic!("expected the close, got {other:?}"),
    }
}

/// Skips requests and notifications until the close.
pub async fn until_closed(events: &mut PeerEvents) -> CloseReason {
    loop {
        match events.next().await {
            Some(PeerEvent::Closed(reason)) => {
                assert!(events.next().await.is_none(), "an event after Closed");
                return reason;
            }
            Some(_) => {}
            None => panic!("events ended without Closed"),
        }
    }
}
