//! Helpers shared by the transport tests.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use protoo_transport::ws::{self, WsConfig};
use protoo_transport::{CloseReason, Inbound, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::ClientRequestBuilder;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A listener on 127.0.0.1 with an ephemeral port.
pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Accepts one connection and its upgrade, with `protoo`.
pub async fn accept_one(listener: &TcpListener, config: &WsConfig) -> Transport {
    let (socket, _) = listener.accept().await.unwrap();
    socket.set_nodelay(true).unwrap();
    let request = ws::read_upgrade_request(socket, config).await.unwrap();
    assert!(request.is_websocket_upgrade());
    assert!(request.wants_protoo());
    ws::ServerTransport::builder(config)
        .accept(request)
        .await
        .unwrap()
}

/// Like [`accept_one`], with a future that completes when the connection
/// task has ended (it holds a guard until then).
pub async fn accept_one_task(
    listener: &TcpListener,
    config: &WsConfig,
) -> (Transport, impl Future<Output = ()> + Send + 'static) {
    let (socket, _) = listener.accept().await.unwrap();
    socket.set_nodelay(true).unwrap();
    let request = ws::read_upgrade_request(socket, config).await.unwrap();
    let (held, ended) = tokio::sync::oneshot::channel::<()>();
    let transport = ws::ServerTransport::builder(config)
        .guard(held)
        .accept(request)
        .await
        .unwrap();
    (transport, async move {
        // Resolves (with an error) once the task drops the guard.
        let _ = ended.await;
    })
}

/// A connected (server, client) pair of WebSocket transports.
pub async fn ws_pair(config: WsConfig) -> (Transport, Transport) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn({
        let config = config.clone();
        async move { accept_one(&listener, &config).await }
    });
    let client = ws::connect(&format!("ws://{addr}/?roomId=r&peerId=p"), &config)
        .await
        .unwrap();
    (server.await.unwrap(), client)
}

/// A raw tokio-tungstenite client offering `protoo`, for tests that need to
/// control the client's frames and reads.
pub async fn raw_client(addr: SocketAddr) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let uri = format!("ws://{addr}/").parse().unwrap();
    let request = ClientRequestBuilder::new(uri).with_sub_protocol("protoo");
    let (stream, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "protoo");
    stream
}

/// A raw client and the server transport it is connected to.
pub async fn raw_pair(config: WsConfig) -> (Transport, WebSocketStream<MaybeTlsStream<TcpStream>>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move { accept_one(&listener, &config).await });
    let client = raw_client(addr).await;
    (server.await.unwrap(), client)
}

/// The next thing `transport` yields, which must be the close.
pub async fn closed(transport: &mut Transport) -> CloseReason {
    match transport.recv().await {
        Inbound::Closed(reason) => reason,
        other => panic!("expected the close, got {other:?}"),
    }
}

/// Reads until the close, skipping frames.
pub async fn closed_skipping(transport: &mut Transport) -> CloseReason {
    loop {
        if let Inbound::Closed(reason) = transport.recv().await {
            return reason;
        }
    }
}

/// The next thing `transport` yields, which must be a text frame.
pub async fn text(transport: &mut Transport) -> String {
    match transport.recv().await {
        Inbound::Text(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}
