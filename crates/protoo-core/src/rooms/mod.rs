//! The registry of rooms by id: [`Rooms`], built by [`RoomsBuilder`], and
//! the two-step admission of [`Reservation`].
//!
//! `setup.rs` makes a room's data (at once, or by the application's async
//! setup that runs once per room); `reservation.rs` holds a room's place for
//! a peer about to join.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protoo_transport::Transport;

use crate::cluster::{ClusterBackend, LocalNode, NodeRooms, OnMemberLost};
use crate::peer::lock;
use crate::room::DuplicatePolicy;
use crate::{CoreError, Peer, PeerConfig, PeerEvents, Room};

mod node;
mod reservation;
mod setup;

pub use reservation::Reservation;

/// A peer admitted into a room: the room, the peer, and the peer's events
/// (what [`Rooms::join`] and [`Reservation::join`] give).
pub type Joined<D = (), R = ()> = (Room<D, R>, Peer<D>, PeerEvents);
pub use setup::RoomsBuilder;
use setup::{Pending, Setup};

/// Rooms by id: created on demand, removed when their last peer leaves.
///
/// A cheap handle (an `Arc` inside). A room carries application data `R`
/// ([`Room::data`]), made when the room is created: `R::default()`, or the
/// result of an async setup given to [`RoomsBuilder::setup`] (a mediasoup
/// Router), which runs exactly once per room however many first peers
/// arrive at once; they wait for it, and if it fails each of them gets its
/// error.
///
/// [`Rooms::join`] finds or creates the room and admits the peer with the
/// registry's defaults (peer config, duplicate policy) in one step: the
/// room cannot be removed in between. [`Rooms::reserve`] splits that step in
/// two for a server that wants the room ready before it accepts the
/// connection (`protoo_server`'s `ConnectionRequest::accept_join` does).
///
/// Every operation on the registry is one short synchronous critical
/// section: there is no window in which two callers could create two rooms
/// with one id. protoo applications such as mediasoup-demo serialise room
/// creation through an extra async queue to get this (versatica/protoo#9);
/// here it needs none. Locks are always taken registry first, then room.
///
/// ```
/// use protoo_core::{DuplicatePolicy, PeerConfig, Rooms};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), protoo_core::CoreError> {
/// // Room data made once per room, asynchronously (here: a name).
/// let rooms: Rooms<(), String> = Rooms::builder()
///     .duplicate_policy(DuplicatePolicy::Replace)
///     .setup(|room_id: String| async move {
///         Ok::<_, protoo_core::ErrorData>(format!("router for {room_id}"))
///     });
/// let (server_side, _client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
/// let (room, peer, _events) = rooms.join("room-1", "alice", server_side, ()).await?;
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
    /// What [`Rooms::join`] admits peers with.
    config: PeerConfig,
    policy: DuplicatePolicy,
    /// How long an empty room stays before it is removed.
    grace: Duration,
    setup: Setup<R>,
    /// The cluster backend, if the rooms span several processes.
    pub(crate) cluster: Option<Arc<dyn ClusterBackend>>,
    /// What is broadcast about a member lost with its node.
    on_member_lost: Option<OnMemberLost>,
}

