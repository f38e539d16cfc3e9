//! The room example's `--resume-window`: a peer whose connection is lost
//! (reset, no close frame) and that connects again with the same room and
//! peer id within the window is resumed, and the others never see it leave;
//! without the flag it leaves at once (`peerClosed`), as in protoo.

use protoo_server::{Peer, PeerConfig, PeerEvent, PeerEvents, WsConfig, ws};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{guard, start_room};

/// A protoo client (`protoo_server::Peer` on a client transport).
async fn client(url: &str) -> (Peer, PeerEvents) {
    let transport = guard("connect", ws::connect(url, &WsConfig::default()))
        .await
        .unwrap_or_else(|error| panic!("connect {url}: {error}"));
    Peer::new("server", transport, (), PeerConfig::default()).expect("client peer")
}

/// The next notification: method and data.
async fn notification(events: &mut PeerEvents) -> (String, Value) {
    match guard("a notification", events.next()).await {
        Some(PeerEvent::Notification(n)) => (n.method().to_owned(), n.payload().to_value()),
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// A WebSocket on a bare socket: the upgrade, then one masked text frame
/// (`text`, under 126 bytes); the socket is returned so that it can be
/// reset.
async fn raw_peer(addr: std::net::SocketAddr, query: &str, text: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: protoo\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        guard("the upgrade", tcp.read_exact(&mut byte))
            .await
            .expect("read the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    let len = u8::try_from(text.len())
        .ok()
        .filter(|l| *l < 126)
        .expect("a short frame");
    // FIN + text; masked, with a zero key (the payload as it is).
    let mut frame = vec![0x81, 0x80 | len, 0, 0, 0, 0];
    frame.extend_from_slice(text.as_bytes());
    tcp.write_all(&frame).await.expect("write the frame");
    tcp
}

/// `b` watches `a` join, lose its connection (reset) and come back; returns
/// the first notification `b` gets after `a` is back and says `chat`.
async fn blip(args: &[&str]) -> (String, Value) {
    let room = start_room("127.0.0.1:0", args).await;
    let url = |peer: &str| format!("ws://{}/?roomId=r&peerId={peer}", room.addr);
    let (_b, mut b_events) = client(&url("b")).await;

    let join = r#"{"request":true,"id":1,"method":"join","data":{"displayName":"A"}}"#;
    let a = raw_peer(room.addr, "roomId=r&peerId=a", join).await;
    let (method, data) = notification(&mut b_events).await;
    assert_eq!((method.as_str(), &data["id"]), ("newPeer", &json!("a")));

    // Lost: a reset, no close frame.
    a.set_zero_linger().expect("SO_LINGER 0");
    drop(a);
    let (a, _a_events) = client(&url("a")).await;
    guard("chat", a.request("chat", &json!({ "text": "back" })))
        .await
        .expect("chat answered");
    notification(&mut b_events).await
}

#[tokio::test]
async fn a_peer_back_within_the_resume_window_is_not_seen_leaving() {
    let (method, data) = blip(&["--resume-window", "15"]).await;
    assert_eq!(method, "chat", "{data}");
    assert_eq!(data, json!({ "peerId": "a", "text": "back" }));
}

#[tokio::test]
async fn without_a_resume_window_a_lost_peer_leaves() {
    let (method, data) = blip(&[]).await;
    assert_eq!(method, "peerClosed", "{data}");
    assert_eq!(data, json!({ "peerId": "a" }));
}
