//! protoo's own suite (versatica/protoo `test/__tests__/test-client-server.js`)
//! over real WebSockets: our `WebSocketServer` admitting peers into a `Room`
//! on one side, our WebSocket client transport and a `Peer` on the other,
//! as in protoo's `beforeEach` (`peerId=reject` is rejected 403 `Sorry!`,
//! any other peer id is accepted into the room).
//!
//! protoo's client reconnects by itself after an abrupt close; ours leaves
//! reconnecting to the application, so the reconnection case connects again
//! explicitly. A listener that throws is, in Rust, a handler answering an
//! error (or panicking with the request in hand): 500 either way.

mod common;

use std::net::SocketAddr;

use common::*;
use protoo_server::{
    DuplicatePolicy, Initiator, Peer, PeerEvent, PeerEvents, Room, Rooms, ServerConfig,
    ServerHandle, TransportError, WsConfig, close_code, ws,
};
use protoo_testkit::protoo_case::{
    Answer, assert_accepted, assert_rejected, assert_thrown, exchange, notify,
};
use tokio::sync::mpsc;

/// protoo's `beforeEach`: a server whose accepted peers join `room`.
struct Fixture {
    addr: SocketAddr,
    room: Room,
    handle: ServerHandle,
    /// Server-side peers, as they are admitted.
    admitted: mpsc::UnboundedReceiver<(Peer, PeerEvents)>,
}

async fn fixture() -> Fixture {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let rooms: Rooms = Rooms::new();
    let (room, hold) = rooms.admit("r", "").hold().await.unwrap();
    let (tx, admitted) = mpsc::unbounded_channel();
    tokio::spawn({
        async move {
            // The room stays open when empty, as protoo's does.
            let _hold = hold;
            while let Some(request) = server.next_request().await {
                let peer_id = request.query_param("peerId").unwrap_or_default();
                if peer_id == "reject" {
                    request.reject(403, "Sorry!");
                    continue;
                }
                let (rooms, tx) = (rooms.clone(), tx.clone());
                tokio::spawn(async move {
                    let admitted = request
                        .admit(&rooms)
                        .room("r")
                        .peer(peer_id)
                        .policy(DuplicatePolicy::Refuse)
                        .join(())
                        .await;
                    if let Ok(admitted) = admitted {
                        let _ = tx.send((admitted.peer, admitted.events));
                    }
                });
            }
        }
    });
    Fixture {
        addr,
        room,
        handle,
        admitted,
    }
}

impl Fixture {
    /// A client connecting as `peer_id`: (server peer, client peer).
    async fn connect(&mut self, peer_id: &str) -> ((Peer, PeerEvents), (Peer, PeerEvents)) {
        let client = client(self.addr, &format!("/?peerId={peer_id}")).await;
        let server = guard("server peer", self.admitted.recv())
            .await
            .expect("admitted");
        assert_eq!(server.0.id(), peer_id);
        (server, client)
    }
}

