//! Stopping and graceful shutdown over real sockets: requests in flight are
//! answered before peers are closed with 1001, new connections are refused,
//! and the handle reports the end of every connection.

mod common;

use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use protoo_server::{
    IncomingRequest, Initiator, Peer, PeerConfig, PeerEvent, RequestError, SHUTDOWN_REASON,
    ServerConfig, ServerHandle, WebSocketServer, close_code,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

/// Accepts every connection as a peer whose requests are handed to the test
/// through `requests` (the test answers them when it likes).
fn serve(
    mut server: WebSocketServer,
    requests: mpsc::UnboundedSender<IncomingRequest>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let peer_id = request.query_param("peerId").unwrap_or_default();
                let Ok(transport) = request.accept().await else {
                    return;
                };
                let Ok((_peer, mut events)) =
                    Peer::new(peer_id, transport, (), PeerConfig::default())
                else {
                    return;
                };
                while let Some(event) = events.next().await {
                    if let PeerEvent::Request(request) = event {
                        let _ = requests.send(request);
                    }
                }
            });
        }
    })
}

/// Starts `handle.shutdown()` and polls it once, so that it has begun
/// (stopped accepting) when this returns; the rest runs in a task.
fn start_shutdown(handle: &ServerHandle) -> tokio::task::JoinHandle<()> {
    let handle = handle.clone();
    let mut shutdown = Box::pin(async move { handle.shutdown().await });
    assert!(
        (&mut shutdown).now_or_never().is_none(),
        "shutdown must wait for the peers"
    );
    tokio::spawn(shutdown)
}

