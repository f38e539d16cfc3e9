//! Room behaviour: admission, duplicates, close, leaving, broadcast.

mod common;

use common::*;
use protoo_core::{
    CoreError, DuplicatePolicy, Frame, Initiator, PROTOO_CLOSED_REASON, Peer, PeerConfig,
    close_code,
};
use protoo_transport::memory;
use serde_json::json;

#[tokio::test]
async fn create_peer_admits_and_looks_up() {
    let room = HeldRoom::new("r").await;
    assert_eq!(room.id(), "r");
    assert!(room.is_empty());
    let (a, _raw_a) = pair();
    let (b, _raw_b) = pair();
    let (alice, _alice_events) = room
        .create_peer("alice", a, 1u8, PeerConfig::default())
        .await
        .unwrap();
    let (bob, _bob_events) = room
        .create_peer("bob", b, 2u8, PeerConfig::default())
        .await
        .unwrap();
    assert_eq!(room.len(), 2);
    assert!(room.has_peer("alice") && room.has_peer("bob") && !room.has_peer("carol"));
    assert_eq!(room.peer("alice"), Some(alice.clone()));
    assert_eq!(*room.peer("bob").unwrap().data(), 2);
    let mut ids: Vec<String> = room.peers().iter().map(|p| p.id().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["alice", "bob"]);
    assert_ne!(alice, bob);
    assert!(format!("{room:?}").contains("peers: 2"));
}

#[tokio::test]
async fn empty_id_is_refused_and_the_transport_closed() {
    let room = HeldRoom::new("").await;
    let (a, mut raw) = pair();
    let result = room.create_peer("", a, (), PeerConfig::default()).await;
    assert!(matches!(result, Err(CoreError::EmptyId)));
    assert_eq!(recv_close(&mut raw).await.code, Some(4000));
    assert!(room.is_empty());
}

#[tokio::test]
async fn duplicate_id_is_refused_and_the_transport_closed() {
    let room = HeldRoom::new("").await;
    let (a, mut raw_a) = pair();
    let (first, _first_events) = room
        .create_peer("p", a, (), PeerConfig::default())
        .await
        .unwrap();

    let (b, mut raw_b) = pair();
    let result = room.create_peer("p", b, (), PeerConfig::default()).await;
    assert!(matches!(result, Err(CoreError::DuplicateId(ref id)) if id == "p"));
    let reason = recv_close(&mut raw_b).await;
    assert_eq!(
        (reason.code, reason.reason.as_str()),
        (Some(4000), PROTOO_CLOSED_REASON)
    );

    // The first peer stays, and works.
    assert_eq!(room.peer("p"), Some(first.clone()));
    first.notify("still-here", &()).unwrap();
    assert!(recv_text(&mut raw_a).await.contains("still-here"));
}

#[tokio::test]
async fn duplicate_id_replaces_the_old_peer() {
    let room = HeldRoom::new("").await;
    let (a, mut raw_a) = pair();
    let (old, mut old_events) = room
        .create_peer("p", a, "old", PeerConfig::default())
        .await
        .unwrap();
    let (b, mut raw_b) = pair();
    let (new, _new_events) = room
        .create_or_replace_peer("p", b, "new", PeerConfig::default())
        .await
        .unwrap();

    // The old peer got 4000, and its close did not take the new one out.
    assert_eq!(recv_close(&mut raw_a).await.code, Some(4000));
    assert_eq!(expect_closed(&mut old_events).await.code, Some(4000));
    old.closed().await;
    assert_eq!(room.len(), 1);
    let current = room.peer("p").unwrap();
    assert!(Peer::ptr_eq(&current, &new));
    assert_eq!(*current.data(), "new");
    assert!(!new.is_closed());
    new.notify("hi", &()).unwrap();
    assert!(recv_text(&mut raw_b).await.contains("hi"));
}

#[tokio::test]
async fn replace_without_a_duplicate_just_admits() {
    let room = HeldRoom::new("").await;
    let (a, _raw) = pair();
    let (peer, _events) = room
        .create_peer_with("p", a, (), PeerConfig::default(), DuplicatePolicy::Replace)
        .await
        .unwrap();
    assert_eq!(room.peer("p"), Some(peer));
}

