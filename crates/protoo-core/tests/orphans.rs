//! No orphans: a peer whose events are dropped before they end (its handler
//! task panicked) is closed with 1011 and leaves its room.

mod common;

use common::*;
use protoo_core::{EVENTS_DROPPED_REASON, Initiator, PeerConfig, PeerEvent, close_code};

#[tokio::test]
async fn a_panicking_handler_closes_its_peer_with_1011_and_it_leaves_the_room() {
    let room = HeldRoom::new("r").await;
    let (a, mut raw) = pair();
    let (peer, mut events) = room
        .create_peer("p", a, (), PeerConfig::default())
        .await
        .unwrap();
    let handler = tokio::spawn(async move {
        if let Some(PeerEvent::Request(_request)) = events.next().await {
            panic!("handler panics on purpose (expected by the test)");
        }
    });
    send_raw(&raw, r#"{"request":true,"id":1,"method":"boom"}"#);
    assert!(handler.await.unwrap_err().is_panic());
    // The request it held answered 500, then the peer closed.
    let answer = recv_json(&mut raw).await;
    assert_eq!(
        (answer["id"].as_u64(), answer["errorCode"].as_u64()),
        (Some(1), Some(500))
    );
    peer.closed().await;
    let reason = peer.close_reason().unwrap();
    assert_eq!(
        (reason.code, reason.reason.as_str(), reason.initiator),
        (
            Some(close_code::INTERNAL_ERROR),
            EVENTS_DROPPED_REASON,
            Initiator::Local
        )
    );
    assert!(room.is_empty(), "the orphan left its room");
}
