use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use protoo_transport::Transport;

use crate::peer::{admission, lock};
use crate::room::{Admitted, DuplicatePolicy};
use crate::{CoreError, Peer, PeerConfig, PeerEvents, Room};

/// Rooms by id: created on demand, removed when their last peer leaves.
///
/// A cheap handle (an `Arc` inside). Every operation is one short
/// synchronous critical section, so there is nothing to `.await` and no
/// window in which two callers could create two rooms with one id: protoo
/// applications such as mediasoup-demo serialise room creation through an
/// extra async queue to get this (versatica/protoo#9); here it needs none.
///
/// [`Rooms::create_peer`] finds or creates the room and admits the peer in
/// one step. Prefer it to [`Rooms::get_or_create`] followed by
/// [`Room::create_peer`]: between those two calls, the room's last peer may
/// leave, and the room is then removed and closed
/// ([`CoreError::RoomClosed`]).
///
/// Locks are always taken registry first, then room.
///
/// ```
/// use protoo_core::{DuplicatePolicy, PeerConfig, Rooms};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), protoo_core::CoreError> {
/// let rooms: Rooms = Rooms::new();
/// let (server_side, _client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
/// let (room, peer, _events) = rooms.create_peer(
///     "room-1", "alice", server_side, (), PeerConfig::default(), DuplicatePolicy::Replace,
/// )?;
/// assert_eq!(rooms.get("room-1"), Some(room.clone()));
///
/// // The last peer leaves: the room is closed and removed.
/// peer.close();
/// room.closed().await;
/// assert!(rooms.get("room-1").is_none() && rooms.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Rooms<D = ()> {
    inner: Arc<RegistryInner<D>>,
}

pub(crate) struct RegistryInner<D> {
    rooms: Mutex<HashMap<Arc<str>, Room<D>>>,
    /// What [`Rooms::join`] admits peers with.
    defaults: (PeerConfig, DuplicatePolicy),
}

