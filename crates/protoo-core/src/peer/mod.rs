use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use protoo_codec::{ErrorData, Frame, Id, Message, Payload, Response, encode};
use protoo_transport::log::{Remote, Source};
use protoo_transport::{
    Bytes, CloseReason, FrameSink, FrameStream, Inbound, Initiator, PROTOO_CLOSED_REASON,
    REPLACED_REASON, Tracker, Transport, TransportError, close_code,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

use crate::budget::{Budget, Over};
use crate::events::{EventQueue, IncomingNotification, IncomingRequest, PeerEvent, PeerEvents};
use crate::identity::{
    Expiries, Identity, IdentitySlot, METHOD_NOT_ALLOWED_CODE, METHOD_NOT_ALLOWED_REASON,
};
use crate::ids::IdRng;
use crate::log_limit::remote_warn;
use crate::metrics::{self as meter, Kind, Outcome as Ended, PeerMetrics, Started};
use crate::rate::{FanOut, Limiter};
use crate::sync::lock;
use crate::{
    CoreError, OVER_BUDGET_CODE, OVER_BUDGET_REASON, PeerConfig, PeerError, RATE_LIMITED_CODE,
    RATE_LIMITED_REASON, RequestError, SHUTTING_DOWN_REASON, TOO_MANY_INVALID_REASON,
};

/// What a response hands to the request waiting for it.
type Outcome = Result<Payload, ErrorData>;

/// The room of a peer, told once when the peer closes so that it takes the
/// peer out. A trait object behind a `Weak` rather than a boxed closure:
/// no allocation per peer.
pub(crate) trait Leave: Send + Sync {
    /// Takes the closed peer `core` out of the room.
    fn leave(self: Arc<Self>, core: &Arc<Core>);

    /// The expiry queue of the room's registry (peers with an identity).
    fn expiries(&self) -> Option<Arc<Expiries>>;
}

/// Requests waiting for their response.
struct Pending {
    /// By request id: a sequence number telling apart two requests that got
    /// the same id one after the other, and where to send the response.
    map: HashMap<u32, (u64, oneshot::Sender<Outcome>)>,
    /// Set when the peer closes: no request is registered after that.
    closed: bool,
    next_seq: u64,
    rng: IdRng,
}

/// The state of a peer shared by its handles, its reader task, its
/// [`PeerEvents`] and the [`IncomingRequest`]s it hands out. Independent of
/// the application data type.
pub(crate) struct Core {
    pub(crate) id: Arc<str>,
    pub(crate) room_id: Option<Arc<str>>,
    pub(crate) sink: Arc<dyn FrameSink>,
    /// Counts the incoming requests not yet answered, when the transport
    /// asks for it (graceful shutdown waits for them).
    pub(crate) requests: Option<Tracker>,
    /// [`PeerConfig::request_timeout`]: what a peer keeps of its config
    /// (the rest is used when it is built), as every idle peer holds it.
    request_timeout: Option<std::time::Duration>,
    /// [`PeerConfig::max_invalid_messages`].
    max_invalid_messages: Option<u32>,
    pending: Mutex<Pending>,
    /// Set once, by whoever closes the peer first.
    reason: OnceLock<CloseReason>,
    /// Set when closing is complete (pending failed, room left).
    done: AtomicBool,
    /// Set when the application is done with the peer's events: its
    /// [`PeerEvents`] yielded `None` after the close, or was dropped.
    /// Wakes `done_notify` too.
    events_done: AtomicBool,
    done_notify: Notify,
    /// The events waiting for the application (the reader task queues
    /// them, [`PeerEvents`] takes them).
    pub(crate) events: EventQueue,
    leave: Mutex<Option<Weak<dyn Leave>>>,
    /// What the remote makes this side hold (bytes, unanswered requests).
    pub(crate) budget: Arc<Budget>,
    /// Where the peer's remote-triggered warnings count (its client's
    /// address, or this peer), and whether it caused any.
    pub(crate) source: Source,
    pub(crate) warned: AtomicBool,
    /// The incoming rate limits, if any (taken by the reader task only);
    /// boxed, so that a peer without them does not carry their size.
    rate: Option<Box<Mutex<Limiter>>>,
    /// [`PeerConfig::fan_out_rate`]: what broadcasts on this peer's behalf
    /// spend (taken by them and by the reader task).
    fan_out: Option<Box<Mutex<FanOut>>>,
    /// [`PeerConfig::max_presence_bytes`].
    pub(crate) max_presence_bytes: usize,
    /// Invalid messages received so far.
    invalid: AtomicU32,
    /// The peer's metric handles (nothing without the `metrics` feature).
    pub(crate) metrics: PeerMetrics,
    /// Who the peer is, if its admission said ([`Identity`]).
    pub(crate) identity: Option<Box<IdentitySlot>>,
}

impl Core {
    pub(crate) fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    pub(crate) fn close_reason(&self) -> Option<&CloseReason> {
        self.reason.get()
    }

    pub(crate) fn set_leave(&self, room: Weak<dyn Leave>) {
        *lock(&self.leave) = Some(room);
    }

    /// Queues a frame to the remote without counting it: a broadcast
    /// counts its deliveries at once ([`PeerMetrics::sent_many`]).
    pub(crate) fn send_uncounted(&self, frame: Frame) -> Result<(), TransportError> {
        self.sink.send(frame)
    }

    /// Queues a frame to the remote.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let sent = meter::Sent::of(frame.as_bytes());
        let result = self.sink.send(frame);
        if result.is_ok() {
            self.metrics.sent(sent);
        }
        result
    }

    /// Closes the peer once: records why, closes the transport when asked
    /// (a local close), fails every pending request, leaves the room, wakes
    /// whoever waits. Returns whether this call closed it.
    pub(crate) fn finish(self: &Arc<Self>, reason: CloseReason, close_transport: bool) -> bool {
        let code = reason.code.unwrap_or(close_code::PROTOO_CLOSED);
        let text = close_transport.then(|| reason.reason.clone());
        if self.reason.set(reason).is_err() {
            return false;
        }
        if let Some(reason) = self.reason.get() {
            self.metrics.closed(reason);
        }
        let failed = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.map)
        };
        // Dropping the senders fails each waiting request with PeerClosed.
        drop(failed);
        // Leave the room before the remote can see the close: a client that
        // reconnects at once must not find its old self still listed.
        let room = lock(&self.leave).take().and_then(|room| room.upgrade());
        if let Some(room) = room {
            room.leave(self);
        }
        if let Some(text) = text {
            self.sink.close(code, &text);
        }
        self.done.store(true, Ordering::Release);
        self.done_notify.notify_waiters();
        // Events queued before the close are still handed out, then the
        // close.
        self.events.close();
        if self.warned.load(Ordering::Relaxed) {
            protoo_transport::log::closed(self.source);
        }
        tracing::debug!(
            peer_id = %Remote(&self.id),
            room_id = %Remote(self.room_id.as_deref().unwrap_or("")),
            reason = %Remote(self.reason.get().map(ToString::to_string).unwrap_or_default()),
            "peer closed"
        );
        true
    }

    pub(crate) fn close_locally(self: &Arc<Self>, code: u16, reason: &str) {
        self.finish(CloseReason::new(Some(code), reason, Initiator::Local), true);
    }

    /// Closes the peer because a new one took its id: 4000
    /// [`REPLACED_REASON`], [`Initiator::Replaced`].
    pub(crate) fn close_replaced(self: &Arc<Self>) {
        let reason = CloseReason::new(
            Some(close_code::PROTOO_CLOSED),
            REPLACED_REASON,
            Initiator::Replaced,
        );
        self.finish(reason, true);
    }

    /// The application is done with the peer's events (see `events_done`).
    pub(crate) fn events_handled(&self) {
        if !self.events_done.swap(true, Ordering::AcqRel) {
            self.done_notify.notify_waiters();
        }
    }

    /// Waits until the application is done with the peer's events.
    pub(crate) async fn events_finished(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.events_done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    async fn closed(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn pending_len(&self) -> usize {
        lock(&self.pending).map.len()
    }

    /// Registers a request: its id, its sequence number, where its response
    /// will come, and how many requests were pending before it.
    fn register(&self) -> Result<(u32, u64, oneshot::Receiver<Outcome>, usize), RequestError> {
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if pending.closed {
            return Err(RequestError::PeerClosed);
        }
        let before = pending.map.len();
        let Pending {
            map, rng, next_seq, ..
        } = &mut *pending;
        let id = rng.free_id(map);
        let seq = *next_seq;
        *next_seq += 1;
        map.insert(id, (seq, tx));
        Ok((id, seq, rx, before))
    }

    /// Removes a request's entry if it is still the one registered.
    fn unregister(&self, id: u32, seq: u64) {
        let removed = {
            let mut pending = lock(&self.pending);
            match pending.map.get(&id) {
                Some((s, _)) if *s == seq => pending.map.remove(&id),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Counts an invalid message; closes the peer (1008) once it reaches
    /// [`PeerConfig::max_invalid_messages`].
    fn invalid_message(self: &Arc<Self>) {
        let count = self
            .invalid
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if let Some(max) = self.max_invalid_messages
            && count >= max
            && !self.is_closed()
        {
            // Once per connection, but a remote may reconnect at will.
            remote_warn!(self, count, "too many invalid messages: closing the peer");
            self.close_locally(close_code::POLICY_VIOLATION, TOO_MANY_INVALID_REASON);
        }
    }

    /// Whether one more incoming message of `len` bytes is within the rate
    /// limits.
    fn within_rate(&self, len: usize) -> bool {
        !self.fan_out_in_debt()
            && self
                .rate
                .as_ref()
                .is_none_or(|limiter| lock(limiter).allow(len))
    }

    /// Whether this peer owes fan-out bytes ([`PeerConfig::fan_out_rate`]):
    /// nothing more is broadcast on its behalf, and what it sends is
    /// refused, until it has paid them back.
    pub(crate) fn fan_out_in_debt(&self) -> bool {
        self.fan_out
            .as_ref()
            .is_some_and(|fan_out| lock(fan_out).in_debt())
    }

    /// Charges `bytes` delivered on this peer's behalf to its fan-out
    /// budget, if it has one.
    pub(crate) fn charge_fan_out(&self, bytes: u64) {
        if let Some(fan_out) = &self.fan_out {
            lock(fan_out).charge(bytes);
        }
    }

    /// Hands a response to the request waiting for it.
    fn complete(self: &Arc<Self>, response: Response, len: usize) {
        let key = response.id.as_i64().and_then(|n| u32::try_from(n).ok());
        let entry = key.and_then(|key| lock(&self.pending).map.remove(&key));
        match entry {
            Some((_, tx)) => {
                self.metrics.received(Kind::Response, len);
                // The requester may have given up meanwhile: nothing to do.
                let _ = tx.send(response.result);
            }
            None => {
                remote_warn!(
                    self,
                    id = %Remote(&response.id),
                    "received response does not match any sent request"
                );
                meter::invalid("unknown_response");
                self.invalid_message();
            }
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("room_id", &self.room_id)
            .field("closed", &self.close_reason())
            .field("pending", &self.pending_len())
            .finish()
    }
}

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
fn read(core: Arc<Core>, mut stream: Box<dyn FrameStream>) -> impl Future<Output = ()> + Send {
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
fn receive(core: &Arc<Core>, text: Bytes) -> Option<Box<PeerEvent>> {
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
                        core.metrics.answered(Ended::Rejected(503));
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
            core.metrics.answered(Ended::Rejected(code));
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
fn not_allowed(core: &Arc<Core>, message: Message) {
    core.budget.count_refused();
    match message {
        Message::Request(request) => {
            meter::not_allowed(true);
            core.metrics
                .answered(Ended::Rejected(METHOD_NOT_ALLOWED_CODE));
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
    core: &'a Arc<Core>,
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
struct EndOfEvents<'a>(&'a Core);

impl Drop for EndOfEvents<'_> {
    fn drop(&mut self) {
        self.0.events.close();
    }
}

/// A peer built and not yet started: its reader task is spawned by
/// [`Start::spawn`], once the peer is where it belongs (its room).
pub(crate) struct Start {
    core: Arc<Core>,
    /// Taken by [`Start::spawn`].
    stream: Option<Box<dyn FrameStream>>,
    handle: Handle,
    /// The cluster node the peer is on, for its span (rooms spanning
    /// several processes).
    node_id: Option<Arc<str>>,
}

impl Start {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The span the peer's reader task runs in.
    fn span(&self) -> tracing::Span {
        match &self.node_id {
            None => tracing::debug_span!(
                "protoo_peer",
                peer_id = %Remote(&self.core.id),
                room_id = %Remote(self.core.room_id.as_deref().unwrap_or("")),
            ),
            Some(node_id) => tracing::debug_span!(
                "protoo_peer",
                peer_id = %Remote(&self.core.id),
                room_id = %Remote(self.core.room_id.as_deref().unwrap_or("")),
                node_id = %node_id,
            ),
        }
    }

    /// Names the cluster node the peer is on, in its span.
    pub(crate) fn set_node_id(&mut self, node_id: Option<Arc<str>>) {
        self.node_id = node_id;
    }

    pub(crate) fn spawn(mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let span = self.span();
        tracing::debug!(parent: &span, "peer created");
        self.handle
            .spawn(read(self.core.clone(), stream).instrument(span));
    }

    /// Like [`Start::spawn`], but the peer reads nothing before the
    /// application is done with the events of `replaced`, the peer it
    /// replaces (at most [`REPLACEMENT_WAIT`]), and the cluster backend
    /// admitted it (`gate`; at most [`CLUSTER_ADMISSION_WAIT`]): whatever
    /// the application does on the old peer's close (telling the others it
    /// left), here or on another node, happens before the newcomer's first
    /// request is handed out.
    pub(crate) fn spawn_after(
        mut self,
        replaced: Option<Arc<Core>>,
        gate: Option<crate::cluster::ClusterFuture<crate::cluster::Admission>>,
    ) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let span = self.span();
        tracing::debug!(parent: &span, "peer created, waiting for its admission");
        let core = self.core.clone();
        self.handle.spawn(
            async move {
                if let Some(replaced) = replaced {
                    let waited =
                        tokio::time::timeout(REPLACEMENT_WAIT, replaced.events_finished()).await;
                    drop(replaced);
                    if waited.is_err() {
                        tracing::debug!("the replaced peer's events were not handled in time");
                    }
                }
                if let Some(gate) = gate {
                    match tokio::time::timeout(CLUSTER_ADMISSION_WAIT, gate).await {
                        Ok(crate::cluster::Admission::Refused) => {
                            tracing::debug!("peer id already in the room on another node: refused");
                            core.close_locally(
                                close_code::PROTOO_CLOSED,
                                DUPLICATE_ELSEWHERE_REASON,
                            );
                        }
                        Ok(_) => {}
                        Err(_) => tracing::debug!("the cluster admission did not answer in time"),
                    }
                }
                read(core, stream).await;
            }
            .instrument(span),
        );
    }
}

/// How long a peer admitted in a clustered room waits, at most, for the
/// cluster backend's admission before it reads anyway (the backend's own
/// bound, a replacement on another node included, is shorter).
pub const CLUSTER_ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The close reason of a peer refused because a peer with its id is in the
/// room on another node ([`DuplicatePolicy::Refuse`](crate::DuplicatePolicy::Refuse)).
pub const DUPLICATE_ELSEWHERE_REASON: &str = "peer id already in the room";

/// How long a peer that replaced another waits, at most, for the
/// application to handle the old peer's close before its own events flow.
pub const REPLACEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Start {
    /// Never started (see [`Drop`]).
    fn unused(&self) -> bool {
        self.stream.is_some()
    }
}

impl Drop for Start {
    /// Never started: no event will come (as when the reader task ends).
    fn drop(&mut self) {
        if self.unused() {
            self.core.events.close();
        }
    }
}

/// What every way of creating a peer checks first: a non-empty id and a
/// Tokio runtime to run its reader on. A refused peer's transport is closed
/// (4000), as protoo does.
pub(crate) fn admission(id: &str, transport: &Transport) -> Result<Handle, CoreError> {
    let refused = |error| {
        transport.close();
        Err(error)
    };
    if id.is_empty() {
        return refused(CoreError::EmptyId);
    }
    Handle::try_current().or_else(|_| refused(CoreError::NoRuntime))
}

/// Builds a peer without starting it.
pub(crate) fn build<D>(
    id: Arc<str>,
    room_id: Option<Arc<str>>,
    transport: Transport,
    data: D,
    config: &PeerConfig,
    handle: Handle,
    identity: Option<Box<IdentitySlot>>,
) -> (Peer<D>, PeerEvents, Start) {
    let requests = transport.request_tracker().cloned();
    let source = Source::of(transport.remote_addr());
    let (sink, stream) = transport.into_parts();
    let core = Arc::new(Core {
        id,
        room_id,
        sink,
        requests,
        request_timeout: config.request_timeout,
        max_invalid_messages: config.max_invalid_messages,
        pending: Mutex::new(Pending {
            map: HashMap::new(),
            closed: false,
            next_seq: 0,
            rng: IdRng::new(),
        }),
        reason: OnceLock::new(),
        done: AtomicBool::new(false),
        events_done: AtomicBool::new(false),
        done_notify: Notify::new(),
        events: EventQueue::new(config.event_queue),
        leave: Mutex::new(None),
        budget: Budget::new(config.incoming_budget, config.max_unanswered_requests),
        source,
        warned: AtomicBool::new(false),
        rate: Limiter::new(config.message_rate, config.byte_rate)
            .map(|limiter| Box::new(Mutex::new(limiter))),
        fan_out: config
            .fan_out_rate
            .map(|rate| Box::new(Mutex::new(FanOut::new(rate)))),
        max_presence_bytes: config.max_presence_bytes,
        invalid: AtomicU32::new(0),
        metrics: PeerMetrics::new(),
        identity,
    });
    let peer = Peer {
        inner: Arc::new(PeerInner {
            core: core.clone(),
            data,
        }),
    };
    let events = PeerEvents::new(core.clone());
    let start = Start {
        core,
        stream: Some(stream),
        handle,
        node_id: None,
    };
    (peer, events, start)
}

/// One protoo peer: the other end of one transport.
///
/// A cheap handle (an `Arc` inside): clone it into every task that sends to
/// the peer. What the peer receives arrives in its [`PeerEvents`], returned
/// next to it by [`Peer::new`] or [`Rooms::admit`](crate::Rooms::admit).
///
/// A peer works inside a [`Room`](crate::Room) or on its own. It stays open
/// until either side closes it; when every `Peer` handle and its
/// [`PeerEvents`] are dropped (nobody can use it any more), it closes itself
/// as [`Peer::close`] does.
///
/// # Application data
///
/// protoo gives each peer a free-form `peer.data` object. Here each peer
/// carries a value of a type `D` of your choosing, set when it is created and
/// read with [`Peer::data`]. It is shared by every handle, so state that
/// changes goes behind a lock or in atomics inside `D`:
///
/// ```
/// use std::sync::Mutex;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use protoo_core::{Peer, PeerConfig};
/// use protoo_transport::memory;
///
/// #[derive(Debug, Default)]
/// struct PeerData {
///     display_name: Mutex<Option<String>>,
///     messages: AtomicU32,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), protoo_core::CoreError> {
/// let (transport, _remote) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
/// let (peer, _events) = Peer::new("alice", transport, PeerData::default(), PeerConfig::default())?;
/// *peer.data().display_name.lock().unwrap() = Some("Alice".into());
/// peer.data().messages.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(peer.data().display_name.lock().unwrap().as_deref(), Some("Alice"));
/// # Ok(())
/// # }
/// ```
///
/// Handles compare equal when they are the same peer (not merely the same
/// id): a peer that replaced another with its id is a different peer.
pub struct Peer<D = ()> {
    inner: Arc<PeerInner<D>>,
}

struct PeerInner<D> {
    core: Arc<Core>,
    data: D,
}

impl<D> Drop for PeerInner<D> {
    fn drop(&mut self) {
        self.core.events.handles_dropped();
    }
}

impl<D: Send + Sync + 'static> Peer<D> {
    /// Creates a peer on `transport`, outside any room, and starts reading
    /// it (one task, spawned on the current Tokio runtime).
    ///
    /// Fails with [`CoreError::EmptyId`] for an empty id and
    /// [`CoreError::NoRuntime`] outside a Tokio runtime; the transport is
    /// then closed. The runtime needs its time driver (request timeouts), as
    /// `#[tokio::main]` and `#[tokio::test]` runtimes have.
    pub fn new(
        id: impl Into<String>,
        transport: Transport,
        data: D,
        config: PeerConfig,
    ) -> Result<(Self, PeerEvents), CoreError> {
        let id: String = id.into();
        let handle = admission(&id, &transport)?;
        let (peer, events, start) = build(id.into(), None, transport, data, &config, handle, None);
        start.spawn();
        Ok((peer, events))
    }
}

impl<D> Peer<D> {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// The peer id (never empty).
    pub fn id(&self) -> &str {
        &self.inner.core.id
    }

    /// The application data given when the peer was created.
    pub fn data(&self) -> &D {
        &self.inner.data
    }

    /// Whether the peer is closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }

    /// Why the peer closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.core.close_reason().cloned()
    }

    /// Whether `a` and `b` are handles to the same peer.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// How many requests to this peer wait for their response.
    pub fn pending_requests(&self) -> usize {
        self.inner.core.pending_len()
    }

    /// Bytes of incoming frames this peer makes this side hold: its events
    /// waiting for the application and its requests not yet answered (see
    /// [`PeerConfig::incoming_budget`]).
    pub fn incoming_bytes(&self) -> usize {
        self.inner.core.budget.held()
    }

    /// Requests received from this peer and not yet answered.
    pub fn unanswered_requests(&self) -> usize {
        self.inner.core.budget.requests()
    }

    /// Incoming requests answered at once and notifications dropped so far
    /// because this peer was over its budget or rate limits.
    pub fn refused_messages(&self) -> u64 {
        self.inner.core.budget.refused()
    }

    /// Bytes queued to this peer and not yet written (see
    /// [`FrameSink::queued_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        self.inner.core.sink.queued_bytes()
    }

    /// Sends a request and waits for its response: the response data, or
    /// why there is none.
    ///
    /// `data` is anything serde can serialise; `&()` (or any value
    /// JavaScript finds falsy) sends `{}`. The request is registered as
    /// pending before it is queued, so the response can never arrive first.
    /// It fails with [`RequestError::Rejected`] when the remote answers an
    /// error, [`RequestError::Timeout`] after
    /// [`PeerConfig::request_timeout`], and [`RequestError::PeerClosed`] when
    /// the peer closes first. Cancel-safe: dropping the future forgets the
    /// request (a late response is then logged and dropped).
    pub async fn request(
        &self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<Payload, RequestError> {
        let core = &self.inner.core;
        let (id, seq, rx, before) = core.register()?;
        let mut guard = PendingGuard {
            core,
            id,
            seq,
            done: false,
        };
        let frame = encode::request(&Id::from(id), method, data).map_err(RequestError::Encode)?;
        tracing::debug!(peer_id = %Remote(&core.id), method, id, "request sent");
        let started = Started::now();
        core.send(frame).map_err(|error| match error {
            TransportError::Closed(_) => RequestError::PeerClosed,
            other => RequestError::Send(other),
        })?;
        let timeout = crate::config::request_timeout(core.request_timeout, before);
        let outcome = tokio::time::timeout(timeout, rx).await;
        guard.done = outcome.is_ok();
        let (result, ended) = match outcome {
            Ok(Ok(Ok(data))) => (Ok(data), Ended::Ok),
            Ok(Ok(Err(error))) => {
                let code = error.code().unwrap_or(0);
                (Err(RequestError::Rejected(error)), Ended::Rejected(code))
            }
            Ok(Err(_)) => (Err(RequestError::PeerClosed), Ended::Closed),
            Err(_) => {
                tracing::debug!(peer_id = %Remote(&core.id), method, id, "request timeout");
                (Err(RequestError::Timeout), Ended::Timeout)
            }
        };
        core.metrics.request_ended(started, ended);
        result
    }

    /// [`Peer::request`], with the response data deserialised into `R`.
    pub async fn request_as<R: DeserializeOwned>(
        &self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<R, RequestError> {
        self.request(method, data)
            .await?
            .deserialize()
            .map_err(RequestError::InvalidResponse)
    }

    /// Sends a notification (no response). `data` as in [`Peer::request`].
    pub fn notify(&self, method: &str, data: &(impl Serialize + ?Sized)) -> Result<(), PeerError> {
        let frame = encode::notification(method, data)?;
        tracing::debug!(peer_id = %Remote(self.id()), method, "notification sent");
        self.send_frame(frame).map_err(PeerError::from_transport)
    }

    /// Queues an already-encoded frame, for instance a notification encoded
    /// once for many peers. On failure the frame comes back inside the error.
    pub fn send_frame(&self, frame: Frame) -> Result<(), TransportError> {
        self.inner.core.send(frame)
    }

    /// Closes the peer with protoo's 4000 `closed by protoo-server` (after
    /// which the JavaScript client does not reconnect). See
    /// [`Peer::close_with`].
    pub fn close(&self) {
        self.close_with(close_code::PROTOO_CLOSED, PROTOO_CLOSED_REASON);
    }

    /// Closes the peer with a close code and reason: closes the transport
    /// (frames already queued are still sent first), fails every pending
    /// request with [`RequestError::PeerClosed`], takes the peer out of its
    /// room, and reports [`PeerEvent::Closed`] with a
    /// [`Initiator::Local`] reason. Only the first close has an effect.
    pub fn close_with(&self, code: u16, reason: &str) {
        self.inner.core.close_locally(code, reason);
    }

    /// Who the peer is, if its admission gave an identity
    /// ([`Admit::identity`](crate::Admit::identity)): the latest one, after
    /// [`Peer::refresh_identity`].
    pub fn identity(&self) -> Option<Arc<Identity>> {
        Some(self.inner.core.identity.as_deref()?.identity())
    }

    /// Replaces the peer's identity by a fresh one (a new token, verified
    /// by the application): moves the expiry, and the allowed methods with
    /// it. Refused ([`CoreError::IdentityMismatch`]) for a peer without an
    /// identity or an identity of another subject or room: a peer cannot
    /// become someone else.
    pub fn refresh_identity(&self, identity: Identity) -> Result<(), CoreError> {
        let core = &self.inner.core;
        let Some(slot) = core.identity.as_deref() else {
            return Err(CoreError::IdentityMismatch(core.id.to_string()));
        };
        let earlier = slot
            .refresh(identity)
            .map_err(|_| CoreError::IdentityMismatch(core.id.to_string()))?;
        if let Some(at) = earlier {
            let room = lock(&core.leave).as_ref().and_then(Weak::upgrade);
            if let (Some(expiries), Ok(handle)) =
                (room.and_then(|room| room.expiries()), Handle::try_current())
            {
                expiries.expire(core, at, &handle);
            }
        }
        tracing::debug!(peer_id = %Remote(&core.id), "identity refreshed");
        Ok(())
    }

    /// Waits until the peer is closed (and out of its room, its pending
    /// requests failed).
    pub async fn closed(&self) {
        self.inner.core.closed().await;
    }
}

/// Forgets a request's pending entry when its future ends without a
/// response (timeout, error, or the caller dropped it).
struct PendingGuard<'a> {
    core: &'a Core,
    id: u32,
    seq: u64,
    done: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.core.unregister(self.id, self.seq);
        }
    }
}

impl<D> Clone for Peer<D> {
    fn clone(&self) -> Self {
        Peer {
            inner: self.inner.clone(),
        }
    }
}

impl<D> PartialEq for Peer<D> {
    fn eq(&self, other: &Self) -> bool {
        Peer::ptr_eq(self, other)
    }
}

impl<D> Eq for Peer<D> {}

impl<D> fmt::Debug for Peer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.inner.core;
        f.debug_struct("Peer")
            .field("id", &core.id)
            .field("room_id", &core.room_id)
            .field("closed", &core.is_closed())
            .field("pending_requests", &core.pending_len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader task's future is what every idle peer holds (plus the
    /// tokio task header, about 128 bytes): keep it small.
    #[tokio::test]
    async fn reader_task_future_size() {
        let (transport, _remote) = protoo_transport::memory::pair(1024);
        let (_peer, _events, mut start) = build(
            "a".into(),
            None,
            transport,
            (),
            &PeerConfig::default(),
            Handle::current(),
            None,
        );
        let (core, stream) = (start.core.clone(), start.stream.take().unwrap());
        let future = read(core, stream).instrument(tracing::Span::none());
        let size = std::mem::size_of_val(&future);
        println!(
            "reader task future: {size} bytes; PeerEvent: {} bytes; Core: {} bytes",
            std::mem::size_of::<PeerEvent>(),
            std::mem::size_of::<Core>()
        );
        assert!(size <= 128, "reader task future grew to {size} bytes");
    }

    /// A peer whose reader task never ran reports the end of its events,
    /// as when the task ends.
    #[tokio::test]
    async fn a_peer_never_started_ends_its_events() {
        let (transport, _remote) = protoo_transport::memory::pair(1024);
        let (_peer, mut events, start) = build(
            "a".into(),
            None,
            transport,
            (),
            &PeerConfig::default(),
            Handle::current(),
            None,
        );
        drop(start);
        let Some(PeerEvent::Closed(reason)) = events.next().await else {
            panic!("expected the close")
        };
        assert_eq!(reason.reason, "peer task ended");
        assert!(events.next().await.is_none());
    }

    /// A full event queue stops the reader: what the remote sends next
    /// (here the response to a request) waits until the application takes
    /// an event.
    #[tokio::test]
    async fn a_full_event_queue_stops_the_reader() {
        let (transport, mut remote) =
            protoo_transport::memory::pair(protoo_transport::memory::DEFAULT_QUEUE_LIMIT);
        let config = PeerConfig::default().with_event_queue(1);
        let (peer, mut events) = Peer::new("p", transport, (), config).unwrap();
        let request = tokio::spawn({
            let peer = peer.clone();
            async move { peer.request("q", &()).await }
        });
        let Inbound::Text(text) = remote.recv().await else {
            panic!("closed")
        };
        let Ok(Message::Request(sent)) = Message::decode(text) else {
            panic!("not a request")
        };
        for n in 0..2 {
            let text = format!(r#"{{"notification":true,"method":"n{n}"}}"#);
            remote.send(Frame::from(text)).unwrap();
        }
        let response = format!(r#"{{"response":true,"id":{},"ok":true}}"#, sent.id);
        remote.send(Frame::from(response)).unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!request.is_finished(), "the reader read past a full queue");
        assert_eq!(peer.core().events.len(), 1);
        for n in 0..2 {
            let Some(PeerEvent::Notification(notification)) = events.next().await else {
                panic!("expected a notification")
            };
            assert_eq!(notification.method(), format!("n{n}"));
        }
        assert!(request.await.unwrap().is_ok());
    }
}
