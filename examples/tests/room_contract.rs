//! The room example's contract (the doc comment of `examples/room/main.rs`),
//! driven by Rust protoo clients against the real program: the example
//! binary is started with `--listen 127.0.0.1:0`, its printed address is
//! parsed, and every method of the contract is exercised over WebSockets.
//!
//! `cargo test` builds the examples before running tests, so the binary sits
//! in `target/<profile>/examples/`; `PROTOO_ROOM_BIN` overrides the path.

use std::net::SocketAddr;

use futures_util::FutureExt;
use futures_util::future::join_all;
use protoo_server::{
    Initiator, Payload, Peer, PeerConfig, PeerEvent, PeerEvents, RequestError, TransportError,
    WsConfig, close_code, ws,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

mod common;
use common::{guard, start_room};

/// A running room example, killed when dropped.
struct RoomServer {
    addr: SocketAddr,
    child: Child,
    /// Kept open so that the example can go on printing.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl RoomServer {
    /// With `--resume-window 0`: protoo's semantics, which most cases pin
    /// down (a connection that drops ends its peer; the same peer id again
    /// replaces it). The window's cases use [`RoomServer::start_with`].
    async fn start() -> RoomServer {
        RoomServer::start_with(&["--resume-window", "0"]).await
    }

    /// With `args` (none: the example's defaults, a 15 s resume window).
    async fn start_with(args: &[&str]) -> RoomServer {
        let room = start_room("127.0.0.1:0", args).await;
        RoomServer {
            addr: room.addr,
            child: room.child,
            _stdout: room.stdout,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("ws://{}/?{query}", self.addr)
    }

    /// Connects `peer_id` to `room_id`.
    async fn connect(&self, room_id: &str, peer_id: &str) -> Client {
        let url = self.url(&format!("roomId={room_id}&peerId={peer_id}"));
        let transport = guard("connect", ws::connect(&url, &WsConfig::default()))
            .await
            .unwrap_or_else(|error| panic!("connect {url}: {error}"));
        let (peer, events) =
            Peer::new("server", transport, (), PeerConfig::default()).expect("client peer");
        let client = Client {
            name: peer_id.to_owned(),
            peer,
            events,
        };
        // The server puts the peer in its room just after the upgrade: once
        // it answers a request, the peer is in.
        client.request("echo", &json!({})).await.expect("echo");
        client
    }

    /// Connects and joins with `display_name`: the client and the peers
    /// listed by `join`.
    async fn join(
        &self,
        room_id: &str,
        peer_id: &str,
        display_name: &str,
    ) -> (Client, Vec<(String, String)>) {
        let client = self.connect(room_id, peer_id).await;
        let peers = client.join(display_name).await;
        (client, peers)
    }

    /// The answer to a connection attempt that must be refused.
    async fn refused(&self, query: &str) -> (u16, String) {
        match guard(
            "connect",
            ws::connect(&self.url(query), &WsConfig::default()),
        )
        .await
        {
            Err(TransportError::Rejected { status, reason }) => (status, reason),
            other => panic!("expected a rejection for {query:?}, got {other:?}"),
        }
    }
}

/// One protoo client of the room example.
struct Client {
    name: String,
    peer: Peer,
    events: PeerEvents,
}

impl Client {
    async fn request(&self, method: &str, data: &Value) -> Result<Value, RequestError> {
        guard(method, self.peer.request(method, data))
            .await
            .map(|payload| payload.to_value())
    }

    async fn join(&self, display_name: &str) -> Vec<(String, String)> {
        let answer = self
            .request("join", &json!({ "displayName": display_name }))
            .await
            .expect("join");
        let mut peers: Vec<(String, String)> = answer["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("join answered {answer}"))
            .iter()
            .map(|p| {
                let field = |name: &str| {
                    p[name]
                        .as_str()
                        .unwrap_or_else(|| panic!("peer entry {p}"))
                        .to_owned()
                };
                (field("id"), field("displayName"))
            })
            .collect();
        peers.sort();
        peers
    }

    /// The next notification: its method and data.
    async fn notification(&mut self) -> (String, Value) {
        let what = format!("a notification for {}", self.name);
        match guard(&what, self.events.next()).await {
            Some(PeerEvent::Notification(n)) => (n.method().to_owned(), n.payload().to_value()),
            other => panic!("{what}: got {other:?}"),
        }
    }

    /// Checks that nothing more arrived for this client: first a round trip,
    /// so that anything the server queued to it before has been read.
    async fn assert_quiet(&mut self) {
        self.request("echo", &json!({})).await.expect("echo");
        if let Some(event) = self.events.next().now_or_never() {
            panic!("{}: unexpected {event:?}", self.name);
        }
    }

    async fn closed(&mut self) -> protoo_server::CloseReason {
        let what = format!("{} closed", self.name);
        loop {
            match guard(&what, self.events.next()).await {
                Some(PeerEvent::Closed(reason)) => return reason,
                Some(PeerEvent::Notification(_)) => continue,
                other => panic!("{what}: got {other:?}"),
            }
        }
    }
}

fn peer(id: &str, name: &str) -> (String, String) {
    (id.to_owned(), name.to_owned())
}

#[tokio::test]
async fn missing_ids_are_400_and_protoo_is_required() {
    let server = RoomServer::start().await;
    for query in [
        "peerId=p",
        "roomId=r",
        "",
        "roomId=&peerId=p",
        "roomId=r&peerId=",
    ] {
        let (status, _reason) = server.refused(query).await;
        assert_eq!(status, 400, "query {query:?}");
    }

    // Without the `protoo` subprotocol: 403.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = "GET /?roomId=r&peerId=p HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    guard("403 answer", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403 "), "answer {answer:?}");

    // A valid connection still works.
    let (_alice, peers) = server.join("r", "p", "P").await;
    assert_eq!(peers, vec![]);
}

#[tokio::test]
async fn join_lists_the_other_joined_peers_and_announces_newcomers() {
    let server = RoomServer::start().await;
    let (mut alice, peers) = server.join("r", "alice", "Alice").await;
    assert_eq!(peers, vec![]);

    // bob is in the room but has not joined: not listed, not announced yet.
    let mut bob = server.connect("r", "bob").await;
    alice.assert_quiet().await;
    assert_eq!(bob.join("Bob").await, vec![peer("alice", "Alice")]);
    assert_eq!(
        alice.notification().await,
        (
            "newPeer".to_owned(),
            json!({ "id": "bob", "displayName": "Bob" })
        )
    );

    // carol never joins; dave sees the two joined peers only.
    let mut carol = server.connect("r", "carol").await;
    let (mut dave, peers) = server.join("r", "dave", "Dave").await;
    assert_eq!(peers, vec![peer("alice", "Alice"), peer("bob", "Bob")]);
    let announced = (
        "newPeer".to_owned(),
        json!({ "id": "dave", "displayName": "Dave" }),
    );
    assert_eq!(alice.notification().await, announced);
    assert_eq!(bob.notification().await, announced);
    assert_eq!(carol.notification().await, announced);
    dave.assert_quiet().await;

    // Another room hears nothing of this one.
    let (mut eve, peers) = server.join("elsewhere", "eve", "Eve").await;
    assert_eq!(peers, vec![]);
    for client in [&mut alice, &mut bob, &mut carol, &mut dave, &mut eve] {
        client.assert_quiet().await;
    }
}

#[tokio::test]
async fn a_display_name_over_256_bytes_is_refused_before_anything_is_listed_or_sent() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let mut bob = server.connect("r", "bob").await;

    // 300 bytes (150 two-byte characters): 400, bob is neither listed nor
    // announced.
    let too_long = "é".repeat(150);
    assert_eq!(too_long.len(), 300);
    let error = bob
        .request("join", &json!({ "displayName": too_long }))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(400));
    assert_eq!(error.reason().as_deref(), Some("displayName too long"));
    alice.assert_quiet().await;
    let (mut carol, peers) = server.join("r", "carol", "Carol").await;
    assert_eq!(peers, vec![peer("alice", "Alice")]);
    let carol_announced = (
        "newPeer".to_owned(),
        json!({ "id": "carol", "displayName": "Carol" }),
    );
    assert_eq!(alice.notification().await, carol_announced);
    assert_eq!(bob.notification().await, carol_announced);

    // 256 bytes, the cap: bob joins, listed and announced with it.
    let longest = "b".repeat(256);
    assert_eq!(
        bob.join(&longest).await,
        vec![peer("alice", "Alice"), peer("carol", "Carol")]
    );
    let bob_announced = (
        "newPeer".to_owned(),
        json!({ "id": "bob", "displayName": longest }),
    );
    assert_eq!(alice.notification().await, bob_announced);
    assert_eq!(carol.notification().await, bob_announced);
    let (mut dave, peers) = server.join("r", "dave", "Dave").await;
    assert_eq!(
        peers,
        vec![
            peer("alice", "Alice"),
            peer("bob", &longest),
            peer("carol", "Carol")
        ]
    );
    for client in [&mut alice, &mut bob, &mut carol] {
        client.notification().await; // newPeer dave
    }
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        client.assert_quiet().await;
    }
}

