//! Identities on peers: no takeover of another's peer id (the one check,
//! under the room's lock), allowed methods enforced before the event
//! queue, expiry closing a live peer (paused time), and refresh.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use protoo_core::{
    CoreError, DuplicatePolicy, Identity, Joined, METHOD_NOT_ALLOWED_REASON, Peer, PeerConfig,
    RequestError, Rooms, TOKEN_EXPIRED_REASON,
};

fn rooms() -> Rooms {
    Rooms::builder()
        .duplicate_policy(DuplicatePolicy::Replace)
        .build()
}

fn identity(subject: &str, room: &str, secs: u64) -> Identity {
    Identity::new(subject, room, SystemTime::now() + Duration::from_secs(secs))
}

/// Whether `transport` has a frame or its close waiting (without waiting).
async fn nothing_received(transport: &mut protoo_transport::Transport) -> bool {
    tokio::select! {
        biased;
        inbound = transport.recv() => panic!("the victim was told something: {inbound:?}"),
        () = tokio::task::yield_now() => true,
    }
}

#[tokio::test]
async fn another_identity_cannot_take_a_peer_id_and_the_victim_is_not_told() {
    let rooms = rooms();
    let (a, mut raw_victim) = pair();
    let Joined {
        room,
        peer: victim,
        events: _victim_events,
        ..
    } = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 600))
        .join(a, ())
        .await
        .unwrap();

    // Another subject with the victim's peer id.
    let (b, mut raw_b) = pair();
    let refused = rooms
        .admit("r", "alice")
        .identity(identity("mallory", "r", 600))
        .join(b, ())
        .await;
    assert!(matches!(refused, Err(CoreError::IdentityMismatch(ref id)) if id == "alice"));
    assert_eq!(recv_close(&mut raw_b).await.code, Some(4000));

    // No identity at all.
    let (c, mut raw_c) = pair();
    let refused = rooms.admit("r", "alice").join(c, ()).await;
    assert!(matches!(refused, Err(CoreError::IdentityMismatch(_))));
    assert_eq!(recv_close(&mut raw_c).await.code, Some(4000));

    // The same subject for another room (its token says so) cannot either.
    let (d, _raw_d) = pair();
    let refused = rooms
        .admit("r", "alice")
        .identity(identity("alice", "elsewhere", 600))
        .join(d, ())
        .await;
    assert!(matches!(refused, Err(CoreError::IdentityMismatch(_))));

    assert!(!victim.is_closed());
    assert!(Peer::ptr_eq(&room.peer("alice").unwrap(), &victim));
    assert!(nothing_received(&mut raw_victim).await);
}

#[tokio::test]
async fn an_identity_cannot_take_the_id_of_a_peer_without_one() {
    let rooms = rooms();
    let (a, _raw_a) = pair();
    let joined = rooms.admit("r", "alice").join(a, ()).await.unwrap();
    let (b, _raw_b) = pair();
    let refused = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 600))
        .join(b, ())
        .await;
    assert!(matches!(refused, Err(CoreError::IdentityMismatch(_))));
    assert!(!joined.peer.is_closed());
}

#[tokio::test]
async fn the_same_identity_replaces_its_peer() {
    let rooms = rooms();
    let (a, mut raw_old) = pair();
    let old = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 600))
        .join(a, ())
        .await
        .unwrap();
    let (b, _raw_new) = pair();
    let new = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 1200))
        .join(b, ())
        .await
        .unwrap();
    assert_eq!(recv_close(&mut raw_old).await.code, Some(4000));
    assert!(old.peer.is_closed());
    assert!(Peer::ptr_eq(&new.room.peer("alice").unwrap(), &new.peer));
    assert_eq!(new.peer.identity().unwrap().subject(), "alice");
}

