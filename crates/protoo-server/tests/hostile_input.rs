//! Hostile input over real sockets (issue 8, items 1-6): invalid protoo
//! frames, messages and frames over the size limits, fragment floods, frame
//! headers announcing huge payloads, slow and oversized upgrade requests,
//! and refused upgrades. Every test ends with the server back at its
//! baseline: no connection, no request in flight, no task left.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use protoo_server::{Initiator, PeerConfig, ServerConfig, WsConfig, close_code};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The next text message on a raw client, as JSON (pings and pongs skipped).
async fn next_json(ws: &mut RawWs) -> Value {
    loop {
        match guard("next message", ws.next()).await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).expect("the server sent JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The close code the server sends next on a raw client (`None`: the
/// connection ended without a close frame).
async fn next_close_code(ws: &mut RawWs) -> Option<u16> {
    loop {
        match guard("the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends an `echo` request with `id` and checks that the very next message
/// is its response: nothing was answered in between.
async fn echo_round_trip(ws: &mut RawWs, id: u32) {
    let text = request_text(id, "echo", json!({ "n": id }));
    ws.send(Message::text(text)).await.expect("send");
    let response = next_json(ws).await;
    assert_eq!(
        response,
        json!({ "response": true, "id": id, "ok": true, "data": { "n": id } }),
        "the message after the request with id {id}"
    );
}

/// Item 1: `null`, `[]`, `"x"`, `42`, invalid JSON, invalid protoo flags and
/// binary frames are dropped (with a warning in the log); the connection
/// stays and the next request is answered.
#[tokio::test]
async fn invalid_frames_are_dropped_and_the_next_request_is_answered() {
    let mut fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let mut ws = raw_ws(addr, &Fixture::target("r", "attacker")).await;
    let (witness, mut witness_events) = client(addr, &Fixture::target("r", "witness")).await;
    eventually("both peers in the room", || {
        fixture.rooms.get("r").is_some_and(|room| room.len() == 2)
    })
    .await;

    // Nested deeper than the JSON parser's recursion limit (128).
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let deep_data = format!(
        r#"{{"request":true,"id":9,"method":"echo","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let garbage = "x".repeat(900 * 1024);
    let texts: Vec<&str> = vec![
        // Valid JSON, not an object: the frame that crashes Node protoo-server.
        "null",
        "[]",
        r#""x""#,
        "42",
        "true",
        "-0.5e3",
        // Not JSON.
        "",
        " ",
        "{",
        "{]",
        "nul",
        "\u{feff}{}",
        r#"{"request":true,"id":1,"method":"echo"} trailing"#,
        r#"{"request":true,"id":1,"method":"echo","data":"#,
        &deep,
        &garbage,
        // Objects that are no protoo message (protoo's flags and fields).
        "{}",
        r#"{"request":false,"id":1,"method":"echo"}"#,
        r#"{"request":0,"id":1,"method":"echo"}"#,
        r#"{"request":"","id":1,"method":"echo"}"#,
        r#"{"request":null,"id":1,"method":"echo"}"#,
        r#"{"request":true,"method":"echo"}"#,
        r#"{"request":true,"id":"1","method":"echo"}"#,
        r#"{"request":true,"id":null,"method":"echo"}"#,
        r#"{"request":true,"id":{},"method":"echo"}"#,
        r#"{"request":true,"id":1}"#,
        r#"{"request":true,"id":1,"method":42}"#,
        r#"{"request":true,"id":1,"method":null}"#,
        r#"{"notification":true}"#,
        r#"{"notification":true,"method":["relay"]}"#,
        r#"{"response":true,"ok":true}"#,
        r#"{"response":true,"id":"7","ok":true}"#,
        // A response to a request never sent.
        r#"{"response":true,"id":424242,"ok":true,"data":{}}"#,
        r#"{"response":true,"id":-1,"ok":false,"errorCode":500}"#,
        r#"{"response":true,"id":1e400,"ok":true}"#,
    ];
    let mut id = 1000;
    for text in texts {
        ws.send(Message::text(text)).await.expect("send");
        id += 1;
        echo_round_trip(&mut ws, id).await;
    }
    // Data nested 10,000 deep in a valid request: decoding builds no tree
    // (no recursion), and the data is echoed verbatim.
    ws.send(Message::text(deep_data.as_str()))
        .await
        .expect("send");
    match guard("deep echo", ws.next()).await {
        Some(Ok(Message::Text(text))) => {
            let expected = format!(
                r#"{{"response":true,"id":9,"ok":true,"data":{}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            assert!(text.as_str() == expected, "the deep data echoed verbatim");
        }
        other => panic!("expected the deep echo, got {other:?}"),
    }
    echo_round_trip(&mut ws, 9999).await;

    // Binary frames, even one holding a valid request, and control frames.
    for data in [
        Vec::new(),
        vec![0, 159, 146, 150, 255],
        request_text(5, "echo", json!({})).into_bytes(),
    ] {
        ws.send(Message::binary(data)).await.expect("send");
        id += 1;
        echo_round_trip(&mut ws, id).await;
    }
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    ws.send(Message::Pong(b"unsolicited".to_vec().into()))
        .await
        .expect("pong");
    id += 1;
    echo_round_trip(&mut ws, id).await;

    // Nothing reached the other member: the first thing it hears is a
    // broadcast sent now.
    let text = request_text(1, "broadcast", json!({ "after": "garbage" }));
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["id"], 1);
    let chat = expect_notification(&mut witness_events).await;
    assert_eq!(chat.method(), "chat");
    assert_eq!(chat.payload().to_value(), json!({ "after": "garbage" }));

    // The attacker's server-side peer never closed.
    assert!(fixture.closed.try_recv().is_err());
    assert!(
        !fixture
            .server_peer("r", "attacker")
            .expect("still in the room")
            .is_closed()
    );

    ws.close(None).await.unwrap();
    let reason = fixture.wait_closed("attacker", &mut Vec::new()).await;
    // A close frame without a code reads as 1005 (RFC 6455 7.1.5).
    assert_eq!(reason.code, Some(1005));
    witness.close();
    expect_closed(&mut witness_events).await;
    drop((witness, witness_events, ws));
    fixture.back_to_baseline(tasks).await;
}

/// A server whose messages and frames are limited to `limit` bytes.
fn limited(limit: usize) -> ServerConfig {
    ServerConfig::default().with_ws(
        WsConfig::default()
            .with_max_message_size(limit)
            .with_max_frame_size(limit),
    )
}

/// [`limited`], with short keepalive timers.
fn limited_with_keepalive(limit: usize) -> ServerConfig {
    let config = limited(limit);
    let ws = config
        .ws
        .clone()
        .with_ping_interval(Some(SHORT))
        .with_pong_timeout(SHORT);
    config.with_ws(ws)
}

/// Item 2: a message over the size limit closes its sender with 1009,
/// refused from the frame header before its payload is buffered (in one
/// frame) or as soon as the running total passes the limit (in fragments);
/// the other peers of the room go on.
#[tokio::test]
async fn a_message_over_the_limit_closes_1009_and_others_are_unaffected() {
    const LIMIT: usize = 64 * 1024;
    let mut fixture = Fixture::start(limited(LIMIT), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let (alice, mut alice_events) = client(addr, &Fixture::target("r", "alice")).await;
    let (bob, mut bob_events) = client(addr, &Fixture::target("r", "bob")).await;

    // One frame of LIMIT + 1 bytes, sent by a regular client.
    let mut big = raw_ws(addr, &Fixture::target("r", "big")).await;
    big.send(Message::text("x".repeat(LIMIT + 1)))
        .await
        .expect("send");
    assert_eq!(
        next_close_code(&mut big).await,
        Some(close_code::MESSAGE_TOO_BIG)
    );
    let reason = fixture.wait_closed("big", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::MESSAGE_TOO_BIG));
    assert_eq!(reason.initiator, Initiator::Local);

    // A 16 MiB frame: refused from its header, before any of its payload
    // is buffered (the close arrives while we are still writing it; the
    // server then discards what it reads until we stop).
    let mut huge = raw_tcp_ws(addr, &Fixture::target("r", "huge")).await;
    huge.write_all(&frame_header(TEXT, true, 16 << 20, true))
        .await
        .unwrap();
    huge.write_all(&[1, 2, 3, 4]).await.unwrap(); // the mask key
    let (mut read, mut write) = huge.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        while written < 16 << 20 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    let mut head = [0u8; 4];
    guard("the close frame", read.read_exact(&mut head))
        .await
        .expect("a close frame before the end");
    assert_eq!(head[0], 0x80 | CLOSE);
    assert_eq!(
        u16::from_be_bytes([head[2], head[3]]),
        close_code::MESSAGE_TOO_BIG
    );
    let reason = fixture.wait_closed("huge", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::MESSAGE_TOO_BIG));
    drop(read);
    let _ = guard("the writer stops", writer).await;

    // Fragments of 16 KiB each: the fifth passes the limit.
    let mut fragmented = raw_ws(addr, &Fixture::target("r", "fragmented")).await;
    let piece = vec![b'y'; 16 * 1024];
    let fragments = [
        client_frame(TEXT, false, &piece),
        client_frame(CONTINUATION, false, &piece),
        client_frame(CONTINUATION, false, &piece),
        client_frame(CONTINUATION, false, &piece),
        client_frame(CONTINUATION, true, &piece),
    ];
    {
        let tcp = fragmented.get_mut();
        for fragment in &fragments {
            let _ = tcp.write_all(fragment).await;
        }
    }
    assert_eq!(
        next_close_code(&mut fragmented).await,
        Some(close_code::MESSAGE_TOO_BIG)
    );
    let reason = fixture.wait_closed("fragmented", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::MESSAGE_TOO_BIG));

    // A message of exactly the limit is fine.
    let bare = request_text(77, "echo", json!({ "pad": "" }));
    let pad = "z".repeat(LIMIT - bare.len());
    let request = request_text(77, "echo", json!({ "pad": pad }));
    assert_eq!(request.len(), LIMIT, "the request is exactly the limit");
    let mut exact_ws = raw_ws(addr, &Fixture::target("r", "exact")).await;
    exact_ws.send(Message::text(request)).await.unwrap();
    let response = next_json(&mut exact_ws).await;
    assert_eq!(response["id"], 77);
    assert_eq!(
        response["data"]["pad"].as_str().map(str::len),
        Some(pad.len())
    );

    // The others never noticed.
    let data = guard("echo", alice.request("echo", &json!({ "still": "here" })))
        .await
        .expect("alice still served");
    assert_eq!(data.to_value(), json!({ "still": "here" }));
    guard(
        "broadcast",
        bob.request("broadcast", &json!({ "from": "bob" })),
    )
    .await
    .expect("bob still served");
    let chat = expect_notification(&mut alice_events).await;
    assert_eq!(chat.payload().to_value(), json!({ "from": "bob" }));
    assert!(!alice.is_closed() && !bob.is_closed());

    let _ = exact_ws.close(None).await;
    alice.close();
    bob.close();
    expect_closed(&mut alice_events).await;
    expect_closed(&mut bob_events).await;
    drop((alice, alice_events, bob, bob_events));
    drop((big, fragmented, exact_ws));
    fixture.back_to_baseline(tasks).await;
}

/// Item 3: one text message sent as 200,000 one-byte fragments closes the
/// connection with 1009 once the running total passes the limit; a message
/// of exactly the limit in one-byte fragments is reassembled and answered.
#[tokio::test]
async fn fragment_flood_is_closed_once_the_total_passes_the_limit() {
    const LIMIT: usize = 64 * 1024;
    let mut fixture = Fixture::start(limited(LIMIT), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    // Exactly the limit, one byte per frame: answered.
    let request = {
        let bare = request_text(3, "echo", json!({ "pad": "" }));
        request_text(3, "echo", json!({ "pad": "p".repeat(LIMIT - bare.len()) }))
    };
    assert_eq!(request.len(), LIMIT);
    let mut tcp = raw_tcp_ws(addr, &Fixture::target("r", "patient")).await;
    let bytes = request.as_bytes();
    let mut frames = Vec::with_capacity(bytes.len() * 7);
    for (i, byte) in bytes.iter().enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        frames.extend(client_frame(opcode, i + 1 == bytes.len(), &[*byte]));
    }
    tcp.write_all(&frames).await.unwrap();
    let mut answer = Vec::new();
    let response = guard("the response", async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            answer.extend_from_slice(&chunk[..n]);
            let frames = parse_server_frames(&answer);
            if let Some(frame) = frames.into_iter().find(|frame| frame.opcode != PING) {
                return frame;
            }
        }
    })
    .await;
    assert_eq!(response.opcode, TEXT);
    let response: Value = serde_json::from_slice(&response.payload).unwrap();
    assert_eq!(response["id"], 3);
    assert_eq!(response["ok"], true);

    // 200,000 one-byte fragments, never finished.
    let flood = raw_tcp_ws(addr, &Fixture::target("r", "flood")).await;
    let (mut read, mut write) = flood.into_split();
    let writer = tokio::spawn(async move {
        let mut frames = client_frame(TEXT, false, b"x");
        for _ in 1..200_000 {
            frames.extend(client_frame(CONTINUATION, false, b"x"));
        }
        let _ = write.write_all(&frames).await;
        write
    });
    let mut bytes = Vec::new();
    let _ = guard(
        "the server ends the connection",
        read.read_to_end(&mut bytes),
    )
    .await;
    let mut frames = parse_server_frames(&bytes);
    frames.retain(|frame| frame.opcode != PING);
    assert_eq!(frames.len(), 1, "only the close frame: {frames:?}");
    assert_eq!(frames[0].close_code(), Some(close_code::MESSAGE_TOO_BIG));
    let reason = fixture.wait_closed("flood", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::MESSAGE_TOO_BIG));
    assert_eq!(reason.reason, "message too big");
    drop(guard("the writer ends", writer).await);

    tcp.write_all(&client_frame(CLOSE, true, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let _ = read_until_end(&mut tcp).await;
    drop(tcp);
    fixture.back_to_baseline(tasks).await;
}

/// Item 4: a frame header announcing a huge payload and then nothing. Over
/// the frame limit it is refused with 1009 from the header alone (nothing
/// is allocated for it); within the limit (at most the frame limit is
/// reserved) the connection is dropped by the keepalive rule, within ping
/// interval + pong timeout, as is one that dribbles a frame a byte at a
/// time.
#[tokio::test]
async fn a_frame_header_announcing_a_huge_payload_then_nothing() {
    const LIMIT: usize = 64 * 1024;
    let mut fixture = Fixture::start(limited(LIMIT), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    // 1 TiB announced: refused at once.
    let mut tcp = raw_tcp_ws(addr, &Fixture::target("r", "tebibyte")).await;
    let mut header = frame_header(TEXT, true, 1 << 40, true);
    header.extend_from_slice(&[9, 8, 7, 6]); // the mask key
    tcp.write_all(&header).await.unwrap();
    let (frames, ending) = read_until_end(&mut tcp).await;
    assert_eq!(frames.len(), 1, "{frames:?} {ending:?}");
    assert_eq!(
        frames[0].close_code(),
        Some(close_code::MESSAGE_TOO_BIG),
        "{frames:?} {ending:?}"
    );
    // (The server discards input until we close too, or for at most its
    // close timeout.)
    drop(tcp);
    let reason = fixture.wait_closed("tebibyte", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::MESSAGE_TOO_BIG));

    // A length with the most significant bit set (invalid): refused too.
    let mut tcp = raw_tcp_ws(addr, &Fixture::target("r", "invalid-length")).await;
    let mut header = frame_header(BINARY, true, u64::MAX, true);
    header.extend_from_slice(&[0, 0, 0, 0]);
    tcp.write_all(&header).await.unwrap();
    let (frames, _) = read_until_end(&mut tcp).await;
    drop(tcp);
    let code = frames.last().and_then(ServerFrame::close_code);
    assert!(
        matches!(
            code,
            Some(close_code::MESSAGE_TOO_BIG | close_code::PROTOCOL_ERROR)
        ),
        "{frames:?}"
    );
    fixture.wait_closed("invalid-length", &mut Vec::new()).await;

    fixture.back_to_baseline(tasks).await;
    drop(fixture);

    // Within the limit, then silence: dropped by keepalive.
    let mut fixture = Fixture::start(limited_with_keepalive(LIMIT), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let started = Instant::now();
    let mut tcp = raw_tcp_ws(addr, &Fixture::target("r", "silent")).await;
    let mut header = frame_header(TEXT, true, LIMIT as u64, true);
    header.extend_from_slice(&[9, 8, 7, 6]);
    tcp.write_all(&header).await.unwrap();
    let (frames, _) = read_until_end(&mut tcp).await;
    let elapsed = started.elapsed();
    assert!(
        frames.iter().all(|f| f.opcode == PING),
        "only keepalive pings: {frames:?}"
    );
    let reason = fixture.wait_closed("silent", &mut Vec::new()).await;
    assert_eq!(
        (reason.code, reason.reason.as_str(), reason.initiator),
        (None, "keepalive timeout", Initiator::Local)
    );
    assert_keepalive_window(elapsed);

    // A frame dribbled a byte every 20 ms: partial frames are no answer to
    // a ping, so it is dropped the same way.
    let started = Instant::now();
    let tcp = raw_tcp_ws(addr, &Fixture::target("r", "dribbler")).await;
    let (mut read, mut write) = tcp.into_split();
    let dribbler = tokio::spawn(async move {
        let frame = client_frame(TEXT, true, &[b'd'; 1000]);
        for byte in frame {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the whole frame was dribbled without the server dropping it");
    });
    let mut rest = Vec::new();
    let _ = guard("the server drops the dribbler", read.read_to_end(&mut rest)).await;
    let elapsed = started.elapsed();
    let reason = fixture.wait_closed("dribbler", &mut Vec::new()).await;
    assert_eq!(reason.reason, "keepalive timeout");
    assert_keepalive_window(elapsed);
    dribbler.abort();
    let _ = dribbler.await;

    fixture.back_to_baseline(tasks).await;
}

/// Dropped by keepalive: not before ping interval + pong timeout, and not
/// long after (the upper bound leaves room for a loaded machine).
fn assert_keepalive_window(elapsed: Duration) {
    assert!(elapsed >= SHORT + SHORT, "dropped too early: {elapsed:?}");
    assert!(
        elapsed < SHORT + SHORT + Duration::from_secs(2),
        "dropped too late: {elapsed:?}"
    );
}

/// Item 5 (size): an upgrade request head over the limit is answered 431.
#[tokio::test]
async fn oversized_upgrade_headers_are_431() {
    let fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let valid = raw_upgrade(&Fixture::target("r", "big-head"));
    let (head, tail) = valid.split_at(valid.len() - 2);

    let one_big_header = format!("{head}X-Filler: {}\r\n{tail}", "f".repeat(17 * 1024));
    let answer = raw_http(addr, one_big_header.as_bytes()).await;
    assert_eq!(answer.status, 431);

    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_http(addr, format!("{head}{many}{tail}").as_bytes()).await;
    assert_eq!(answer.status, 431);

    // 1 MiB of header bytes without an end: answered 431 after 16 KiB.
    let endless = format!("{head}X-Endless: {}", "e".repeat(1 << 20));
    let answer = raw_http(addr, endless.as_bytes()).await;
    assert_eq!(answer.status, 431);

    assert_eq!(
        fixture
            .requests_seen
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    fixture.back_to_baseline(tasks).await;
}

/// Item 5 (time): headers dribbled one byte at a time, and 200 sockets that
/// never finish their upgrade, are each closed within the handshake
/// timeout, while a valid client connects and works meanwhile.
#[tokio::test]
async fn slow_and_unfinished_upgrades_are_closed_within_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    const SLACK: Duration = Duration::from_secs(2);
    let config = ServerConfig::default().with_handshake_timeout(TIMEOUT);
    let mut fixture = Fixture::start(config, PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    // 200 sockets: half silent, half stopping in the middle of the head.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 1 {
            tcp.write_all(b"GET /?roomId=r&peerId=stalled HTTP/1.1\r\nHost: x\r\nUpg")
                .await
                .unwrap();
        }
        stalled.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = guard("stalled socket closed", tcp.read_to_end(&mut rest)).await;
            (started.elapsed(), rest)
        }));
    }
    // One dribbling a valid upgrade request, a byte every 10 ms.
    let dribbler = tokio::spawn(async move {
        let started = Instant::now();
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut read, mut write) = tcp.into_split();
        let writer = tokio::spawn(async move {
            for byte in raw_upgrade("/?roomId=r&peerId=dribbler").into_bytes() {
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the whole request was dribbled before the handshake timeout");
        });
        let mut rest = Vec::new();
        let _ = guard("dribbler closed", read.read_to_end(&mut rest)).await;
        let elapsed = started.elapsed();
        writer.abort();
        let _ = writer.await;
        (elapsed, rest)
    });

    // Meanwhile a valid client gets in and is served.
    let (peer, mut events) = client(addr, &Fixture::target("r", "valid")).await;
    let data = guard("echo", peer.request("echo", &json!({ "ok": 1 })))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!({ "ok": 1 }));

    for task in stalled.into_iter().chain([dribbler]) {
        let (elapsed, rest) = task.await.unwrap();
        assert!(rest.is_empty(), "no answer to an unfinished request");
        assert!(elapsed >= TIMEOUT, "closed before the timeout: {elapsed:?}");
        assert!(elapsed < TIMEOUT + SLACK, "closed too late: {elapsed:?}");
    }
    eventually("only the valid client is left", || {
        fixture.handle.connections() == 1
    })
    .await;
    assert!(!peer.is_closed());
    assert_eq!(
        fixture.admitted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    peer.close();
    expect_closed(&mut events).await;
    fixture.wait_closed("valid", &mut Vec::new()).await;
    drop((peer, events));
    fixture.back_to_baseline(tasks).await;
}

/// Item 6: no `protoo` subprotocol, or an Origin outside the allow-list:
/// 403 before the application sees the request, and no peer is created.
#[tokio::test]
async fn missing_subprotocol_and_foreign_origin_are_403_without_a_peer() {
    let config = ServerConfig::default().with_allowed_origins(["https://app.example.com"]);
    let fixture = Fixture::start(config, PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let target = Fixture::target("r", "intruder");

    for protocol in [None, Some("chat"), Some("protoo-v2"), Some("")] {
        let answer = refused(addr, upgrade_request(addr, &target, protocol, &[])).await;
        assert_eq!(answer.status, 403, "protocol {protocol:?}");
        assert_eq!(
            answer.reason_header.as_deref(),
            Some("invalid/missing Sec-WebSocket-Protocol")
        );
    }
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.com",
        "null",
        "",
    ] {
        let request = upgrade_request(addr, &target, Some("protoo"), &[("Origin", origin)]);
        let answer = refused(addr, request).await;
        assert_eq!(answer.status, 403, "origin {origin:?}");
        assert_eq!(answer.reason_header.as_deref(), Some("origin not allowed"));
    }
    // Both at once.
    let request = upgrade_request(
        addr,
        &target,
        None,
        &[("Origin", "https://evil.example.com")],
    );
    assert_eq!(refused(addr, request).await.status, 403);

    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(fixture.requests_seen.load(SeqCst), 0);
    assert_eq!(fixture.admitted.load(SeqCst), 0);
    assert!(fixture.rooms.is_empty());
    fixture.back_to_baseline(tasks).await;

    // The allowed origin gets in.
    let request = upgrade_request(
        addr,
        &Fixture::target("r", "friend"),
        Some("protoo"),
        &[("Origin", "https://app.example.com")],
    );
    let (mut ws, protocol) = guard("handshake", handshake(addr, request))
        .await
        .expect("accepted");
    assert_eq!(protocol.as_deref(), Some("protoo"));
    eventually("admitted", || fixture.admitted.load(SeqCst) == 1).await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    drop(ws);
    fixture.back_to_baseline(tasks).await;
}
