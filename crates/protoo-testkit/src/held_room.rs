//! A room that stays open when empty, as the tests of room behaviour want:
//! a registry room kept by a [`RoomHold`], with peers admitted through
//! [`Rooms::admit`].

use std::ops::Deref;

use protoo_core::transport::Transport;
use protoo_core::{
    CoreError, DuplicatePolicy, Peer, PeerConfig, PeerEvents, Room, RoomHold, Rooms,
};

/// A registry room held open (it is not removed for being empty).
#[derive(Debug)]
pub struct HeldRoom<D: Send + Sync + 'static = ()> {
    /// The registry the room belongs to.
    pub rooms: Rooms<D>,
    room: Room<D>,
    hold: Option<RoomHold>,
}

impl<D: Send + Sync + 'static> HeldRoom<D> {
    /// The room `id` of a new registry, held open.
    pub async fn new(id: &str) -> Self {
        let rooms = Rooms::new();
        let (room, hold) = rooms.admit(id, "").hold().await.expect("room held");
        HeldRoom {
            rooms,
            room,
            hold: Some(hold),
        }
    }

    /// The room.
    pub fn room(&self) -> &Room<D> {
        &self.room
    }

    /// Lets the room go: removed with its last peer from now on.
    pub fn release(&mut self) {
        self.hold = None;
    }

    /// Admits a peer (duplicates refused).
    pub async fn create_peer(
        &self,
        id: impl Into<String>,
        transport: Transport,
        data: D,
        config: PeerConfig,
    ) -> Result<(Peer<D>, PeerEvents), CoreError> {
        self.create_peer_with(id, transport, data, config, DuplicatePolicy::Refuse)
            .await
    }

    /// Admits a peer, replacing one with the same id.
    pub async fn create_or_replace_peer(
        &self,
        id: impl Into<String>,
        transport: Transport,
        data: D,
        config: PeerConfig,
    ) -> Result<(Peer<D>, PeerEvents), CoreError> {
        self.create_peer_with(id, transport, data, config, DuplicatePolicy::Replace)
            .await
    }

    /// Admits a peer with `policy` for duplicates.
    pub async fn create_peer_with(
        &self,
        id: impl Into<String>,
        transport: Transport,
        data: D,
        config: PeerConfig,
        policy: DuplicatePolicy,
    ) -> Result<(Peer<D>, PeerEvents), CoreError> {
        let joined = self
            .rooms
            .admit(self.room.id(), id)
            .config(config)
            .policy(policy)
            .join(transport, data)
            .await?;
        Ok((joined.peer, joined.events))
    }
}

impl<D: Send + Sync + 'static> Deref for HeldRoom<D> {
    type Target = Room<D>;

    fn deref(&self) -> &Room<D> {
        &self.room
    }
}
