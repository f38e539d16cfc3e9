//! [`Peer`]: the public handle of one protoo peer (requests and
//! notifications to it, its close, its data and identity). Its shared
//! state is in `state`, its reader task in `reader`, how it is built and
//! started in `start`.

mod events;
mod expiry;
mod reader;
mod start;
mod state;

pub use events::PeerEvents;
pub(crate) use expiry::Expiries;
pub use start::{CLUSTER_ADMISSION_WAIT, DUPLICATE_ELSEWHERE_REASON, REPLACEMENT_WAIT};
pub(crate) use start::{Start, admission, build};
pub(crate) use state::{Leave, PeerState, remote_warn};

use std::fmt;
use std::sync::{Arc, Weak};

use protoo_codec::{Frame, Id, Payload, encode};
use protoo_transport::log::Remote;
use protoo_transport::{CloseReason, PROTOO_CLOSED_REASON, Transport, TransportError, close_code};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;

use crate::identity::Identity;
use crate::metrics::{RequestEnd, Started};
use crate::sync::lock;
use crate::{CoreError, PeerConfig, PeerError, RequestError};

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
    core: Arc<PeerState>,
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
        let (peer, events, start) = build(
            id.into(),
            None,
            transport,
            data,
            &config,
            handle,
            None,
            None,
            false,
        );
        start.spawn();
        Ok((peer, events))
    }
}

impl<D> Peer<D> {
    pub(crate) fn core(&self) -> &Arc<PeerState> {
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
    /// [`FrameSink::queued_bytes`](protoo_transport::FrameSink::queued_bytes)).
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
            Ok(Ok(Ok(data))) => (Ok(data), RequestEnd::Ok),
            Ok(Ok(Err(error))) => {
                let code = error.code().unwrap_or(0);
                (
                    Err(RequestError::Rejected(error)),
                    RequestEnd::Rejected(code),
                )
            }
            Ok(Err(_)) => (Err(RequestError::PeerClosed), RequestEnd::Closed),
            Err(_) => {
                tracing::debug!(peer_id = %Remote(&core.id), method, id, "request timeout");
                (Err(RequestError::Timeout), RequestEnd::Timeout)
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
    /// room, and reports [`PeerEvent::Closed`](crate::PeerEvent::Closed) with a
    /// [`Initiator::Local`](protoo_transport::Initiator::Local) reason. Only the first close has an effect.
    pub fn close_with(&self, code: u16, reason: &str) {
        self.inner.core.close_locally(code, reason);
    }

    /// Who the peer is, if its admission gave an identity
    /// ([`Admit::identity`](crate::Admit::identity)): the latest one, after
    /// [`Peer::refresh_identity`]. Made anew on each call from what the
    /// peer keeps (its ids and allowed methods shared, the display name
    /// copied).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        let core = &self.inner.core;
        let slot = core.identity.as_deref()?;
        Some(Arc::new(slot.identity(&core.id, core.room_id.as_ref())))
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
        let at = slot
            .refresh(identity, &core.id, core.room_id.as_ref())
            .map_err(|_| CoreError::IdentityMismatch(core.id.to_string()))?;
        // The new expiry replaces the peer's entry in the queue.
        let room = lock(&core.leave).as_ref().and_then(Weak::upgrade);
        if let Some(expiries) = room.and_then(|room| room.expiries()) {
            expiries.expire(core, at, Handle::try_current().ok().as_ref());
        }
        tracing::debug!(peer_id = %Remote(&core.id), "identity refreshed");
        Ok(())
    }

    /// Resumes the peer's session on a new `transport` (see
    /// [`PeerConfig::resume_window`]): what was held for the peer since its
    /// transport was lost is written to the new one first, in order, then
    /// everything sent from now on; its events go on, with
    /// [`PeerEvent::Resumed`](crate::PeerEvent::Resumed). A transport still
    /// open is taken over: closed with 4000
    /// [`TAKEN_OVER_REASON`](crate::TAKEN_OVER_REASON), what its remote did
    /// not confirm written again on the new one.
    ///
    /// For a peer outside any room (a client that reconnects); in a room,
    /// [`Rooms::admit`](crate::Rooms::admit) resumes a peer's session by
    /// itself. Fails with [`CoreError::NotResumable`] (the transport closed)
    /// for a peer without a window or whose session ended.
    pub fn resume(&self, transport: Transport) -> Result<(), CoreError> {
        let core = &self.inner.core;
        let Some(session) = core.session.as_ref().filter(|_| !core.is_closed()) else {
            transport.close();
            return Err(CoreError::NotResumable);
        };
        match session.resume(transport) {
            Ok(missed) => {
                tracing::debug!(peer_id = %Remote(&core.id), missed, "session resumed");
                Ok(())
            }
            Err(transport) => {
                transport.close();
                Err(CoreError::NotResumable)
            }
        }
    }

    /// Whether the peer's transport was lost and its session waits for a
    /// new one ([`PeerConfig::resume_window`]).
    pub fn is_disconnected(&self) -> bool {
        self.inner
            .core
            .session
            .as_ref()
            .is_some_and(|session| session.is_detached())
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
    core: &'a PeerState,
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
    use protoo_codec::Message;
    use protoo_transport::Inbound;
    use tracing::Instrument;

    use super::reader::read;
    use super::*;
    use crate::events::PeerEvent;

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
            None,
            false,
        );
        let (core, stream) = (start.core.clone(), start.stream.take().unwrap());
        let future = read(core, stream).instrument(tracing::Span::none());
        let size = std::mem::size_of_val(&future);
        println!(
            "reader task future: {size} bytes; PeerEvent: {} bytes; PeerState: {} bytes",
            std::mem::size_of::<PeerEvent>(),
            std::mem::size_of::<PeerState>()
        );
        assert!(size <= 128, "reader task future grew to {size} bytes");
        // With its `Arc`'s two counts, 448 bytes: jemalloc's (the room
        // example's allocator) size class of 448 rather than 512.
        println!(
            "Budget: {} B, Limiter: {} B, FanOut: {} B, PeerInner<()>: {} B, Session: {} B",
            std::mem::size_of::<crate::budget::Budget>(),
            std::mem::size_of::<std::sync::Mutex<crate::rate::Limiter>>(),
            std::mem::size_of::<std::sync::Mutex<crate::rate::FanOut>>(),
            std::mem::size_of::<PeerInner<()>>(),
            std::mem::size_of::<crate::session::Session>(),
        );
        let state = std::mem::size_of::<PeerState>();
        assert!(state <= 432, "PeerState grew to {state} bytes");
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
            None,
            false,
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
