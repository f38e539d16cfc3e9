//! Sessions across nodes over a real redis-server: a peer with a resume
//! window whose remote comes back on another node moves there, with what
//! its old node held for it, its presence, and nothing the other members
//! can see.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protoo_core::transport::memory;
use protoo_core::{
    DuplicatePolicy, Initiator, Peer, PeerConfig, PeerEvent, PeerEvents, Room, Rooms, Transport,
};
use protoo_redis::RedisCluster;
use serde_json::{Value, json};
use support::*;

/// A node whose peers have a resume window; the closes its application
/// saw, by peer id and initiator.
struct SessionNode {
    rooms: Rooms,
    closes: Arc<Mutex<Vec<(String, Initiator)>>>,
}

async fn node(redis: &RedisServer, prefix: &str) -> SessionNode {
    let cluster = RedisCluster::connect(redis.fast(prefix))
        .await
        .expect("Redis is up");
    let rooms = Rooms::builder()
        .peer_config(PeerConfig::default().with_resume_window(Duration::from_secs(15)))
        .duplicate_policy(DuplicatePolicy::Replace)
        .cluster(cluster)
        .on_member_lost(|lost| Some(("peerClosed", json!({ "peerId": lost.peer_id }))))
        .build();
    SessionNode {
        rooms,
        closes: Arc::default(),
    }
}

impl SessionNode {
    /// Admits `peer` into room `r` on `transport`, serving it; whether it
    /// resumed a session of this node.
    async fn admit(&self, peer: &str, transport: Transport) -> bool {
        let joined = self
            .rooms
            .admit("r", peer)
            .join(transport, ())
            .await
            .unwrap();
        if !joined.resumed {
            tokio::spawn(serve(
                joined.room,
                joined.peer,
                joined.events,
                self.closes.clone(),
            ));
        }
        joined.resumed
    }
}

/// The application: `join` lists the peer, `chat` is broadcast to the
/// others, and a peer that left (but not one whose session moved) is
/// announced with `peerClosed`.
async fn serve(
    room: Room,
    peer: Peer,
    mut events: PeerEvents,
    closes: Arc<Mutex<Vec<(String, Initiator)>>>,
) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) => match request.method() {
                "join" => {
                    let _ = room.set_presence(peer.id(), request.payload());
                    request.accept(&json!({}));
                }
                "chat" => {
                    let _ = room
                        .to_all()
                        .except_peer(&peer)
                        .notify("chat", request.payload());
                    request.accept(&json!({}));
                }
                _ => request.reject(404, "unknown method"),
            },
            PeerEvent::Resumed { missed } => {
                let _ = peer.notify("resumed", &json!({ "missed": missed }));
            }
            PeerEvent::Closed(reason) => {
                closes
                    .lock()
                    .unwrap()
                    .push((peer.id().to_owned(), reason.initiator));
                if reason.initiator != Initiator::Moved {
                    let _ = room
                        .to_all()
                        .except_peer(&peer)
                        .notify("peerClosed", &json!({ "peerId": peer.id() }));
                }
            }
            PeerEvent::Notification(_) | PeerEvent::Disconnected(_) => {}
        }
    }
}

/// The client end: a peer, and its events.
fn client(transport: Transport) -> (Peer, PeerEvents) {
    Peer::new("server", transport, (), PeerConfig::default()).unwrap()
}

/// The next notification's method and data.
async fn next(events: &mut PeerEvents) -> (String, Value) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time");
        match event {
            Some(PeerEvent::Notification(n)) => {
                return (n.method().to_owned(), n.data().unwrap_or_default());
            }
            Some(PeerEvent::Closed(reason)) => panic!("closed: {reason}"),
            None => panic!("no more events"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_on_another_node_moves_there_unseen() {
    let redis = RedisServer::shared().await;
    let prefix = unique_prefix();
    let (first, second) = (node(&redis, &prefix).await, node(&redis, &prefix).await);

    let (server_side, alice_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(!first.admit("alice", server_side).await);
    let (alice, alice_events) = client(alice_side);
    alice
        .request("join", &json!({ "displayName": "Alice" }))
        .await
        .unwrap();
    let (server_side, bob_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(!second.admit("bob", server_side).await);
    let (bob, mut bob_events) = client(bob_side);
    bob.request("join", &json!({ "displayName": "Bob" }))
        .await
        .unwrap();

    // Alice's connection is lost: her session waits on the first node,
    // holding what Bob sends meanwhile.
    alice.close_with(1006, "connection lost");
    drop(alice_events);
    topology::until("alice's session waits", || async {
        first.rooms.waiting_sessions().0 == 1
    })
    .await;
    for n in 0..3 {
        bob.request("chat", &json!({ "n": n })).await.unwrap();
    }
    topology::until("the chats are held", || async {
        first.rooms.waiting_sessions().1 > 0
    })
    .await;

    // She comes back on the second node: the session moves there.
    let (server_side, alice_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(
        !second.admit("alice", server_side).await,
        "a new peer on this node"
    );
    let (alice, mut alice_events) = client(alice_side);
    for n in 0..3 {
        assert_eq!(
            next(&mut alice_events).await,
            ("chat".into(), json!({ "n": n }))
        );
    }
    assert_eq!(
        next(&mut alice_events).await,
        ("resumed".into(), json!({ "missed": 3 }))
    );
    // Newer ones after.
    bob.request("chat", &json!({ "n": 3 })).await.unwrap();
    assert_eq!(
        next(&mut alice_events).await,
        ("chat".into(), json!({ "n": 3 }))
    );

    // Listed all along, with what she joined with; the first node let her
    // go as moved; Bob heard nothing but her chat.
    let room = second.rooms.get("r").expect("the room");
    let listed = room.presence().await;
    let alice_listed = listed
        .iter()
        .find(|p| p.peer_id == "alice")
        .expect("listed");
    assert_eq!(
        alice_listed.info_as::<Value>().unwrap(),
        json!({ "displayName": "Alice" })
    );
    assert_eq!(
        first.closes.lock().unwrap().clone(),
        [("alice".to_owned(), Initiator::Moved)]
    );
    assert_eq!(first.rooms.waiting_sessions(), (0, 0));
    alice
        .request("chat", &json!({ "from": "alice" }))
        .await
        .unwrap();
    assert_eq!(
        next(&mut bob_events).await,
        ("chat".into(), json!({ "from": "alice" }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_open_on_another_node_is_taken_over() {
    let redis = RedisServer::shared().await;
    let prefix = unique_prefix();
    let (first, second) = (node(&redis, &prefix).await, node(&redis, &prefix).await);
    let (server_side, old_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(!first.admit("alice", server_side).await);
    let (old, mut old_events) = client(old_side);
    old.request("join", &json!({ "displayName": "Alice" }))
        .await
        .unwrap();
    let (server_side, bob_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(!second.admit("bob", server_side).await);
    let (bob, mut bob_events) = client(bob_side);

    let (server_side, new_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(!second.admit("alice", server_side).await);
    let (new, mut new_events) = client(new_side);
    let closed = loop {
        match old_events.next().await {
            Some(PeerEvent::Closed(reason)) => break reason,
            Some(_) => {}
            None => panic!("no close"),
        }
    };
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4000), protoo_core::TAKEN_OVER_REASON)
    );
    assert_eq!(next(&mut new_events).await.0, "resumed");
    new.request("chat", &json!({ "again": true }))
        .await
        .unwrap();
    assert_eq!(
        next(&mut bob_events).await,
        ("chat".into(), json!({ "again": true }))
    );
    drop(bob);
}
