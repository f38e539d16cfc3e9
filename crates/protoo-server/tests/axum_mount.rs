//! A `WebSocketServer` mounted on a route of an axum application served on
//! 127.0.0.1: protoo requests round-trip, the same checks apply, and the
//! application's other routes keep working.

#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;

use common::*;
use protoo_server::{
    Initiator, Peer, PeerConfig, SHUTDOWN_REASON, ServerConfig, ServerHandle, WebSocketServer,
    close_code,
};
use serde_json::json;

/// An axum application with `/health` and the protoo mount on `/protoo`.
async fn app(config: ServerConfig) -> (WebSocketServer, SocketAddr) {
    axum_app(config, "/protoo").await
}

async fn health(addr: SocketAddr) -> RawResponse {
    raw_http(
        addr,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test]
async fn protoo_round_trips_through_the_mount() {
    let (mut server, addr) = app(ServerConfig::default()).await;
    let handle: ServerHandle = server.handle();
    let client = tokio::spawn(async move { client(addr, "/protoo?peerId=alice").await });

    let request = next_request(&mut server).await;
    assert_eq!(request.path(), "/protoo");
    assert_eq!(request.query_param("peerId").as_deref(), Some("alice"));
    assert!(request.remote_addr().ip().is_loopback());
    assert_ne!(request.remote_addr().port(), 0);
    assert!(!request.is_tls());
    let transport = guard("accept", request.accept()).await.expect("accept");
    let (server_peer, mut server_events) =
        Peer::new("alice", transport, (), PeerConfig::default()).unwrap();
    let (client_peer, mut client_events) = client.await.unwrap();
    assert_eq!(handle.connections(), 1);

    // Client to server.
    let answer = tokio::spawn(async move {
        let request = expect_request(&mut server_events).await;
        assert_eq!(request.method(), "hello");
        request.accept(&json!({ "text": "hi!" }));
        server_events
    });
    let data = guard(
        "request",
        client_peer.request("hello", &json!({ "foo": "bar" })),
    )
    .await
    .unwrap();
    assert_eq!(data.to_value(), json!({ "text": "hi!" }));
    let mut server_events = answer.await.unwrap();

    // Server to client.
    let answer = tokio::spawn(async move {
        let request = expect_request(&mut client_events).await;
        let data = request.payload().clone();
        request.accept(&data);
        client_events
    });
    let data = guard("request", server_peer.request("echo", &json!([1, 2, 3])))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!([1, 2, 3]));
    let mut client_events = answer.await.unwrap();

    // Notifications both ways.
    client_peer.notify("up", &json!({ "n": 1 })).unwrap();
    assert_eq!(expect_notification(&mut server_events).await.method(), "up");
    server_peer.notify("down", &json!({ "n": 2 })).unwrap();
    assert_eq!(
        expect_notification(&mut client_events).await.method(),
        "down"
    );

    // The mounted server shuts down like a bound one; the HTTP server is
    // the application's and keeps serving.
    guard("shutdown", handle.shutdown()).await;
    let reason = expect_closed(&mut client_events).await;
    assert_eq!(reason.code, Some(close_code::GOING_AWAY));
    assert_eq!(reason.reason, SHUTDOWN_REASON);
    assert_eq!(reason.initiator, Initiator::Remote);
    assert_eq!(handle.connections(), 0);
    assert_eq!(health(addr).await.status, 200);
    let answer = refused(addr, upgrade_request(addr, "/protoo", Some("protoo"), &[])).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.reason_header.as_deref(),
        Some("server shutting down")
    );
}

#[tokio::test]
async fn missing_subprotocol_is_403_through_the_mount() {
    let (mut server, addr) = app(ServerConfig::default()).await;
    for protocol in [None, Some("chat")] {
        let answer = refused(addr, upgrade_request(addr, "/protoo", protocol, &[])).await;
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.reason_header.as_deref(),
            Some("invalid/missing Sec-WebSocket-Protocol")
        );
    }
    // The application saw none of them.
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, "/protoo?marker", Some("protoo"), &[]),
    ));
    let request = next_request(&mut server).await;
    assert_eq!(request.query(), Some("marker"));
    request.reject(0, "");
    let answer = client.await.unwrap();
    // protoo's defaults for a rejection.
    assert_eq!(answer.status, 403);
    assert_eq!(answer.reason_header.as_deref(), Some("Rejected"));
}

#[tokio::test]
async fn rejection_and_origin_check_through_the_mount() {
    let config = ServerConfig::default().with_allowed_origins(["https://app.example.com"]);
    let (mut server, addr) = app(config).await;

    let request = upgrade_request(
        addr,
        "/protoo",
        Some("protoo"),
        &[("Origin", "https://evil.example.com")],
    );
    let answer = refused(addr, request).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.reason_header.as_deref(), Some("origin not allowed"));

    let request = upgrade_request(
        addr,
        "/protoo",
        Some("protoo"),
        &[("Origin", "https://app.example.com")],
    );
    let client = tokio::spawn(refused(addr, request));
    let request = next_request(&mut server).await;
    assert_eq!(request.origin(), Some("https://app.example.com"));
    request.reject(401, "who are you");
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.reason_header.as_deref(), Some("who are you"));
}

#[tokio::test]
async fn plain_routes_still_work() {
    let (_server, addr) = app(ServerConfig::default()).await;
    let answer = health(addr).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");

    // The mount answers a plain GET with 400, and other methods with 405.
    let answer = raw_http(
        addr,
        b"GET /protoo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.header("x-websocket-reject-reason"),
        Some("missing Upgrade: websocket")
    );
    // As a bound server: 426 naming version 13 for another WebSocket version,
    // 400 without a key.
    let old_version = raw_upgrade("/protoo").replace("Version: 13", "Version: 8");
    let old_version = old_version.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let answer = raw_http(addr, old_version.as_bytes()).await;
    assert_eq!(answer.status, 426);
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));
    let no_key =
        raw_upgrade("/protoo").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let no_key = no_key.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let answer = raw_http(addr, no_key.as_bytes()).await;
    assert_eq!(answer.status, 400);
    let answer = raw_http(
        addr,
        b"POST /protoo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 405);
    let answer = raw_http(
        addr,
        b"GET /elsewhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn connection_limit_through_the_mount() {
    let (mut server, addr) = app(ServerConfig::default().with_max_connections(1)).await;
    let handle = server.handle();
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/protoo", Some("protoo"), &[]),
    ));
    let transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    let (mut ws, _) = client.await.unwrap().expect("accepted");
    assert_eq!(handle.connections(), 1);

    let answer = refused(addr, upgrade_request(addr, "/protoo", Some("protoo"), &[])).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.reason_header.as_deref(),
        Some("too many connections")
    );

    // The first one leaves: room again.
    ws.close(None).await.unwrap();
    drop(transport);
    eventually("the connection count goes down", || {
        handle.connections() == 0
    })
    .await;
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/protoo", Some("protoo"), &[]),
    ));
    let _transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    client.await.unwrap().expect("accepted again");
}
