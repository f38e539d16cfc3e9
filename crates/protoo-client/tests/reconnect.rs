//! The reconnect semantics: the backoff schedule on in-memory transports
//! with paused time, and real sockets against a protoo-server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protoo_client::{Client, ClientConfig, ClientError, ClientEvent, ClientOptions, RetryConfig};
use protoo_server::{PeerConfig, PeerEvent, ServerConfig, WebSocketServer};
use protoo_transport::{Transport, TransportError, memory};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn refused() -> TransportError {
    TransportError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

/// Before the first open: failed(1..=retries+1) at 0, 1, 2, 4, 8, 8 s, then
/// the close.
#[tokio::test(start_paused = true)]
async fn failed_attempts_follow_the_backoff_schedule_then_close() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let recorded = times.clone();
    let connector = move || {
        recorded.lock().unwrap().push(start.elapsed());
        async { Err::<Transport, _>(refused()) }
    };
    let config = ClientConfig::default().with_retry(RetryConfig::default().with_retries(5));
    let (client, mut events) = Client::with_connector(connector, config);
    for n in 1..=6 {
        assert!(matches!(events.next().await, Some(ClientEvent::Failed(a)) if a == n));
        // Waiting for the next attempt (after the last: closing).
        assert!(
            n == 6
                || matches!(
                    client.request("x", &()).await,
                    Err(ClientError::Disconnected)
                )
        );
    }
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Close(None))
    ));
    assert!(events.next().await.is_none());
    assert!(client.is_closed());
    let secs: Vec<u64> = times.lock().unwrap().iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [0, 1, 3, 7, 15, 23]);
    assert!(matches!(client.notify("x", &()), Err(ClientError::Closed)));
}

/// A lost connection reconnects at once with a fresh budget: attempt
/// numbers restart at 1 and the first retry waits min_timeout again.
#[tokio::test(start_paused = true)]
async fn a_lost_connection_starts_a_fresh_round() {
    let (remotes_tx, mut remotes) = mpsc::unbounded_channel();
    let times = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let recorded = times.clone();
    let mut calls = 0;
    let connector = move || {
        calls += 1;
        recorded.lock().unwrap().push(start.elapsed().as_secs());
        // Attempts 1 and 2 fail, 3 opens; after the loss 4 fails, 5 opens.
        let result = if matches!(calls, 3 | 5) {
            let (local, remote) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
            remotes_tx.send(remote).unwrap();
            Ok(local)
        } else {
            Err(refused())
        };
        async move { result }
    };
    let (client, mut events) = Client::with_connector(connector, ClientConfig::default());
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(1))));
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(2))));
    assert!(matches!(events.next().await, Some(ClientEvent::Open)));
    let remote = remotes.recv().await.unwrap();
    // A request pending at the loss fails at once.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("slow", &()).await }
    });
    tokio::task::yield_now().await;
    let before = Instant::now();
    remote.close_with(1006, "gone");
    drop(remote);
    assert!(matches!(
        pending.await.unwrap(),
        Err(ClientError::Disconnected)
    ));
    assert!(before.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Disconnected)
    ));
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(1))));
    assert!(matches!(events.next().await, Some(ClientEvent::Open)));
    let remote = remotes.recv().await.unwrap();
    assert_eq!(*times.lock().unwrap(), [0, 1, 3, 3, 4]);
    // 4000 from the server: closed for good.
    remote.close();
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Close(Some(reason))) if reason.code == Some(4000)
    ));
    assert!(events.next().await.is_none());
    assert_eq!(times.lock().unwrap().len(), 5);
}

/// A local close while waiting for a retry ends the client at once.
#[tokio::test(start_paused = true)]
async fn a_local_close_ends_it() {
    let connector = || async { Err::<Transport, _>(refused()) };
    let (client, mut events) = Client::with_connector(connector, ClientConfig::default());
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(1))));
    client.close();
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Close(None))
    ));
    assert!(events.next().await.is_none());
}

