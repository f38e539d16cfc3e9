//! The registry of rooms by id: [`Rooms`], built by [`RoomsBuilder`], and
//! the one way into its rooms, [`Rooms::admit`].
//!
//! `admit.rs` is the admission builder ([`Admit`], [`Joined`],
//! [`RoomHold`], [`Context`]); `setup.rs` makes a room's data (at once, or
//! by the application's async setup that runs once per room);
//! `reservation.rs` holds a room's place for an admission.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{ClusterBackend, LocalNode, NodeRooms, OnMemberLost};
use crate::peer::Expiries;
use crate::room::{DuplicatePolicy, OnClose, RoomRegistry};
use crate::session::Parked;
use crate::sync::lock;
use crate::{CoreError, PeerConfig, Room};

/// The longest room id and peer id a registry admits by default, in bytes
/// ([`RoomsBuilder::max_id_bytes`]).
pub const DEFAULT_MAX_ID_BYTES: usize = 256;

mod admit;
mod connecting;
mod node;
mod reservation;
mod setup;

pub use admit::{Admit, Context, Joined, RoomHold};
pub use connecting::Connecting;
use reservation::Reservation;
use setup::{Pending, Setup};
pub use setup::{RoomSetup, RoomsBuilder};

/// Rooms by id: created on demand, removed when their last peer leaves.
///
/// A cheap handle (an `Arc` inside). A room carries application data `R`
/// ([`Room::data`]), made when the room is created: `R::default()`, or the
/// result of an async setup given to [`RoomsBuilder::setup`] (a mediasoup
/// Router), which runs exactly once per room however many first peers
/// arrive at once; they wait for it, and if it fails each of them gets its
/// error.
///
/// [`Rooms::admit`] finds or creates the room and admits a peer
/// ([`Admit::join`], with the registry's defaults unless overridden) in one
/// step: the room cannot be removed in between. [`Admit::hold`] keeps a
/// room open for a member that is not a protoo peer. When a room closes
/// (its last member gone, [`Room::close`], [`Rooms::close_all`]), the
/// [`RoomsBuilder::on_close`] hook runs once.
///
/// Every operation on the registry is one short synchronous critical
/// section: there is no window in which two callers could create two rooms
/// with one id. protoo applications such as mediasoup-demo serialise room
/// creation through an extra async queue to get this (versatica/protoo#9);
/// here it needs none. Locks are always taken registry first, then room.
///
/// ```
/// use protoo_core::{DuplicatePolicy, Rooms};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), protoo_core::CoreError> {
/// // Room data made once per room, asynchronously (here: a name).
/// let rooms: Rooms<(), String> = Rooms::builder()
///     .duplicate_policy(DuplicatePolicy::Replace)
///     .setup(|setup: protoo_core::RoomSetup| async move {
///         Ok::<_, protoo_core::ErrorData>(format!("router for {}", setup.room_id))
///     });
/// let (server_side, _client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
/// let joined = rooms.admit("room-1", "alice").join(server_side, ()).await?;
/// let (room, peer) = (joined.room, joined.peer);
/// assert_eq!(room.data(), "router for room-1");
/// assert_eq!(rooms.get("room-1"), Some(room.clone()));
///
/// // The last peer leaves: the room is closed and removed.
/// peer.close();
/// room.closed().await;
/// assert!(rooms.get("room-1").is_none() && rooms.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Rooms<D = (), R = ()> {
    inner: Arc<RegistryInner<D, R>>,
}

