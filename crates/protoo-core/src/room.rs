//! [`Room`]: a set of peers under their ids, with the room's data: admitting
//! a peer under the room's lock (with the duplicate-id policy), taking a
//! closed peer out, the members' presence, and closing the room (its peers
//! and the `on_close` hook). A room knows the registry holding it only
//! through [`RoomRegistry`], so that `rooms` depends on this module and not
//! the reverse.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use protoo_codec::Payload;
use protoo_transport::Transport;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::cluster::{Admission, ClusterBackend, ClusterFuture};
use crate::identity::{IdentitySlot, may_replace};
use crate::peer::Expiries;
use crate::peer::{Leave, PeerState, Start, build};
use crate::sync::lock;
use crate::{Broadcast, CoreError, Identity, Peer, PeerConfig, PeerEvents};

/// The hook run once when a room closes
/// ([`RoomsBuilder::on_close`](crate::RoomsBuilder::on_close)).
pub(crate) type OnClose<D, R> = dyn Fn(&Room<D, R>) + Send + Sync;

/// What a room asks of the registry holding it (the `rooms` module's
/// registry implements it): a trait, so that this module depends on no
/// registry type and `rooms` depends on `room` one way only.
pub(crate) trait RoomRegistry<D, R>: Send + Sync {
    /// The registry's expiry queue.
    fn expiries(&self) -> Arc<Expiries>;
    /// The registry's bound on sessions waiting for their peer.
    fn parked(&self) -> Arc<crate::session::Parked>;
    /// The registry room `room` has become removable (no peers, no
    /// reservations; its `emptied`-th time).
    fn room_emptied(self: Arc<Self>, room: &Room<D, R>, emptied: u64);
    /// Removes `room` if it is still registered under its id.
    fn forget(&self, room: &Room<D, R>);
}

/// What to do when a peer joins a room with the id of a peer already in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DuplicatePolicy {
    /// Refuse the newcomer and close its transport; the peer in the room
    /// stays (protoo's `createPeer`). The default.
    #[default]
    Refuse,
    /// Close the peer in the room and admit the newcomer in its place: a
    /// client that reconnects before the server noticed its old connection
    /// died gets in (mediasoup-demo's policy).
    ///
    /// The old peer closes with 4000 and
    /// [`REPLACED_REASON`](protoo_transport::REPLACED_REASON) (protoo-client
    /// does not reconnect), and its [`PeerEvent::Closed`](crate::PeerEvent::Closed)
    /// carries [`Initiator::Replaced`](protoo_transport::Initiator::Replaced).
    /// The newcomer is in the room at once, but its events (its first
    /// request) flow only once the application is done with the old peer's
    /// events (its loop came back after the close, or dropped them; at most
    /// [`REPLACEMENT_WAIT`](crate::REPLACEMENT_WAIT)): what the loop does on
    /// the close, such as telling the others `peerClosed`, happens before
    /// the newcomer's `join` is handled.
    Replace,
}

/// A set of peers by id, with broadcast.
///
/// A cheap handle (an `Arc` inside): clone it freely. Joining, leaving and
/// lookup are O(1); the peers sit behind a short synchronous lock that is
/// never held while waiting or sending.
///
/// A peer that closes leaves its room by itself. [`Room::close`] closes every
/// peer and then the room. Rooms come from a [`Rooms`](crate::Rooms)
/// registry ([`Rooms::admit`](crate::Rooms::admit)), which also closes and
/// removes a room when its last member leaves.
///
/// ```
/// use protoo_core::{Peer, PeerConfig, PeerEvent, Rooms};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rooms: Rooms = Rooms::new();
/// let (mut remotes, mut handlers) = (Vec::new(), Vec::new());
/// for id in ["alice", "bob", "carol"] {
///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
///     let joined = rooms.admit("lobby", id).join(server_side, ()).await?;
///     // Each peer's events go to its handler (dropping them closes the peer).
///     handlers.push(joined.events);
///     // The client end, as a peer too (no room needed).
///     remotes.push(Peer::new("server", client_side, (), PeerConfig::default())?);
/// }
/// let room = rooms.get("lobby").unwrap();
/// assert_eq!(room.len(), 3);
///
/// // Encoded once, the same bytes queued to bob and carol.
/// let sent = room.to_all().except(["alice"]).notify("chat", &serde_json::json!({"text": "hi"}))?;
/// assert_eq!(sent.delivered, 2);
///
/// let (_, bob_events) = &mut remotes[1];
/// let Some(PeerEvent::Notification(chat)) = bob_events.next().await else { panic!() };
/// assert_eq!((chat.method(), chat.payload().as_str()), ("chat", r#"{"text":"hi"}"#));
///
/// room.close();
/// assert!(room.is_closed() && room.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Room<D = (), R = ()> {
    pub(crate) inner: Arc<RoomInner<D, R>>,
}

