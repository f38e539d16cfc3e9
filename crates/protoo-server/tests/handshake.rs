//! The connection handshake over real sockets on 127.0.0.1: what reaches the
//! application, what the server answers by itself, and how the
//! application's accept / reject decision reaches the client.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use protoo_server::transport::Inbound;
use protoo_server::{
    CoreError, DuplicatePolicy, Frame, Initiator, Joined, PeerEvent, Room, Rooms, ServerConfig,
    ServerError, close_code,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Connects with `?marker=NAME` and checks that it is the next request the
/// application sees (so nothing refused before it reached the application),
/// then rejects it.
async fn next_is_marker(
    server: &mut protoo_server::WebSocketServer,
    addr: std::net::SocketAddr,
    name: &str,
) {
    let target = format!("/?marker={name}");
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, &target, Some("protoo"), &[]),
    ));
    let request = next_request(server).await;
    assert_eq!(
        request.query_param("marker").as_deref(),
        Some(name),
        "an earlier request reached the app"
    );
    request.reject(409, "marker");
    assert_eq!(client.await.unwrap().status, 409);
}

#[tokio::test]
async fn accepted_upgrade_selects_protoo_and_carries_frames() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/?peerId=a", Some("v2, protoo"), &[]),
    ));
    let request = next_request(&mut server).await;
    let mut transport = guard("accept", request.accept()).await.expect("accept");
    let (mut ws, protocol) = client.await.unwrap().expect("accepted");
    assert_eq!(protocol.as_deref(), Some("protoo"));

    let notification = r#"{"notification":true,"method":"hi","data":{}}"#;
    transport.send(Frame::from_static(notification)).unwrap();
    let message = guard("client read", ws.next()).await.unwrap().unwrap();
    assert_eq!(message.into_text().unwrap().as_str(), notification);

    ws.send(Message::text(
        r#"{"notification":true,"method":"back","data":{}}"#,
    ))
    .await
    .unwrap();
    match guard("server read", transport.recv()).await {
        Inbound::Text(text) => {
            assert!(text.starts_with(br#"{"notification":true,"method":"back""#))
        }
        other => panic!("expected text, got {other:?}"),
    }

    // The application closes: protoo's 4000.
    transport.close();
    let message = guard("client read", ws.next()).await.unwrap().unwrap();
    let Message::Close(Some(frame)) = message else {
        panic!("expected a close frame, got {message:?}")
    };
    assert_eq!(u16::from(frame.code), close_code::PROTOO_CLOSED);
    assert_eq!(frame.reason.as_str(), "closed by protoo-server");
}

#[tokio::test]
async fn protoo_is_matched_without_regard_to_case() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/", Some("PROTOO"), &[]),
    ));
    let _transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    let (_ws, protocol) = client.await.unwrap().expect("accepted");
    // The client's own spelling is echoed back.
    assert_eq!(protocol.as_deref(), Some("PROTOO"));
}