pub(crate) struct RegistryInner<D, R> {
    rooms: Mutex<HashMap<Arc<str>, Slot<D, R>>>,
    /// What [`Rooms::admit`] admits peers with, unless overridden.
    config: PeerConfig,
    policy: DuplicatePolicy,
    /// How long an empty room stays before it is removed.
    grace: Duration,
    /// The longest room and peer id admitted, in bytes.
    max_id_bytes: usize,
    setup: Setup<R>,
    /// The cluster backend, if the rooms span several processes.
    pub(crate) cluster: Option<Arc<dyn ClusterBackend>>,
    /// What is broadcast about a member lost with its node.
    on_member_lost: Option<OnMemberLost>,
    /// Run once when one of the rooms closes.
    on_close: Option<Arc<OnClose<D, R>>>,
    /// The peers that expire ([`Identity`](crate::Identity)), made on
    /// first use.
    expiries: std::sync::OnceLock<Arc<Expiries>>,
    /// The sessions waiting for their peer, bounded.
    parked: Arc<Parked>,
    /// Sessions handed over to another node whose handover the cluster
    /// backend has not taken yet ([`Rooms::drained`] waits for them).
    pub(crate) handovers: tokio::sync::watch::Sender<usize>,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> RoomRegistry<D, R>
    for RegistryInner<D, R>
{
    fn expiries(&self) -> Arc<Expiries> {
        self.expiries.get_or_init(Default::default).clone()
    }

    fn parked(&self) -> Arc<Parked> {
        self.parked.clone()
    }

    /// A registry room has become removable (no peers, no reservations):
    /// removes it now, or after the grace if it is still removable then.
    fn room_emptied(self: Arc<Self>, room: &Room<D, R>, emptied: u64) {
        if self.grace.is_zero() {
            return self.remove_if_empty(room, None);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.remove_if_empty(room, None);
        };
        let registry = Arc::downgrade(&self);
        let room = Room {
            inner: room.inner.clone(),
        };
        let grace = self.grace;
        tracing::debug!(
            room_id = %protoo_transport::log::Remote(room.id()),
            ?grace,
            "room empty, kept for its grace"
        );
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(registry) = registry.upgrade() {
                registry.remove_if_empty(&room, Some(emptied));
            }
        });
    }

    /// Removes `room` if it is still registered under its id.
    fn forget(&self, room: &Room<D, R>) {
        let removed = {
            let mut rooms = lock(&self.rooms);
            match rooms.get(&room.inner.id).and_then(Slot::ready) {
                Some(registered) if Room::ptr_eq(registered, room) => rooms.remove(&room.inner.id),
                _ => None,
            }
        };
        drop(removed);
    }
}

#[cfg(test)]
impl<D, R> Rooms<D, R> {
    /// Entries in the registry's expiry queue.
    pub(crate) fn expiry_entries(&self) -> usize {
        self.inner
            .expiries
            .get()
            .map_or(0, |expiries| expiries.len())
    }
}

impl<D, R> Drop for RegistryInner<D, R> {
    fn drop(&mut self) {
        if let Some(expiries) = self.expiries.get() {
            expiries.close();
        }
    }
}

/// What `Rooms::try_reserve` found.
enum Reserved<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    /// A place in the ready room.
    Now(Reservation<D, R>),
    /// The room's setup is running: wait for it (and start it, if given).
    Wait(setup::Waiting<D, R>, Option<setup::Starter<D, R>>),
}

/// A room id's place in the registry.
enum Slot<D, R> {
    /// The room, with its data.
    Ready(Room<D, R>),
    /// Its data is being made; admissions wait.
    Pending(Pending<D, R>),
}