pub(crate) struct RoomInner<D, R> {
    pub(crate) id: Arc<str>,
    pub(crate) state: Mutex<RoomState<D>>,
    /// The section lock of [`Room::exclusive`]: separate from `state`, so
    /// an exclusive section may use the room (broadcast, presence).
    pub(crate) section: Mutex<()>,
    /// The application's room data.
    data: R,
    /// Set once the room's close is complete (its peers closed).
    reported: AtomicBool,
    closed_notify: Notify,
    /// The registry holding this room, if any.
    pub(crate) registry: Weak<dyn RoomRegistry<D, R>>,
    /// The registry's cluster backend, if its rooms span several
    /// processes.
    pub(crate) cluster: Option<Arc<dyn ClusterBackend>>,
    /// The registry's hook, run once when the room closes.
    on_close: Option<Arc<OnClose<D, R>>>,
    /// Counts the room as open until it closes (nothing without the
    /// `metrics` feature).
    open: crate::metrics::OpenRoom,
}

pub(crate) struct RoomState<D> {
    pub(crate) peers: HashMap<Arc<str>, Peer<D>>,
    /// The listed peers' information, by id: a subset of `peers`' ids
    /// (see [`Room::set_presence`]).
    pub(crate) presence: HashMap<Arc<str>, Payload>,
    pub(crate) closed: bool,
    /// Places held (admissions not yet joined, and
    /// [`RoomHold`](crate::RoomHold)s): the room is not removed for being empty while any
    /// is outstanding.
    pub(crate) reserved: usize,
    /// Counts the times the room became empty, so a grace timer started
    /// for one emptiness does not remove the room after another.
    pub(crate) emptied: u64,
}

impl<D> RoomState<D> {
    /// No peers, no reservations, not closed: a registry may remove it.
    pub(crate) fn is_removable(&self) -> bool {
        self.peers.is_empty() && self.reserved == 0 && !self.closed
    }

    /// Called after the room lost a peer or a reservation: if that left it
    /// removable, counts a new emptiness and returns its number.
    pub(crate) fn emptiness(&mut self) -> Option<u64> {
        if self.is_removable() {
            self.emptied += 1;
            Some(self.emptied)
        } else {
            None
        }
    }
}

/// What an admission into a room came to.
pub(crate) enum Entry<D> {
    /// A new peer.
    New(Admitted<D>),
    /// The session of the peer in the room went on, on the new transport.
    Resumed {
        /// The peer, as it was.
        peer: Peer<D>,
        /// The newcomer's identity, fresher than the peer's.
        identity: Option<Identity>,
    },
}

/// A peer admitted into a room, to start once the room's lock is released.
pub(crate) struct Admitted<D> {
    pub(crate) peer: Peer<D>,
    pub(crate) events: PeerEvents,
    start: Start,
    replaced: Option<Peer<D>>,
    /// The cluster backend's admission, which the peer waits for before
    /// it reads.
    gate: Option<ClusterFuture<Admission>>,
}