#[tokio::test]
async fn rejection_carries_the_status_and_reason() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, "/?token=bad", Some("protoo"), &[]),
    ));
    next_request(&mut server).await.reject(401, "bad token");
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.reason_header.as_deref(), Some("bad token"));

    // And through our own client transport: `TransportError::Rejected`.
    let client = tokio::spawn(async move {
        protoo_server::ws::connect(
            &format!("ws://{addr}/"),
            &protoo_server::WsConfig::default(),
        )
        .await
    });
    next_request(&mut server).await.reject(429, "slow down");
    match client.await.unwrap() {
        Err(protoo_server::TransportError::Rejected { status, reason }) => {
            assert_eq!((status, reason.as_str()), (429, "slow down"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn rejection_defaults_follow_protoo() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    // (status given, reason given) -> (status sent, reason sent)
    let cases = [
        (200, "ok?", 403, "ok?"),
        (302, "", 403, "Rejected"),
        (399, "x", 403, "x"),
        (600, "", 403, "Rejected"),
        (0, "zero", 403, "zero"),
        (404, "", 404, "Rejected"),
        (400, "bad", 400, "bad"),
        (599, "edge", 599, "edge"),
    ];
    for (given_status, given_reason, status, reason) in cases {
        let client = tokio::spawn(refused(
            addr,
            upgrade_request(addr, "/", Some("protoo"), &[]),
        ));
        next_request(&mut server)
            .await
            .reject(given_status, given_reason);
        let answer = client.await.unwrap();
        assert_eq!(
            answer.status, status,
            "reject({given_status}, {given_reason:?})"
        );
        assert_eq!(
            answer.reason_header.as_deref(),
            Some(reason),
            "reject({given_status}, {given_reason:?})"
        );
    }
}

#[tokio::test]
async fn missing_protoo_subprotocol_is_403_before_the_application() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    for protocol in [None, Some("chat"), Some("protoo2, v1")] {
        let answer = refused(addr, upgrade_request(addr, "/?peerId=x", protocol, &[])).await;
        assert_eq!(answer.status, 403, "protocol {protocol:?}");
        assert_eq!(
            answer.reason_header.as_deref(),
            Some("invalid/missing Sec-WebSocket-Protocol"),
            "protocol {protocol:?}"
        );
    }
    next_is_marker(&mut server, addr, "after-403").await;
}

#[tokio::test]
async fn origin_allow_list() {
    let config = ServerConfig::default().with_allowed_origins(["https://app.example.com"]);
    let (mut server, addr) = server(config).await;

    for origin in ["https://evil.example.com", "http://app.example.com", "null"] {
        let request = upgrade_request(addr, "/", Some("protoo"), &[("Origin", origin)]);
        let answer = refused(addr, request).await;
        assert_eq!(answer.status, 403, "origin {origin}");
        assert_eq!(answer.reason_header.as_deref(), Some("origin not allowed"));
    }
    next_is_marker(&mut server, addr, "after-foreign-origins").await;

    // The allowed origin reaches the application.
    let request = upgrade_request(
        addr,
        "/",
        Some("protoo"),
        &[("Origin", "https://app.example.com")],
    );
    let client = tokio::spawn(handshake(addr, request));
    let request = next_request(&mut server).await;
    assert_eq!(request.origin(), Some("https://app.example.com"));
    let _transport = guard("accept", request.accept()).await.expect("accept");
    client.await.unwrap().expect("accepted");

    // So does a client that sends no Origin (not a browser).
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    let request = next_request(&mut server).await;
    assert_eq!(request.origin(), None);
    let _transport = guard("accept", request.accept()).await.expect("accept");
    client.await.unwrap().expect("accepted");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_503() {
    let (mut server, addr) = server(ServerConfig::default().with_max_connections(2)).await;
    let handle = server.handle();
    let mut held = Vec::new();
    for _ in 0..2 {
        let client = tokio::spawn(handshake(
            addr,
            upgrade_request(addr, "/", Some("protoo"), &[]),
        ));
        let transport = guard("accept", next_request(&mut server).await.accept())
            .await
            .expect("accept");
        let (ws, _) = client.await.unwrap().expect("accepted");
        held.push((transport, ws));
    }
    assert_eq!(handle.connections(), 2);

    for _ in 0..3 {
        let answer = refused(addr, upgrade_request(addr, "/", Some("protoo"), &[])).await;
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.reason_header.as_deref(),
            Some("too many connections")
        );
    }
    // Also a connection that never sends its request is answered.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    guard("503 without a request", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = parse_response(&answer);
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body, "too many connections");

    // One leaves: a new connection fits again.
    let (transport, mut ws) = held.pop().unwrap();
    ws.close(None).await.unwrap();
    drop(transport);
    eventually("the connection count goes down", || {
        handle.connections() < 2
    })
    .await;
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    let _transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    client.await.unwrap().expect("accepted again");
}

/// A client over the connection limit reads the whole 503, not a reset:
/// the server writes its answer, then discards what the client sends until
/// the client closes (bounded), as for the other rejections. The client
/// here sends its upgrade request only once the 503 has arrived, so that
/// it reaches a server that already answered: a server that closed at once
/// would reset the connection and the client would lose the answer.
#[tokio::test]
async fn a_client_over_the_connection_limit_reads_the_503_not_a_reset() {
    let (mut server, addr) = server(ServerConfig::default().with_max_connections(1)).await;
    let client = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    let _transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    let _held = client.await.unwrap().expect("accepted");

    for round in 0..20 {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        if round % 2 == 0 {
            // The answer is there before the request is sent.
            guard("the 503 arrives", tcp.readable()).await.unwrap();
        }
        // Headers padded to several segments, so that they keep arriving
        // after the answer.
        let mut request = raw_upgrade("/").into_bytes();
        request.truncate(request.len() - 2);
        for i in 0..64 {
            request.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "p".repeat(200)).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        tcp.write_all(&request).await.expect("write the request");
        let mut answer = Vec::new();
        let read = guard("read the 503", tcp.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "round {round}: the connection was reset ({read:?}) after {} bytes",
            answer.len()
        );
        assert!(
            answer.starts_with(b"HTTP/1.1 503 "),
            "round {round}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let answer = parse_response(&answer);
        assert_eq!(
            answer.header("x-websocket-reject-reason"),
            Some("too many connections")
        );
        assert_eq!(answer.body, "too many connections");
    }
}

#[tokio::test]
async fn request_dropped_undecided_is_500() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    drop(next_request(&mut server).await);
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.reason_header.as_deref(),
        Some("connection request not answered")
    );
}

