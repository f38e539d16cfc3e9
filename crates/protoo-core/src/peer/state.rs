//! [`PeerState`]: the state of a peer shared by its handles, its reader task,
//! its events and the requests it hands out (pending requests, the close,
//! the event queue, the incoming budget and rate limits, the identity);
//! [`Leave`], how a closed peer leaves its room; and `remote_warn!`, the
//! peer's rate-limited remote-triggered warnings (which read the state's
//! fields).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use protoo_codec::{ErrorData, Frame, Payload, Response};
use protoo_transport::log::{Remote, Source};
use protoo_transport::{
    CloseReason, FrameSink, Initiator, REPLACED_REASON, Tracker, TransportError, close_code,
};
use tokio::sync::{Notify, oneshot};

use super::Expiries;
use crate::budget::Budget;
use crate::events::{self, EventQueue};
use crate::identity::IdentitySlot;
use crate::ids::IdRng;
use crate::metrics::{self as meter, Kind, PeerMetrics};
use crate::rate::{FanOut, Limiter};
use crate::session::Session;
use crate::sync::lock;
use crate::{RequestError, TOO_MANY_INVALID_REASON};

// Warnings a remote can trigger (invalid frames, responses to unknown ids,
// binary messages, messages over budget or rate), limited per source
// through `protoo_transport::log`: the peer's client address when its
// transport names it (`Transport::with_remote_addr`), else the peer's
// connection. A remote cannot flood the log, reconnecting or not.

/// Logs a remote-triggered warning of the peer `$core` within the budget of
/// its source: at WARN while within it (after the summaries due), at DEBUG
/// beyond it. The peer's id is a field of every line.
macro_rules! remote_warn {
    ($core:expr, $($arg:tt)+) => {{
        $core.warned.store(true, std::sync::atomic::Ordering::Relaxed);
        protoo_transport::remote_warn!(
            $core.source,
            peer_id = %protoo_transport::log::Remote(&$core.id),
            $($arg)+
        )
    }};
}
pub(crate) use remote_warn;

/// What a response hands to the request waiting for it.
pub(crate) type Answer = Result<Payload, ErrorData>;

/// The room of a peer, told once when the peer closes so that it takes the
/// peer out. A trait object behind a `Weak` rather than a boxed closure:
/// no allocation per peer.
pub(crate) trait Leave: Send + Sync {
    /// Takes the closed peer `core` out of the room.
    fn leave(self: Arc<Self>, core: &Arc<PeerState>);

    /// The expiry queue of the room's registry (peers with an identity).
    fn expiries(&self) -> Option<Arc<Expiries>>;

    /// Lists the peer `core` with `info` again: what it was listed with on
    /// the node its session moved from.
    fn restore_presence(self: Arc<Self>, core: &Arc<PeerState>, info: Payload);
}

/// Requests waiting for their response.
pub(crate) struct Pending {
    /// By request id: a sequence number telling apart two requests that got
    /// the same id one after the other, and where to send the response.
    pub(crate) map: HashMap<u32, (u64, oneshot::Sender<Answer>)>,
    /// Set when the peer closes: no request is registered after that.
    pub(crate) closed: bool,
    pub(crate) next_seq: u64,
    pub(crate) rng: IdRng,
}