impl<D> Admitted<D> {
    /// Closes the peer it replaced, then starts the new one: at once, or,
    /// after a replacement, once the application has handled the old
    /// peer's close (see [`DuplicatePolicy::Replace`]).
    pub(crate) fn start(self) -> (Peer<D>, PeerEvents) {
        let replaced = self.replaced.map(|old| {
            tracing::debug!(peer_id = %protoo_transport::log::Remote(old.id()), "peer replaced by a new one with its id");
            old.core().close_replaced();
            old.core().clone()
        });
        if replaced.is_none() && self.gate.is_none() {
            self.start.spawn();
        } else {
            self.start.spawn_after(replaced, self.gate);
        }
        (self.peer, self.events)
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Room<D, R> {
    pub(crate) fn create(
        id: Arc<str>,
        registry: Weak<dyn RoomRegistry<D, R>>,
        cluster: Option<Arc<dyn ClusterBackend>>,
        on_close: Option<Arc<OnClose<D, R>>>,
        data: R,
        reserved: usize,
    ) -> Self {
        tracing::debug!(room_id = %protoo_transport::log::Remote(&id), "room created");
        Room {
            inner: Arc::new(RoomInner {
                id,
                data,
                state: Mutex::new(RoomState {
                    peers: HashMap::new(),
                    presence: HashMap::new(),
                    closed: false,
                    reserved,
                    emptied: 0,
                }),
                section: Mutex::new(()),
                reported: AtomicBool::new(false),
                closed_notify: Notify::new(),
                registry,
                cluster,
                on_close,
                open: crate::metrics::OpenRoom::new(),
            }),
        }
    }

    /// Admits a new peer while the caller holds the room's lock. On failure
    /// the transport is closed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &self,
        state: &mut RoomState<D>,
        id: Arc<str>,
        mut transport: Transport,
        data: D,
        config: &PeerConfig,
        policy: DuplicatePolicy,
        handle: Handle,
        identity: Option<Identity>,
    ) -> Result<Entry<D>, CoreError> {
        if state.closed {
            transport.close();
            return Err(CoreError::RoomClosed);
        }
        if let Some(old) = state.peers.get(&id)
            && let Some(session) = &old.core().session
            && !old.is_closed()
            && may_replace(old.identity().as_deref(), identity.as_ref())
        {
            // The same peer (and identity) back within its window, or on a
            // new connection while the old one still looks open: its
            // session goes on, on the new transport. The room sees nothing.
            match session.resume(transport) {
                Ok(missed) => {
                    tracing::debug!(
                        room_id = %protoo_transport::log::Remote(&self.inner.id),
                        peer_id = %protoo_transport::log::Remote(&id),
                        missed,
                        "session resumed"
                    );
                    return Ok(Entry::Resumed {
                        peer: old.clone(),
                        identity,
                    });
                }
                // Its session just ended: the newcomer is a new peer.
                Err(back) => transport = back,
            }
        }
        if policy == DuplicatePolicy::Refuse && state.peers.contains_key(&id) {
            tracing::debug!(
                room_id = %protoo_transport::log::Remote(&self.inner.id),
                peer_id = %protoo_transport::log::Remote(&id),
                "duplicate peer id refused"
            );
            transport.close();
            return Err(CoreError::DuplicateId(id.to_string()));
        }
        if let Some(old) = state.peers.get(&id)
            && !may_replace(old.identity().as_deref(), identity.as_ref())
        {
            // The one check of takeovers: every admission comes here, under
            // the room's lock. The peer in the room is not told.
            tracing::debug!(
                room_id = %protoo_transport::log::Remote(&self.inner.id),
                peer_id = %protoo_transport::log::Remote(&id),
                "peer id of another identity refused"
            );
            transport.close();
            return Err(CoreError::IdentityMismatch(id.to_string()));
        }
        let expiries = identity.as_ref().and_then(|_| self.expiries());
        // The slot shares the peer's and the room's ids rather than keeping
        // copies.
        let (slot, deadline) = identity
            .map(|identity| IdentitySlot::new(identity, &id, &self.inner.id))
            .unzip();
        let parked = config
            .resume_window
            .and_then(|_| Some(self.inner.registry.upgrade()?.parked()));
        // In a room spanning several processes, the peer may resume a
        // session from another node: its transport waits for the answer.
        let pending = self.inner.cluster.is_some();
        let (peer, events, mut start) = build(
            id.clone(),
            Some(self.inner.id.clone()),
            transport,
            data,
            config,
            handle.clone(),
            slot,
            parked,
            pending,
        );
        if let (Some(expiries), Some(deadline)) = (expiries, deadline) {
            expiries.expire(start.core(), deadline, Some(&handle));
        }
        let room: Weak<RoomInner<D, R>> = Arc::downgrade(&self.inner);
        start.core().set_leave(room);
        // A newcomer is not listed until it says so itself.
        state.presence.remove(&id);
        let gate = self.inner.cluster.as_ref().map(|cluster| {
            start.set_node_id(cluster.node_id());
            cluster.member_added(
                &self.inner.id,
                &id,
                policy == DuplicatePolicy::Replace,
                peer.identity().as_deref(),
                config.resume_window.is_some(),
            )
        });
        let replaced = state.peers.insert(id, peer.clone());
        Ok(Entry::New(Admitted {
            peer,
            events,
            start,
            replaced,
            gate,
        }))
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Leave for RoomInner<D, R> {
    fn leave(self: Arc<Self>, core: &Arc<PeerState>) {
        // A closed peer leaves the expiry queue too.
        if core.identity.is_some()
            && let Some(expiries) = self.expiries()
        {
            expiries.cancel(core);
        }
        Room { inner: self }.remove(core);
    }

    fn expiries(&self) -> Option<Arc<Expiries>> {
        Some(self.registry.upgrade()?.expiries())
    }

    fn restore_presence(self: Arc<Self>, core: &Arc<PeerState>, info: Payload) {
        let _ = Room { inner: self }.set_presence_payload(&core.id, info);
    }
}

impl<D, R> Room<D, R> {
    /// The expiry queue of the room's registry.
    fn expiries(&self) -> Option<Arc<Expiries>> {
        Some(self.inner.registry.upgrade()?.expiries())
    }
}

impl<D, R> Room<D, R> {
    /// Takes a closed peer out of the room, if it is still the one under its
    /// id; a registry room left empty is then removed and closed (at once,
    /// or after the registry's grace).
    fn remove(&self, core: &Arc<PeerState>)
    where
        D: Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        let (removed, emptiness) = {
            let mut state = lock(&self.inner.state);
            match state.peers.get(&core.id) {
                Some(peer) if Arc::ptr_eq(peer.core(), core) => {
                    let removed = state.peers.remove(&core.id);
                    state.presence.remove(&core.id);
                    if let Some(cluster) = &self.inner.cluster {
                        cluster.member_removed(&self.inner.id, &core.id);
                    }
                    (removed, state.emptiness())
                }
                _ => (None, None),
            }
        };
        if removed.is_some() {
            tracing::debug!(
                room_id = %protoo_transport::log::Remote(&self.inner.id),
                peer_id = %protoo_transport::log::Remote(&core.id),
                "peer left the room"
            );
        }
        // Dropped outside the lock: it may be the peer's last handle.
        drop(removed);
        if let Some(emptiness) = emptiness {
            self.emptied(emptiness);
        }
    }

    /// The room has become removable (its `emptiness`-th time): tells its
    /// registry, if any.
    pub(crate) fn emptied(&self, emptiness: u64)
    where
        D: Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        if let Some(registry) = self.inner.registry.upgrade() {
            registry.room_emptied(self, emptiness);
        }
    }

    /// The application's room data: made by the registry's setup
    /// ([`RoomsBuilder::setup`](crate::RoomsBuilder::setup)) before the
    /// room's first member was admitted (`R::default()` without one).
    ///
    /// It lives as long as the room's handles: the registry drops its own
    /// when the room closes, after its peers are closed, so data whose
    /// `Drop` releases a resource (a media router) releases it once the
    /// last handle held by the application (its per-peer loops) is gone.
    pub fn data(&self) -> &R {
        &self.inner.data
    }

    /// The room id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The peer with this id, if it is in the room.
    pub fn peer(&self, id: &str) -> Option<Peer<D>> {
        lock(&self.inner.state).peers.get(id).cloned()
    }

    /// Whether a peer with this id is in the room.
    pub fn has_peer(&self, id: &str) -> bool {
        lock(&self.inner.state).peers.contains_key(id)
    }

    /// The peers in the room, in no particular order.
    pub fn peers(&self) -> Vec<Peer<D>> {
        lock(&self.inner.state).peers.values().cloned().collect()
    }

    /// How many peers are in the room.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).peers.len()
    }

