//! Presence: who a room lists, apart from who is in it; and reaching a
//! peer of the room by its id.

mod common;

use common::*;
use protoo_core::{DuplicatePolicy, Joined, PeerConfig, PeerError, PeerEvent, RequestError, Rooms};
use serde_json::json;

fn ids(room_presence: &[protoo_core::Presence]) -> Vec<String> {
    let mut ids: Vec<String> = room_presence.iter().map(|p| p.peer_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn only_peers_that_set_their_presence_are_listed() {
    let room = HeldRoom::new("r").await;
    let (a, _raw_a) = pair();
    let (b, _raw_b) = pair();
    let _alice = room
        .create_peer("alice", a, (), PeerConfig::default())
        .await
        .unwrap();
    let _bob = room
        .create_peer("bob", b, (), PeerConfig::default())
        .await
        .unwrap();
    assert!(room.presence().await.is_empty());

    room.set_presence("alice", &json!({"displayName": "A"}))
        .unwrap();
    let listed = room.presence().await;
    assert_eq!(ids(&listed), ["alice"]);
    assert_eq!(listed[0].info.as_str(), r#"{"displayName":"A"}"#);
    assert!(room.is_listed("alice") && !room.is_listed("bob"));

    // Setting it again replaces it.
    room.set_presence("alice", &json!({"displayName": "B"}))
        .unwrap();
    let listed = room.presence().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].info_as::<serde_json::Value>().unwrap(),
        json!({"displayName": "B"})
    );

    room.set_presence("bob", &json!({})).unwrap();
    assert_eq!(ids(&room.presence().await), ["alice", "bob"]);
}

#[tokio::test]
async fn a_peer_not_in_the_room_cannot_be_listed() {
    let room: HeldRoom = HeldRoom::new("r").await;
    assert!(matches!(
        room.set_presence("ghost", &json!({})),
        Err(PeerError::Closed)
    ));
    assert!(room.presence().await.is_empty());
}

#[tokio::test]
async fn a_peer_that_leaves_is_no_longer_listed() {
    let room = HeldRoom::new("r").await;
    let (a, _raw_a) = pair();
    let (b, _raw_b) = pair();
    let (alice, mut alice_events) = room
        .create_peer("alice", a, (), PeerConfig::default())
        .await
        .unwrap();
    let _bob = room
        .create_peer("bob", b, (), PeerConfig::default())
        .await
        .unwrap();
    room.set_presence("alice", &json!({})).unwrap();
    room.set_presence("bob", &json!({})).unwrap();

    alice.close();
    // Unlisted by the time the application sees the close.
    let Some(PeerEvent::Closed(_)) = alice_events.next().await else {
        panic!("expected the close")
    };
    assert_eq!(ids(&room.presence().await), ["bob"]);
    assert!(matches!(
        room.set_presence("alice", &json!({})),
        Err(PeerError::Closed)
    ));

    room.close();
    assert!(room.presence().await.is_empty());
}

#[tokio::test]
async fn a_replacing_peer_is_not_listed_until_it_says_so() {
    let rooms: Rooms = Rooms::with_defaults(PeerConfig::default(), DuplicatePolicy::Replace);
    let (a, _raw_a) = pair();
    let Joined {
        room,
        peer: _old,
        events: _old_events,
        ..
    } = rooms.admit("r", "p").join(a, ()).await.unwrap();
    room.set_presence("p", &json!({"displayName": "old"}))
        .unwrap();

    let (b, _raw_b) = pair();
    let Joined {
        room,
        peer: _new,
        events: _new_events,
        ..
    } = rooms.admit("r", "p").join(b, ()).await.unwrap();
    assert!(room.presence().await.is_empty());
    room.set_presence("p", &json!({"displayName": "new"}))
        .unwrap();
    let listed = room.presence().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info.as_str(), r#"{"displayName":"new"}"#);
}

#[tokio::test]
async fn a_peer_is_reached_by_its_id() {
    let room = HeldRoom::new("r").await;
    let (server_side, client_side) = pair();
    let (_peer, _events) = room
        .create_peer("alice", server_side, (), PeerConfig::default())
        .await
        .unwrap();
    let (_client, mut client_events) =
        protoo_core::Peer::new("server", client_side, (), PeerConfig::default()).unwrap();

    room.notify_peer("alice", "hello", &json!({"n": 1}))
        .await
        .unwrap();
    let notification = expect_notification(&mut client_events).await;
    assert_eq!(
        (notification.method(), notification.payload().as_str()),
        ("hello", r#"{"n":1}"#)
    );

    let answer = tokio::spawn({
        let room = room.clone();
        async move { room.request_peer("alice", "ping", &json!({})).await }
    });
    let request = expect_request(&mut client_events).await;
    assert_eq!(request.method(), "ping");
    request.accept(&json!({"pong": true}));
    assert_eq!(answer.await.unwrap().unwrap().as_str(), r#"{"pong":true}"#);

    assert!(matches!(
        room.notify_peer("bob", "hello", &()).await,
        Err(PeerError::Closed)
    ));
    assert!(matches!(
        room.request_peer("bob", "ping", &()).await,
        Err(RequestError::PeerClosed)
    ));
    assert!(!room.close_peer("bob").await);

    assert!(room.close_peer("alice").await);
    let reason = expect_closed(&mut client_events).await;
    assert_eq!(reason.code, Some(4000));
    assert!(!room.close_peer("alice").await);
}

#[tokio::test]
async fn a_broadcast_can_go_to_the_listed_peers_only() {
    let room = HeldRoom::new("r").await;
    let mut raws = Vec::new();
    let mut kept = Vec::new();
    for id in ["alice", "bob", "carol"] {
        let (server_side, raw) = pair();
        kept.push(
            room.create_peer(id, server_side, (), PeerConfig::default())
                .await
                .unwrap(),
        );
        raws.push(raw);
    }
    room.set_presence("alice", &json!({})).unwrap();
    room.set_presence("bob", &json!({})).unwrap();

    let report = room
        .to_all()
        .listed()
        .except(["alice"])
        .notify("newPeer", &json!({"id": "alice"}))
        .unwrap();
    assert_eq!((report.delivered, report.skipped), (1, 2));
    assert_eq!(recv_json(&mut raws[1]).await["method"], "newPeer");

    // With a predicate as well: the same choice, and the predicate's.
    let report = room
        .to_all()
        .listed()
        .local()
        .filter(|peer| peer.id() != "bob")
        .notify("chat", &json!({}))
        .unwrap();
    assert_eq!((report.delivered, report.skipped), (1, 2));
    assert_eq!(recv_json(&mut raws[0]).await["method"], "chat");
}

/// Finding: 16 peers listed with 1 MB names made an 84-byte `join` cost
/// 16 MB of output. What one peer may be listed with is capped (4 KiB by
/// default, its `PeerConfig` otherwise); over it nothing changes and the
/// error answers 400.
#[tokio::test]
async fn presence_over_its_cap_is_refused_and_changes_nothing() {
    use protoo_core::{DEFAULT_MAX_PRESENCE_BYTES, IntoErrorData, PRESENCE_TOO_LARGE_REASON};

    assert_eq!(DEFAULT_MAX_PRESENCE_BYTES, 4096);
    let room = HeldRoom::new("r").await;
    let (a, _raw_a) = pair();
    let (b, _raw_b) = pair();
    let _alice = room
        .create_peer("alice", a, (), PeerConfig::default())
        .await
        .unwrap();
    let _bob = room
        .create_peer(
            "bob",
            b,
            (),
            PeerConfig::default().with_max_presence_bytes(64),
        )
        .await
        .unwrap();

    // `{"n":"…"}` is 8 bytes around the name: exactly the cap passes.
    let at_cap = json!({ "n": "a".repeat(DEFAULT_MAX_PRESENCE_BYTES - 8) });
    room.set_presence("alice", &at_cap).unwrap();
    let over = json!({ "n": "a".repeat(1 << 20) });
    let error = room.set_presence("alice", &over).unwrap_err();
    assert!(
        matches!(
            error,
            PeerError::PresenceTooLarge { bytes, max: DEFAULT_MAX_PRESENCE_BYTES }
                if bytes == (1 << 20) + 8
        ),
        "{error:?}"
    );
    let answer = error.into_error_data();
    assert_eq!(answer.code(), Some(400));
    assert_eq!(answer.reason().as_deref(), Some(PRESENCE_TOO_LARGE_REASON));
    // Still listed with what it had.
    let listed = room.presence().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info.as_str().len(), DEFAULT_MAX_PRESENCE_BYTES);

    // Bob's own cap; the raw-payload path is capped the same way.
    room.set_presence("bob", &json!({ "n": "b".repeat(56) }))
        .unwrap();
    let payload = protoo_core::Payload::from_serialize(&json!({ "n": "b".repeat(57) })).unwrap();
    assert!(matches!(
        room.set_presence_payload("bob", payload),
        Err(PeerError::PresenceTooLarge { bytes: 65, max: 64 })
    ));
    assert_eq!(ids(&room.presence().await), ["alice", "bob"]);
    // Other errors stay 500.
    assert_eq!(PeerError::Closed.into_error_data().code(), Some(500));
}