#[tokio::test]
async fn shutdown_answers_requests_in_flight_then_closes_with_1001() {
    const PEERS: usize = 3;
    let (server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let accept_loop = serve(server, requests_tx);

    let mut clients = Vec::new();
    for i in 0..PEERS {
        clients.push(client(addr, &format!("/?peerId=p{i}")).await);
    }
    assert_eq!(handle.connections(), PEERS);

    // Every client sends a request; the server holds them until `release`.
    let (release, released) = watch::channel(false);
    let mut pending = Vec::new();
    for (i, (peer, _)) in clients.iter().enumerate() {
        let peer = peer.clone();
        pending.push(tokio::spawn(async move {
            peer.request("slow", &json!({ "n": i })).await
        }));
    }
    let mut answering = Vec::new();
    for _ in 0..PEERS {
        let request = guard("request reaches the server", requests.recv())
            .await
            .unwrap();
        let mut released = released.clone();
        answering.push(tokio::spawn(async move {
            let _ = released.wait_for(|go| *go).await;
            let data = request.payload().clone();
            request.accept(&json!({ "answered": data }));
        }));
    }
    assert_eq!(handle.requests_in_flight(), PEERS);

    let shutdown = start_shutdown(&handle);
    assert!(handle.is_stopped());

    // New connections are refused from now on.
    let refused = ws_connect_fails(addr).await;
    assert!(refused, "a connection was accepted after shutdown started");

    // The requests in flight are answered, then every peer is closed.
    release.send_replace(true);
    for (i, request) in pending.into_iter().enumerate() {
        let data = guard("response", request)
            .await
            .unwrap()
            .expect("answered before the close");
        assert_eq!(data.to_value(), json!({ "answered": { "n": i } }));
    }
    for (_, events) in &mut clients {
        let reason = expect_closed(events).await;
        assert_eq!(reason.code, Some(close_code::GOING_AWAY));
        assert_eq!(reason.reason, SHUTDOWN_REASON);
        assert_eq!(reason.initiator, Initiator::Remote);
    }
    guard("shutdown completes", shutdown).await.unwrap();
    guard("stopped", handle.stopped()).await;
    assert_eq!(handle.connections(), 0);
    assert_eq!(handle.requests_in_flight(), 0);
    // The accept loop's `next_request` returned `None`.
    guard("accept loop ends", accept_loop).await.unwrap();
    for task in answering {
        task.await.unwrap();
    }
}

/// Whether a protoo connection to `addr` fails (refused at the TCP level,
/// reset, or answered with an HTTP error).
async fn ws_connect_fails(addr: std::net::SocketAddr) -> bool {
    let url = format!("ws://{addr}/?peerId=late");
    guard(
        "late connect",
        protoo_server::ws::connect(&url, &protoo_server::WsConfig::default()),
    )
    .await
    .is_err()
}

#[tokio::test]
async fn stop_refuses_new_connections_and_keeps_existing_peers() {
    let (server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let accept_loop = serve(server, requests_tx);
    let (peer, mut events) = client(addr, "/?peerId=stays").await;

    handle.stop();
    assert!(handle.is_stopped());
    guard("accept loop ends", accept_loop).await.unwrap();
    assert!(ws_connect_fails(addr).await);
    // `stopped()` waits for the connection that is still open.
    assert!(handle.stopped().now_or_never().is_none());

    // The existing peer still works both ways.
    let answer = tokio::spawn(async move {
        let request = guard("request", requests.recv()).await.unwrap();
        request.accept(&json!({ "still": "here" }));
    });
    let data = guard("request", peer.request("ping", &())).await.unwrap();
    assert_eq!(data.to_value(), json!({ "still": "here" }));
    answer.await.unwrap();
    assert!(!peer.is_closed());
    // (The refused connection may take a moment to end.)
    eventually("only the existing peer is left", || {
        handle.connections() == 1
    })
    .await;

    // It leaves: now the server has stopped.
    peer.close();
    expect_closed(&mut events).await;
    guard("stopped", handle.stopped()).await;
    assert_eq!(handle.connections(), 0);
}

/// `shutdown()` waits for the requests already received when it started,
/// and only for those: a request arriving afterwards is answered at once
/// with 503 `server shutting down` without reaching the application, so
/// a client that keeps sending cannot hold the shutdown for its whole
/// grace. The grace here (an hour) is far beyond the test's guard: the
/// shutdown completes as soon as the request received before it is
/// answered.
#[tokio::test]
async fn shutdown_waits_for_requests_received_before_it_and_refuses_later_ones() {
    let config = ServerConfig::default().with_shutdown_grace(Duration::from_secs(3600));
    let (server, addr) = server(config).await;
    let handle = server.handle();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let _accept_loop = serve(server, requests_tx);
    let (peer, mut events) = client(addr, "/?peerId=busy").await;

    let before = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("before", &json!({ "n": 0 })).await }
    });
    let held = guard("the request reaches the server", requests.recv())
        .await
        .unwrap();
    assert_eq!(held.method(), "before");
    assert_eq!(handle.requests_in_flight(), 1);

    let shutdown = start_shutdown(&handle);
    // Requests sent now are refused at once, however many.
    for n in 1..=20 {
        let error = guard(
            "a request after the shutdown began",
            peer.request("after", &json!({ "n": n })),
        )
        .await
        .expect_err("refused");
        assert_eq!(error.code(), Some(503));
        assert_eq!(
            error.reason().as_deref(),
            Some(protoo_server::core::SHUTTING_DOWN_REASON)
        );
    }
    assert!(
        requests.try_recv().is_err(),
        "a late request reached the application"
    );
    assert_eq!(
        handle.requests_in_flight(),
        1,
        "only the earlier request is waited for"
    );
    assert!(!shutdown.is_finished());

    // Answering the earlier request ends the wait, long before the grace.
    held.accept(&json!({ "answered": true }));
    let data = guard("the earlier request's answer", before)
        .await
        .unwrap()
        .expect("answered before the close");
    assert_eq!(data.to_value(), json!({ "answered": true }));
    let reason = expect_closed(&mut events).await;
    assert_eq!(reason.code, Some(close_code::GOING_AWAY));
    assert_eq!(reason.reason, SHUTDOWN_REASON);
    guard("shutdown completes without the grace", shutdown)
        .await
        .unwrap();
    assert_eq!(handle.connections(), 0);
    assert_eq!(handle.requests_in_flight(), 0);
}

#[tokio::test]
async fn the_grace_period_bounds_an_unanswered_request() {
    let config = ServerConfig::default().with_shutdown_grace(Duration::from_millis(200));
    let (server, addr) = server(config).await;
    let handle = server.handle();
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let _accept_loop = serve(server, requests_tx);
    let (peer, mut events) = client(addr, "/?peerId=waiting").await;

    let request = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("never", &()).await }
    });
    // The server holds it and never answers (until after the shutdown).
    let held = guard("request reaches the server", requests.recv())
        .await
        .unwrap();
    assert_eq!(handle.requests_in_flight(), 1);

    guard("shutdown despite the unanswered request", handle.shutdown()).await;
    assert_eq!(handle.connections(), 0);
    let reason = expect_closed(&mut events).await;
    assert_eq!(reason.code, Some(close_code::GOING_AWAY));
    assert_eq!(reason.reason, SHUTDOWN_REASON);
    match guard("pending request", request).await.unwrap() {
        Err(RequestError::PeerClosed) => {}
        other => panic!("expected PeerClosed, got {other:?}"),
    }
    // Answering now is harmless.
    held.accept(&());
    assert_eq!(handle.requests_in_flight(), 0);
}