/// What [`Rooms::try_reserve`] found.
enum Reserved<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    /// A place in the ready room.
    Now(Reservation<D, R>),
    /// The room's setup is running: wait for it (and start it, if given).
    Wait(setup::Waiting<D, R>, Option<setup::Starter<D, R>>),
    /// The setup would have to be waited for, and the caller cannot wait.
    NotReady,
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
    /// A registry room has become removable (no peers, no reservations):
    /// removes it now, or after the grace if it is still removable then.
    pub(crate) fn room_emptied(self: Arc<Self>, room: &Room<D, R>, emptied: u64) {
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

impl<D, R> RegistryInner<D, R> {
    /// Removes `room` if it is still registered under its id.
    pub(crate) fn forget(&self, room: &Room<D, R>) {
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

    /// An empty registry whose [`Rooms::join`] admits peers with `config`
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

    fn from_parts(parts: setup::Parts, setup: Setup<R>) -> Self {
        let inner = Arc::new(RegistryInner {
            rooms: Mutex::new(HashMap::new()),
            config: parts.config,
            policy: parts.policy,
            grace: parts.grace,
            setup,
            cluster: parts.cluster,
            on_member_lost: parts.on_member_lost,
        });
        if let Some(cluster) = &inner.cluster {
            let weak: std::sync::Weak<dyn NodeRooms> = Arc::downgrade(&inner) as _;
            cluster.attach(LocalNode::new(weak));
        }
        Rooms { inner }
    }

    /// Whether the rooms span several processes (a cluster backend was
    /// given to [`RoomsBuilder::cluster`]).
    pub fn is_clustered(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// The peer settings and duplicate policy [`Rooms::join`] uses.
    pub fn defaults(&self) -> (&PeerConfig, DuplicatePolicy) {
        (&self.inner.config, self.inner.policy)
    }

    /// How long an empty room is kept before it is removed (zero: removed
    /// when its last peer leaves).
    pub fn empty_room_grace(&self) -> Duration {
        self.inner.grace
    }

    /// Finds or creates the room `room_id` (waiting for its data's setup)
    /// and admits a new peer into it with the registry's defaults: the
    /// room cannot be removed in between.
    ///
    /// Fails with [`CoreError::RoomSetup`] if the room's setup failed, and
    /// as [`Room::create_peer`] does otherwise; the transport is closed on
    /// every failure.
    pub async fn join(
        &self,
        room_id: &str,
        peer_id: impl Into<String>,
        transport: Transport,
        data: D,
    ) -> Result<Joined<D, R>, CoreError> {
        match self.reserve(room_id).await {
            Ok(reservation) => reservation.join(peer_id, transport, data),
            Err(error) => {
                transport.close();
                Err(error)
            }
        }
    }

    /// Finds or creates the room `room_id`, waits for its data's setup, and
    /// holds a place in it: the room is not removed for being empty while
    /// the [`Reservation`] lives. Join with [`Reservation::join`].
    ///
    /// Concurrent callers with one id share one room and one setup. A setup
    /// that fails fails every caller waiting for it with
    /// [`CoreError::RoomSetup`], and the next caller starts a new one.
    /// Dropping the future stops only this caller's wait.
    pub async fn reserve(&self, room_id: &str) -> Result<Reservation<D, R>, CoreError> {
        match self.try_reserve(room_id, true) {
            Reserved::Now(reservation) => Ok(reservation),
            Reserved::Wait(waiting, starter) => {
                if let (Some(starter), Setup::Async(setup)) = (starter, &self.inner.setup) {
                    starter.run(setup(room_id.to_owned()));
                }
                waiting.outcome().await.map(Reservation::new)
            }
            Reserved::NotReady => Err(CoreError::RoomNotReady),
        }
    }

    /// A place in the room `room_id` now, if its data is ready or made at
    /// once; otherwise, when `may_wait`, a wait for its async setup (and
    /// the setup to start, outside the registry's lock, if this call is its
    /// first admission).
    fn try_reserve(&self, room_id: &str, may_wait: bool) -> Reserved<D, R> {
        let mut rooms = lock(&self.inner.rooms);
        let (reserved, replaced) = match rooms.get_mut(room_id) {
            Some(Slot::Ready(room)) if room.reserve() => {
                (Reserved::Now(Reservation::new(room.clone())), None)
            }
            Some(Slot::Pending(pending)) if may_wait => (
                Reserved::Wait(pending.wait(&self.inner, room_id.into()), None),
                None,
            ),
            Some(Slot::Pending(_)) => (Reserved::NotReady, None),
            // No room, or one closed by its owner and not yet forgotten.
            _ => match &self.inner.setup {
                Setup::Default(make) => {
                    let room = self.create(room_id, make(), 1);
                    let replaced = rooms.insert(room_id.into(), Slot::Ready(room.clone()));
                    (Reserved::Now(Reservation::new(room)), replaced)
                }
                Setup::Async(_) if may_wait => {
                    let (pending, waiting, starter) = Pending::new(&self.inner, room_id.into());
                    let replaced = rooms.insert(room_id.into(), Slot::Pending(pending));
                    (Reserved::Wait(waiting, Some(starter)), replaced)
                }
                Setup::Async(_) => (Reserved::NotReady, None),
            },
        };
        drop(rooms);
        // A closed room replaced: dropped outside the lock (it may be the
        // last handle to its data).
        drop(replaced);
        reserved
    }

    fn create(&self, room_id: &str, data: R, reserved: usize) -> Room<D, R> {
        Room::create(
            room_id.into(),
            Arc::downgrade(&self.inner),
            self.inner.cluster.clone(),
            data,
            reserved,
        )
    }

    /// The open room with this id, created if there is none. Concurrent
    /// callers with one id all get the same room.
    ///
    /// A room created here and never given a peer stays until
    /// [`Rooms::remove`]: removal happens when a room's last peer leaves.
    /// Fails with [`CoreError::RoomNotReady`] when the room's data has an
    /// async setup that has not completed (use [`Rooms::reserve`]).
    pub fn get_or_create(&self, room_id: &str) -> Result<Room<D, R>, CoreError> {
        let mut rooms = lock(&self.inner.rooms);
        match (rooms.get(room_id), &self.inner.setup) {
            (Some(Slot::Ready(room)), _) if !room.is_closed() => Ok(room.clone()),
            (Some(Slot::Pending(_)), _) | (_, Setup::Async(_)) => Err(CoreError::RoomNotReady),
            (_, Setup::Default(make)) => {
                let room = self.create(room_id, make(), 0);
                let replaced = rooms.insert(room_id.into(), Slot::Ready(room.clone()));
                drop(rooms);
                drop(replaced);
                Ok(room)
            }
        }
    }

    /// The room with this id, if there is one (and its data is ready).
    pub fn get(&self, room_id: &str) -> Option<Room<D, R>> {
        lock(&self.inner.rooms)
            .get(room_id)
            .and_then(Slot::ready)
            .cloned()
    }

    /// Finds or creates the room `room_id` and admits a new peer into it, in
    /// one step, with the given config and policy; synchronous, so it fails
    /// with [`CoreError::RoomNotReady`] where [`Rooms::join`] would wait for
    /// an async setup.
    ///
    /// Refuses an empty peer id, and a duplicate one under
    /// [`DuplicatePolicy::Refuse`], closing the transport, as
    /// [`Room::create_peer`] does. Returns the room with the peer.
    pub fn create_peer(
        &self,
        room_id: &str,
        peer_id: impl Into<String>,
        transport: Transport,
        data: D,
        config: PeerConfig,
        policy: DuplicatePolicy,
    ) -> Result<Joined<D, R>, CoreError> {
        match self.try_reserve(room_id, false) {
            Reserved::Now(reservation) => {
                reservation.join_with(peer_id, transport, data, config, policy)
            }
            Reserved::Wait(..) | Reserved::NotReady => {
                transport.close();
                Err(CoreError::RoomNotReady)
            }
        }
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
