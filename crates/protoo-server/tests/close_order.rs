//! When the server closes a peer, the peer must be out of its room before
//! the close can reach the remote: a client that sees protoo's 4000 and at
//! once reconnects with its id (or a client that asks the room who is
//! there) must not find the closed peer still listed. protoo does the same
//! synchronously: `peer.close()` leaves the room before any I/O.
//!
//! A transport whose `close` looks at the room shows the order exactly.
//! The room example's contract test (`kick`, then a new peer joins) hits
//! the same race now and then under load.

use std::sync::{Arc, Mutex, OnceLock};

use protoo_server::transport::{FrameSink, memory};
use protoo_server::{DuplicatePolicy, Frame, Joined, Room, Rooms, Transport, TransportError};

/// Forwards to a memory transport's sink, and records whether the peer was
/// still in its room when the transport was asked to close.
#[derive(Debug)]
struct Observing {
    inner: Arc<dyn FrameSink>,
    room: Arc<OnceLock<Room>>,
    peer_id: &'static str,
    in_room_at_close: Arc<Mutex<Option<bool>>>,
}

impl FrameSink for Observing {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        self.inner.send(frame)
    }

    fn close(&self, code: u16, reason: &str) {
        if let Some(room) = self.room.get() {
            let mut seen = self.in_room_at_close.lock().unwrap();
            seen.get_or_insert(room.has_peer(self.peer_id));
        }
        self.inner.close(code, reason);
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes()
    }
}

/// A transport for `peer_id` watching `room`, and what it saw at close.
fn observing(
    peer_id: &'static str,
    room: &Arc<OnceLock<Room>>,
) -> (Transport, Transport, Arc<Mutex<Option<bool>>>) {
    let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let (sink, stream) = server_side.into_parts();
    let seen = Arc::new(Mutex::new(None));
    let sink = Observing {
        inner: sink,
        room: room.clone(),
        peer_id,
        in_room_at_close: seen.clone(),
    };
    (
        Transport::from_parts(Arc::new(sink), stream),
        client_side,
        seen,
    )
}

#[tokio::test]
async fn a_closed_peer_leaves_its_room_before_the_close_is_sent() {
    let slot = Arc::new(OnceLock::new());
    let rooms: Rooms = Rooms::new();
    let (room, _hold) = rooms.admit("r", "").hold().await.unwrap();
    slot.set(room.clone()).unwrap();
    let (transport, _client_side, seen) = observing("a", &slot);
    let Joined {
        peer,
        events: _events,
        ..
    } = rooms.admit("r", "a").join(transport, ()).await.unwrap();
    assert!(room.has_peer("a"));

    peer.close();
    assert!(!room.has_peer("a"));
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "the close was sent while the peer was still in the room"
    );
}

#[tokio::test]
async fn a_kicked_peer_can_reconnect_at_once_under_the_refuse_policy() {
    // The same with a registry: the room is gone before the close is sent.
    let rooms: Rooms = Rooms::new();
    let slot = Arc::new(OnceLock::new());
    let (transport, _client_side, seen) = observing("a", &slot);
    let Joined {
        room,
        peer,
        events: _events,
        ..
    } = rooms
        .admit("r", "a")
        .policy(DuplicatePolicy::Refuse)
        .join(transport, ())
        .await
        .unwrap();
    slot.set(room).unwrap();
    peer.close();
    assert_eq!(*seen.lock().unwrap(), Some(false));
}
