//! A peer's reader task: reads every incoming frame, completes pending
//! requests, checks requests and notifications against the identity's
//! methods, the rate limits and the incoming budget, queues them for the
//! application (and stops reading while the queue is full), and closes the
//! peer when its transport ends or nobody can use it any more.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::{Context, Poll};

use protoo_codec::{ErrorData, Message, encode};
use protoo_transport::log::Remote;
use protoo_transport::{
    Bytes, CloseReason, FrameSink, FrameStream, Inbound, PROTOO_CLOSED_REASON, close_code,
};

use super::state::{PeerState, remote_warn};
use crate::budget::Over;
use crate::events::{IncomingNotification, IncomingRequest, PeerEvent};
use crate::identity::{METHOD_NOT_ALLOWED_CODE, METHOD_NOT_ALLOWED_REASON};
use crate::metrics::{self as meter, Kind, RequestEnd};
use crate::session::{Detach, Wake};
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
            // Only `full` (an event, boxed, when the queue is full) or
            // `ending` (boxed too) lives across the waits below.
            let (full, ending) = match next_inbound(&core, &mut stream).await {
                Next::Inbound(Inbound::Text(text)) => (receive(&core, text), None),
                Next::Inbound(Inbound::Binary(data)) => {
                    // Only transports asked to deliver binary messages do
                    // (not protoo's): ignored, as protoo does.
                    remote_warn!(
                        core,
                        bytes = data.len(),
                        "binary message dropped: protoo uses text"
                    );
                    meter::invalid("binary");
                    core.invalid_message();
                    (None, None)
                }
                // Boxed: what waiting for a resume holds (a timer among it)
                // must not grow every idle peer's task.
                Next::Inbound(Inbound::Closed(reason)) => {
                    (None, Some(Box::pin(ended(&core, reason))))
                }
                Next::TakenOver(next, missed) => {
                    stream = next;
                    (Some(Box::new(PeerEvent::Resumed { missed })), None)
                }
            };
            if let Some(ending) = ending {
                match ending.await {
                    Some(next) => {
                        stream = next;
                        continue;
                    }
                    None => break,
                }
            }
            if let Some(event) = full {
                // The queue is full: wait for room, and stop reading meanwhile.
                let mut slot = Some(event);
                poll_fn(|cx| core.events.poll_push(&mut slot, cx)).await;
            }
        }
    }
}

/// The peer's transport ended (`reason`): the peer closes, or, with a
/// resume window and a lost transport, its session waits for a new one.
/// Returns the new transport's stream once one resumed the session (and
/// [`PeerEvent::Resumed`] is queued).
async fn ended(core: &Arc<PeerState>, reason: CloseReason) -> Option<Box<dyn FrameStream>> {
    let Some(session) = core.session.as_ref().filter(|_| !core.is_closed()) else {
        core.finish(reason, false);
        return None;
    };
    // A new connection took the session over as this one ended.
    if let Some((next, missed)) = session.take_incoming() {
        resumed(core, missed).await;
        return Some(next);
    }
    if !reason.is_lost() {
        core.finish(reason, false);
        // What a send held once the transport had ended goes too.
        session.close(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
        return None;
    }
    match session.detach() {
        Detach::Waiting => {}
        Detach::Resumed(next, missed) => {
            resumed(core, missed).await;
            return Some(next);
        }
        Detach::Gone => {
            core.finish(reason, false);
            return None;
        }
    }
    tracing::debug!(reason = %Remote(&reason), "transport lost: the session waits for the peer");
    queue(core, PeerEvent::Disconnected(reason.clone())).await;
    let expiry = tokio::time::sleep(session.window);
    let mut expiry = std::pin::pin!(expiry);
    let woken = poll_fn(|cx| {
        if let Poll::Ready(wake) = session.poll_wake(cx) {
            return Poll::Ready(Some(wake));
        }
        if core.is_closed() {
            return Poll::Ready(None);
        }
        if core.events.watch(cx) {
            tracing::debug!("every handle and the events of the peer dropped: closing it");
            core.close_locally(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
            return Poll::Ready(None);
        }
        expiry.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match woken {
        Some(Wake::Resumed(next, missed)) => {
            tracing::debug!(missed, "session resumed");
            resumed(core, missed).await;
            Some(next)
        }
        Some(Wake::Ended(why)) => {
            tracing::debug!(reason = %Remote(&why), "waiting session ended");
            core.finish(why, false);
            None
        }
        None if core.is_closed() => None,
        None => {
            tracing::debug!("resume window over: closing the peer");
            session.expire();
            core.finish(reason, false);
            None
        }
    }
}

/// Queues [`PeerEvent::Resumed`].
async fn resumed(core: &PeerState, missed: usize) {
    queue(core, PeerEvent::Resumed { missed }).await;
}

/// Queues `event`, waiting for room.
async fn queue(core: &PeerState, event: PeerEvent) {
    let mut slot = core.events.try_push(event).err();
    if slot.is_some() {
        poll_fn(|cx| core.events.poll_push(&mut slot, cx)).await;
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

/// What the reader task reads next.
enum Next {
    /// From the transport.
    Inbound(Inbound),
    /// A new connection took the peer's session over (and this many frames
    /// were written to it again): its stream.
    TakenOver(Box<dyn FrameStream>, usize),
}

/// The next incoming frame or the transport's end, or a new connection that
/// took the peer's session over. Meanwhile, closes the peer when nobody can
/// use it any more (every handle and its events dropped).
fn next_inbound<'a>(
    core: &'a Arc<PeerState>,
    stream: &'a mut Box<dyn FrameStream>,
) -> impl Future<Output = Next> + Send + 'a {
    // While frames arrive, the checks below cost an atomic load each; the
    // locks that register the task's waker are taken once it idles.
    let taken_over = |cx: &Context<'_>, idle: bool| {
        let session = core.session.as_ref()?;
        if !idle && !session.takeover_hint() {
            return None;
        }
        let (next, missed) = session.poll_takeover(cx)?;
        Some(Next::TakenOver(next, missed))
    };
    poll_fn(move |cx| {
        if core.events.handles_gone() {
            unused(core, cx);
        }
        if let Some(next) = taken_over(cx, false) {
            return Poll::Ready(next);
        }
        if let Poll::Ready(inbound) = stream.poll_recv(cx) {
            return Poll::Ready(Next::Inbound(inbound));
        }
        // Idle: to be woken when nobody can use the peer any more, or a
        // new connection takes the session over.
        unused(core, cx);
        taken_over(cx, true).map_or(Poll::Pending, Poll::Ready)
    })
}

/// Closes the peer when every handle and its events were dropped (nobody
/// can use it any more); registers the reader to be woken for that.
fn unused(core: &Arc<PeerState>, cx: &Context<'_>) {
    if core.events.watch(cx) && !core.is_closed() {
        tracing::debug!("every handle and the events of the peer dropped: closing it");
        core.close_locally(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
    }
}

/// Closes the event queue when the reader task ends.
struct EndOfEvents<'a>(&'a PeerState);

impl Drop for EndOfEvents<'_> {
    fn drop(&mut self) {
        self.0.events.close();
    }
}
