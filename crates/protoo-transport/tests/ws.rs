//! WebSocket-specific behaviour over real sockets on 127.0.0.1: what the
//! transport does with frames a protoo peer never sends, limits, keepalive,
//! and the handshake pieces.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protoo_transport::ws::{self, ClientOptions, WsConfig};
use protoo_transport::{
    CloseReason, Frame, Inbound, Initiator, SLOW_CONSUMER_REASON, TransportError, close_code,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use common::{accept_one_task, closed, listen, raw_client, raw_pair, text};

/// The next close frame the raw client reads (skipping other messages).
async fn close_frame<S>(client: &mut WebSocketStream<S>) -> Option<CloseFrame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match client.next().await {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

// ----- frames -----

#[tokio::test]
async fn binary_frames_are_dropped_and_any_text_delivered() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    client
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    client.send(Message::text("not json")).await.unwrap();
    client.send(Message::Ping(vec![7].into())).await.unwrap();
    client.send(Message::text("{}")).await.unwrap();
    assert_eq!(text(&mut server).await, "not json");
    assert_eq!(text(&mut server).await, "{}");
    assert!(!server.is_closed());
    // Still open both ways.
    server.send(Frame::from_static(r#"{"ok":1}"#)).unwrap();
    loop {
        match client.next().await.unwrap().unwrap() {
            Message::Pong(data) => assert_eq!(&data[..], &[7]),
            Message::Text(t) => {
                assert_eq!(t.as_str(), r#"{"ok":1}"#);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn remote_close_without_code_reports_1005() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    client.send(Message::Close(None)).await.unwrap();
    assert_eq!(
        closed(&mut server).await,
        CloseReason::new(Some(1005), "", Initiator::Remote)
    );
    // The server answered the close and closed the connection.
    assert!(matches!(
        client.next().await,
        Some(Ok(Message::Close(None))) | None
    ));
}

#[tokio::test]
async fn connection_lost_without_close_frame() {
    let (mut server, client) = raw_pair(WsConfig::default()).await;
    drop(client);
    assert_eq!(
        closed(&mut server).await,
        CloseReason::new(None, "connection lost", Initiator::Remote)
    );
    assert!(server.is_closed());
}

#[tokio::test]
async fn tasks_end_after_the_close_handshake() {
    let (listener, addr) = listen().await;
    let config = WsConfig::default();
    let url = format!("ws://{addr}/");
    let client = tokio::spawn(async move { ws::connect(&url, &WsConfig::default()).await });
    let (server, task) = accept_one_task(&listener, &config).await;
    let task = tokio::spawn(task);
    let client = client.await.unwrap().unwrap();
    client.send(Frame::from_static("last")).unwrap();
    client.close_with(close_code::NORMAL, "bye");
    let (sink, mut stream) = server.into_parts();
    assert_eq!(
        stream.recv().await,
        Inbound::Text("last".into()),
        "frames queued before the close are sent first"
    );
    let Inbound::Closed(reason) = stream.recv().await else {
        panic!()
    };
    assert_eq!(
        (reason.code, reason.initiator),
        (Some(1000), Initiator::Remote)
    );
    // The server task finished the handshake and ended (well within the
    // close timeout); the sink stays usable.
    task.await.unwrap();
    assert!(matches!(
        sink.send(Frame::from_static("x")),
        Err(TransportError::Closed(_))
    ));
}

#[tokio::test]
async fn dropping_both_halves_closes_the_connection() {
    let (server, mut client) = common::ws_pair(WsConfig::default()).await;
    server
        .send(Frame::from_static("sent before the drop"))
        .unwrap();
    drop(server);
    assert_eq!(text(&mut client).await, "sent before the drop");
    assert_eq!(
        closed(&mut client).await,
        CloseReason::new(Some(close_code::NORMAL), "", Initiator::Remote)
    );
}

#[tokio::test]
async fn one_half_alone_keeps_working() {
    let (server, client) = common::ws_pair(WsConfig::default()).await;
    let (server_sink, mut server_stream) = server.into_parts();
    drop(server_sink); // a reader only
    client.send(Frame::from_static("still read")).unwrap();
    assert_eq!(
        server_stream.recv().await,
        Inbound::Text("still read".into())
    );
    assert!(!client.is_closed());

    let (client_sink, client_stream) = client.into_parts();
    drop(client_stream); // a sender only: incoming frames are discarded
    client_sink.send(Frame::from_static("still sent")).unwrap();
    assert_eq!(
        server_stream.recv().await,
        Inbound::Text("still sent".into())
    );
    assert!(!client_sink.is_closed());
}

// ----- limits -----

#[tokio::test]
async fn message_over_the_limit_is_closed_with_1009() {
    let config = WsConfig::default().with_max_message_size(1024);
    let (mut server, mut client) = raw_pair(config).await;
    client.send(Message::text("a".repeat(1000))).await.unwrap();
    assert_eq!(text(&mut server).await.len(), 1000);
    client.send(Message::text("b".repeat(2000))).await.unwrap();
    let frame = close_frame(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Size);
    assert_eq!(
        closed(&mut server).await,
        CloseReason::new(
            Some(close_code::MESSAGE_TOO_BIG),
            "message too big",
            Initiator::Local
        )
    );
}

#[tokio::test]
async fn fragments_are_cut_as_soon_as_the_total_passes_the_limit() {
    let config = WsConfig::default().with_max_message_size(1024);
    let (mut server, mut client) = raw_pair(config).await;
    let fragment = || "f".repeat(300);
    client
        .send(Message::Frame(WsFrame::message(
            fragment(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    for _ in 0..3 {
        client
            .send(Message::Frame(WsFrame::message(
                fragment(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .unwrap();
    }
    // 1200 bytes, never finished: refused without waiting for the end.
    let frame = close_frame(&mut client).await.unwrap();
    assert_eq!(frame.code, CloseCode::Size);
    assert_eq!(
        closed(&mut server).await.code,
        Some(close_code::MESSAGE_TOO_BIG)
    );
}

#[tokio::test]
async fn frame_over_the_frame_limit_is_closed_with_1009() {
    let config = WsConfig::default()
        .with_max_message_size(4096)
        .with_max_frame_size(512);
    let (mut server, mut client) = raw_pair(config).await;
    client.send(Message::text("c".repeat(1000))).await.unwrap();
    assert_eq!(
        close_frame(&mut client).await.unwrap().code,
        CloseCode::Size
    );
    assert_eq!(
        closed(&mut server).await.code,
        Some(close_code::MESSAGE_TOO_BIG)
    );
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    client
        .send(Message::Frame(WsFrame::message(
            vec![0xff, 0xfe],
            OpCode::Data(Data::Text),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(
        close_frame(&mut client).await.unwrap().code,
        CloseCode::Invalid
    );
    assert_eq!(
        closed(&mut server).await.code,
        Some(close_code::INVALID_PAYLOAD)
    );
}

/// A client that never reads: the server's writer blocks, the queue passes
/// its limit, the transport reports 1008, the queue is freed at once, and
/// the connection task gives up on the socket and ends.
#[tokio::test]
async fn stalled_reader_is_dropped_with_1008_and_its_queue_freed() {
    let (listener, addr) = listen().await;
    let config = WsConfig::default().with_max_queued_bytes(128 * 1024);
    let client = tokio::spawn(async move { raw_client(addr).await });
    let (mut server, task) = accept_one_task(&listener, &config).await;
    let task = tokio::spawn(task);
    let client = client.await.unwrap(); // held, never read
    let payload = "z".repeat(16 * 1024);
    let error = loop {
        match server.send(Frame::from(payload.clone())) {
            Ok(()) => tokio::task::yield_now().await,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, TransportError::QueueFull(_)));
    assert_eq!(server.sink().queued_bytes(), 0);
    assert_eq!(
        closed(&mut server).await,
        CloseReason::new(
            Some(close_code::POLICY_VIOLATION),
            SLOW_CONSUMER_REASON,
            Initiator::Local
        )
    );
    task.await.unwrap();
    assert_eq!(server.sink().queued_bytes(), 0);
    drop(client);
}

// ----- keepalive (paused time) -----

#[tokio::test]
async fn keepalive_ping_then_timeout_without_pong() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    tokio::time::pause();
    let start = Instant::now();
    // The ping comes after the 60 s interval (the handshake took a moment
    // of real time before the clock was paused).
    assert!(matches!(client.next().await, Some(Ok(Message::Ping(_)))));
    let at_ping = start.elapsed();
    assert!(
        at_ping > Duration::from_secs(59) && at_ping < Duration::from_secs(61),
        "{at_ping:?}"
    );
    // The client never reads again, so tungstenite never sends its pong.
    assert_eq!(
        closed(&mut server).await,
        CloseReason::new(None, "keepalive timeout", Initiator::Local)
    );
    let at_close = start.elapsed();
    assert!(
        at_close > at_ping + Duration::from_secs(29)
            && at_close < at_ping + Duration::from_secs(31),
        "{at_ping:?} {at_close:?}"
    );
}

#[tokio::test]
async fn pong_keeps_the_connection_alive() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    tokio::time::pause();
    let start = Instant::now();
    assert!(matches!(client.next().await, Some(Ok(Message::Ping(_)))));
    client.flush().await.unwrap(); // writes tungstenite's queued pong
    // Past the pong timeout: still open.
    let waited = tokio::time::timeout(Duration::from_secs(45), server.recv()).await;
    assert!(waited.is_err(), "closed after a pong: {waited:?}");
    assert!(!server.is_closed());
    // The next ping comes one interval after the first.
    assert!(matches!(client.next().await, Some(Ok(Message::Ping(_)))));
    let at_second = start.elapsed();
    assert!(
        at_second > Duration::from_secs(119) && at_second < Duration::from_secs(121),
        "{at_second:?}"
    );
}

#[tokio::test]
async fn no_keepalive_when_disabled() {
    let (mut server, _client) = raw_pair(WsConfig::default().with_ping_interval(None)).await;
    tokio::time::pause();
    let waited = tokio::time::timeout(Duration::from_secs(3600), server.recv()).await;
    assert!(waited.is_err());
    assert!(!server.is_closed());
}

// ----- handshake: server side -----

/// Writes `request` on a new connection to a server task that reads the
/// upgrade request; returns the client end and the server task.
async fn raw_request(
    request: &[u8],
    config: &WsConfig,
) -> (
    TcpStream,
    tokio::task::JoinHandle<Result<ws::UpgradeRequest<TcpStream>, TransportError>>,
) {
    let (listener, addr) = listen().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request).await.unwrap();
    let config = config.clone();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        ws::read_upgrade_request(socket, &config).await
    });
    (client, server)
}

async fn read_response(client: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = client.read(&mut buf).await.unwrap();
        response.extend_from_slice(&buf[..n]);
        if n == 0 || response.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&response).into_owned();
        }
    }
}

const UPGRADE: &str = "GET /room/?roomId=r%201&peerId=a+b&flag HTTP/1.1\r\n\
    Host: example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: https://app.example\r\n\
    Sec-WebSocket-Protocol: chat, Protoo\r\n\
    \r\n";

#[tokio::test]
async fn upgrade_request_is_exposed_and_accepted() {
    let (mut client, request) = raw_request(UPGRADE.as_bytes(), &WsConfig::default()).await;
    let request = request.await.unwrap().unwrap();
    assert_eq!(request.method(), "GET");
    assert_eq!(request.path(), "/room/");
    assert_eq!(
        request.path_and_query(),
        "/room/?roomId=r%201&peerId=a+b&flag"
    );
    assert_eq!(request.query_param("roomId").as_deref(), Some("r 1"));
    assert_eq!(request.query_param("peerId").as_deref(), Some("a b"));
    assert_eq!(request.query_param("flag").as_deref(), Some(""));
    assert_eq!(request.query_param("missing"), None);
    assert_eq!(request.origin(), Some("https://app.example"));
    assert_eq!(request.headers()["host"], "example.com");
    assert_eq!(request.protocols().collect::<Vec<_>>(), ["chat", "Protoo"]);
    assert!(request.wants_protoo());
    assert!(request.is_websocket_upgrade());
    assert!(request.leftover().is_empty());
    let mut server = ws::ServerTransport::builder(&WsConfig::default())
        .accept(request)
        .await
        .unwrap();

    let response = read_response(&mut client).await;
    assert!(
        response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{response}"
    );
    // The example key of RFC 6455.
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(
        response.contains("Sec-WebSocket-Protocol: Protoo\r\n"),
        "{response}"
    );

    // The socket now speaks WebSocket.
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(text(&mut server).await, "hello");
}

#[tokio::test]
async fn bytes_after_the_head_are_kept() {
    // A masked text frame "hi" sent together with the request.
    let mask = [1u8, 2, 3, 4];
    let mut raw = UPGRADE.as_bytes().to_vec();
    raw.extend_from_slice(&[0x81, 0x82]);
    raw.extend_from_slice(&mask);
    raw.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    let (_client, request) = raw_request(&raw, &WsConfig::default()).await;
    let request = request.await.unwrap().unwrap();
    assert_eq!(request.leftover().len(), 8);
    let mut server = ws::ServerTransport::builder(&WsConfig::default())
        .accept(request)
        .await
        .unwrap();
    assert_eq!(text(&mut server).await, "hi");
}

#[tokio::test]
async fn not_an_upgrade_is_answered_400_by_accept() {
    let (mut client, request) =
        raw_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &WsConfig::default()).await;
    let request = request.await.unwrap().unwrap();
    assert!(!request.is_websocket_upgrade());
    assert_eq!(request.upgrade_error(), Some("missing Upgrade: websocket"));
    let error = ws::ServerTransport::builder(&WsConfig::default())
        .accept(request)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert!(
        read_response(&mut client)
            .await
            .starts_with("HTTP/1.1 400 Bad Request\r\n")
    );
}

#[tokio::test]
async fn other_websocket_version_is_answered_426() {
    let raw = UPGRADE.replace("Version: 13", "Version: 8");
    let (mut client, request) = raw_request(raw.as_bytes(), &WsConfig::default()).await;
    let request = request.await.unwrap().unwrap();
    let error = ws::ServerTransport::builder(&WsConfig::default())
        .accept(request)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        TransportError::Rejected { status: 426, .. }
    ));
    let response = read_response(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(response.contains("Sec-WebSocket-Version: 13\r\n"));
}

#[tokio::test]
async fn oversized_head_is_answered_431() {
    let config = WsConfig::default().with_max_handshake_bytes(1024);
    let raw = UPGRADE.replace(
        "\r\n\r\n",
        &format!("\r\nX-Big: {}\r\n\r\n", "b".repeat(2000)),
    );
    let (mut client, request) = raw_request(raw.as_bytes(), &config).await;
    assert!(
        read_response(&mut client)
            .await
            .starts_with("HTTP/1.1 431 ")
    );
    drop(client);
    assert!(matches!(
        request.await.unwrap().unwrap_err(),
        TransportError::Rejected { status: 431, .. }
    ));
}

#[tokio::test]
async fn malformed_head_is_answered_400() {
    let (mut client, request) = raw_request(
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        &WsConfig::default(),
    )
    .await;
    assert!(
        read_response(&mut client)
            .await
            .starts_with("HTTP/1.1 400 ")
    );
    drop(client);
    assert!(matches!(
        request.await.unwrap().unwrap_err(),
        TransportError::Rejected { status: 400, .. }
    ));
}

#[tokio::test]
async fn connection_closed_before_the_head() {
    let (listener, addr) = listen().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    drop(client);
    let (socket, _) = listener.accept().await.unwrap();
    let error = ws::read_upgrade_request(socket, &WsConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Handshake(_)), "{error:?}");
}

// ----- handshake: client side -----

/// A server that rejects the next connection with `status` and `reason`.
async fn rejecting_server(status: u16, reason: &'static str) -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let request = ws::read_upgrade_request(socket, &WsConfig::default())
            .await
            .unwrap();
        request.reject(status, reason).await.unwrap();
    });
    format!("ws://{addr}/")
}

#[tokio::test]
async fn rejections_surface_their_status_and_reason() {
    for (status, reason) in [
        (403, "invalid/missing Sec-WebSocket-Protocol"),
        (400, "missing roomId"),
        (503, "too many connections"),
    ] {
        let url = rejecting_server(status, reason).await;
        let error = ws::connect(&url, &WsConfig::default()).await.unwrap_err();
        match error {
            TransportError::Rejected {
                status: s,
                reason: r,
            } => {
                assert_eq!((s, r.as_str()), (status, reason));
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_without_protoo_can_be_refused_403() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let request = ws::read_upgrade_request(socket, &WsConfig::default())
            .await
            .unwrap();
        assert!(request.is_websocket_upgrade());
        assert!(!request.wants_protoo());
        request
            .reject(403, "invalid/missing Sec-WebSocket-Protocol")
            .await
            .unwrap();
    });
    let error = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 403);
            assert_eq!(
                response.headers()["x-websocket-reject-reason"],
                "invalid/missing Sec-WebSocket-Protocol"
            );
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn server_not_selecting_protoo_is_an_error() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // A plain WebSocket server: no subprotocol in its answer.
        let _ = tokio_tungstenite::accept_async(socket).await;
    });
    let error = ws::connect(&format!("ws://{addr}/"), &WsConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::NoSubprotocol), "{error:?}");
}

#[tokio::test]
async fn extra_headers_reach_the_server() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let request = ws::read_upgrade_request(socket, &WsConfig::default())
            .await
            .unwrap();
        let auth = request.headers()["authorization"].clone();
        let origin = request.origin().map(str::to_owned);
        let transport = ws::ServerTransport::builder(&WsConfig::default())
            .accept(request)
            .await
            .unwrap();
        (auth, origin, transport)
    });
    let options = ClientOptions::new(format!("ws://{addr}/?peerId=x"))
        .with_header(
            ws::http::header::AUTHORIZATION,
            ws::http::HeaderValue::from_static("Bearer t0k3n"),
        )
        .with_header(
            ws::http::header::ORIGIN,
            ws::http::HeaderValue::from_static("https://app.example"),
        );
    let _client = ws::connect_with(options, &WsConfig::default())
        .await
        .unwrap();
    let (auth, origin, _server) = server.await.unwrap();
    assert_eq!(auth, "Bearer t0k3n");
    assert_eq!(origin.as_deref(), Some("https://app.example"));
}