    /// Whether the room has no peers.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner.state).peers.is_empty()
    }

    /// A broadcast to the peers of the room, on every node: narrowed by id
    /// and presence (a [`Target`](crate::Target)), or to this node's peers
    /// and a predicate ([`Broadcast::local`]); encoded once, with a report
    /// of what happened (see [`Broadcast`]).
    ///
    /// Never waits: a peer whose queue is full closes itself (its own byte
    /// limit, [`close_code::POLICY_VIOLATION`](protoo_transport::close_code::POLICY_VIOLATION))
    /// and is skipped; closed peers are skipped.
    pub fn to_all(&self) -> Broadcast<'_, D, R> {
        Broadcast::new(self)
    }

    /// Closes the room: no peer is admitted any more, every peer in it is
    /// closed (4000 `closed by protoo-server`), then the room reports its
    /// close ([`Room::closed`]). Only the first call has an effect.
    pub fn close(&self) {
        let peers = {
            let mut state = lock(&self.inner.state);
            if state.closed {
                return;
            }
            state.closed = true;
            state.presence.clear();
            if let Some(cluster) = &self.inner.cluster {
                for id in state.peers.keys() {
                    cluster.member_removed(&self.inner.id, id);
                }
            }
            std::mem::take(&mut state.peers)
        };
        tracing::debug!(room_id = %protoo_transport::log::Remote(&self.inner.id), peers = peers.len(), "closing room");
        for peer in peers.values() {
            peer.close();
        }
        drop(peers);
        if let Some(registry) = self.inner.registry.upgrade() {
            registry.forget(self);
        }
        self.report_closed();
    }

    /// Marks the room's close as complete, runs the registry's `on_close`
    /// hook (once) and wakes who waits for it. Called outside every lock.
    pub(crate) fn report_closed(&self) {
        if !self.inner.reported.swap(true, Ordering::AcqRel) {
            tracing::debug!(room_id = %protoo_transport::log::Remote(&self.inner.id), "room closed");
            self.inner.open.closed();
            if let Some(hook) = &self.inner.on_close {
                hook(self);
            }
        }
        self.inner.closed_notify.notify_waiters();
    }

    /// Whether the room is closed (it takes no new peers).
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.state).closed
    }

    /// Waits until the room is closed and its peers with it.
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.closed_notify.notified();
            if self.inner.reported.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether `a` and `b` are handles to the same room.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

impl<D, R> Clone for Room<D, R> {
    fn clone(&self) -> Self {
        Room {
            inner: self.inner.clone(),
        }
    }
}

impl<D, R> PartialEq for Room<D, R> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<D, R> Eq for Room<D, R> {}

impl<D, R> fmt::Debug for Room<D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("Room")
            .field("id", &self.inner.id)
            .field("peers", &state.peers.len())
            .field("closed", &state.closed)
            .finish()
    }
}