impl<D, R> Slot<D, R> {
    fn ready(&self) -> Option<&Room<D, R>> {
        match self {
            Slot::Ready(room) => Some(room),
            Slot::Pending(_) => None,
        }
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> RegistryInner<D, R> {
    /// Removes `room` if it is still registered under its id and removable
    /// (and, for a grace timer, has not been used since it became empty),
    /// and closes it.
    fn remove_if_empty(&self, room: &Room<D, R>, emptied: Option<u64>) {
        let removed = {
            let mut rooms = lock(&self.rooms);
            match rooms.get(&room.inner.id).and_then(Slot::ready) {
                Some(registered) if Room::ptr_eq(registered, room) => {
                    let mut state = lock(&room.inner.state);
                    let same_emptiness = emptied.is_none_or(|at| at == state.emptied);
                    if state.is_removable() && same_emptiness {
                        state.closed = true;
                        drop(state);
                        rooms.remove(&room.inner.id)
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        if let Some(Slot::Ready(removed)) = removed {
            tracing::debug!(room_id = %protoo_transport::log::Remote(&removed.inner.id), "last peer left, room removed");
            removed.report_closed();
        }
    }
}

impl<D: Send + Sync + 'static, R: Default + Send + Sync + 'static> Default for Rooms<D, R> {
    fn default() -> Self {
        Rooms::builder().build()
    }
}

impl<D: Send + Sync + 'static> Rooms<D> {
    /// An empty registry of rooms without room data ([`Rooms::builder`]
    /// gives them some); peers get the default [`PeerConfig`] and
    /// [`DuplicatePolicy`].
    pub fn new() -> Self {
        Rooms::builder().build()
    }

    /// An empty registry whose [`Rooms::admit`] admits peers with `config`
    /// and `policy`: the admission settings, given once. Shorthand for
    /// [`Rooms::builder`].
    pub fn with_defaults(config: PeerConfig, policy: DuplicatePolicy) -> Self {
        Rooms::builder()
            .peer_config(config)
            .duplicate_policy(policy)
            .build()
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Rooms<D, R> {
    /// A builder for a registry: admission defaults, the empty-room grace,
    /// and the room data's setup.
    pub fn builder() -> RoomsBuilder<D, R> {
        RoomsBuilder::new()
    }

    fn from_parts(
        parts: setup::Parts,
        setup: Setup<R>,
        on_close: Option<Arc<OnClose<D, R>>>,
    ) -> Self {
        let inner = Arc::new(RegistryInner {
            rooms: Mutex::new(HashMap::new()),
            config: parts.config,
            policy: parts.policy,
            grace: parts.grace,
            max_id_bytes: parts.max_id_bytes,
            setup,
            cluster: parts.cluster,
            on_member_lost: parts.on_member_lost,
            on_close,
            expiries: std::sync::OnceLock::new(),
            parked: Parked::new(parts.max_parked_sessions, parts.max_parked_bytes),
            handovers: tokio::sync::watch::Sender::new(0),
        });
        if let Some(cluster) = &inner.cluster {
            let weak: std::sync::Weak<dyn NodeRooms> = Arc::downgrade(&inner) as _;
            cluster.attach(LocalNode::new(weak));
        }
        Rooms { inner }
    }

    /// Completes once every room of the registry has closed: every peer
    /// gone. A session waiting for its peer
    /// ([`PeerConfig::resume_window`]) counts until it was resumed (here,
    /// or on another node, which it then moved to) or its window ended.
    /// What a node that drains (a rolling deploy) awaits before it exits,
    /// once its server stopped accepting and closed its connections.
    pub async fn drained(&self) {
        loop {
            let rooms: Vec<Room<D, R>> = lock(&self.inner.rooms)
                .values()
                .filter_map(Slot::ready)
                .cloned()
                .collect();
            if rooms.is_empty() {
                break;
            }
            for room in rooms {
                room.closed().await;
            }
        }
        // A session handed over is out of its room before the backend took
        // the handover to the node that resumes it.
        let mut handovers = self.inner.handovers.subscribe();
        tracing::debug!(
            handovers = *handovers.borrow(),
            "rooms closed; waiting for the handovers in flight"
        );
        let _ = handovers.wait_for(|count| *count == 0).await;
        tracing::debug!("drained");
    }

    /// Sessions waiting for their peer in these rooms (peers with a
    /// [resume window](PeerConfig::resume_window) whose transport was
    /// lost), and the bytes they hold.
    pub fn waiting_sessions(&self) -> (usize, usize) {
        self.inner.parked.usage()
    }

    /// Whether the rooms span several processes (a cluster backend was
    /// given to [`RoomsBuilder::cluster`]).
    pub fn is_clustered(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// The peer settings and duplicate policy [`Rooms::admit`] uses unless
    /// overridden.
    pub fn defaults(&self) -> (&PeerConfig, DuplicatePolicy) {
        (&self.inner.config, self.inner.policy)
    }

    /// The longest room id and peer id the registry admits, in bytes
    /// ([`RoomsBuilder::max_id_bytes`]).
    pub fn max_id_bytes(&self) -> usize {
        self.inner.max_id_bytes
    }

    /// How long an empty room is kept before it is removed (zero: removed
    /// when its last peer leaves).
    pub fn empty_room_grace(&self) -> Duration {
        self.inner.grace
    }

    /// Finds or creates the room `room_id`, waits for its data's setup, and
    /// holds a place in it: the room is not removed for being empty while
    /// the reservation lives.
    ///
    /// Concurrent callers with one id share one room and one setup, started
    /// by the first of them with its `context`. A setup that fails fails
    /// every caller waiting for it with [`CoreError::RoomSetup`], and the
    /// next caller starts a new one. Dropping the future stops only this
    /// caller's wait.
    pub(crate) async fn reserve(
        &self,
        room_id: &str,
        context: Context,
    ) -> Result<Reservation<D, R>, CoreError> {
        match self.try_reserve(room_id) {
            Reserved::Now(reservation) => Ok(reservation),
            Reserved::Wait(waiting, starter) => {
                if let (Some(starter), Setup::Async(setup)) = (starter, &self.inner.setup) {
                    starter.run(setup(RoomSetup {
                        room_id: room_id.to_owned(),
                        context,
                    }));
                }
                waiting.outcome().await.map(Reservation::new)
            }
        }
    }

    /// A place in the room `room_id` now, if its data is ready or made at
    /// once; otherwise a wait for its async setup (and the setup to start,
    /// outside the registry's lock, if this call is its first admission).
    fn try_reserve(&self, room_id: &str) -> Reserved<D, R> {
        let mut rooms = lock(&self.inner.rooms);
        let (reserved, replaced) = match rooms.get_mut(room_id) {
            Some(Slot::Ready(room)) if room.reserve() => {
                (Reserved::Now(Reservation::new(room.clone())), None)
            }
            Some(Slot::Pending(pending)) => (
                Reserved::Wait(pending.wait(&self.inner, room_id.into()), None),
                None,
            ),
            // No room, or one closed by its owner and not yet forgotten.
            _ => match &self.inner.setup {
                Setup::Default(make) => {
                    let room = self.create(room_id, make(), 1);
                    let replaced = rooms.insert(room_id.into(), Slot::Ready(room.clone()));
                    (Reserved::Now(Reservation::new(room)), replaced)
                }
                Setup::Async(_) => {
                    let (pending, waiting, starter) = Pending::new(&self.inner, room_id.into());
                    let replaced = rooms.insert(room_id.into(), Slot::Pending(pending));
                    (Reserved::Wait(waiting, Some(starter)), replaced)
                }
            },
        };
        drop(rooms);
        // A closed room replaced: dropped outside the lock (it may be the
        // last handle to its data).
        drop(replaced);
        reserved
    }

    fn create(&self, room_id: &str, data: R, reserved: usize) -> Room<D, R> {
        let registry = Arc::downgrade(&self.inner);
        Room::create(
            room_id.into(),
            registry,
            self.inner.cluster.clone(),
            self.inner.on_close.clone(),
            data,
            reserved,
        )
    }

    /// The room with this id, if there is one (and its data is ready).
    pub fn get(&self, room_id: &str) -> Option<Room<D, R>> {
        lock(&self.inner.rooms)
            .get(room_id)
            .and_then(Slot::ready)
            .cloned()
    }

    /// Removes the room with this id and closes it (and its peers). A room
    /// whose setup is still running is not affected.
    pub fn remove(&self, room_id: &str) -> Option<Room<D, R>> {
        let room = {
            let mut rooms = lock(&self.inner.rooms);
            match rooms.get(room_id) {
                Some(Slot::Ready(_)) => match rooms.remove(room_id) {
                    Some(Slot::Ready(room)) => room,
                    _ => return None,
                },
                _ => return None,
            }
        };
        room.close();
        Some(room)
    }

    /// Removes and closes every room (rooms whose setup is still running
    /// are left to it).
    pub fn close_all(&self) {
        let ready: Vec<Room<D, R>> = {
            let mut rooms = lock(&self.inner.rooms);
            let mut ready = Vec::new();
            rooms.retain(|_, slot| match slot {
                Slot::Ready(room) => {
                    ready.push(room.clone());
                    false
                }
                Slot::Pending(_) => true,
            });
            ready
        };
        for room in &ready {
            room.close();
        }
    }

    /// How many rooms there are (with their data ready).
    pub fn len(&self) -> usize {
        lock(&self.inner.rooms)
            .values()
            .filter(|slot| slot.ready().is_some())
            .count()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the rooms, in no particular order.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.inner.rooms)
            .iter()
            .filter(|(_, slot)| slot.ready().is_some())
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// The rooms, in no particular order.
    pub fn rooms(&self) -> Vec<Room<D, R>> {
        lock(&self.inner.rooms)
            .values()
            .filter_map(Slot::ready)
            .cloned()
            .collect()
    }
}

impl<D, R> Clone for Rooms<D, R> {
    fn clone(&self) -> Self {
        Rooms {
            inner: self.inner.clone(),
        }
    }
}

impl<D, R> fmt::Debug for Rooms<D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("rooms", &lock(&self.inner.rooms).len())
            .field("grace", &self.inner.grace)
            .finish()
    }
}
