//! A peer's reader task: reads every incoming frame, completes pending
//! requests, checks requests and notifications against the identity's
//! methods, the rate limits and the incoming budget, queues them for the
//! application (and stops reading while the queue is full), and closes the
//! peer when its transport ends or nobody can use it any more.

use std::future::{Future, poll_fn};
use std::sync::Arc;

use protoo_codec::{ErrorData, Message, encode};
use protoo_transport::log::Remote;
use protoo_transport::{Bytes, FrameStream, Inbound, PROTOO_CLOSED_REASON, close_code};

use super::state::{PeerState, remote_warn};
use crate::budget::Over;
use crate::events::{IncomingNotification, IncomingRequest, PeerEvent};
use crate::identity::{METHOD_NOT_ALLOWED_CODE, METHOD_NOT_ALLOWED_REASON};
use crate::metrics::{self as meter, Kind, RequestEnd};
use crate::{
    OVER_BUDGET_CODE, OVER_BUDGET_REASON, RATE_LIMITED_CODE, RATE_LIMITED_REASON,
    SHUTTING_DOWN_REASON,
};

/// The reader task of a peer: reads every incoming frame, completes pending
/// requests, hands requests and notifications to the application, and closes
/// the peer when the transport ends.
///
/// What this future holds while the peer is idle is the task's whole cost
/// per peer, so it is kept small: no event is held across the wait for the
/// next frame, and the waits are polls on the event queue rather than
/// channel or `Notify` futures.
// An `async` block rather than an `async fn`, whose state would hold its
// arguments twice (24 bytes more in every peer's task).
#[allow(clippy::manual_async_fn)]
pub(crate) fn read(
    core: Arc<PeerState>,
    mut stream: Box<dyn FrameStream>,
) -> impl Future<Output = ()> + Send {
    async move {
        // However the task ends (the transport's end, or the task dropped by a
        // runtime shutdown), no event comes after it.
        let _end = EndOfEvents(&core);
        loop {
            // Only `full` (an event, boxed, when the queue is full) lives
            // across the wait below.
            let full = match next_inbound(&core, &mut stream).await {
                Inbound::Text(text) => receive(&core, text),
                Inbound::Binary(data) => {
                    // Only transports asked to deliver binary messages do
                    // (not protoo's): ignored, as protoo does.
                    remote_warn!(
                        core,
                        bytes = data.len(),
                        "binary message dropped: protoo uses text"
                    );
                    meter::invalid("binary");
                    core.invalid_message();
                    None
                }
                Inbound::Closed(reason) => {
                    core.finish(reason, false);
                    break;
                }
            };
            if let Some(event) = full {
                // The queue is full: wait for room, and stop reading meanwhile.
                let mut slot = Some(event);
                poll_fn(|cx| core.events.poll_push(&mut slot, cx)).await;
            }
        }
    }
}

