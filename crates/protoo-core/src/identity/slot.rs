//! A peer's identity as its core holds it: one small allocation, the ids
//! not repeated (they are the peer's), the allowed methods shared.

use std::any::Any;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::Identity;
use super::methods::Methods;
use crate::sync::lock;

/// A peer's identity, held by its core (boxed: a peer without one pays a
/// pointer). [`Peer::identity`](crate::Peer::identity) rebuilds the
/// [`Identity`] from it.
pub(crate) struct IdentitySlot {
    current: Mutex<Held>,
}

/// What a peer keeps of its identity: 64 bytes.
struct Held {
    /// Unix time in milliseconds ([`Identity::expires_at`]).
    expires_at: u64,
    /// The place of its entry in the registry's
    /// [`Expiries`](super::Expiries) ([`NOT_QUEUED`]: none), taken out
    /// when the peer closes.
    position: u32,
    name: Option<Box<str>>,
    allow: Option<Arc<Methods>>,
    custom: Option<Arc<dyn Any + Send + Sync>>,
    /// The subject and room, when they are not the peer's id and room id
    /// (an admission by the core API may give any): otherwise not
    /// repeated.
    ids: Option<Box<(Arc<str>, Arc<str>)>>,
}

/// No entry in the expiry queue.
const NOT_QUEUED: u32 = u32::MAX;

impl IdentitySlot {
    /// The slot of a peer `peer_id` in room `room_id` with `identity`, and
    /// when it expires on Tokio's clock.
    pub(crate) fn new(
        identity: Identity,
        peer_id: &Arc<str>,
        room_id: &Arc<str>,
    ) -> (Box<Self>, Instant) {
        let deadline = identity.deadline();
        let Identity {
            subject,
            room,
            expires_at,
            name,
            allow,
            custom,
        } = identity;
        let ids = (subject != *peer_id || room != *room_id).then(|| Box::new((subject, room)));
        let slot = Box::new(IdentitySlot {
            current: Mutex::new(Held {
                expires_at,
                position: NOT_QUEUED,
                name,
                allow,
                custom,
                ids,
            }),
        });
        (slot, deadline)
    }

    /// The identity of the peer `peer_id` in room `room_id`.
    pub(crate) fn identity(&self, peer_id: &Arc<str>, room_id: Option<&Arc<str>>) -> Identity {
        let held = lock(&self.current);
        let (subject, room) = held.ids(peer_id, room_id);
        Identity {
            subject: subject.clone(),
            room: room.clone(),
            expires_at: held.expires_at,
            name: held.name.clone(),
            allow: held.allow.clone(),
            custom: held.custom.clone(),
        }
    }

    pub(crate) fn allows(&self, method: &str) -> bool {
        lock(&self.current)
            .allow
            .as_ref()
            .is_none_or(|allow| allow.contains(method))
    }

    /// The place of the peer's entry in the expiry queue, if it has one.
    pub(crate) fn position(&self) -> Option<usize> {
        let position = lock(&self.current).position;
        (position != NOT_QUEUED).then_some(position as usize)
    }

    /// Records the place of the peer's entry in the expiry queue (`None`:
    /// out of it). A queue of more than 4 billion entries does not fit in
    /// memory: a place beyond is recorded as none (the entry then leaves
    /// at its deadline rather than when the peer closes).
    pub(crate) fn set_position(&self, position: Option<usize>) {
        lock(&self.current).position = position
            .and_then(|position| u32::try_from(position).ok())
            .unwrap_or(NOT_QUEUED);
    }

    /// Replaces the identity of the peer `peer_id` in room `room_id` by a
    /// fresh one of the same subject and room; its new deadline (to be
    /// scheduled, replacing the entry the peer had).
    pub(crate) fn refresh(
        &self,
        identity: Identity,
        peer_id: &Arc<str>,
        room_id: Option<&Arc<str>>,
    ) -> Result<Instant, Identity> {
        let mut held = lock(&self.current);
        let (subject, room) = held.ids(peer_id, room_id);
        if identity.subject != *subject || identity.room != *room {
            return Err(identity);
        }
        let deadline = identity.deadline();
        held.expires_at = identity.expires_at;
        // The old claims are dropped once the lock is released (the
        // application's own claims may do anything when dropped).
        let old = (
            std::mem::replace(&mut held.name, identity.name),
            std::mem::replace(&mut held.allow, identity.allow),
            std::mem::replace(&mut held.custom, identity.custom),
        );
        drop(held);
        drop(old);
        Ok(deadline)
    }
}

impl Held {
    /// The subject and room.
    fn ids<'a>(
        &'a self,
        peer_id: &'a Arc<str>,
        room_id: Option<&'a Arc<str>>,
    ) -> (&'a Arc<str>, &'a Arc<str>) {
        match (&self.ids, room_id) {
            (Some(ids), _) => (&ids.0, &ids.1),
            (None, Some(room_id)) => (peer_id, room_id),
            // Not made: a slot without its ids is one of a peer in a room.
            (None, None) => (peer_id, peer_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_small() {
        let size = std::mem::size_of::<IdentitySlot>();
        println!("IdentitySlot: {size} bytes");
        assert!(size <= 72, "IdentitySlot grew to {size} bytes");
    }
}
