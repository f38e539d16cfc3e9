//! Hostile input against the log, over real sockets (issue 24, findings 2
//! and 7): a peer id forging log lines, and a client reconnecting to flood
//! the log with remote-triggered warnings (invalid and binary messages).
//! Own test binary: the warning budgets are the process's, and each test
//! connects from an address of its own (127.0.0.x) so that they do not
//! share one.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::Instant;

use common::*;
use futures_util::{SinkExt, StreamExt};
use protoo_server::log::{PERIOD, SOURCE_BURST};
use protoo_server::{PeerConfig, ServerConfig};
use protoo_testkit::logs::{Format, capture};
use serde_json::json;
use support::*;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tracing::Level;

/// A raw client connected from `from` (a loopback address) to `target`.
async fn raw_ws_from(from: &str, addr: SocketAddr, target: &str) -> RawWs {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind the client's address");
    let tcp = guard("tcp connect", socket.connect(addr))
        .await
        .expect("tcp connect");
    raw_ws_on(tcp, addr, target).await
}

/// The server's settings, with a connection cap that fits any descriptor
/// limit: the only warnings these tests see are the remote's.
fn quiet_config() -> ServerConfig {
    ServerConfig::default().with_max_connections(256)
}

/// An `echo` round trip: whatever was sent before it was handled (and
/// logged) by the server.
async fn sync(ws: &mut RawWs, id: u32) {
    ws.send(Message::text(request_text(id, "echo", json!({}))))
        .await
        .expect("send");
    loop {
        match guard("the echo", ws.next()).await {
            Some(Ok(Message::Text(text))) => {
                let response: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(response["id"], id);
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

/// Finding 2: a peer id with a newline, a terminal escape and a NUL gives
/// one line in the text log, with the id escaped.
#[tokio::test]
async fn a_peer_id_with_control_characters_makes_one_escaped_line() {
    let (_logs_guard, logs) = capture(Format::Text, Level::WARN);
    let fixture = Fixture::start(quiet_config(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let target = "/?roomId=r&peerId=mallory%0A2026-12-07T00:00:00Z%20WARN%20forged%1B%5B2J%00";
    let mut ws = raw_ws_from("127.0.0.2", fixture.addr, target).await;
    ws.send(Message::text("null")).await.expect("send");
    sync(&mut ws, 1).await;
    let text = logs.text();
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains(" WARN "), "{text}");
    assert!(
        lines[0].contains(r"peer_id=mallory\n2026-12-07T00:00:00Z WARN forged\u{1b}[2J\0"),
        "{text}"
    );
    assert!(!text.contains(['\u{1b}', '\0', '\r']), "{text}");
    drop(ws);
    fixture.back_to_baseline(tasks).await;
}

/// Finding 7: one client reconnecting, sending binary and invalid messages
/// on each connection. Before, each connection had a budget of its own
/// (the binary warning once, invalid messages five times); now the client's
/// address has one.
#[tokio::test]
async fn a_reconnecting_flooder_gets_its_addresss_budget_only() {
    const CONNECTIONS: u32 = 30;
    const EACH: usize = 4;
    let (_logs_guard, logs) = capture(Format::Text, Level::WARN);
    let fixture = Fixture::start(quiet_config(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let started = Instant::now();
    for n in 0..CONNECTIONS {
        let mut ws = raw_ws_from("127.0.0.3", fixture.addr, &Fixture::target("r", "flooder")).await;
        for _ in 0..EACH {
            ws.send(Message::binary(vec![0u8; 16])).await.expect("send");
            ws.send(Message::text("[]")).await.expect("send");
        }
        sync(&mut ws, n).await;
        ws.close(None).await.expect("close");
        while ws.next().await.is_some() {}
    }
    let elapsed = started.elapsed();
    let lines = logs.lines();
    let sent = CONNECTIONS as usize * EACH * 2;
    eprintln!(
        "{sent} binary and invalid messages on {CONNECTIONS} connections in {elapsed:?}: {} WARN lines ({:.0} per second)",
        lines.len(),
        lines.len() as f64 / elapsed.as_secs_f64()
    );
    if elapsed < PERIOD {
        assert_eq!(lines.len(), SOURCE_BURST as usize, "{lines:#?}");
    } else {
        assert!(lines.len() <= 2 * (SOURCE_BURST as usize + 2), "{lines:#?}");
    }
    // Both kinds count against the one budget.
    assert!(!logs.matching("binary WebSocket message dropped").is_empty());
    assert!(!logs.matching("invalid message dropped").is_empty());
    fixture.back_to_baseline(tasks).await;
}

/// The transports the server hands out name their client's address (what
/// the warning budgets count by), on the bound server and the axum mount.
#[tokio::test]
async fn transports_name_their_clients_address() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let mut mounted = Vec::new();
    #[cfg(feature = "axum")]
    mounted.push(axum_app(ServerConfig::default(), "/ws").await);
    for (server, addr, path) in std::iter::once((&mut server, addr, "/"))
        .chain(mounted.iter_mut().map(|(s, a)| (s, *a, "/ws")))
    {
        let client = tokio::spawn(async move {
            raw_ws_from("127.0.0.4", addr, &format!("{path}?roomId=r&peerId=p")).await
        });
        let request = next_request(server).await;
        let transport = guard("accept", request.accept()).await.expect("accept");
        let ws = guard("client", client).await.expect("client");
        let seen = transport.remote_addr().expect("a remote address");
        assert_eq!(seen, ws.get_ref().local_addr().expect("local addr"));
        assert_eq!(
            protoo_server::log::Source::from(seen).to_string(),
            "127.0.0.4"
        );
    }
}