#[tokio::test]
async fn decision_slower_than_the_handshake_timeout_is_503() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_millis(200));
    let (mut server, addr) = server(config).await;
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    let request = next_request(&mut server).await;
    // The application is still deciding when the client gets its answer.
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.reason_header.as_deref(),
        Some("connection request timed out")
    );
    // Too late now.
    match guard("late accept", request.accept()).await {
        Err(ServerError::HandshakeTimeout) => {}
        other => panic!("expected HandshakeTimeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_dropped() {
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_millis(200));
    let (mut server, addr) = server(config).await;
    let handle = server.handle();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server closes the connection (without an answer: there is no
    // complete request to answer).
    let _ = guard(
        "the server drops the connection",
        tcp.read_to_end(&mut answer),
    )
    .await;
    eventually("the connection is forgotten", || handle.connections() == 0).await;
    next_is_marker(&mut server, addr, "after-slow-client").await;
}

#[tokio::test]
async fn plain_http_and_malformed_requests_are_answered_by_the_server() {
    let (mut server, addr) = server(ServerConfig::default()).await;

    let answer = raw_http(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.header("x-websocket-reject-reason"),
        Some("missing Upgrade: websocket")
    );

    let answer = raw_http(addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert_eq!(answer.status, 400);

    let post = raw_upgrade("/").replacen("GET", "POST", 1);
    assert_eq!(raw_http(addr, post.as_bytes()).await.status, 400);

    let no_key = raw_upgrade("/").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(raw_http(addr, no_key.as_bytes()).await.status, 400);

    let old_version = raw_upgrade("/").replace("Version: 13", "Version: 8");
    let answer = raw_http(addr, old_version.as_bytes()).await;
    assert_eq!(answer.status, 426);
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));

    // None of these reached the application.
    next_is_marker(&mut server, addr, "after-bad-requests").await;
}

#[tokio::test]
async fn a_full_request_backlog_is_503() {
    let config = ServerConfig::default().with_request_backlog(1);
    let (mut server, addr) = server(config).await;
    // The application does not take requests for now: one waits in the
    // backlog, the other is answered 503 at once (whichever came second).
    let mut first = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/?n=1", Some("protoo"), &[]),
    ));
    let mut second = tokio::spawn(handshake(
        addr,
        upgrade_request(addr, "/?n=2", Some("protoo"), &[]),
    ));
    let (busy, waiting) = guard("one answered at once", async {
        tokio::select! {
            done = &mut first => (done.unwrap(), second),
            done = &mut second => (done.unwrap(), first),
        }
    })
    .await;
    let busy = busy.expect_err("one of the two is refused");
    assert_eq!(busy.status, 503);
    assert_eq!(busy.reason_header.as_deref(), Some("server busy"));

    let request = next_request(&mut server).await;
    let _transport = guard("accept", request.accept()).await.expect("accept");
    waiting.await.unwrap().expect("the waiting one is accepted");
}

#[tokio::test]
async fn the_application_sees_path_query_headers_origin_and_address() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_addr = tcp.local_addr().unwrap();
    let request = upgrade_request(
        addr,
        "/rooms/lobby?roomId=r%201&peerId=ann+b&flag",
        Some("protoo"),
        &[
            ("Origin", "https://app.example.com"),
            ("X-Token", "secret"),
            ("Cookie", "a=1"),
        ],
    );
    let client = tokio::spawn(handshake_on(tcp, request));
    let request = next_request(&mut server).await;
    assert_eq!(request.path(), "/rooms/lobby");
    assert_eq!(request.query(), Some("roomId=r%201&peerId=ann+b&flag"));
    assert_eq!(
        request.path_and_query(),
        "/rooms/lobby?roomId=r%201&peerId=ann+b&flag"
    );
    assert_eq!(request.query_param("roomId").as_deref(), Some("r 1"));
    assert_eq!(request.query_param("peerId").as_deref(), Some("ann b"));
    assert_eq!(request.query_param("flag").as_deref(), Some(""));
    assert_eq!(request.query_param("missing"), None);
    assert_eq!(request.headers().get("x-token").unwrap(), "secret");
    assert_eq!(request.headers().get("cookie").unwrap(), "a=1");
    assert!(request.headers().contains_key("sec-websocket-key"));
    assert_eq!(request.origin(), Some("https://app.example.com"));
    assert_eq!(request.remote_addr(), client_addr);
    assert!(!request.is_tls());
    assert!(format!("{request:?}").contains("/rooms/lobby"));
    let _transport = guard("accept", request.accept()).await.expect("accept");
    client.await.unwrap().expect("accepted");
}