impl<D> RegistryInner<D> {
    /// Removes `room` if it is still registered under its id and has no
    /// peers, and closes it.
    pub(crate) fn remove_if_empty(&self, room: &Room<D>) {
        let removed = {
            let mut rooms = lock(&self.rooms);
            match rooms.get(&room.inner.id) {
                Some(registered) if Arc::ptr_eq(&registered.inner, &room.inner) => {
                    let mut state = lock(&room.inner.state);
                    if state.peers.is_empty() && !state.closed {
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
        if let Some(removed) = removed {
            tracing::debug!(room_id = %removed.inner.id, "last peer left, room removed");
            removed.report_closed();
        }
    }

    /// Removes `room` if it is still registered under its id.
    pub(crate) fn forget(&self, room: &Room<D>) {
        let removed = {
            let mut rooms = lock(&self.rooms);
            match rooms.get(&room.inner.id) {
                Some(registered) if Arc::ptr_eq(&registered.inner, &room.inner) => {
                    rooms.remove(&room.inner.id)
                }
                _ => None,
            }
        };
        drop(removed);
    }
}

impl<D: Send + Sync + 'static> Default for Rooms<D> {
    fn default() -> Self {
        Rooms::new()
    }
}

impl<D: Send + Sync + 'static> Rooms<D> {
    /// An empty registry.
    pub fn new() -> Self {
        Rooms::with_defaults(PeerConfig::default(), DuplicatePolicy::default())
    }

    /// An empty registry whose [`Rooms::join`] admits peers with `config`
    /// and `policy`: the admission settings, given once.
    pub fn with_defaults(config: PeerConfig, policy: DuplicatePolicy) -> Self {
        Rooms {
            inner: Arc::new(RegistryInner {
                rooms: Mutex::new(HashMap::new()),
                defaults: (config, policy),
            }),
        }
    }

    /// The peer settings and duplicate policy [`Rooms::join`] uses.
    pub fn defaults(&self) -> (&PeerConfig, DuplicatePolicy) {
        (&self.inner.defaults.0, self.inner.defaults.1)
    }

    /// [`Rooms::create_peer`] with the registry's defaults
    /// ([`Rooms::with_defaults`]).
    pub fn join(
        &self,
        room_id: &str,
        peer_id: impl Into<String>,
        transport: Transport,
        data: D,
    ) -> Result<(Room<D>, Peer<D>, PeerEvents), CoreError> {
        let (config, policy) = &self.inner.defaults;
        self.create_peer(room_id, peer_id, transport, data, config.clone(), *policy)
    }

    /// The open room with this id, created if there is none. Concurrent
    /// callers with one id all get the same room.
    ///
    /// A room created here and never given a peer stays until
    /// [`Rooms::remove`]: removal happens when a room's last peer leaves.
    pub fn get_or_create(&self, room_id: &str) -> Room<D> {
        let (room, replaced) = {
            let mut rooms = lock(&self.inner.rooms);
            match rooms.get(room_id) {
                Some(room) if !room.is_closed() => (room.clone(), None),
                _ => {
                    let room = Room::create(room_id.into(), Arc::downgrade(&self.inner));
                    let replaced = rooms.insert(room_id.into(), room.clone());
                    (room, replaced)
                }
            }
        };
        drop(replaced);
        room
    }

    /// The room with this id, if there is one.
    pub fn get(&self, room_id: &str) -> Option<Room<D>> {
        lock(&self.inner.rooms).get(room_id).cloned()
    }

    /// Finds or creates the room `room_id` and admits a new peer into it, in
    /// one step: the room cannot be removed in between.
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
    ) -> Result<(Room<D>, Peer<D>, PeerEvents), CoreError> {
        let peer_id: String = peer_id.into();
        let handle = admission(&peer_id, &transport)?;
        let mut dropped = Vec::new();
        let (room, admitted) = {
            let mut rooms = lock(&self.inner.rooms);
            let room = loop {
                let room = match rooms.get(room_id) {
                    Some(room) => room.clone(),
                    None => {
                        let room = Room::create(room_id.into(), Arc::downgrade(&self.inner));
                        rooms.insert(room_id.into(), room.clone());
                        room
                    }
                };
                if !room.is_closed() {
                    break room;
                }
                // Closed by its owner and not yet forgotten: replace it.
                dropped.extend(rooms.remove(room_id));
            };
            // Holding the registry lock, the room cannot be removed for being
            // empty; it is only closed by an explicit `Room::close`, which
            // `admit` checks under the room's lock.
            let admitted = {
                let mut state = lock(&room.inner.state);
                room.admit(
                    &mut state,
                    peer_id.into(),
                    transport,
                    data,
                    &config,
                    policy,
                    handle,
                )
            };
            (room, admitted)
        };
        drop(dropped);
        let (peer, events) = admitted.map(Admitted::start)?;
        Ok((room, peer, events))
    }

    /// Removes the room with this id and closes it (and its peers).
    pub fn remove(&self, room_id: &str) -> Option<Room<D>> {
        let room = lock(&self.inner.rooms).remove(room_id)?;
        room.close();
        Some(room)
    }

    /// Removes and closes every room.
    pub fn close_all(&self) {
        let rooms = std::mem::take(&mut *lock(&self.inner.rooms));
        for room in rooms.values() {
            room.close();
        }
    }

    /// How many rooms there are.
    pub fn len(&self) -> usize {
        lock(&self.inner.rooms).len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner.rooms).is_empty()
    }

    /// The ids of the rooms, in no particular order.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.inner.rooms)
            .keys()
            .map(|id| id.to_string())
            .collect()
    }

    /// The rooms, in no particular order.
    pub fn rooms(&self) -> Vec<Room<D>> {
        lock(&self.inner.rooms).values().cloned().collect()
    }
}

impl<D> Clone for Rooms<D> {
    fn clone(&self) -> Self {
        Rooms {
            inner: self.inner.clone(),
        }
    }
}

impl<D> fmt::Debug for Rooms<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("rooms", &lock(&self.inner.rooms).len())
            .finish()
    }
}