/// Handles one incoming frame: completes a pending request, or queues a
/// request or notification for the application. Returns the event, boxed,
/// when the queue is full.
///
/// A request or notification is first checked against the peer's rate
/// limits and incoming budget: past either, a request is answered at once
/// with an error (it never reaches the application) and a notification is
/// dropped, both counted, with a rate-limited warning.
fn receive(core: &Arc<PeerState>, text: Bytes) -> Option<Box<PeerEvent>> {
    if core.is_closed() {
        // Closed locally: the transport is draining, nothing more is
        // delivered.
        return None;
    }
    let len = text.len();
    let message = match Message::decode(text) {
        Err(error) => {
            remote_warn!(core, error = %Remote(&error), "invalid message dropped");
            meter::invalid("decode");
            core.invalid_message();
            return None;
        }
        Ok(Message::Response(response)) => {
            core.complete(response, len);
            return None;
        }
        Ok(message) => message,
    };
    let request = matches!(message, Message::Request(_));
    let kind = if request {
        Kind::Request
    } else {
        Kind::Notification
    };
    core.metrics.received(kind, len);
    if let Some(identity) = core.identity.as_deref() {
        let method = match &message {
            Message::Request(request) => &request.method,
            Message::Notification(notification) => &notification.method,
            Message::Response(_) => return None,
        };
        if !identity.allows(method.as_str()) {
            not_allowed(core, message);
            return None;
        }
    }
    let refused = if !core.within_rate(len) {
        Err((RATE_LIMITED_CODE, RATE_LIMITED_REASON))
    } else {
        core.budget
            .try_charge(len, request)
            .map_err(|_: Over| (OVER_BUDGET_CODE, OVER_BUDGET_REASON))
    };
    let event = match (message, refused) {
        (Message::Request(request), Ok(charge)) => {
            let in_flight = match &core.requests {
                None => None,
                Some(tracker) => match tracker.try_enter() {
                    Some(guard) => Some(guard),
                    None => {
                        // A graceful shutdown started: not waited for.
                        tracing::debug!(
                            method = %Remote(&request.method),
                            "request during shutdown answered 503"
                        );
                        let error = ErrorData::new(503, SHUTTING_DOWN_REASON);
                        core.metrics.answered(RequestEnd::Rejected(503));
                        let _ = core.send(encode::error(&request.id, &error));
                        return None;
                    }
                },
            };
            tracing::debug!(
                method = %Remote(&request.method),
                id = %Remote(&request.id),
                "request received"
            );
            PeerEvent::Request(IncomingRequest::new(
                request,
                core.clone(),
                in_flight,
                charge,
            ))
        }
        (Message::Notification(notification), Ok(charge)) => {
            tracing::debug!(method = %Remote(&notification.method), "notification received");
            PeerEvent::Notification(IncomingNotification::new(notification, Some(charge)))
        }
        (Message::Request(request), Err((code, reason))) => {
            core.budget.count_refused();
            meter::refused(code == RATE_LIMITED_CODE, true);
            core.metrics.answered(RequestEnd::Rejected(code));
            remote_warn!(
                core,
                method = %Remote(&request.method),
                id = %Remote(&request.id),
                bytes = len,
                held = core.budget.held(),
                unanswered = core.budget.requests(),
                "request refused: {reason}"
            );
            let _ = core.send(encode::error(&request.id, &ErrorData::new(code, reason)));
            return None;
        }
        (Message::Notification(notification), Err((code, reason))) => {
            core.budget.count_refused();
            meter::refused(code == RATE_LIMITED_CODE, false);
            remote_warn!(
                core,
                method = %Remote(&notification.method),
                bytes = len,
                held = core.budget.held(),
                "notification dropped: {reason}"
            );
            return None;
        }
        (Message::Response(_), _) => return None,
    };
    // An event nobody will take (events dropped, peer closed) is dropped: a
    // request then answers 500 by itself.
    core.events.try_push(event).err()
}

/// A request or notification whose method the peer's identity does not
/// allow: the request is answered 403 at once, the notification dropped;
/// both counted, with a rate-limited warning.
fn not_allowed(core: &Arc<PeerState>, message: Message) {
    core.budget.count_refused();
    match message {
        Message::Request(request) => {
            meter::not_allowed(true);
            core.metrics
                .answered(RequestEnd::Rejected(METHOD_NOT_ALLOWED_CODE));
            remote_warn!(
                core,
                method = %Remote(&request.method),
                id = %Remote(&request.id),
                "request refused: method not allowed"
            );
            let error = ErrorData::new(METHOD_NOT_ALLOWED_CODE, METHOD_NOT_ALLOWED_REASON);
            let _ = core.send(encode::error(&request.id, &error));
        }
        Message::Notification(notification) => {
            meter::not_allowed(false);
            remote_warn!(
                core,
                method = %Remote(&notification.method),
                "notification dropped: method not allowed"
            );
        }
        Message::Response(_) => {}
    }
}

/// The next incoming frame or the transport's end. Meanwhile, closes the
/// peer when nobody can use it any more (every handle and its events
/// dropped).
fn next_inbound<'a>(
    core: &'a Arc<PeerState>,
    stream: &'a mut Box<dyn FrameStream>,
) -> impl Future<Output = Inbound> + Send + 'a {
    poll_fn(move |cx| {
        if core.events.watch(cx) && !core.is_closed() {
            tracing::debug!("every handle and the events of the peer dropped: closing it");
            core.close_locally(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
        }
        stream.poll_recv(cx)
    })
}

/// Closes the event queue when the reader task ends.
struct EndOfEvents<'a>(&'a PeerState);

impl Drop for EndOfEvents<'_> {
    fn drop(&mut self) {
        self.0.events.close();
    }
}
