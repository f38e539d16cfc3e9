use std::fmt;
use std::sync::Arc;

use protoo_codec::{ErrorData, Id, Notification, Payload, Request, encode};
use protoo_transport::{CloseReason, Initiator, TrackerGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::peer::Core;

/// The reason of a request dropped without an answer.
pub const NOT_ANSWERED_REASON: &str = "request not answered";

/// What a peer receives, in the order it arrived.
#[derive(Debug)]
pub enum PeerEvent {
    /// A request: answer it once with [`IncomingRequest::accept`],
    /// [`IncomingRequest::reject`] or [`IncomingRequest::respond`].
    Request(IncomingRequest),
    /// A notification.
    Notification(IncomingNotification),
    /// The peer closed, and why. Always the last event, reported exactly
    /// once.
    Closed(CloseReason),
}

/// The events of one peer, for the application's per-peer loop.
///
/// [`PeerEvents::next`] yields every incoming request and notification in
/// order, then [`PeerEvent::Closed`] once, then `None`. Up to
/// [`PeerConfig::event_queue`](crate::PeerConfig::event_queue) events wait
/// here; past that the peer stops reading its transport until the
/// application catches up.
///
/// Dropping it is allowed: the peer keeps working (requests sent to it still
/// get their responses), and the requests it receives from then on are
/// answered with an error (500 `request not answered`), so the remote never
/// waits for nothing.
pub struct PeerEvents {
    rx: mpsc::Receiver<PeerEvent>,
    core: Arc<Core>,
    closed_reported: bool,
}

impl PeerEvents {
    pub(crate) fn new(rx: mpsc::Receiver<PeerEvent>, core: Arc<Core>) -> Self {
        PeerEvents {
            rx,
            core,
            closed_reported: false,
        }
    }

    /// The next event; `None` after [`PeerEvent::Closed`]. Cancel-safe.
    pub async fn next(&mut self) -> Option<PeerEvent> {
        if self.closed_reported {
            return None;
        }
        if let Some(event) = self.rx.recv().await {
            return Some(event);
        }
        // The reader task has finished: the peer is closed.
        self.closed_reported = true;
        let reason = self
            .core
            .close_reason()
            .cloned()
            .unwrap_or_else(|| CloseReason::new(None, "peer task ended", Initiator::Local));
        Some(PeerEvent::Closed(reason))
    }

    /// The id of the peer these events come from.
    pub fn peer_id(&self) -> &str {
        &self.core.id
    }
}

impl Drop for PeerEvents {
    fn drop(&mut self) {
        self.core.events_dropped();
    }
}

impl fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEvents")
            .field("peer_id", &self.core.id)
            .field("queued", &self.rx.len())
            .field("closed_reported", &self.closed_reported)
            .finish()
    }
}

/// A request from the remote, waiting for its one answer.
///
/// Answer it with [`accept`](Self::accept), [`reject`](Self::reject),
/// [`reject_with`](Self::reject_with) or [`respond`](Self::respond): each
/// consumes it, so it is answered at most once. Dropped without an answer, it
/// answers 500 `request not answered` by itself: the remote never waits for
/// a response that will not come. It can be moved to another task to be
/// answered later.
///
/// Answering a peer that has closed meanwhile does nothing (the failure is
/// logged at debug level).
#[must_use = "a request must be answered; dropping it answers 500 \"request not answered\""]
pub struct IncomingRequest {
    request: Request,
    /// `None` once answered.
    core: Option<Arc<Core>>,
    /// Counts this request as in flight until it is answered, when the
    /// transport has a request tracker.
    _in_flight: Option<TrackerGuard>,
}

impl IncomingRequest {
    pub(crate) fn new(request: Request, core: Arc<Core>) -> Self {
        IncomingRequest {
            _in_flight: core.requests.as_ref().map(|tracker| tracker.enter()),
            request,
            core: Some(core),
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.request.method.as_str()
    }

    /// The request id, as the remote wrote it.
    pub fn id(&self) -> &Id {
        &self.request.id
    }

    /// The request data as raw JSON (`{}` when the remote sent none).
    pub fn payload(&self) -> &Payload {
        &self.request.data
    }

    /// The request data deserialised into `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.request.data.deserialize()
    }

    /// The id of the peer that sent the request.
    pub fn peer_id(&self) -> &str {
        self.core.as_ref().map_or("", |core| &core.id)
    }

    /// Answers with a success response carrying `data` (`&()` sends `{}`).
    /// If `data` cannot be encoded, answers 500 with the encoding error
    /// instead.
    pub fn accept(mut self, data: &(impl Serialize + ?Sized)) {
        let frame = match encode::success(&self.request.id, data) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(method = self.method(), %error, "response data not encodable, answering 500");
                encode::error(&self.request.id, &ErrorData::new(500, error.to_string()))
            }
        };
        self.answer(frame);
    }

    /// Answers with an error response: `errorCode` and `errorReason`.
    pub fn reject(self, code: u16, reason: impl AsRef<str>) {
        self.reject_with(ErrorData::new(code, reason));
    }

    /// Answers with an error response carrying `error` as it is, for
    /// instance the error another peer answered
    /// ([`RequestError::error_data`](crate::RequestError::error_data)).
    pub fn reject_with(mut self, error: ErrorData) {
        let frame = encode::error(&self.request.id, &error);
        self.answer(frame);
    }

    /// Answers `Ok(data)` as [`accept`](Self::accept) and `Err(error)` with
    /// 500 and the error's message, as protoo answers a request whose
    /// listener throws. Handy with `?` in an async block.
    pub fn respond<T: Serialize, E: fmt::Display>(self, result: Result<T, E>) {
        match result {
            Ok(data) => self.accept(&data),
            Err(error) => self.reject(500, error.to_string()),
        }
    }

    fn answer(&mut self, frame: protoo_codec::Frame) {
        if let Some(core) = self.core.take()
            && let Err(error) = core.send(frame)
        {
            tracing::debug!(
                peer_id = %core.id,
                method = self.method(),
                %error,
                "response not sent"
            );
        }
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if self.core.is_some() {
            tracing::debug!(
                method = self.method(),
                "request dropped unanswered, answering 500"
            );
            let frame = encode::error(&self.request.id, &ErrorData::new(500, NOT_ANSWERED_REASON));
            self.answer(frame);
        }
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("id", &self.request.id)
            .field("method", &self.request.method)
            .field("data", &self.request.data)
            .field("answered", &self.core.is_none())
            .finish()
    }
}

/// A notification from the remote.
#[derive(Clone, Debug)]
pub struct IncomingNotification {
    notification: Notification,
}

impl IncomingNotification {
    pub(crate) fn new(notification: Notification) -> Self {
        IncomingNotification { notification }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.notification.method.as_str()
    }

    /// The notification data as raw JSON (`{}` when the remote sent none).
    pub fn payload(&self) -> &Payload {
        &self.notification.data
    }

    /// The notification data deserialised into `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.notification.data.deserialize()
    }

    /// The decoded message.
    pub fn into_inner(self) -> Notification {
        self.notification
    }
}