/// Real sockets: requests and notifications both ways, a server drop, the
/// reconnect, and a rejected connection request.
#[tokio::test]
async fn real_server_drop_reconnect_and_rejection() {
    let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    let url = format!("ws://{}/?roomId=r&peerId=p", server.local_addr());
    let (peers_tx, mut peers) = mpsc::unbounded_channel();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let n = {
                let mut count = count.lock().unwrap();
                *count += 1;
                *count
            };
            if n == 3 {
                request.reject(403, "no more");
                continue;
            }
            let transport = request.accept().await.unwrap();
            let (peer, mut events) =
                protoo_server::Peer::new("p", transport, (), PeerConfig::default()).unwrap();
            peers_tx.send(peer.clone()).unwrap();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    match event {
                        PeerEvent::Request(request) => {
                            let data = request.payload().clone();
                            request.accept(&data);
                        }
                        PeerEvent::Notification(n) => {
                            let _ = peer.notify("seen", &serde_json::json!({"m": n.method()}));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let config = ClientConfig::default().with_retry(
        RetryConfig::default()
            .with_retries(0)
            .with_min_timeout(Duration::from_millis(10)),
    );
    let (client, mut events) = Client::connect(ClientOptions::new(url), config);
    let peers_closing = Mutex::new(Vec::new());
    for round in 0..2 {
        assert!(matches!(events.next().await, Some(ClientEvent::Open)));
        let peer = peers.recv().await.unwrap();
        peers_closing.lock().unwrap().push(peer.clone());
        let echo = client
            .request("echo", &serde_json::json!({"text": "héllo ✓"}))
            .await
            .unwrap();
        assert_eq!(echo.as_str(), r#"{"text":"héllo ✓"}"#);
        client.notify("hi", &()).unwrap();
        let Some(ClientEvent::Notification(n)) = events.next().await else {
            panic!("expected the notification")
        };
        assert_eq!(n.payload().as_str(), r#"{"m":"hi"}"#);
        let asking = tokio::spawn(async move { peer.request("ask", &()).await });
        let Some(ClientEvent::Request(request)) = events.next().await else {
            panic!("expected the request")
        };
        request.reject(418, "teapot");
        assert_eq!(asking.await.unwrap().unwrap_err().code(), Some(418));
        // The server drops the connection (not 4000): a loss, then a new
        // round; the third connection request is rejected.
        peer_close(&peers_closing, round);
        assert!(matches!(
            events.next().await,
            Some(ClientEvent::Disconnected)
        ));
        assert!(matches!(
            client.request("x", &()).await,
            Err(ClientError::Disconnected | ClientError::Closed)
        ));
    }
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(1))));
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Close(None))
    ));
    assert!(events.next().await.is_none());
}

fn peer_close(peers: &Mutex<Vec<protoo_server::Peer>>, round: usize) {
    peers.lock().unwrap()[round].close_with(1001, "going away");
}

/// Real sockets: a request the server holds unanswered fails with
/// `Disconnected` as soon as the server drops the connection (not after its
/// timeout), and the client reconnects.
#[tokio::test]
async fn a_pending_request_fails_at_once_on_a_real_drop() {
    let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    let url = format!("ws://{}/?roomId=r&peerId=p", server.local_addr());
    let (held_tx, mut held) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let transport = request.accept().await.unwrap();
            let (peer, mut events) =
                protoo_server::Peer::new("p", transport, (), PeerConfig::default()).unwrap();
            let held_tx = held_tx.clone();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    if let PeerEvent::Request(request) = event {
                        // Held, never answered: the connection drops first.
                        held_tx.send((peer.clone(), request)).unwrap();
                    }
                }
            });
        }
    });
    // A request timeout far beyond the test's guard: only the drop can end it.
    let config = ClientConfig::default()
        .with_peer(PeerConfig::default().with_request_timeout(Duration::from_secs(3600)));
    let (client, mut events) = Client::connect(ClientOptions::new(url), config);
    assert!(matches!(events.next().await, Some(ClientEvent::Open)));
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("hold", &()).await }
    });
    let (peer, _request) = held.recv().await.unwrap();
    peer.close_with(1001, "going away");
    let result = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the pending request ended")
        .unwrap();
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Disconnected)
    ));
    assert!(matches!(events.next().await, Some(ClientEvent::Open)));
    client.close();
    assert!(matches!(events.next().await, Some(ClientEvent::Close(_))));
}
