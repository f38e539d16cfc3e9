//! Helpers shared by the server's integration tests: time guards, raw HTTP
//! and WebSocket clients with full control of the request, and protoo
//! clients (our WebSocket client transport plus a `Peer`).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use protoo_server::{
    CloseReason, ConnectionRequest, IncomingNotification, IncomingRequest, Peer, PeerConfig,
    PeerEvents, ServerConfig, WebSocketServer, WsConfig, ws,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::http::Uri;

pub use protoo_testkit::guard;

/// Polls `condition` until it holds (for state with no event to await, such
/// as a connection count going down once a task ends); bounded by [`GUARD`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    guard(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A server on 127.0.0.1 with an ephemeral port.
pub async fn server(config: ServerConfig) -> (WebSocketServer, SocketAddr) {
    let server = WebSocketServer::bind("127.0.0.1:0", config)
        .await
        .expect("bind");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    (server, addr)
}

/// The next connection request.
pub async fn next_request(server: &mut WebSocketServer) -> ConnectionRequest {
    guard("next connection request", server.next_request())
        .await
        .expect("the server stopped")
}

/// A client-side WebSocket built by the test (tokio-tungstenite's client).
pub type RawWs = WebSocketStream<TcpStream>;

/// The answer to an upgrade request that was not `101`.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// protoo's `X-WebSocket-Reject-Reason` header, if present.
    pub reason_header: Option<String>,
    /// The body, as far as the client read it.
    pub body: String,
}

/// A WebSocket upgrade request to `ws://addr{target}` offering `protocol`
/// (none when `None`) with extra `headers`.
pub fn upgrade_request(
    addr: SocketAddr,
    target: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> ClientRequestBuilder {
    let uri: Uri = format!("ws://{addr}{target}").parse().expect("uri");
    let mut request = ClientRequestBuilder::new(uri);
    if let Some(protocol) = protocol {
        request = request.with_sub_protocol(protocol);
    }
    for (name, value) in headers {
        request = request.with_header(*name, *value);
    }
    request
}

/// Runs a WebSocket handshake with tokio-tungstenite's client: the socket
/// and the `Sec-WebSocket-Protocol` the server selected, or the HTTP answer
/// that refused it. Any other failure fails the test.
pub async fn handshake(
    addr: SocketAddr,
    request: ClientRequestBuilder,
) -> Result<(RawWs, Option<String>), Refused> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    handshake_on(tcp, request).await
}

/// [`handshake`] on a TCP stream the test opened.
pub async fn handshake_on(
    tcp: TcpStream,
    request: ClientRequestBuilder,
) -> Result<(RawWs, Option<String>), Refused> {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, protocol))
        }
        Err(Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            reason_header: response
                .headers()
                .get("x-websocket-reject-reason")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(error) => panic!("handshake failed without an HTTP answer: {error}"),
    }
}

/// A WebSocket handshake that must be refused: its answer.
pub async fn refused(addr: SocketAddr, request: ClientRequestBuilder) -> Refused {
    match guard("handshake", handshake(addr, request)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(refused) => refused,
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `bytes` on a new TCP connection and reads the answer until the
/// server closes the connection.
pub async fn raw_http(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(bytes).await.expect("write request");
    let mut answer = Vec::new();
    guard("read the HTTP answer", tcp.read_to_end(&mut answer))
        .await
        .expect("read the HTTP answer");
    parse_response(&answer)
}

/// Parses an HTTP/1.1 response (head and whatever body follows).
pub fn parse_response(answer: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A valid WebSocket upgrade request head for `target`, offering `protoo`.
pub fn raw_upgrade(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: protoo\r\n\r\n"
    )
}

/// Connects a protoo client (our client transport and a `Peer` named
/// `server`, the way an application would) to `ws://addr{target}`.
pub async fn client(addr: SocketAddr, target: &str) -> (Peer, PeerEvents) {
    client_with(addr, target, PeerConfig::default()).await
}

/// A client peer with `config` (say, a longer request timeout).
pub async fn client_with(addr: SocketAddr, target: &str, config: PeerConfig) -> (Peer, PeerEvents) {
    let transport = guard(
        "connect",
        ws::connect(&format!("ws://{addr}{target}"), &WsConfig::default()),
    )
    .await
    .expect("connect");
    Peer::new("server", transport, (), config).expect("client peer")
}

/// The next event, which must be a request (guarded).
pub async fn expect_request(events: &mut PeerEvents) -> IncomingRequest {
    guard("next event", protoo_testkit::expect_request(events)).await
}

/// The next event, which must be a notification (guarded).
pub async fn expect_notification(events: &mut PeerEvents) -> IncomingNotification {
    guard("next event", protoo_testkit::expect_notification(events)).await
}

/// The next event, which must be the close; the events end after it
/// (guarded).
pub async fn expect_closed(events: &mut PeerEvents) -> CloseReason {
    guard("next event", protoo_testkit::expect_closed(events)).await
}

/// An axum application on 127.0.0.1 with an ephemeral port: `/health`
/// answering `ok`, and the protoo mount on `path`.
#[cfg(feature = "axum")]
pub async fn axum_app(config: ServerConfig, path: &str) -> (WebSocketServer, SocketAddr) {
    let (server, mount) = WebSocketServer::mounted(config);
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route(path, mount.route());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = mount.listener(listener);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (server, addr)
}