#[tokio::test]
async fn admit_into_a_room() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms<String> = Rooms::new();
    let (room, _hold) = rooms.admit("lobby", "").hold().await.unwrap();

    let first = tokio::spawn(async move { client(addr, "/?peerId=alice").await });
    let request = next_request(&mut server).await;
    let Joined {
        peer, mut events, ..
    } = guard(
        "admit",
        request
            .admit(&rooms)
            .room("lobby")
            .peer("alice")
            .policy(DuplicatePolicy::Refuse)
            .join("Alice".to_owned()),
    )
    .await
    .expect("admitted");
    let (client_peer, _client_events) = first.await.unwrap();
    assert!(room.has_peer("alice"));
    assert_eq!(peer.data(), "Alice");

    // A request from the client reaches the peer in the room.
    let answer = tokio::spawn(async move {
        let request = expect_request(&mut events).await;
        assert_eq!(request.method(), "whoami");
        let id = request.peer_id().to_owned();
        request.accept(&json!({ "id": id }));
        events
    });
    let data = guard("request", client_peer.request("whoami", &()))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!({ "id": "alice" }));
    let _events = answer.await.unwrap();

    // The same id again is refused, and that connection closed.
    let second = tokio::spawn(async move { client(addr, "/?peerId=alice").await });
    let request = next_request(&mut server).await;
    let refused = guard(
        "admit",
        request
            .admit(&rooms)
            .room("lobby")
            .peer("alice")
            .policy(DuplicatePolicy::Refuse)
            .join("Alice 2".to_owned()),
    )
    .await;
    match refused {
        Err(ServerError::Core(CoreError::DuplicateId(id))) => assert_eq!(id, "alice"),
        other => panic!("expected DuplicateId, got {other:?}"),
    }
    let (_second, mut second_events) = second.await.unwrap();
    let reason = expect_closed(&mut second_events).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.initiator, Initiator::Remote);
    // The first one is untouched.
    assert!(Room::peer(&room, "alice").is_some_and(|p| p == peer));
    assert!(!client_peer.is_closed());
}

#[tokio::test]
async fn admit_creates_and_removes_rooms() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms = Rooms::new();

    let mut clients = Vec::new();
    let mut server_peers = Vec::new();
    for peer_id in ["a", "b", "a"] {
        let target = format!("/?roomId=r1&peerId={peer_id}");
        let client = tokio::spawn(async move { client(addr, &target).await });
        let request = next_request(&mut server).await;
        let Joined {
            room, peer, events, ..
        } = guard(
            "admit",
            request
                .admit(&rooms)
                .policy(DuplicatePolicy::Replace)
                .join(()),
        )
        .await
        .expect("admitted");
        assert_eq!(room.id(), "r1");
        assert!(rooms.get("r1").is_some_and(|r| Room::ptr_eq(&r, &room)));
        clients.push(client.await.unwrap());
        server_peers.push((peer, events));
    }
    let room = rooms.get("r1").unwrap();
    assert_eq!(room.len(), 2);
    assert_eq!(rooms.len(), 1);

    // The first "a" was replaced: its client sees protoo's 4000.
    let reason = expect_closed(&mut clients[0].1).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert!(room.peer("a").is_some_and(|p| p == server_peers[2].0));

    // Everyone leaves: the room goes away.
    for (client, _) in &clients {
        client.close();
    }
    for (peer, _) in &server_peers {
        guard("server peer closed", peer.closed()).await;
    }
    assert!(room.is_empty());
    assert!(rooms.is_empty(), "the empty room was removed");
    assert!(rooms.get("r1").is_none());
    for (_, events) in &mut server_peers {
        let mut last = None;
        while let Some(event) = guard("events", events.next()).await {
            last = Some(event);
        }
        assert!(matches!(last, Some(PeerEvent::Closed(_))));
    }
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_kept() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    // The request and a first (masked) text frame in one write, without
    // waiting for the 101.
    let text = br#"{"notification":true,"method":"early","data":{}}"#;
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut bytes = raw_upgrade("/?peerId=eager").into_bytes();
    bytes.push(0x81);
    bytes.push(0x80 | u8::try_from(text.len()).unwrap());
    bytes.extend_from_slice(&mask);
    bytes.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();

    let mut transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    match guard("the early frame", transport.recv()).await {
        Inbound::Text(received) => assert_eq!(&received[..], &text[..]),
        other => panic!("expected the early frame, got {other:?}"),
    }
    let mut head = vec![0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}