#[tokio::test]
async fn client_connects_to_server_and_reconnects() {
    let mut f = fixture().await;
    let ((server_peer, mut server_events), (client_peer, mut client_events)) = f.connect("A").await;
    assert!(!client_peer.is_closed());
    assert!(f.room.has_peer("A"));
    assert_eq!(f.room.peers(), vec![server_peer.clone()]);

    // The server closes the peer: the client sees it, the room forgets it.
    server_peer.close();
    let reason = expect_closed(&mut client_events).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.reason, "closed by protoo-server");
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(client_peer.is_closed());
    assert!(server_peer.is_closed());
    assert!(!f.room.has_peer("A"));
    assert_eq!(
        expect_closed(&mut server_events).await.initiator,
        Initiator::Local
    );

    // Connecting again with the same id is admitted again.
    let ((server_peer, mut server_events), (client_peer, _client_events)) = f.connect("A").await;
    assert!(f.room.has_peer("A"));
    client_peer.close();
    assert!(client_peer.is_closed());
    let reason = expect_closed(&mut server_events).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(server_peer.is_closed());
    assert!(!f.room.has_peer("A"));
    assert_eq!(f.room.peers(), vec![]);
    assert!(
        guard("no more events", server_events.next())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn server_rejects_connection_request() {
    let f = fixture().await;
    // protoo's client retries once: two attempts, both refused.
    for _attempt in 0..2 {
        let url = format!("ws://{}/?peerId=reject", f.addr);
        match guard("connect", ws::connect(&url, &WsConfig::default())).await {
            Err(TransportError::Rejected { status, reason }) => {
                assert_eq!((status, reason.as_str()), (403, "Sorry!"));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert!(!f.room.has_peer("reject"));
    assert_eq!(f.room.peers(), vec![]);
    assert_eq!(f.handle.requests_in_flight(), 0);
}

#[tokio::test]
async fn client_sends_request_to_server() {
    let mut f = fixture().await;
    let ((_server, mut server_events), (client, _client_events)) = f.connect("A").await;
    assert_accepted(
        guard(
            "exchange",
            exchange(&client, &mut server_events, Answer::Accept),
        )
        .await,
    );
}

#[tokio::test]
async fn client_sends_request_to_server_and_server_rejects_it() {
    let mut f = fixture().await;
    let ((_server, mut server_events), (client, _client_events)) = f.connect("A").await;
    assert_rejected(
        guard(
            "exchange",
            exchange(&client, &mut server_events, Answer::Reject),
        )
        .await,
    );
}

#[tokio::test]
async fn client_sends_request_to_server_and_server_throws() {
    let mut f = fixture().await;
    let ((_server, mut server_events), (client, _client_events)) = f.connect("A").await;
    assert_thrown(
        guard(
            "exchange",
            exchange(&client, &mut server_events, Answer::Throw),
        )
        .await,
    );

    // A handler that panics with the request in hand answers 500 too.
    let handler = tokio::spawn(async move {
        let _request = expect_request(&mut server_events).await;
        panic!("BOOM!!!");
    });
    let error = guard("request", client.request("hello", &()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(500));
    assert!(handler.await.unwrap_err().is_panic());
}

#[tokio::test]
async fn client_sends_notification_to_server() {
    let mut f = fixture().await;
    let ((_server, mut server_events), (client, _client_events)) = f.connect("A").await;
    guard("notification", notify(&client, &mut server_events)).await;
}

#[tokio::test]
async fn server_sends_request_to_client() {
    let mut f = fixture().await;
    let ((server, _server_events), (_client, mut client_events)) = f.connect("A").await;
    assert_accepted(
        guard(
            "exchange",
            exchange(&server, &mut client_events, Answer::Accept),
        )
        .await,
    );
}

#[tokio::test]
async fn server_sends_request_to_client_and_client_rejects_it() {
    let mut f = fixture().await;
    let ((server, _server_events), (_client, mut client_events)) = f.connect("A").await;
    assert_rejected(
        guard(
            "exchange",
            exchange(&server, &mut client_events, Answer::Reject),
        )
        .await,
    );
}

#[tokio::test]
async fn server_sends_request_to_client_and_client_throws() {
    let mut f = fixture().await;
    let ((server, _server_events), (_client, mut client_events)) = f.connect("A").await;
    assert_thrown(
        guard(
            "exchange",
            exchange(&server, &mut client_events, Answer::Throw),
        )
        .await,
    );
}

#[tokio::test]
async fn server_sends_notification_to_client() {
    let mut f = fixture().await;
    let ((server, _server_events), (_client, mut client_events)) = f.connect("A").await;
    guard("notification", notify(&server, &mut client_events)).await;
}

#[tokio::test]
async fn room_close_closes_client_peer_and_server_peer() {
    let mut f = fixture().await;
    let ((server_peer, mut server_events), (client_peer, mut client_events)) = f.connect("A").await;
    f.room.close();
    assert!(f.room.is_closed());

    let reason = expect_closed(&mut client_events).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.reason, "closed by protoo-server");
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(client_peer.is_closed());

    // The server peer reports its close exactly once.
    let mut closes = 0;
    while let Some(event) = guard("server events", server_events.next()).await {
        assert!(
            matches!(event, PeerEvent::Closed(_)),
            "unexpected {event:?}"
        );
        closes += 1;
    }
    assert_eq!(closes, 1);
    assert!(server_peer.is_closed());
    assert_eq!(f.room.peers(), vec![]);
    guard("room closed", f.room.closed()).await;
}