/// The state of a peer shared by its handles, its reader task, its
/// [`PeerEvents`] and the [`IncomingRequest`]s it hands out. Independent of
/// the application data type.
pub(crate) struct PeerState {
    pub(crate) id: Arc<str>,
    pub(crate) room_id: Option<Arc<str>>,
    pub(crate) sink: Arc<dyn FrameSink>,
    /// Counts the incoming requests not yet answered, when the transport
    /// asks for it (graceful shutdown waits for them).
    pub(crate) requests: Option<Tracker>,
    /// [`PeerConfig::request_timeout`]: what a peer keeps of its config
    /// (the rest is used when it is built), as every idle peer holds it.
    pub(crate) request_timeout: Option<std::time::Duration>,
    /// [`PeerConfig::max_invalid_messages`] (0 and 1 close alike: the
    /// count is at least 1 when it is checked), 4 bytes with its `None`.
    pub(crate) max_invalid_messages: Option<std::num::NonZeroU32>,
    pub(crate) pending: Mutex<Pending>,
    /// Set once, by whoever closes the peer first.
    pub(crate) reason: OnceLock<CloseReason>,
    /// Set when closing is complete (pending failed, room left).
    pub(crate) done: AtomicBool,
    /// Set when the application is done with the peer's events: its
    /// [`PeerEvents`] yielded `None` after the close, or was dropped.
    /// Wakes `done_notify` too.
    pub(crate) events_done: AtomicBool,
    pub(crate) done_notify: Notify,
    /// The events waiting for the application (the reader task queues
    /// them, [`PeerEvents`] takes them).
    pub(crate) events: EventQueue,
    pub(crate) leave: Mutex<Option<Weak<dyn Leave>>>,
    /// What the remote makes this side hold (bytes, unanswered requests).
    pub(crate) budget: Arc<Budget>,
    /// Where the peer's remote-triggered warnings count (its client's
    /// address, or this peer), and whether it caused any.
    pub(crate) source: Source,
    pub(crate) warned: AtomicBool,
    /// The incoming rate limits, if any (taken by the reader task only);
    /// boxed, so that a peer without them does not carry their size.
    pub(crate) rate: Option<Box<Mutex<Limiter>>>,
    /// [`PeerConfig::fan_out_rate`]: what broadcasts on this peer's behalf
    /// spend (taken by them and by the reader task).
    pub(crate) fan_out: Option<Box<Mutex<FanOut>>>,
    /// [`PeerConfig::max_presence_bytes`], at most `u32::MAX` (4 GiB,
    /// beyond any frame): 4 bytes rather than 8 put this state in a
    /// smaller allocator size class (448 bytes with its `Arc`, not 512).
    pub(crate) max_presence_bytes: u32,
    /// Invalid messages received so far.
    pub(crate) invalid: AtomicU32,
    /// The peer's metric handles (nothing without the `metrics` feature).
    pub(crate) metrics: PeerMetrics,
    /// Who the peer is, if its admission said ([`Identity`]).
    pub(crate) identity: Option<Box<IdentitySlot>>,
    /// The peer's session, with a resume window: `sink` is this one.
    pub(crate) session: Option<Arc<Session>>,
}

impl PeerState {
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

    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn pending_len(&self) -> usize {
        lock(&self.pending).map.len()
    }

    /// Registers a request: its id, its sequence number, where its response
    /// will come, and how many requests were pending before it.
    pub(crate) fn register(
        &self,
    ) -> Result<(u32, u64, oneshot::Receiver<Answer>, usize), RequestError> {
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
    pub(crate) fn unregister(&self, id: u32, seq: u64) {
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
    pub(crate) fn invalid_message(self: &Arc<Self>) {
        let count = self
            .invalid
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if let Some(max) = self.max_invalid_messages
            && count >= max.get()
            && !self.is_closed()
        {
            // Once per connection, but a remote may reconnect at will.
            remote_warn!(self, count, "too many invalid messages: closing the peer");
            self.close_locally(close_code::POLICY_VIOLATION, TOO_MANY_INVALID_REASON);
        }
    }

    /// Whether one more incoming message of `len` bytes is within the rate
    /// limits.
    pub(crate) fn within_rate(&self, len: usize) -> bool {
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
    pub(crate) fn complete(self: &Arc<Self>, response: Response, len: usize) {
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

impl events::Answer for PeerState {
    fn peer_id(&self) -> &str {
        &self.id
    }

    fn answer(&self, frame: Frame, outcome: meter::RequestEnd) -> Result<(), TransportError> {
        self.metrics.answered(outcome);
        self.send(frame)
    }
}

impl fmt::Debug for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerState")
            .field("id", &self.id)
            .field("room_id", &self.room_id)
            .field("closed", &self.close_reason())
            .field("pending", &self.pending_len())
            .finish()
    }
}