#[tokio::test]
async fn methods_outside_allow_never_reach_the_application() {
    let rooms = rooms();
    let (a, b) = pair();
    let mut joined = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 600).with_allow(["chat"]))
        .join(a, ())
        .await
        .unwrap();
    let (client, _client_events) = Peer::new("server", b, (), PeerConfig::default()).unwrap();

    // A notification outside allow is dropped; the allowed one arrives.
    client.notify("kick", &()).unwrap();
    client.notify("chat", &()).unwrap();
    let notification = expect_notification(&mut joined.events).await;
    assert_eq!(notification.method(), "chat");

    // A request outside allow is answered 403 by the core.
    let refused = client.request("kick", &()).await;
    match refused {
        Err(RequestError::Rejected(error)) => {
            assert_eq!(error.code(), Some(403));
            assert_eq!(error.reason().as_deref(), Some(METHOD_NOT_ALLOWED_REASON));
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // The allowed one reaches the application.
    let asked = tokio::spawn({
        let client = client.clone();
        async move { client.request("chat", &()).await }
    });
    let request = expect_request(&mut joined.events).await;
    assert_eq!(request.method(), "chat");
    request.accept(&());
    assert!(asked.await.unwrap().is_ok());
    assert_eq!(joined.peer.refused_messages(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_identity_closes_its_peer_within_a_second() {
    let rooms = rooms();
    let (a, mut raw) = pair();
    let mut joined = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 10))
        .join(a, ())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(!joined.peer.is_closed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(joined.peer.is_closed());
    let reason = recv_close(&mut raw).await;
    assert_eq!(
        (reason.code, reason.reason.as_str()),
        (Some(4000), TOKEN_EXPIRED_REASON)
    );
    let closed = expect_closed(&mut joined.events).await;
    assert_eq!(closed.reason, TOKEN_EXPIRED_REASON);
    assert!(rooms.get("r").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_moves_the_expiry_and_keeps_the_subject() {
    let rooms = rooms();
    let (a, _raw) = pair();
    let joined = rooms
        .admit("r", "alice")
        .identity(identity("alice", "r", 10))
        .join(a, ())
        .await
        .unwrap();
    let peer = joined.peer;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Another subject, or another room: refused, the expiry unchanged.
    assert!(matches!(
        peer.refresh_identity(identity("mallory", "r", 600)),
        Err(CoreError::IdentityMismatch(_))
    ));
    assert!(peer.refresh_identity(identity("alice", "x", 600)).is_err());
    // A fresh token of the same subject: 60 s more.
    peer.refresh_identity(identity("alice", "r", 60).with_name("Alice"))
        .unwrap();
    assert_eq!(peer.identity().unwrap().name(), Some("Alice"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!peer.is_closed(), "closed at the old expiry");
    // A refresh to an earlier expiry than the current one takes effect.
    peer.refresh_identity(identity("alice", "r", 3)).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(peer.is_closed());
    assert_eq!(peer.close_reason().unwrap().reason, TOKEN_EXPIRED_REASON);

    // A peer without an identity has none to refresh.
    let (b, _raw_b) = pair();
    let plain = rooms.admit("r2", "bob").join(b, ()).await.unwrap();
    assert!(plain.peer.identity().is_none());
    assert!(
        plain
            .peer
            .refresh_identity(identity("bob", "r2", 60))
            .is_err()
    );
}

#[tokio::test]
async fn an_identity_is_readable_by_handlers() {
    #[derive(Debug, PartialEq)]
    struct Grants {
        publish: bool,
    }
    let rooms = rooms();
    let (a, _raw) = pair();
    let joined = rooms
        .admit("r", "alice")
        .identity(
            identity("alice", "r", 600)
                .with_name("Alice")
                .with_custom(Grants { publish: true }),
        )
        .join(a, ())
        .await
        .unwrap();
    let identity = joined.peer.identity().unwrap();
    assert_eq!(identity.name(), Some("Alice"));
    assert_eq!(identity.custom::<Grants>(), Some(&Grants { publish: true }));
    assert!(identity.allows("anything"));
}
