use crate::metrics::Outcome;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use protoo_codec::{ErrorData, Id, Method, Notification, Payload, Request, encode};
use protoo_transport::{
    ByteQueue, CloseReason, Initiator, Refused, TrackerGuard, Weigh, close_code,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::budget::Charge;
use crate::peer::Core;

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
    core: Arc<Core>,
    closed_reported: bool,
    detached: bool,
}

impl PeerEvents {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        PeerEvents {
            core,
            closed_reported: false,
            detached: false,
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

/// The queue between a peer's reader task (the one producer) and its
/// [`PeerEvents`] (the one consumer), bounded by
/// [`PeerConfig::event_queue`](crate::PeerConfig::event_queue) events: a
/// [`ByteQueue`] whose bytes (each event's frame) are bounded by the peer's
/// incoming budget, which counts them from the moment they are read until
/// the application is done with them, here and after.
///
/// An empty queue holds no buffer: an idle peer pays only for this struct.
/// The lock is held for a few field updates, never across an `.await`, and
/// events are dropped (a dropped request answers 500) only after it is
/// released.
pub(crate) struct EventQueue {
    queue: ByteQueue<PeerEvent>,
    /// Every [`Peer`](crate::Peer) handle was dropped.
    handles_gone: AtomicBool,
}

impl Weigh for PeerEvent {
    fn weight(&self) -> usize {
        match self {
            PeerEvent::Request(request) => request._charge.bytes(),
            PeerEvent::Notification(notification) => notification
                ._charge
                .as_ref()
                .map_or(0, |charge| charge.bytes()),
            PeerEvent::Closed(_) => 0,
        }
    }
}

impl EventQueue {
    /// An empty queue holding at most `limit` events (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        EventQueue {
            // The budget bounds the bytes; the buffer is freed once drained.
            queue: ByteQueue::new(usize::MAX, limit, 0),
            handles_gone: AtomicBool::new(false),
        }
    }

    /// Events waiting for the application.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Reader: queues `event` if there is room, or drops it if nobody will
    /// take it (the peer closed, or its [`PeerEvents`] was dropped; a
    /// request dropped this way answers 500 by itself). Gives it back when
    /// the queue is full.
    pub(crate) fn try_push(&self, event: PeerEvent) -> Result<(), Box<PeerEvent>> {
        match self.queue.try_push(event) {
            Ok(()) => Ok(()),
            Err(Refused::Full(event)) => Err(Box::new(event)),
            Err(Refused::Closed(event)) => {
                drop(event);
                Ok(())
            }
        }
    }

    /// Reader: [`EventQueue::try_push`] once there is room, waiting (the
    /// peer stops reading its transport meanwhile). Ready once the event in
    /// `slot` is queued or dropped.
    pub(crate) fn poll_push(
        &self,
        slot: &mut Option<Box<PeerEvent>>,
        cx: &Context<'_>,
    ) -> Poll<()> {
        ready!(self.queue.poll_room(cx));
        if let Some(event) = slot.take() {
            // Refused (and dropped) when nobody will take it.
            let _ = self.queue.push(*event);
        }
        Poll::Ready(())
    }

    /// Reader: registers the task to be woken when the peer's handles or its
    /// events are dropped, or when the peer closes. Returns whether nobody
    /// can use the peer any more (every handle and its events dropped).
    pub(crate) fn watch(&self, cx: &Context<'_>) -> bool {
        let consumer_gone = self.queue.register_producer(cx);
        consumer_gone && self.handles_gone.load(Ordering::Acquire)
    }

    /// Consumer: the next event; `None` once the queue is closed and
    /// drained. Cancel-safe.
    pub(crate) fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<PeerEvent>> {
        self.queue.poll_pop(cx, |()| ()).map(Result::ok)
    }

    /// No more events: those queued are still handed out, then `None`.
    pub(crate) fn close(&self) {
        self.queue.close(());
    }

    /// The [`PeerEvents`] was dropped: the queued events are dropped (their
    /// requests answer 500) and so is every later one.
    pub(crate) fn consumer_dropped(&self) {
        self.queue.discard();
    }

    /// Every [`Peer`](crate::Peer) handle was dropped.
    pub(crate) fn handles_dropped(&self) {
        // Set before the wake-up: a reader that registered its waker before
        // the wake-up took it, or looks after the store.
        self.handles_gone.store(true, Ordering::Release);
        self.queue.wake_producer();
    }
}