#[tokio::test]
async fn peers_joining_at_once_are_listed_one_way_and_announced() {
    const PEERS: usize = 12;
    let server = RoomServer::start().await;
    let mut clients = Vec::new();
    for n in 0..PEERS {
        clients.push(server.connect("r", &format!("p{n}")).await);
    }
    // Every join at once: of two peers joining together, the one that
    // joins second lists the first in its `join` answer, the first does not
    // list the second (it hears `newPeer` of it); and every peer hears
    // `newPeer` of every other (they are all members from the start).
    let lists = join_all(clients.iter().map(|client| client.join(&client.name))).await;
    for client in &clients {
        client.request("echo", &json!({})).await.expect("echo"); // its join ended
    }
    let listed = |x: usize, y: usize| lists[x].iter().any(|(id, _)| *id == format!("p{y}"));
    for x in 0..PEERS {
        for y in x + 1..PEERS {
            assert!(
                listed(x, y) != listed(y, x),
                "p{x} and p{y}: listed by each other {:?}",
                (listed(x, y), listed(y, x))
            );
        }
    }
    for client in &mut clients {
        let mut announced = Vec::new();
        for _ in 1..PEERS {
            let (method, data) = client.notification().await;
            assert_eq!(method, "newPeer");
            announced.push(data["id"].as_str().expect("id").to_owned());
        }
        announced.sort();
        let mut others: Vec<String> = (0..PEERS).map(|n| format!("p{n}")).collect();
        others.retain(|id| *id != client.name);
        others.sort();
        assert_eq!(announced, others, "announced to {}", client.name);
        client.assert_quiet().await;
    }
}