#[tokio::test]
async fn shutdown_answers_undecided_connection_requests_503() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let client = tokio::spawn(refused(
        addr,
        upgrade_request(addr, "/", Some("protoo"), &[]),
    ));
    let request = next_request(&mut server).await;
    guard("shutdown", handle.shutdown()).await;
    let answer = client.await.unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.reason_header.as_deref(),
        Some("server shutting down")
    );
    assert!(guard("late accept", request.accept()).await.is_err());
    assert!(
        guard("no more requests", server.next_request())
            .await
            .is_none()
    );
}

#[tokio::test]
async fn shutdown_of_an_idle_server() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    guard("shutdown", handle.shutdown()).await;
    guard("stopped", handle.stopped()).await;
    assert!(
        guard("no more requests", server.next_request())
            .await
            .is_none()
    );
    assert!(ws_connect_fails(addr).await);
    assert_eq!(handle.connections(), 0);
    // Shutting down again is harmless.
    guard("shutdown again", handle.shutdown()).await;
    assert!(format!("{handle:?}").contains("stopped: true"));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_unfinished_handshakes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Handshakes that would hold the shutdown for an hour.
    let config = ServerConfig::default().with_handshake_timeout(Duration::from_secs(3600));
    let (server, addr) = server(config).await;
    let handle = server.handle();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /?peerId=slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    eventually("both connections accepted", || handle.connections() == 2).await;

    guard("shutdown with handshakes unfinished", handle.shutdown()).await;
    assert_eq!(handle.connections(), 0);
    let mut rest = Vec::new();
    let _ = guard("silent connection closed", silent.read_to_end(&mut rest)).await;
    let _ = guard("partial connection closed", partial.read_to_end(&mut rest)).await;
}

#[tokio::test]
async fn dropping_the_server_stops_accepting_and_keeps_existing_peers() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let handle = server.handle();
    let client = tokio::spawn(async move { client(addr, "/?peerId=kept").await });
    let transport = guard("accept", next_request(&mut server).await.accept())
        .await
        .expect("accept");
    let (_server_peer, mut server_events) =
        Peer::new("kept", transport, (), PeerConfig::default()).unwrap();
    let (client_peer, _client_events) = client.await.unwrap();

    // Nobody can take connection requests any more: the server stops
    // accepting, and its listener goes away.
    drop(server);
    assert!(handle.is_stopped());
    eventually("the port is released", || {
        std::net::TcpListener::bind(addr).is_ok()
    })
    .await;

    // The existing peer goes on.
    let answer = tokio::spawn(async move {
        expect_request(&mut server_events)
            .await
            .accept(&json!({ "still": "here" }));
        server_events
    });
    let data = guard("request", client_peer.request("ping", &()))
        .await
        .unwrap();
    assert_eq!(data.to_value(), json!({ "still": "here" }));
    let _server_events = answer.await.unwrap();
    assert_eq!(handle.connections(), 1);
    client_peer.close();
    guard("stopped", handle.stopped()).await;
}

#[tokio::test]
async fn a_drain_closes_with_1012_spread_over_its_period_and_sessions_wait() {
    const PEERS: usize = 4;
    let config = ServerConfig::default().with_drain_period(Duration::from_millis(300));
    let (server, addr) = server(config).await;
    let rooms: protoo_server::Rooms = protoo_server::Rooms::builder()
        .peer_config(PeerConfig::default().with_resume_window(Duration::from_secs(60)))
        .build();
    let handle = {
        let rooms = rooms.clone();
        server.serve(move |request| {
            let rooms = rooms.clone();
            async move {
                if let Ok(joined) = request.admit(&rooms).join(()).await {
                    let mut events = joined.events;
                    while events.next().await.is_some() {}
                }
            }
        })
    };
    let mut clients = Vec::new();
    for i in 0..PEERS {
        clients.push(client(addr, &format!("/?roomId=r&peerId=p{i}")).await);
    }
    let room = loop {
        match rooms.get("r") {
            Some(room) if room.len() == PEERS => break room,
            _ => tokio::task::yield_now().await,
        }
    };

    handle.shutdown().await;
    for (_, events) in &mut clients {
        let closed = loop {
            match events.next().await {
                Some(PeerEvent::Closed(reason)) => break reason,
                Some(_) => {}
                None => panic!("no close"),
            }
        };
        assert_eq!(
            (closed.code, closed.reason.as_str(), closed.initiator),
            (
                Some(close_code::SERVICE_RESTART),
                protoo_server::DRAIN_REASON,
                Initiator::Remote
            )
        );
    }
    // Nobody left the room: every session waits for its peer elsewhere.
    assert_eq!(room.len(), PEERS);
    assert_eq!(rooms.waiting_sessions().0, PEERS);
    let drained = rooms.drained();
    tokio::pin!(drained);
    assert!((&mut drained).now_or_never().is_none());
    for peer in room.peers() {
        peer.close();
    }
    drained.await;
}