/// A request from the remote, waiting for its one answer.
///
/// Answer it with [`accept`](Self::accept), [`reject`](Self::reject) or
/// [`respond`](Self::respond): each consumes it, so it is answered at most
/// once. Dropped without an answer, it answers 500 `request not answered`
/// by itself: the remote never waits for a response that will not come. It can be moved to another task to be
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
    /// Its frame's bytes in its peer's incoming budget, until answered.
    _charge: Charge,
}

impl IncomingRequest {
    pub(crate) fn new(
        request: Request,
        core: Arc<Core>,
        in_flight: Option<TrackerGuard>,
        charge: Charge,
    ) -> Self {
        IncomingRequest {
            _in_flight: in_flight,
            _charge: charge,
            request,
            core: Some(core),
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.request.method.as_str()
    }

    /// The method name as decoded (a cheap handle to the frame's bytes).
    pub(crate) fn method_name(&self) -> &Method {
        &self.request.method
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
    ///
    /// A received [`Payload`] is sent as it is: its JSON text copied into a
    /// buffer sized once, not parsed and encoded again (an echo, or data
    /// forwarded from another peer).
    ///
    /// ```
    /// # use protoo_core::{PeerEvent, PeerEvents};
    /// # async fn echo(mut events: PeerEvents) {
    /// while let Some(PeerEvent::Request(mut request)) = events.next().await {
    ///     let data = request.take_payload();
    ///     request.accept(&data);
    /// }
    /// # }
    /// ```
    pub fn accept(mut self, data: &(impl Serialize + ?Sized)) {
        let (frame, outcome) = match encode::success(&self.request.id, data) {
            Ok(frame) => (frame, Outcome::Ok),
            Err(error) => {
                tracing::warn!(
                    method = %protoo_transport::log::Remote(self.method()),
                    %error,
                    "response data not encodable, answering 500"
                );
                let error = ErrorData::new(500, error.to_string());
                (
                    encode::error(&self.request.id, &error),
                    Outcome::Rejected(500),
                )
            }
        };
        self.answer(frame, outcome);
    }

    /// Answers with an error response: `errorCode` and `errorReason`.
    pub fn reject(self, code: u16, reason: impl AsRef<str>) {
        self.reject_data(ErrorData::new(code, reason));
    }

    /// Answers `Ok(data)` as [`accept`](Self::accept) and `Err(error)` with
    /// the error's [`IntoErrorData`] conversion: an [`ErrorData`] is sent as
    /// it is (for instance the error another peer answered,
    /// [`RequestError::error_data`](crate::RequestError::error_data)), a
    /// serde error (bad request data) is 400 with serde's message, a string
    /// or another error is 500 with its message, as protoo answers a
    /// request whose listener throws.
    ///
    /// ```
    /// # use protoo_core::{ErrorData, IncomingRequest, IntoErrorData};
    /// #[derive(serde::Deserialize)]
    /// struct Add { a: i64, b: i64 }
    ///
    /// fn add(request: &IncomingRequest) -> Result<i64, ErrorData> {
    ///     // Bad data: 400 with serde's message.
    ///     let add: Add = request.data().map_err(IntoErrorData::into_error_data)?;
    ///     add.a.checked_add(add.b).ok_or(ErrorData::new(422, "overflow"))
    /// }
    ///
    /// fn on_add(request: IncomingRequest) {
    ///     let result = add(&request);
    ///     request.respond(result);
    /// }
    /// ```
    pub fn respond<T: Serialize, E: IntoErrorData>(self, result: Result<T, E>) {
        match result {
            Ok(data) => self.accept(&data),
            Err(error) => self.reject_data(error.into_error_data()),
        }
    }

    /// Answers with an error response carrying `error` as it is.
    fn reject_data(mut self, error: ErrorData) {
        let frame = encode::error(&self.request.id, &error);
        self.answer(frame, Outcome::Rejected(error.code().unwrap_or(0)));
    }

    /// Takes the request data out (leaving `{}`), to answer with it or move
    /// it elsewhere without a copy: `let data = request.take_payload();
    /// request.accept(&data)` echoes.
    pub fn take_payload(&mut self) -> Payload {
        std::mem::take(&mut self.request.data)
    }

    fn answer(&mut self, frame: protoo_codec::Frame, outcome: Outcome) {
        let Some(core) = self.core.take() else {
            return;
        };
        core.metrics.answered(outcome);
        if let Err(error) = core.send(frame) {
            tracing::debug!(
                peer_id = %protoo_transport::log::Remote(&core.id),
                method = %protoo_transport::log::Remote(self.method()),
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
                method = %protoo_transport::log::Remote(self.method()),
                "request dropped unanswered, answering 500"
            );
            let frame = encode::error(&self.request.id, &ErrorData::new(500, NOT_ANSWERED_REASON));
            self.answer(frame, Outcome::Rejected(500));
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

/// How an application error becomes the error response of a request
/// ([`IncomingRequest::respond`]): implement it for your error types so
/// that a handler returning `Result<T, YourError>` picks its code.
///
/// ```
/// use protoo_core::{ErrorData, IntoErrorData};
///
/// enum RoomError { NoSuchPeer, NotAllowed }
///
/// impl IntoErrorData for RoomError {
///     fn into_error_data(self) -> ErrorData {
///         match self {
///             RoomError::NoSuchPeer => ErrorData::new(404, "no such peer"),
///             RoomError::NotAllowed => ErrorData::new(403, "not allowed"),
///         }
///     }
/// }
/// assert_eq!(RoomError::NotAllowed.into_error_data().code(), Some(403));
/// ```
pub trait IntoErrorData {
    /// The error response's code and reason.
    fn into_error_data(self) -> ErrorData;
}

impl IntoErrorData for ErrorData {
    fn into_error_data(self) -> ErrorData {
        self
    }
}

/// Bad request data: 400 with serde's message.
impl IntoErrorData for serde_json::Error {
    fn into_error_data(self) -> ErrorData {
        ErrorData::new(400, self.to_string())
    }
}

/// A failed request to another peer: its error response as it is, or 500.
impl IntoErrorData for crate::RequestError {
    fn into_error_data(self) -> ErrorData {
        match self {
            crate::RequestError::Rejected(error) => error,
            other => ErrorData::new(500, other.to_string()),
        }
    }
}

/// Presence over its cap: 400 [`PRESENCE_TOO_LARGE_REASON`](crate::PRESENCE_TOO_LARGE_REASON);
/// a broadcast over the sender's fan-out rate: 429
/// [`RATE_LIMITED_REASON`](crate::RATE_LIMITED_REASON); anything else: 500
/// with the message.
impl IntoErrorData for crate::PeerError {
    fn into_error_data(self) -> ErrorData {
        match self {
            crate::PeerError::PresenceTooLarge { .. } => {
                ErrorData::new(400, crate::PRESENCE_TOO_LARGE_REASON)
            }
            crate::PeerError::RateLimited => {
                ErrorData::new(crate::RATE_LIMITED_CODE, crate::RATE_LIMITED_REASON)
            }
            other => ErrorData::new(500, other.to_string()),
        }
    }
}

macro_rules! internal_error {
    ($($ty:ty),*) => {$(
        /// 500 with the message.
        impl IntoErrorData for $ty {
            fn into_error_data(self) -> ErrorData {
                ErrorData::new(500, self.to_string())
            }
        }
    )*};
}

internal_error!(
    &str,
    String,
    protoo_codec::EncodeError,
    crate::CoreError,
    std::io::Error,
    Box<dyn std::error::Error + Send + Sync>
);

/// A notification from the remote.
///
/// It holds its frame's bytes in its peer's incoming budget
/// ([`PeerConfig::incoming_budget`](crate::PeerConfig::incoming_budget))
/// until it and its clones are dropped (or [`into_inner`](Self::into_inner)
/// takes the message out).
#[derive(Clone, Debug)]
pub struct IncomingNotification {
    notification: Notification,
    _charge: Option<Arc<Charge>>,
}

impl IncomingNotification {
    pub(crate) fn new(notification: Notification, charge: Option<Charge>) -> Self {
        IncomingNotification {
            notification,
            _charge: charge.map(Arc::new),
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.notification.method.as_str()
    }

    /// The method name as decoded (a cheap handle to the frame's bytes).
    pub(crate) fn method_name(&self) -> &Method {
        &self.notification.method
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use protoo_codec::Message;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn notification(n: u32) -> PeerEvent {
        let text = format!(r#"{{"notification":true,"method":"n","data":{{"n":{n}}}}}"#);
        match Message::decode_str(&text) {
            Ok(Message::Notification(notification)) => {
                PeerEvent::Notification(IncomingNotification::new(notification, None))
            }
            other => panic!("not a notification: {other:?}"),
        }
    }

    fn number(event: Option<PeerEvent>) -> u64 {
        match event {
            Some(PeerEvent::Notification(n)) => n.payload().to_value()["n"].as_u64().unwrap(),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    fn capacity(queue: &EventQueue) -> usize {
        queue.queue.capacity()
    }

    #[test]
    fn bounded_in_order_and_wakes_the_waiting_reader() {
        let queue = EventQueue::new(2);
        let reader = Arc::new(Count::default());
        let reader_waker = Waker::from(reader.clone());
        let consumer_waker = Waker::from(Arc::new(Count::default()));
        let (rcx, ccx) = (
            Context::from_waker(&reader_waker),
            Context::from_waker(&consumer_waker),
        );
        assert!(queue.try_push(notification(0)).is_ok());
        assert!(queue.try_push(notification(1)).is_ok());
        let Err(third) = queue.try_push(notification(2)) else {
            panic!("a full queue took an event");
        };
        let mut slot = Some(third);
        assert!(queue.poll_push(&mut slot, &rcx).is_pending());
        assert!(slot.is_some());
        assert_eq!(queue.len(), 2);

        let Poll::Ready(first) = queue.poll_pop(&ccx) else {
            panic!("no event")
        };
        assert_eq!(number(first), 0);
        assert_eq!(reader.get(), 1, "room made: the reader is woken");
        assert!(queue.poll_push(&mut slot, &rcx).is_ready());
        assert!(slot.is_none());
        for n in 1..=2 {
            let Poll::Ready(event) = queue.poll_pop(&ccx) else {
                panic!("no event")
            };
            assert_eq!(number(event), n);
        }
        assert!(queue.poll_pop(&ccx).is_pending());
    }

    #[test]
    fn a_drained_queue_holds_no_buffer() {
        let queue = EventQueue::new(256);
        let waker = Waker::from(Arc::new(Count::default()));
        let cx = Context::from_waker(&waker);
        assert_eq!(capacity(&queue), 0);
        for n in 0..100u32 {
            assert!(queue.try_push(notification(n)).is_ok());
        }
        assert!(capacity(&queue) >= 100);
        for n in 0..100u64 {
            let Poll::Ready(event) = queue.poll_pop(&cx) else {
                panic!("no event")
            };
            assert_eq!(number(event), n);
        }
        assert_eq!(capacity(&queue), 0);
    }

    #[test]
    fn closed_hands_out_what_was_queued_then_ends() {
        let queue = EventQueue::new(4);
        let consumer = Arc::new(Count::default());
        let waker = Waker::from(consumer.clone());
        let cx = Context::from_waker(&waker);
        assert!(queue.poll_pop(&cx).is_pending());
        assert!(queue.try_push(notification(7)).is_ok());
        assert_eq!(consumer.get(), 1);
        queue.close();
        // Dropped: nobody will take it.
        assert!(queue.try_push(notification(8)).is_ok());
        let Poll::Ready(event) = queue.poll_pop(&cx) else {
            panic!("no event")
        };
        assert_eq!(number(event), 7);
        assert!(matches!(queue.poll_pop(&cx), Poll::Ready(None)));
        assert!(matches!(queue.poll_pop(&cx), Poll::Ready(None)));
    }

    #[test]
    fn a_dropped_consumer_frees_the_queue_and_releases_the_reader() {
        let queue = EventQueue::new(1);
        let reader = Arc::new(Count::default());
        let waker = Waker::from(reader.clone());
        let cx = Context::from_waker(&waker);
        assert!(queue.try_push(notification(0)).is_ok());
        let mut slot = queue.try_push(notification(1)).err();
        assert!(queue.poll_push(&mut slot, &cx).is_pending());
        queue.consumer_dropped();
        assert_eq!(reader.get(), 1);
        assert_eq!((queue.len(), capacity(&queue)), (0, 0));
        assert!(queue.poll_push(&mut slot, &cx).is_ready());
        assert!(slot.is_none());
        assert!(queue.try_push(notification(2)).is_ok());
        assert_eq!(queue.len(), 0);
        assert!(!queue.watch(&cx), "handles are still there");
        queue.handles_dropped();
        assert!(queue.watch(&cx));
    }
}
