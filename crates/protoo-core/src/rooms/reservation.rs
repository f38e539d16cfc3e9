//! A place held in a room (for a peer about to join, or a
//! [`RoomHold`](super::RoomHold)): the room, its data ready, is not removed
//! for being empty while a reservation lives.

use std::fmt;

use protoo_transport::Transport;

use super::Joined;
use crate::peer::admission;
use crate::room::{DuplicatePolicy, Entry};
use crate::sync::lock;
use crate::{CoreError, Identity, PeerConfig, PeerEvents, Room};

/// A room with its data ready and a place held for one admission
/// ([`Admit`](super::Admit)), or for a [`RoomHold`](super::RoomHold).
///
/// The room is not removed for being empty while it lives; it may still be
/// closed by [`Room::close`], and a join then fails with
/// [`CoreError::RoomClosed`]. Dropping it gives the place back (an empty
/// room is then removed as if its last peer had left).
pub(crate) struct Reservation<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    room: Room<D, R>,
    held: bool,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Reservation<D, R> {
    /// Takes over a reservation already counted in the room.
    pub(super) fn new(room: Room<D, R>) -> Self {
        Reservation { room, held: true }
    }

    /// The room, its data ready.
    pub(super) fn room(&self) -> &Room<D, R> {
        &self.room
    }

    /// Admits a new peer on `transport` into the room, using the place;
    /// fails (closing the transport) on an empty id, a refused duplicate
    /// or a closed room.
    pub(super) fn join(
        mut self,
        peer_id: String,
        transport: Transport,
        data: D,
        config: &PeerConfig,
        policy: DuplicatePolicy,
        identity: Option<Identity>,
    ) -> Result<Joined<D, R>, CoreError> {
        let handle = admission(&peer_id, &transport)?;
        let room = self.room.clone();
        let (admitted, emptiness) = {
            let mut state = lock(&room.inner.state);
            state.reserved -= 1;
            self.held = false;
            let admitted = room.admit(
                &mut state,
                peer_id.into(),
                transport,
                data,
                config,
                policy,
                handle,
                identity,
            );
            (admitted, state.emptiness())
        };
        if let Some(emptiness) = emptiness {
            room.emptied(emptiness);
        }
        match admitted? {
            Entry::New(admitted) => {
                let (peer, events) = admitted.start();
                Ok(Joined {
                    room,
                    peer,
                    events,
                    resumed: false,
                })
            }
            Entry::Resumed { peer, identity } => {
                if let Some(identity) = identity {
                    // The new connection's credential moves the expiry.
                    let _ = peer.refresh_identity(identity);
                }
                let events = PeerEvents::inert(peer.core().clone());
                Ok(Joined {
                    room,
                    peer,
                    events,
                    resumed: true,
                })
            }
        }
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Room<D, R> {
    /// Holds a place in the room unless it is closed.
    pub(super) fn reserve(&self) -> bool {
        let mut state = lock(&self.inner.state);
        if state.closed {
            return false;
        }
        state.reserved += 1;
        true
    }

    /// Gives back a place held by [`Room::reserve`] (or by a setup for a
    /// waiting admission).
    pub(super) fn release_reservation(&self) {
        let emptiness = {
            let mut state = lock(&self.inner.state);
            state.reserved = state.reserved.saturating_sub(1);
            state.emptiness()
        };
        if let Some(emptiness) = emptiness {
            self.emptied(emptiness);
        }
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Drop for Reservation<D, R> {
    fn drop(&mut self) {
        if self.held {
            self.held = false;
            self.room.release_reservation();
        }
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> fmt::Debug for Reservation<D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("room", &self.room.id())
            .field("held", &self.held)
            .finish()
    }
}
