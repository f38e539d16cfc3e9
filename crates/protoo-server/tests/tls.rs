//! `wss://`: a server bound with `bind_tls` and a self-signed certificate,
//! and our client transport trusting that certificate.

#![cfg(feature = "tls")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use protoo_server::ws::{ClientOptions, connect_with};
use protoo_server::{
    Initiator, Peer, PeerConfig, PeerEvent, SHUTDOWN_REASON, ServerConfig, TransportError,
    WebSocketServer, WsConfig, close_code, tls,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

struct TlsServer {
    server: WebSocketServer,
    port: u16,
    client_tls: std::sync::Arc<tls::rustls::ClientConfig>,
}

async fn tls_server(config: ServerConfig) -> TlsServer {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let acceptor = tls::acceptor_from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("acceptor");
    let server = WebSocketServer::bind_tls("127.0.0.1:0", config, acceptor)
        .await
        .expect("bind_tls");
    let port = server.local_addr().port();
    assert_ne!(port, 0);
    let client_tls = tls::client_config([cert.cert.der().clone()]).expect("client config");
    TlsServer {
        server,
        port,
        client_tls,
    }
}

#[tokio::test]
async fn wss_round_trip_and_is_tls() {
    let TlsServer {
        mut server,
        port,
        client_tls,
    } = tls_server(ServerConfig::default()).await;
    let handle = server.handle();
    let options = ClientOptions::new(format!("wss://localhost:{port}/?peerId=secure"))
        .with_tls_config(client_tls);
    let client = tokio::spawn(async move { connect_with(options, &WsConfig::default()).await });

    let request = next_request(&mut server).await;
    assert!(request.is_tls());
    assert_eq!(request.query_param("peerId").as_deref(), Some("secure"));
    assert!(request.remote_addr().ip().is_loopback());
    let transport = guard("accept", request.accept()).await.expect("accept");
    let (server_peer, mut server_events) =
        Peer::new("secure", transport, (), PeerConfig::default()).unwrap();
    let transport = guard("connect", client)
        .await
        .unwrap()
        .expect("wss connect");
    let (client_peer, mut client_events) =
        Peer::new("server", transport, (), PeerConfig::default()).unwrap();

    // Both ways over TLS.
    let answer = tokio::spawn(async move {
        let request = expect_request(&mut server_events).await;
        let data = request.payload().clone();
        request.accept(&data);
        server_events
    });
    let data = guard(
        "request",
        client_peer.request("echo", &json!({ "over": "tls" })),
    )
    .await
    .unwrap();
    assert_eq!(data.to_value(), json!({ "over": "tls" }));
    let _server_events = answer.await.unwrap();
    server_peer.notify("hello", &json!({ "n": 1 })).unwrap();
    match guard("notification", client_events.next()).await {
        Some(PeerEvent::Notification(n)) => assert_eq!(n.payload().to_value(), json!({ "n": 1 })),
        other => panic!("expected a notification, got {other:?}"),
    }

    // Graceful shutdown works over TLS too.
    guard("shutdown", handle.shutdown()).await;
    let reason = expect_closed(&mut client_events).await;
    assert_eq!(reason.code, Some(close_code::GOING_AWAY));
    assert_eq!(reason.reason, SHUTDOWN_REASON);
    assert_eq!(reason.initiator, Initiator::Remote);
    assert_eq!(handle.connections(), 0);
}

#[tokio::test]
async fn wss_rejection_reaches_the_client() {
    let TlsServer {
        mut server,
        port,
        client_tls,
    } = tls_server(ServerConfig::default()).await;
    let options =
        ClientOptions::new(format!("wss://localhost:{port}/")).with_tls_config(client_tls);
    let client = tokio::spawn(async move { connect_with(options, &WsConfig::default()).await });
    next_request(&mut server).await.reject(401, "no ticket");
    match guard("connect", client).await.unwrap() {
        Err(TransportError::Rejected { status, reason }) => {
            assert_eq!((status, reason.as_str()), (401, "no ticket"))
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_that_do_not_speak_tls_never_reach_the_application() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_millis(300));
    let TlsServer {
        mut server,
        port,
        client_tls,
    } = tls_server(config).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let handle = server.handle();

    // Plain ws:// to a wss:// server: the TLS handshake fails.
    let plain = guard(
        "plain connect",
        protoo_server::ws::connect(&format!("ws://{addr}/"), &WsConfig::default()),
    )
    .await;
    assert!(plain.is_err(), "a plain connection was upgraded");

    // A client trusting another certificate refuses the server.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let untrusting = tls::client_config([other.cert.der().clone()]).unwrap();
    let options =
        ClientOptions::new(format!("wss://localhost:{port}/")).with_tls_config(untrusting);
    match guard(
        "untrusting connect",
        connect_with(options, &WsConfig::default()),
    )
    .await
    {
        Err(TransportError::Tls(_)) => {}
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // A client that connects and says nothing is dropped after the
    // handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut sink = Vec::new();
    let _ = guard("silent client dropped", silent.read_to_end(&mut sink)).await;

    eventually("failed connections are forgotten", || {
        handle.connections() == 0
    })
    .await;
    // The next request the application sees is a good one.
    let options =
        ClientOptions::new(format!("wss://localhost:{port}/?good")).with_tls_config(client_tls);
    let client = tokio::spawn(async move { connect_with(options, &WsConfig::default()).await });
    let request = next_request(&mut server).await;
    assert_eq!(request.query(), Some("good"));
    let _transport = guard("accept", request.accept()).await.expect("accept");
    guard("connect", client)
        .await
        .unwrap()
        .expect("wss connect");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_tls_handshakes() {
    // A handshake that would hold the shutdown for an hour.
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(3600));
    let TlsServer { server, port, .. } = tls_server(config).await;
    let handle = server.handle();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    eventually("the connection is accepted", || handle.connections() == 1).await;
    guard(
        "shutdown with a TLS handshake unfinished",
        handle.shutdown(),
    )
    .await;
    assert_eq!(handle.connections(), 0);
    let mut rest = Vec::new();
    let _ = guard("silent connection closed", silent.read_to_end(&mut rest)).await;
}
