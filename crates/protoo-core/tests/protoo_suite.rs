//! The cases of protoo's own suite (versatica/protoo,
//! `test/__tests__/test-client-server.js`), peer to peer over in-memory
//! transports: the server peer in a room, the client a peer on the other end.
//! The connection-level cases (connect, reconnect, connection rejected)
//! belong to the WebSocket server and are not repeated here.

mod common;

use common::*;
use protoo_core::{Initiator, Peer, PeerConfig, PeerEvents};
use protoo_testkit::protoo_case::{
    Answer, assert_accepted, assert_rejected, assert_thrown, exchange, notify,
};

/// protoo's `beforeEach` and a client connecting as `A`.
async fn connect(room: &HeldRoom) -> ((Peer, PeerEvents), (Peer, PeerEvents)) {
    let (server_side, client_side) = pair();
    let server = room
        .create_peer("A", server_side, (), PeerConfig::default())
        .await
        .unwrap();
    let client = Peer::new("server", client_side, (), PeerConfig::default()).unwrap();
    (server, client)
}

#[tokio::test]
async fn server_peer_joins_and_leaves_the_room() {
    let room = HeldRoom::new("").await;
    let ((server_peer, _server_events), (client_peer, _client_events)) = connect(&room).await;
    assert!(room.has_peer("A"));
    assert_eq!(room.peers(), vec![server_peer.clone()]);
    assert!(!server_peer.is_closed());

    client_peer.close();
    server_peer.closed().await;
    assert!(server_peer.is_closed());
    assert!(!room.has_peer("A"));
    assert_eq!(room.peers(), vec![]);
}

#[tokio::test]
async fn client_sends_request_to_server() {
    let room = HeldRoom::new("").await;
    let ((_server, mut server_events), (client, _client_events)) = connect(&room).await;
    assert_accepted(exchange(&client, &mut server_events, Answer::Accept).await);
}

#[tokio::test]
async fn client_sends_request_to_server_and_server_rejects_it() {
    let room = HeldRoom::new("").await;
    let ((_server, mut server_events), (client, _client_events)) = connect(&room).await;
    assert_rejected(exchange(&client, &mut server_events, Answer::Reject).await);
}

#[tokio::test]
async fn client_sends_request_to_server_and_server_throws() {
    let room = HeldRoom::new("").await;
    let ((_server, mut server_events), (client, _client_events)) = connect(&room).await;
    assert_thrown(exchange(&client, &mut server_events, Answer::Throw).await);
}

#[tokio::test]
async fn client_sends_notification_to_server() {
    let room = HeldRoom::new("").await;
    let ((_server, mut server_events), (client, _client_events)) = connect(&room).await;
    notify(&client, &mut server_events).await;
}

#[tokio::test]
async fn server_sends_request_to_client() {
    let room = HeldRoom::new("").await;
    let ((server, _server_events), (_client, mut client_events)) = connect(&room).await;
    assert_accepted(exchange(&server, &mut client_events, Answer::Accept).await);
}

#[tokio::test]
async fn server_sends_request_to_client_and_client_rejects_it() {
    let room = HeldRoom::new("").await;
    let ((server, _server_events), (_client, mut client_events)) = connect(&room).await;
    assert_rejected(exchange(&server, &mut client_events, Answer::Reject).await);
}

#[tokio::test]
async fn server_sends_request_to_client_and_client_throws() {
    let room = HeldRoom::new("").await;
    let ((server, _server_events), (_client, mut client_events)) = connect(&room).await;
    assert_thrown(exchange(&server, &mut client_events, Answer::Throw).await);
}

#[tokio::test]
async fn server_sends_notification_to_client() {
    let room = HeldRoom::new("").await;
    let ((server, _server_events), (_client, mut client_events)) = connect(&room).await;
    notify(&server, &mut client_events).await;
}

#[tokio::test]
async fn room_close_closes_client_peer_and_server_peer() {
    let room = HeldRoom::new("").await;
    let ((server_peer, mut server_events), (client_peer, mut client_events)) = connect(&room).await;
    room.close();
    let server_reason = expect_closed(&mut server_events).await;
    let client_reason = expect_closed(&mut client_events).await;
    assert_eq!(
        (server_reason.code, server_reason.initiator),
        (Some(4000), Initiator::Local)
    );
    assert_eq!(
        (client_reason.code, client_reason.initiator),
        (Some(4000), Initiator::Remote)
    );
    room.closed().await;
    assert!(room.is_closed() && room.is_empty());
    assert!(server_peer.is_closed() && client_peer.is_closed());
}