#[tokio::test]
async fn chat_echo_and_broadcast() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let (mut bob, _) = server.join("r", "bob", "Bob").await;
    let mut carol = server.connect("r", "carol").await;
    alice.notification().await; // newPeer bob

    // chat: the others hear it with the sender's id.
    let answer = alice
        .request("chat", &json!({ "text": "hello" }))
        .await
        .unwrap();
    assert_eq!(answer, json!({}));
    let chat = (
        "chat".to_owned(),
        json!({ "peerId": "alice", "text": "hello" }),
    );
    assert_eq!(bob.notification().await, chat);
    assert_eq!(carol.notification().await, chat);
    alice.assert_quiet().await;

    // A chat notification is relayed the same way.
    bob.peer.notify("chat", &json!({ "text": "psst" })).unwrap();
    let chat = (
        "chat".to_owned(),
        json!({ "peerId": "bob", "text": "psst" }),
    );
    assert_eq!(alice.notification().await, chat);
    assert_eq!(carol.notification().await, chat);

    // echo: the data comes back byte for byte.
    let raw = RawValue::from_string(
        r#"{ "a" : [1.50, -0, "é\u0000", {"b":null}], "big": 1e300 }"#.to_owned(),
    )
    .unwrap();
    let echoed: Payload = guard("echo", alice.peer.request("echo", &raw))
        .await
        .unwrap();
    assert_eq!(echoed.as_str(), raw.get());
    for data in [json!([]), json!("text"), json!(42), json!({})] {
        assert_eq!(alice.request("echo", &data).await.unwrap(), data);
    }

    // broadcast: the others get `chat` with the request's data unchanged.
    let raw = RawValue::from_string(r#"{"n": 1.0, "nested": {"x": [true]}}"#.to_owned()).unwrap();
    let answer: Payload = guard("broadcast", carol.peer.request("broadcast", &raw))
        .await
        .unwrap();
    assert_eq!(answer.to_value(), json!({}));
    for client in [&mut alice, &mut bob] {
        match guard("broadcast chat", client.events.next()).await {
            Some(PeerEvent::Notification(n)) => {
                assert_eq!(n.method(), "chat");
                assert_eq!(n.payload().as_str(), raw.get());
            }
            other => panic!("expected the broadcast, got {other:?}"),
        }
    }
    for client in [&mut alice, &mut bob, &mut carol] {
        client.assert_quiet().await;
    }
}