#[tokio::test]
async fn a_closed_peer_leaves_the_room() {
    let room = HeldRoom::new("").await;
    let (a, raw_a) = pair();
    let (b, _raw_b) = pair();
    let (alice, mut alice_events) = room
        .create_peer("alice", a, (), PeerConfig::default())
        .await
        .unwrap();
    let (bob, _bob_events) = room
        .create_peer("bob", b, (), PeerConfig::default())
        .await
        .unwrap();

    // Closed by the remote.
    raw_a.close_with(1000, "bye");
    assert_eq!(
        expect_closed(&mut alice_events).await.initiator,
        Initiator::Remote
    );
    assert!(!room.has_peer("alice"));
    alice.closed().await;

    // Closed locally.
    bob.close();
    bob.closed().await;
    assert!(room.is_empty());
    // A standalone room stays open when empty.
    assert!(!room.is_closed());
    let (c, _raw_c) = pair();
    assert!(
        room.create_peer("alice", c, (), PeerConfig::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn room_close_closes_every_peer_then_the_room() {
    let room = HeldRoom::new("").await;
    let mut raws = Vec::new();
    let mut peers = Vec::new();
    for id in ["a", "b", "c"] {
        let (t, raw) = pair();
        peers.push(
            room.create_peer(id, t, (), PeerConfig::default())
                .await
                .unwrap(),
        );
        raws.push(raw);
    }
    let waiter = tokio::spawn({
        let room = room.clone();
        async move { room.closed().await }
    });
    // An admission that has its place when the room closes.
    let (t, mut raw) = pair();
    let (connection, held, release) = HeldConnection::new(t);
    let late = tokio::spawn({
        let (rooms, id) = (room.rooms.clone(), room.id().to_owned());
        async move { rooms.admit(id, "d").join(connection, ()).await }
    });
    held.await.unwrap();
    room.close();
    room.close(); // no effect
    waiter.await.unwrap();
    assert!(room.is_closed() && room.is_empty());
    for (peer, _) in &peers {
        assert!(peer.is_closed());
    }
    for (_, events) in &mut peers {
        let reason = expect_closed(events).await;
        assert_eq!(
            (reason.code, reason.initiator),
            (Some(4000), Initiator::Local)
        );
    }
    for raw in &mut raws {
        assert_eq!(recv_close(raw).await.code, Some(4000));
    }

    // A closed room takes no new peer, and closes its transport.
    release.release();
    let result = late.await.unwrap();
    assert!(matches!(result, Err(CoreError::RoomClosed)));
    assert_eq!(recv_close(&mut raw).await.code, Some(4000));
}

#[tokio::test]
async fn broadcast_encodes_once_and_skips_the_excluded() {
    let room = HeldRoom::new("").await;
    let mut recorders = Vec::new();
    let mut peers = Vec::new();
    for id in ["a", "b", "c", "d"] {
        let (t, recorder) = recording();
        peers.push(
            room.create_peer(id, t, (), PeerConfig::default())
                .await
                .unwrap(),
        );
        recorders.push(recorder);
    }
    let sent = room
        .to_all()
        .except(["b", "nobody"])
        .notify("chat", &json!({"text": "hi"}))
        .unwrap()
        .delivered;
    assert_eq!(sent, 3);
    let frames: Vec<Vec<Frame>> = recorders.iter().map(|r| r.frames()).collect();
    assert!(frames[1].is_empty(), "b is excluded");
    let first = &frames[0][0];
    assert_eq!(
        first.as_str(),
        r#"{"notification":true,"method":"chat","data":{"text":"hi"}}"#
    );
    for i in [0, 2, 3] {
        assert_eq!(frames[i].len(), 1);
        // The very same buffer, not a copy.
        assert_eq!(frames[i][0].as_bytes().as_ptr(), first.as_bytes().as_ptr());
    }

    // Closed peers are skipped.
    peers[2].0.close();
    assert_eq!(room.to_all().send_frame(first).delivered, 3);
    assert_eq!(recorders[2].close_code(), Some(4000));
    assert_eq!(recorders[2].frames().len(), 1);
    assert_eq!(
        room.to_all()
            .except(["a", "b", "c", "d"])
            .notify("x", &())
            .unwrap()
            .delivered,
        0
    );
}

#[tokio::test]
async fn broadcast_of_unencodable_data_is_an_error() {
    let room: HeldRoom = HeldRoom::new("").await;
    let data = std::collections::BTreeMap::from([(vec![1u8], 1)]);
    assert!(room.to_all().notify("x", &data).is_err());
}

#[tokio::test]
async fn a_slow_peer_does_not_hold_up_the_others() {
    let room = HeldRoom::new("").await;
    // Two peers whose remotes read, one whose remote never reads and whose
    // queue holds about 2 KiB.
    let (fast1, mut raw1) = pair();
    let (fast2, mut raw2) = pair();
    let (slow, mut raw_slow) = memory::pair(2048);
    let _p1 = room
        .create_peer("fast1", fast1, (), PeerConfig::default())
        .await
        .unwrap();
    let _p2 = room
        .create_peer("fast2", fast2, (), PeerConfig::default())
        .await
        .unwrap();
    let (slow_peer, mut slow_events) = room
        .create_peer("slow", slow, (), PeerConfig::default())
        .await
        .unwrap();

    let mut counts = Vec::new();
    for n in 0..100 {
        counts.push(
            room.to_all()
                .notify("n", &json!({"n": n}))
                .unwrap()
                .delivered,
        );
    }
    // The slow peer took a few, then overflowed and was closed as a slow
    // consumer; the broadcast went on to the others.
    assert_eq!(counts[0], 3);
    assert_eq!(*counts.last().unwrap(), 2);
    let reason = expect_closed(&mut slow_events).await;
    assert_eq!(reason.code, Some(close_code::POLICY_VIOLATION));
    slow_peer.closed().await;
    assert!(!room.has_peer("slow"));
    for raw in [&mut raw1, &mut raw2] {
        for n in 0..100 {
            let frame = recv_json(raw).await;
            assert_eq!(frame["data"]["n"], n);
        }
    }
    assert_eq!(
        recv_close(&mut raw_slow).await.code,
        Some(close_code::POLICY_VIOLATION)
    );
}

#[tokio::test]
async fn peers_of_a_dropped_room_keep_working() {
    let room = HeldRoom::new("").await;
    let (a, mut raw) = pair();
    let (peer, _events) = room
        .create_peer("p", a, (), PeerConfig::default())
        .await
        .unwrap();
    drop(room);
    peer.notify("n", &()).unwrap();
    assert!(recv_text(&mut raw).await.contains("\"n\""));
    peer.close();
    peer.closed().await;
}
