//! The room example's operations endpoints (`--metrics`, built with the
//! `metrics` feature), against the real program: `/metrics` scraped over
//! HTTP while a real peer connects, exchanges and leaves, and `/healthz`
//! answering 200 while serving and 503 during a graceful shutdown; its
//! listener's limits (head size, connection cap).
//!
//! `cargo test -p protoo-examples --features metrics` builds the example
//! with the feature (`cargo xtask ci` tests with every feature); to run
//! this test alone (`--test room_metrics`), build it first with `cargo build
//! -p protoo-examples --features metrics --example room`. `PROTOO_ROOM_BIN`
//! overrides the binary's path.

#![cfg(feature = "metrics")]

use std::net::SocketAddr;
use std::time::Duration;

use protoo_server::{Peer, PeerConfig, PeerEvent, PeerEvents, WsConfig, ws};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod common;
use common::{guard, start_room};

/// A GET over a fresh connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = guard("connect", TcpStream::connect(addr))
        .await
        .expect("connect to the metrics address");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    guard("read the answer", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    let text = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// The value of one series in a scrape (0 when absent).
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0.0)
}

async fn health(addr: SocketAddr) -> (u16, Value) {
    let (status, body) = get(addr, "/healthz").await;
    (status, serde_json::from_str(&body).expect("JSON health"))
}

async fn next_request(events: &mut PeerEvents) -> protoo_server::IncomingRequest {
    match guard("a request from the server", events.next()).await {
        Some(PeerEvent::Request(request)) => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

async fn next_line(
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    guard("the room example prints its addresses", stdout.next_line())
        .await
        .expect("read the output")
        .expect("the room example exited early")
}

#[tokio::test]
async fn metrics_and_health_of_the_room_example() {
    // Without a drain period: a shutdown waits for requests in flight
    // (its grace), then closes every peer with 1001.
    let room = start_room(
        "127.0.0.1:0",
        &["--metrics", "127.0.0.1:0", "--drain-period", "0"],
    )
    .await;
    let (mut child, ws_addr, mut stdout) = (room.child, room.addr, room.stdout);
    let second = next_line(&mut stdout).await;
    let metrics_addr: SocketAddr = second
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"));
    assert_ne!(metrics_addr.port(), 0);

    let (status, body) = health(metrics_addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "serving");
    assert_eq!(body["peers"], 0);

    // A peer joins and exchanges a few requests.
    let url = format!("ws://{ws_addr}/?roomId=r&peerId=p");
    let transport = guard("connect", ws::connect(&url, &WsConfig::default()))
        .await
        .expect("connect");
    let (peer, mut events) =
        Peer::new("server", transport, (), PeerConfig::default()).expect("client peer");
    for _ in 0..3 {
        guard("echo", peer.request("echo", &json!({"x": 1})))
            .await
            .expect("echo");
    }
    let refused = guard("nope", peer.request("nope", &json!({}))).await;
    assert!(refused.is_err());

    let (_, scrape) = get(metrics_addr, "/metrics").await;
    assert_eq!(sample(&scrape, "protoo_connections"), 1.0, "{scrape}");
    assert_eq!(sample(&scrape, "protoo_peers"), 1.0, "{scrape}");
    assert_eq!(sample(&scrape, "protoo_rooms"), 1.0, "{scrape}");
    assert_eq!(
        sample(&scrape, "protoo_messages_received_total{kind=\"request\"}"),
        4.0
    );
    assert_eq!(
        sample(&scrape, "protoo_requests_answered_total{outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(
        sample(
            &scrape,
            "protoo_requests_answered_total{outcome=\"rejected_4xx\"}"
        ),
        1.0
    );
    let (status, body) = health(metrics_addr).await;
    assert_eq!(
        (status, &body["peers"], &body["rooms"]),
        (200, &json!(1), &json!(1))
    );

    // A request in flight keeps the graceful shutdown in its grace: the
    // server asks us something (`ask`), we hold the answer.
    let ask = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("ask", &json!({"method": "q"})).await }
    });
    let question = next_request(&mut events).await;
    assert_eq!(question.method(), "q");
    let pid = child.id().expect("the example's pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    // The shutdown begins when the signal is handled: poll the health
    // endpoint until it says so (a failure guard bounds the wait).
    let (status, body) = guard("/healthz answers 503", async {
        loop {
            let (status, body) = health(metrics_addr).await;
            if status != 200 {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "shutting down");
    assert_eq!(body["requestsInFlight"], 1);

    // Answer: the in-flight request completes, the peer is closed with
    // 1001, the example exits.
    question.accept(&json!({"fine": true}));
    let answer = guard("the ask's answer", ask).await.expect("join");
    assert!(answer.is_ok(), "{answer:?}");
    guard("the peer is closed", peer.closed()).await;
    assert_eq!(peer.close_reason().and_then(|r| r.code), Some(1001));
    let exit = guard("the example exits", child.wait())
        .await
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// The operations listener has the public port's limits before a request
/// is read: unfinished heads take at most its 16 places, the next
/// connection is answered 503 at once instead of being held; a head over
/// 16 KiB is answered 431.
#[tokio::test]
async fn the_metrics_listener_caps_unfinished_heads() {
    let room = start_room("127.0.0.1:0", &["--metrics", "127.0.0.1:0"]).await;
    let mut stdout = room.stdout;
    let second = next_line(&mut stdout).await;
    let metrics_addr: SocketAddr = second
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"));

    let big = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut tcp = TcpStream::connect(metrics_addr).await.expect("connect");
    let _ = tcp.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = guard("the 431", tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Unfinished heads in every place; each one is known to be held once
    // a finished request behind it is answered 503 (the places are taken
    // in accept order).
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut tcp = TcpStream::connect(metrics_addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        held.push(tcp);
    }
    let mut over = TcpStream::connect(metrics_addr).await.expect("connect");
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    guard("the 503", over.read_to_end(&mut answer))
        .await
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
}