#[tokio::test]
async fn ask_sends_the_request_back_to_the_same_peer() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let (mut bob, _) = server.join("r", "bob", "Bob").await;
    alice.notification().await; // newPeer bob

    // Accepted: `{response: <data>}`.
    let ask = tokio::spawn({
        let peer = alice.peer.clone();
        async move {
            peer.request("ask", &json!({ "method": "question", "data": { "q": 1 } }))
                .await
        }
    });
    let Some(PeerEvent::Request(request)) = guard("the asked request", alice.events.next()).await
    else {
        panic!("expected a request");
    };
    assert_eq!(request.method(), "question");
    assert_eq!(request.payload().to_value(), json!({ "q": 1 }));
    request.accept(&json!({ "a": 2 }));
    let answer = guard("ask", ask).await.unwrap().expect("ask accepted");
    assert_eq!(answer.to_value(), json!({ "response": { "a": 2 } }));

    // Rejected: the peer's error, code and reason.
    let ask = tokio::spawn({
        let peer = alice.peer.clone();
        async move {
            peer.request("ask", &json!({ "method": "brew", "data": {} }))
                .await
        }
    });
    let Some(PeerEvent::Request(request)) = guard("the asked request", alice.events.next()).await
    else {
        panic!("expected a request");
    };
    request.reject(418, "I'm a teapot");
    let error = guard("ask", ask).await.unwrap().expect_err("ask rejected");
    assert_eq!(error.code(), Some(418));
    assert_eq!(error.reason().as_deref(), Some("I'm a teapot"));

    // Only the asking peer was asked.
    bob.assert_quiet().await;
    alice.assert_quiet().await;
}

#[tokio::test]
async fn fail_crash_and_unknown_methods() {
    let server = RoomServer::start().await;
    let (alice, _) = server.join("r", "alice", "Alice").await;

    let error = alice
        .request("fail", &json!({ "code": 409, "reason": "conflict" }))
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Rejected(_)));
    assert_eq!(
        (error.code(), error.reason().as_deref()),
        (Some(409), Some("conflict"))
    );

    let error = alice.request("crash", &json!({})).await.unwrap_err();
    assert_eq!(error.code(), Some(500));

    let error = alice.request("noSuchMethod", &json!({})).await.unwrap_err();
    assert_eq!(error.code(), Some(404));

    // The peer is still served after all of these.
    assert_eq!(
        alice.request("echo", &json!({ "ok": 1 })).await.unwrap(),
        json!({ "ok": 1 })
    );
}

#[tokio::test]
async fn kick_closes_the_peer_with_4000_and_the_others_hear_peer_closed() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let (mut bob, _) = server.join("r", "bob", "Bob").await;
    alice.notification().await; // newPeer bob

    assert_eq!(bob.request("kick", &json!({})).await.unwrap(), json!({}));
    let reason = bob.closed().await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.reason, "closed by protoo-server");
    assert_eq!(reason.initiator, Initiator::Remote);
    assert_eq!(
        alice.notification().await,
        ("peerClosed".to_owned(), json!({ "peerId": "bob" }))
    );
    alice.assert_quiet().await;

    // bob is gone from the room.
    let (_carol, peers) = server.join("r", "carol", "Carol").await;
    assert_eq!(peers, vec![peer("alice", "Alice")]);
}

