//! Room-wide consistency: mediasoup-demo's join/produce race, run through
//! the router by several peers on a multi-thread runtime, with
//! `Room::exclusive` making each (consumer, producer) pair be created
//! exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::pair;
use protoo_core::handler::{Data, Router, State};
use protoo_core::{ErrorData, Peer, PeerConfig, PeerError, Room, Rooms};
use serde::Deserialize;
use serde_json::json;

/// A peer's producers (mediasoup-demo keeps them in `peer.data`).
#[derive(Default)]
struct PeerData {
    producers: Mutex<Vec<String>>,
}

/// Every consumer created: (consuming peer, producer).
type Consumers = Arc<Mutex<Vec<(String, String)>>>;

/// `join`: marks the peer joined, then creates its consumers of the joined
/// peers' producers.
async fn join(
    peer: Peer<PeerData>,
    room: Room<PeerData>,
    State(consumers): State<Consumers>,
) -> Result<(), PeerError> {
    room.exclusive(|members| {
        room.set_presence(peer.id(), &json!({}))?;
        let mut consumers = consumers.lock().unwrap();
        for other in members.listed().filter(|member| member.id() != peer.id()) {
            for producer in other.data().producers.lock().unwrap().iter() {
                consumers.push((peer.id().to_owned(), producer.clone()));
            }
        }
        Ok(())
    })
}

#[derive(Deserialize)]
struct Produce {
    id: String,
}

/// `produce`: adds the producer, then creates a consumer of it for every
/// other joined peer.
async fn produce(
    peer: Peer<PeerData>,
    room: Room<PeerData>,
    Data(produce): Data<Produce>,
    State(consumers): State<Consumers>,
) -> Result<(), ErrorData> {
    room.exclusive(|members| {
        peer.data()
            .producers
            .lock()
            .unwrap()
            .push(produce.id.clone());
        let mut consumers = consumers.lock().unwrap();
        for other in members.listed().filter(|member| member.id() != peer.id()) {
            consumers.push((other.id().to_owned(), produce.id.clone()));
        }
    });
    Ok(())
}

const PEERS: usize = 8;
const PRODUCERS: usize = 2;
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_and_produce_create_each_consumer_exactly_once() {
    for round in 0..ROUNDS {
        let consumers = Consumers::default();
        let router = Router::new()
            .request("join", join)
            .request("produce", produce)
            .with_state(consumers.clone());
        let rooms: Rooms<PeerData> = Rooms::new();
        let room_id = format!("r{round}");
        let (room, _hold) = rooms.admit(&room_id, "").hold().await.unwrap();
        let mut clients = Vec::new();
        for n in 0..PEERS {
            let (server_side, client_side) = pair();
            let joined = rooms
                .admit(&room_id, format!("p{n}"))
                .join(server_side, PeerData::default())
                .await
                .unwrap();
            tokio::spawn({
                let router = router.clone();
                async move { router.run(joined).await }
            });
            let (client, client_events) =
                Peer::new("server", client_side, (), PeerConfig::default()).unwrap();
            // Each client joins, then produces, all at once.
            clients.push(tokio::spawn(async move {
                client.request("join", &()).await.unwrap();
                for k in 0..PRODUCERS {
                    client
                        .request("produce", &json!({"id": format!("p{n}-{k}")}))
                        .await
                        .unwrap();
                }
                // Kept open until every client is done.
                (client, client_events)
            }));
        }
        let mut kept = Vec::new();
        for client in clients {
            kept.push(client.await.unwrap());
        }
        let mut created: BTreeMap<(String, String), usize> = BTreeMap::new();
        for pair in consumers.lock().unwrap().iter() {
            *created.entry(pair.clone()).or_default() += 1;
        }
        let duplicates: Vec<_> = created.iter().filter(|(_, count)| **count > 1).collect();
        assert!(
            duplicates.is_empty(),
            "round {round}: created twice: {duplicates:?}"
        );
        let expected: BTreeSet<(String, String)> = (0..PEERS)
            .flat_map(|consumer| {
                (0..PEERS)
                    .filter(move |producer| *producer != consumer)
                    .flat_map(move |producer| {
                        (0..PRODUCERS)
                            .map(move |k| (format!("p{consumer}"), format!("p{producer}-{k}")))
                    })
            })
            .collect();
        let created: BTreeSet<_> = created.into_keys().collect();
        assert_eq!(created, expected, "round {round}");
        room.close();
    }
}

/// A section may use the room (presence, broadcast: the section lock is not
/// the room's lock), and one that panicked does not block the next.
#[tokio::test]
async fn a_section_uses_the_room_and_a_panic_does_not_block_the_next() {
    let rooms: Rooms<PeerData> = Rooms::new();
    let (room, _hold) = rooms.admit("r", "").hold().await.unwrap();
    let mut kept = Vec::new();
    for id in ["a", "b"] {
        let (server_side, client_side) = pair();
        let created = rooms
            .admit("r", id)
            .join(server_side, PeerData::default())
            .await
            .unwrap();
        let client = Peer::new("server", client_side, (), PeerConfig::default()).unwrap();
        kept.push((created, client));
    }
    let report = room.exclusive(|members| {
        assert_eq!(members.len(), 2);
        assert!(members.listed().next().is_none());
        room.set_presence("a", &json!({"name": "A"})).unwrap();
        room.to_all().except(["a"]).notify("hello", &()).unwrap()
    });
    assert_eq!(report.delivered, 1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        room.exclusive(|_| panic!("a failing section"))
    }));
    assert!(panicked.is_err());
    let listed: Vec<String> = room.exclusive(|members| {
        let a = members.get("a").unwrap();
        assert_eq!(a.presence().unwrap().as_str(), r#"{"name":"A"}"#);
        assert!(!members.get("b").unwrap().is_listed());
        members
            .listed()
            .map(|member| member.id().to_owned())
            .collect()
    });
    assert_eq!(listed, ["a"]);
    let (_, (_, client_events)) = &mut kept[1];
    let Some(protoo_core::PeerEvent::Notification(hello)) = client_events.next().await else {
        panic!("no broadcast")
    };
    assert_eq!(hello.method(), "hello");
}
