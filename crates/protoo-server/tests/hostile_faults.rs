//! Faults over real sockets (issue 8, items 9-11): peers that go silent or
//! die in the middle of a request, graceful shutdown under load, request
//! timeouts and requests left unanswered. Whatever happens, every request
//! gets exactly one outcome and the server returns to its baseline.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{FutureExt, SinkExt, StreamExt};
use protoo_server::core::NOT_ANSWERED_REASON;
use protoo_server::{
    Initiator, Peer, PeerConfig, RequestError, SHUTDOWN_REASON, ServerConfig, WsConfig, close_code,
};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Short keepalive timers.
fn keepalive() -> ServerConfig {
    ServerConfig::default().with_ws(
        WsConfig::default()
            .with_ping_interval(Some(SHORT))
            .with_pong_timeout(SHORT),
    )
}

/// Item 9 (silence): a peer that completed its handshake and then neither
/// reads nor writes (no pong) is removed within ping interval + pong
/// timeout; a request the server sent it fails with `PeerClosed`.
#[tokio::test]
async fn a_silent_peer_is_removed_within_ping_interval_plus_pong_timeout() {
    let mut fixture = Fixture::start(keepalive(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let (witness, mut witness_events) = client(addr, &Fixture::target("r", "witness")).await;

    let started = Instant::now();
    let silent = raw_ws(addr, &Fixture::target("r", "silent")).await;
    eventually("the silent peer is in the room", || {
        fixture.server_peer("r", "silent").is_some()
    })
    .await;
    let server_side = fixture.server_peer("r", "silent").unwrap();
    let pending = tokio::spawn({
        let server_side = server_side.clone();
        async move { server_side.request("are-you-there", &()).await }
    });

    let reason = fixture.wait_closed("silent", &mut Vec::new()).await;
    let elapsed = started.elapsed();
    assert_eq!(
        (reason.code, reason.reason.as_str(), reason.initiator),
        (None, "keepalive timeout", Initiator::Local)
    );
    assert!(elapsed >= SHORT + SHORT, "removed too early: {elapsed:?}");
    assert!(
        elapsed < SHORT + SHORT + Duration::from_secs(2),
        "removed too late: {elapsed:?}"
    );
    match guard("the pending request", pending).await.unwrap() {
        Err(RequestError::PeerClosed) => {}
        other => panic!("expected PeerClosed, got {other:?}"),
    }
    assert_eq!(server_side.pending_requests(), 0);
    assert!(fixture.server_peer("r", "silent").is_none());
    // The witness, which answers pings (its connection task does), stays.
    assert!(!witness.is_closed());
    let data = guard("echo", witness.request("echo", &json!({ "x": 1 })))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!({ "x": 1 }));

    witness.close();
    expect_closed(&mut witness_events).await;
    drop((witness, witness_events, silent, server_side));
    fixture.back_to_baseline(tasks).await;
}

/// Item 9 (death): a client killed (its socket closed without a close
/// frame, or reset) while the server waits for its answer to a request:
/// that request fails with `PeerClosed`, the peer leaves its room, and the
/// request the client had sent (which triggered ours) is forgotten.
#[tokio::test]
async fn a_peer_killed_in_the_middle_of_a_request() {
    let mut fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let (witness, mut witness_events) = client(addr, &Fixture::target("r", "witness")).await;

    for (name, reset) in [("closed", false), ("reset", true)] {
        let mut ws = raw_ws(addr, &Fixture::target("r", name)).await;
        let ask = request_text(
            1,
            "ask",
            json!({ "method": "question", "data": { "q": 1 } }),
        );
        ws.send(Message::text(ask)).await.unwrap();
        // The server's request arrives.
        let request: Value = match guard("the server's request", ws.next()).await {
            Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected the server's request, got {other:?}"),
        };
        assert_eq!(request["request"], true);
        assert_eq!(request["method"], "question");
        let server_side = fixture.server_peer("r", name).expect("in the room");
        assert_eq!(server_side.pending_requests(), 1);
        assert_eq!(fixture.handle.requests_in_flight(), 1);

        // Killed.
        if reset {
            ws.get_ref().set_zero_linger().unwrap();
        }
        drop(ws);

        let (peer_id, outcome) = guard("the server's request fails", fixture.asked.recv())
            .await
            .unwrap();
        assert_eq!(peer_id, name);
        assert!(
            matches!(outcome, Err(RequestError::PeerClosed)),
            "{outcome:?}"
        );
        let reason = fixture.wait_closed(name, &mut Vec::new()).await;
        assert_eq!(reason.code, None, "{name}: no close frame");
        assert_eq!(reason.initiator, Initiator::Remote);
        assert_eq!(server_side.pending_requests(), 0);
        assert!(fixture.server_peer("r", name).is_none(), "left the room");
        eventually("nothing in flight", || {
            fixture.handle.requests_in_flight() == 0
        })
        .await;
    }
    assert_eq!(fixture.rooms.get("r").map(|room| room.len()), Some(1));

    witness.close();
    expect_closed(&mut witness_events).await;
    drop((witness, witness_events));
    fixture.back_to_baseline(tasks).await;
}

/// Item 10: graceful shutdown with 20 peers and 40 requests in flight:
/// new upgrades are refused at once, the requests in flight are answered,
/// then every peer gets 1001 and the shutdown completes, with nothing left.
/// (`tests/shutdown.rs` covers the grace period bound, stop without
/// shutdown and unfinished handshakes.)
#[tokio::test]
async fn graceful_shutdown_with_twenty_peers_and_requests_in_flight() {
    const PEERS: usize = 20;
    let mut fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    let mut clients = Vec::new();
    for i in 0..PEERS {
        clients.push(client(addr, &Fixture::target("r", &format!("p{i}"))).await);
    }
    // A connection accepted before the shutdown whose upgrade request comes
    // after it.
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually("every connection counted", || {
        fixture.handle.connections() == PEERS + 1
    })
    .await;

    // Two requests in flight per peer.
    let mut pending = Vec::new();
    for (i, (peer, _)) in clients.iter().enumerate() {
        for k in 0..2 {
            let peer = peer.clone();
            pending.push(tokio::spawn(async move {
                let data = json!({ "peer": i, "k": k });
                (data.clone(), peer.request("hold", &data).await)
            }));
        }
    }
    let mut held = Vec::new();
    for _ in 0..2 * PEERS {
        held.push(guard("held request", fixture.held.recv()).await.unwrap());
    }
    assert_eq!(fixture.handle.requests_in_flight(), 2 * PEERS);

    let mut shutdown = Box::pin({
        let handle = fixture.handle.clone();
        async move { handle.shutdown().await }
    });
    assert!(
        (&mut shutdown).now_or_never().is_none(),
        "the shutdown waits for the requests in flight"
    );
    let shutdown = tokio::spawn(shutdown);
    assert!(fixture.handle.is_stopped());

    // New upgrades are refused: the listener is closed...
    let url = format!("ws://{addr}/?roomId=r&peerId=newcomer");
    let refused = guard(
        "connect after shutdown",
        protoo_server::ws::connect(&url, &WsConfig::default()),
    )
    .await;
    assert!(
        refused.is_err(),
        "a connection was accepted during shutdown"
    );
    // ...and an upgrade request on a connection accepted before gets no 101.
    late.write_all(raw_upgrade("/?roomId=r&peerId=late").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = guard("late upgrade", late.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");

    // The peers are still open until their requests are answered.
    assert!(clients.iter().all(|(peer, _)| !peer.is_closed()));
    for request in held {
        let data = request.payload().clone();
        request.accept(&json!({ "answered": data }));
    }
    for task in pending {
        let (data, outcome) = guard("response", task).await.unwrap();
        let response = outcome.expect("answered before the close");
        assert_eq!(response.to_value(), json!({ "answered": data }));
    }
    for (_, events) in &mut clients {
        let reason = expect_closed(events).await;
        assert_eq!(reason.code, Some(close_code::GOING_AWAY));
        assert_eq!(reason.reason, SHUTDOWN_REASON);
        assert_eq!(reason.initiator, Initiator::Remote);
    }
    guard("the shutdown completes", shutdown).await.unwrap();
    guard("the accept loop ends", &mut fixture.accept_loop)
        .await
        .unwrap();
    let mut closes = 0;
    while let Ok((_, reason)) = fixture.closed.try_recv() {
        assert_eq!(reason.code, Some(close_code::GOING_AWAY));
        assert_eq!(reason.initiator, Initiator::Local);
        closes += 1;
    }
    assert_eq!(closes, PEERS, "every server-side peer reported its close");
    assert_eq!(fixture.handle.connections(), 0);
    assert_eq!(fixture.handle.requests_in_flight(), 0);
    assert!(fixture.rooms.is_empty());
    drop((clients, late));
    // The accept loop task has ended too.
    fixture.back_to_baseline(tasks - 2).await;
}

/// Item 11 (timeout): a request the server sends to a client that never
/// answers fails with `RequestError::Timeout` after the configured timeout
/// on our side, and the client's request that caused it is answered 500;
/// the late answer is dropped and the connection goes on.
#[tokio::test]
async fn a_request_timeout_answers_the_remote_500() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let peer_config = PeerConfig::default().with_request_timeout(TIMEOUT);
    let mut fixture = Fixture::start(ServerConfig::default(), peer_config).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let (peer, mut events) = client(addr, &Fixture::target("r", "mute")).await;

    let started = Instant::now();
    let ask = tokio::spawn({
        let peer = peer.clone();
        async move {
            peer.request("ask", &json!({ "method": "question", "data": {} }))
                .await
        }
    });
    // The server's request arrives; the client sits on it.
    let question = expect_request(&mut events).await;
    assert_eq!(question.method(), "question");

    let (_, outcome) = guard("the server's request times out", fixture.asked.recv())
        .await
        .unwrap();
    assert!(matches!(outcome, Err(RequestError::Timeout)), "{outcome:?}");
    assert!(started.elapsed() >= TIMEOUT);
    let error = guard("the ask is answered", ask)
        .await
        .unwrap()
        .expect_err("an error response");
    assert_eq!(error.code(), Some(500));
    assert_eq!(error.reason().as_deref(), Some("request timeout"));
    let server_side = fixture.server_peer("r", "mute").unwrap();
    assert_eq!(server_side.pending_requests(), 0);

    // Too late: the server drops the answer (a response to no request) and
    // goes on.
    question.accept(&json!({ "late": true }));
    let data = guard("echo", peer.request("echo", &json!({ "after": "timeout" })))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!({ "after": "timeout" }));
    assert!(!server_side.is_closed());

    peer.close();
    expect_closed(&mut events).await;
    fixture.wait_closed("mute", &mut Vec::new()).await;
    drop((peer, events, server_side));
    fixture.back_to_baseline(tasks).await;
}

/// Item 11 (unanswered): a request the application drops unanswered, one
/// held by a handler task that panics, and requests to a peer whose events
/// the application dropped are each answered 500 `request not answered`.
#[tokio::test]
async fn requests_left_unanswered_are_answered_500() {
    let mut fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;
    let (peer, mut events) = client(addr, &Fixture::target("r", "asker")).await;

    for method in ["drop", "panic"] {
        let error = guard(method, peer.request(method, &json!({})))
            .await
            .expect_err("an error response");
        assert_eq!(error.code(), Some(500), "{method}");
        assert_eq!(error.reason().as_deref(), Some(NOT_ANSWERED_REASON));
    }
    // Pipelined: all answered, each once.
    let mut many = Vec::new();
    for i in 0..100 {
        let peer = peer.clone();
        many.push(tokio::spawn(async move {
            let method = if i % 2 == 0 { "drop" } else { "echo" };
            (i, peer.request(method, &json!({ "i": i })).await)
        }));
    }
    for task in many {
        let (i, outcome) = guard("pipelined", task).await.unwrap();
        match outcome {
            Ok(data) if i % 2 == 1 => assert_eq!(data.to_value(), json!({ "i": i })),
            Err(error) if i % 2 == 0 => assert_eq!(error.code(), Some(500)),
            other => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(fixture.handle.requests_in_flight(), 0);
    peer.close();
    expect_closed(&mut events).await;
    fixture.wait_closed("asker", &mut Vec::new()).await;
    drop((peer, events));
    fixture.back_to_baseline(tasks).await;

    // An application that keeps the peer but gives up its events
    // (detached: dropping them without that closes the peer with 1011).
    let (mut server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let tasks = alive_tasks();
    let (client_side, mut client_events) = {
        let connect = tokio::spawn(async move { client(addr, "/?peerId=ignored").await });
        let transport = guard("accept", next_request(&mut server).await.accept())
            .await
            .unwrap();
        let (server_side, server_events) =
            Peer::new("ignored", transport, (), PeerConfig::default()).unwrap();
        server_events.detach();
        let mut client_side = connect.await.unwrap();
        // The server side still sends.
        server_side.notify("hello", &()).unwrap();
        let notification = expect_notification(&mut client_side.1).await;
        assert_eq!(notification.method(), "hello");
        tokio::spawn(async move {
            server_side.closed().await;
        });
        client_side
    };
    for _ in 0..3 {
        let error = guard("ignored", client_side.request("anything", &()))
            .await
            .expect_err("an error response");
        assert_eq!(error.code(), Some(500));
        assert_eq!(error.reason().as_deref(), Some(NOT_ANSWERED_REASON));
    }
    assert_eq!(handle.requests_in_flight(), 0);
    client_side.close();
    expect_closed(&mut client_events).await;
    drop((client_side, client_events));
    eventually("no connection left", || handle.connections() == 0).await;
    eventually("tasks back to the baseline", || alive_tasks() == tasks).await;
}