#[tokio::test]
async fn bad_urls_and_refused_connections() {
    let config = WsConfig::default();
    for url in ["http://127.0.0.1/", "not a url", "ws:///nohost"] {
        let error = ws::connect(url, &config).await.unwrap_err();
        assert!(
            matches!(error, TransportError::InvalidUrl(_)),
            "{url}: {error:?}"
        );
    }
    // A port nobody listens on (bound, then closed).
    let (listener, addr) = listen().await;
    drop(listener);
    let error = ws::connect(&format!("ws://{addr}/"), &config)
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Io(_)), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_bounds_connect() {
    let (listener, addr) = listen().await;
    // Accepts the TCP connection but never answers the upgrade.
    let _hold = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(socket);
    });
    let config = WsConfig::default().with_handshake_timeout(Duration::from_millis(200));
    let error = ws::connect(&format!("ws://{addr}/"), &config)
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Handshake(_)), "{error:?}");
}

// ----- a stream upgraded elsewhere -----

#[tokio::test]
async fn transport_over_an_already_upgraded_stream() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let mut server = ws::ServerTransport::builder(&WsConfig::default()).upgraded(server_io);
    let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    client.send(Message::text("from client")).await.unwrap();
    assert_eq!(text(&mut server).await, "from client");
    server.send(Frame::from_static("from server")).unwrap();
    match client.next().await.unwrap().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "from server"),
        other => panic!("unexpected {other:?}"),
    }
    server.close_with(4000, "done");
    let frame = close_frame(&mut client).await.unwrap();
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "done")
    );
}