#[tokio::test]
async fn leaving_peers_are_announced_and_empty_rooms_start_afresh() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let (bob, _) = server.join("r", "bob", "Bob").await;
    alice.notification().await; // newPeer bob

    // bob closes his side: alice hears it, and bob is no longer listed.
    bob.peer.close();
    assert_eq!(
        alice.notification().await,
        ("peerClosed".to_owned(), json!({ "peerId": "bob" }))
    );
    let (mut carol, peers) = server.join("r", "carol", "Carol").await;
    assert_eq!(peers, vec![peer("alice", "Alice")]);
    alice.notification().await; // newPeer carol

    // The last peers leave (kicked: the server closes them, so they are out
    // of the room by the time their client sees the close): the room starts
    // empty again. (This relies on protoo-core taking a closed peer out of
    // its room before closing its transport; see
    // crates/protoo-server/tests/close_order.rs.)
    for client in [&mut alice, &mut carol] {
        client.request("kick", &json!({})).await.unwrap();
        let reason = client.closed().await;
        assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    }
    let (mut dave, peers) = server.join("r", "dave", "Dave").await;
    assert_eq!(peers, vec![]);
    dave.assert_quiet().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_peer_id_replaces_the_first() {
    let server = RoomServer::start().await;
    let (mut first, _) = server.join("r", "alice", "Alice").await;
    let (mut bob, _) = server.join("r", "bob", "Bob").await;
    first.notification().await; // newPeer bob

    let (mut second, peers) = server.join("r", "alice", "Alice again").await;
    assert_eq!(peers, vec![peer("bob", "Bob")]);
    let reason = first.closed().await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.initiator, Initiator::Remote);

    // bob hears the old alice leave before the new one arrives.
    assert_eq!(
        bob.notification().await,
        ("peerClosed".to_owned(), json!({ "peerId": "alice" }))
    );
    assert_eq!(
        bob.notification().await,
        (
            "newPeer".to_owned(),
            json!({ "id": "alice", "displayName": "Alice again" })
        )
    );
    bob.assert_quiet().await;
    second.assert_quiet().await;

    // The new alice is the one in the room.
    assert_eq!(
        bob.request("chat", &json!({ "text": "hi" })).await.unwrap(),
        json!({})
    );
    assert_eq!(
        second.notification().await,
        ("chat".to_owned(), json!({ "peerId": "bob", "text": "hi" }))
    );
    let (_carol, peers) = server.join("r", "carol", "Carol").await;
    assert_eq!(
        peers,
        vec![peer("alice", "Alice again"), peer("bob", "Bob")]
    );
}

#[tokio::test]
async fn with_the_default_window_a_second_connection_takes_the_session_over() {
    let server = RoomServer::start_with(&[]).await;
    let (mut first, _) = server.join("r", "alice", "Alice").await;
    let (mut bob, _) = server.join("r", "bob", "Bob").await;
    first.notification().await; // newPeer bob

    // The same session on a new connection: nothing was held for it but
    // what the first connection's client may not have confirmed yet (the
    // `newPeer` it just read, written again: at least once), then
    // `resumed` with that count.
    let mut second = server.connect("r", "alice").await;
    let mut again = 0;
    let missed = loop {
        match second.notification().await {
            (method, data) if method == "resumed" => break data["missed"].clone(),
            (method, data) => {
                assert_eq!(
                    (method.as_str(), data),
                    ("newPeer", json!({ "id": "bob", "displayName": "Bob" }))
                );
                again += 1;
            }
        }
    };
    // Also counted: the `join` answer, if it was not confirmed either (a
    // response the new connection's client does not wait for).
    let missed = missed.as_u64().expect("a count");
    assert!(
        again <= 1 && (again..=2).contains(&missed),
        "{again} {missed}"
    );
    let reason = first.closed().await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.reason, "session resumed on a new connection");

    // Joined already: the list again, and bob hears nothing of it.
    assert_eq!(second.join("Alice again").await, vec![peer("bob", "Bob")]);
    bob.assert_quiet().await;
    second.assert_quiet().await;
    assert_eq!(
        bob.request("chat", &json!({ "text": "hi" })).await.unwrap(),
        json!({})
    );
    assert_eq!(
        second.notification().await,
        ("chat".to_owned(), json!({ "peerId": "bob", "text": "hi" }))
    );
    // Listed once, with the name of its first join.
    let (_carol, peers) = server.join("r", "carol", "Carol").await;
    assert_eq!(peers, vec![peer("alice", "Alice"), peer("bob", "Bob")]);
}

#[tokio::test]
async fn join_twice_answers_the_list_again_and_announces_once() {
    let server = RoomServer::start().await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    let (bob, peers) = server.join("r", "bob", "Bob").await;
    assert_eq!(peers, vec![peer("alice", "Alice")]);
    assert_eq!(
        alice.notification().await,
        (
            "newPeer".to_owned(),
            json!({ "id": "bob", "displayName": "Bob" })
        )
    );
    assert_eq!(bob.join("Bob again").await, vec![peer("alice", "Alice")]);
    alice.assert_quiet().await;
}

#[tokio::test]
async fn notifications_keep_each_senders_order() {
    const EACH: usize = 200;
    let server = RoomServer::start().await;
    let alice = server.connect("r", "alice").await;
    let bob = server.connect("r", "bob").await;
    let mut carol = server.connect("r", "carol").await;

    // alice and bob each send EACH broadcasts without waiting for the
    // answers (requests are queued in the order they are first polled).
    let send = |client: &Client| {
        let peer = client.peer.clone();
        let from = client.name.clone();
        async move {
            let requests = (0..EACH).map(|seq| {
                let peer = peer.clone();
                let data = json!({ "from": from, "seq": seq });
                async move { peer.request("broadcast", &data).await }
            });
            for answer in join_all(requests).await {
                answer.expect("broadcast accepted");
            }
        }
    };
    guard("broadcasts", async {
        tokio::join!(send(&alice), send(&bob))
    })
    .await;

    let mut next =
        std::collections::HashMap::from([("alice".to_owned(), 0), ("bob".to_owned(), 0)]);
    for _ in 0..2 * EACH {
        let (method, data) = carol.notification().await;
        assert_eq!(method, "chat");
        let from = data["from"].as_str().expect("from").to_owned();
        let seq = data["seq"].as_u64().expect("seq") as usize;
        let expected = next.get_mut(&from).expect("a known sender");
        assert_eq!(seq, *expected, "{from}'s broadcasts out of order");
        *expected += 1;
    }
    assert_eq!(next["alice"], EACH);
    assert_eq!(next["bob"], EACH);
    carol.assert_quiet().await;
}

/// Sends the example SIGTERM.
#[cfg(unix)]
fn sigterm(server: &RoomServer) {
    let pid = server.child.id().expect("the example is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_drains_with_1012_by_default() {
    let mut server = RoomServer::start_with(&["--drain-period", "1"]).await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    sigterm(&server);

    let reason = alice.closed().await;
    assert_eq!(reason.code, Some(close_code::SERVICE_RESTART));
    assert_eq!(reason.reason, "service restart");
    let exit = guard("the example exits", server.child.wait())
        .await
        .unwrap();
    assert!(exit.success(), "the example exited with {exit}");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    // Without a drain period: every peer closed at once with 1001.
    let mut server = RoomServer::start_with(&["--resume-window", "0", "--drain-period", "0"]).await;
    let (mut alice, _) = server.join("r", "alice", "Alice").await;
    sigterm(&server);

    let reason = alice.closed().await;
    assert_eq!(reason.code, Some(close_code::GOING_AWAY));
    assert_eq!(reason.reason, "server shutting down");
    assert_eq!(reason.initiator, Initiator::Remote);
    let exit = guard("the example exits", server.child.wait())
        .await
        .unwrap();
    assert!(exit.success(), "the example exited with {exit}");
    // Nothing listens any more.
    assert!(
        ws::connect(&server.url("roomId=r&peerId=late"), &WsConfig::default())
            .await
            .is_err()
    );
}
