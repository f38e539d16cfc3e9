//! Sessions that outlive their socket (`PeerConfig::resume_window`) on real
//! sockets: clients reach the server through a `CutProxy`, which resets
//! their connections (both sides see a reset, no close frame), black-holes
//! them (neither side notices) or refuses new ones.
//!
//! The server is a small room server: a peer's `newPeer` and `peerClosed`
//! go to the other members, as the room example does, and every session
//! event of the server's peers is reported to the test. The clients are raw
//! WebSockets (tokio-tungstenite), so that the test sees every frame.
//!
//! The lost and duplicated frames around each loss are counted and printed
//! (`cargo test --test sessions -- --nocapture`): frames written to a dead
//! socket before the server noticed the loss may be lost (or, once the
//! transport gives back what the client did not confirm, written again);
//! every frame sent after the loss was detected arrives once, in order.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{RawWs, guard, handshake_on, upgrade_request};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use protoo_server::core::TAKEN_OVER_REASON;
use protoo_server::{
    CloseReason, ConnectionRequest, DuplicatePolicy, Initiator, Joined, Peer, PeerConfig,
    PeerEvent, Rooms, ServerConfig, WebSocketServer, WsConfig,
};
use protoo_testkit::proxy::CutProxy;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Long enough never to end in a test that resumes.
const WINDOW: Duration = Duration::from_secs(15);
/// For the test that lets the window pass: short, on real time.
const SHORT_WINDOW: Duration = Duration::from_millis(300);

// ----- the server -----

/// What the server saw of a peer.
#[derive(Debug)]
enum Seen {
    /// An admission: a new peer, or the session of the one in the room
    /// resumed (`true`).
    Admitted(bool),
    Disconnected(CloseReason),
    Resumed(usize),
    Closed(CloseReason),
}

struct Server {
    addr: SocketAddr,
    rooms: Rooms,
    /// `(peer id, what)`, in the order the server saw them.
    seen: mpsc::UnboundedReceiver<(String, Seen)>,
}

impl Server {
    async fn start(peer: PeerConfig, ws: WsConfig) -> Server {
        let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default().with_ws(ws))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let rooms = Rooms::new();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn({
            let rooms = rooms.clone();
            async move {
                while let Some(request) = server.next_request().await {
                    tokio::spawn(admit(request, rooms.clone(), peer.clone(), seen_tx.clone()));
                }
            }
        });
        Server { addr, rooms, seen }
    }

    /// The next thing the server saw of `peer` (nothing of any other peer
    /// may come first).
    async fn next_seen(&mut self, peer: &str) -> Seen {
        let (id, seen) = guard("the server sees something", self.seen.recv())
            .await
            .expect("the server is gone");
        assert_eq!(id, peer, "{seen:?}");
        seen
    }

    fn peer(&self, id: &str) -> Peer {
        self.rooms
            .get("r")
            .and_then(|room| room.peer(id))
            .expect("the peer is in the room")
    }

    /// Sends `chat {n}` for each `n` to every member but `except`.
    fn chat(&self, except: &str, ns: std::ops::Range<u64>) {
        let room = self.rooms.get("r").expect("the room");
        for n in ns {
            room.to_all()
                .except([except])
                .notify("chat", &json!({ "n": n }))
                .expect("encoded");
        }
    }
}

async fn admit(
    request: ConnectionRequest,
    rooms: Rooms,
    config: PeerConfig,
    seen: mpsc::UnboundedSender<(String, Seen)>,
) {
    let Ok(joined) = request
        .admit(&rooms)
        .config(config)
        .policy(DuplicatePolicy::Replace)
        .join(())
        .await
    else {
        return;
    };
    let Joined {
        room,
        peer,
        mut events,
        resumed,
        ..
    } = joined;
    let id = peer.id().to_owned();
    let _ = seen.send((id.clone(), Seen::Admitted(resumed)));
    if resumed {
        // The peer's events go on in the loop of its first admission.
        return;
    }
    let _ = room
        .to_all()
        .except_peer(&peer)
        .notify("newPeer", &json!({ "id": id }));
    while let Some(event) = events.next().await {
        let what = match event {
            PeerEvent::Request(request) => {
                let data = request.payload().clone();
                request.accept(&data);
                continue;
            }
            PeerEvent::Notification(_) => continue,
            PeerEvent::Disconnected(reason) => Seen::Disconnected(reason),
            PeerEvent::Resumed { missed } => Seen::Resumed(missed),
            PeerEvent::Closed(reason) => {
                let _ = room
                    .to_all()
                    .except_peer(&peer)
                    .notify("peerClosed", &json!({ "id": id }));
                Seen::Closed(reason)
            }
        };
        let _ = seen.send((id.clone(), what));
    }
}

fn resumable() -> PeerConfig {
    PeerConfig::default().with_resume_window(WINDOW)
}

// ----- the clients -----

/// What a client read.
#[derive(Debug)]
enum Got {
    Frame(Value),
    /// A close frame, its code.
    Close(Option<u16>, String),
    /// The connection failed (a reset): the error.
    Error(#[allow(dead_code)] String),
    /// The stream ended.
    End,
}

/// A raw protoo client: what it reads comes through `got`.
struct Client {
    sink: SplitSink<RawWs, Message>,
    got: mpsc::UnboundedReceiver<Got>,
    /// How many frames the reader task read so far (closed when it ends).
    read: watch::Receiver<u64>,
}

impl Client {
    /// Connects to `addr` as `peer` of room `r`.
    async fn connect(addr: SocketAddr, peer: &str) -> Client {
        let tcp = guard("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        let request = upgrade_request(
            addr,
            &format!("/?roomId=r&peerId={peer}"),
            Some("protoo"),
            &[],
        );
        let ws = match guard("handshake", handshake_on(tcp, request)).await {
            Ok((ws, _)) => ws,
            Err(refused) => panic!("upgrade refused: {refused:?}"),
        };
        let (sink, mut stream) = ws.split();
        let (tx, got) = mpsc::unbounded_channel();
        let (progress, read) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let got = match stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        Got::Frame(serde_json::from_str(text.as_str()).expect("JSON"))
                    }
                    Some(Ok(Message::Close(frame))) => match frame {
                        Some(frame) => {
                            Got::Close(Some(u16::from(frame.code)), frame.reason.to_string())
                        }
                        None => Got::Close(None, String::new()),
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => Got::Error(error.to_string()),
                    None => Got::End,
                };
                let last = matches!(got, Got::Error(_) | Got::End);
                if matches!(got, Got::Frame(_)) {
                    progress.send_modify(|read| *read += 1);
                }
                if tx.send(got).is_err() || last {
                    return;
                }
            }
        });
        Client { sink, got, read }
    }

    async fn next(&mut self) -> Got {
        guard("the client reads", self.got.recv())
            .await
            .expect("the reader is gone")
    }

    /// The next frame, which must be a notification: `(method, data)`.
    async fn notification(&mut self) -> (String, Value) {
        match self.next().await {
            Got::Frame(frame) if frame["notification"] == true => (
                frame["method"].as_str().unwrap_or_default().to_owned(),
                frame["data"].clone(),
            ),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    /// A request and its response (which must come next).
    async fn echo(&mut self, id: u64, data: Value) -> Value {
        let request = json!({ "request": true, "id": id, "method": "echo", "data": data });
        self.sink
            .send(Message::text(request.to_string()))
            .await
            .expect("request sent");
        match self.next().await {
            Got::Frame(frame) if frame["response"] == true && frame["id"] == id => {
                frame["data"].clone()
            }
            other => panic!("expected the response, got {other:?}"),
        }
    }

    /// Reads `chat {n}` notifications until `n == last`: the ns.
    async fn chats_until(&mut self, last: u64) -> Vec<u64> {
        let mut ns = Vec::new();
        loop {
            let (method, data) = self.notification().await;
            assert_eq!(method, "chat", "{data}");
            let n = data["n"].as_u64().expect("n");
            ns.push(n);
            if n == last {
                return ns;
            }
        }
    }

    /// Reads chats until a close frame or the end of the connection: the
    /// chats read, then how it ended.
    async fn chats_until_end(&mut self) -> (Vec<u64>, Got) {
        let mut ns = Vec::new();
        loop {
            match self.next().await {
                Got::Frame(frame) if frame["method"] == "chat" => {
                    ns.push(frame["data"]["n"].as_u64().expect("n"));
                }
                Got::Frame(frame) => panic!("unexpected frame {frame}"),
                end => return (ns, end),
            }
        }
    }
}

/// Lost and duplicated frames among `sent` as `received` shows them.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    sent: usize,
    lost: usize,
    duplicated: usize,
}

fn tally(sent: std::ops::Range<u64>, received: &[u64]) -> Tally {
    let mut counts = BTreeMap::new();
    for n in received.iter().filter(|n| sent.contains(n)) {
        *counts.entry(*n).or_insert(0usize) += 1;
    }
    Tally {
        sent: sent.clone().count(),
        lost: sent.filter(|n| !counts.contains_key(n)).count(),
        duplicated: counts.values().map(|c| c - 1).sum(),
    }
}

/// Every n of `sent` exactly once, in order, in `received`.
fn assert_exactly_once_in_order(sent: std::ops::Range<u64>, received: &[u64]) {
    let got: Vec<u64> = received
        .iter()
        .copied()
        .filter(|n| sent.contains(n))
        .collect();
    let want: Vec<u64> = sent.collect();
    assert_eq!(got, want, "exactly once, in order");
}

/// Bob, a member connected directly: he joins first, then sees alice join.
async fn bob_then_alice(server: &mut Server, proxy: &CutProxy) -> (Client, Client) {
    let bob = Client::connect(server.addr, "bob").await;
    assert!(matches!(
        server.next_seen("bob").await,
        Seen::Admitted(false)
    ));
    let alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(false)
    ));
    let mut bob = bob;
    assert_eq!(
        bob.notification().await,
        ("newPeer".to_owned(), json!({ "id": "alice" }))
    );
    (bob, alice)
}

/// Bob saw nothing of alice since she joined (no `peerClosed`, no second
/// `newPeer`): the echo comes back first.
async fn bob_saw_nothing(bob: &mut Client, id: u64) {
    assert_eq!(
        bob.echo(id, json!({ "barrier": id })).await,
        json!({ "barrier": id })
    );
}

// ----- the tests -----

/// Streams `chat {n}` from `start` to every member but bob, at most `lag`
/// frames ahead of what `read` (alice's reader) read, until that reader
/// ends or `stop` is set: the next n (the end of what it sent).
fn stream(
    server: &Server,
    start: u64,
    lag: u64,
    mut read: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    let room = server.rooms.get("r").expect("the room");
    tokio::spawn(async move {
        let base = *read.borrow();
        let mut next = start;
        while !*stop.borrow() {
            let ahead = next - start;
            if read
                .wait_for(|&read| read - base + lag > ahead)
                .await
                .is_err()
            {
                break;
            }
            room.to_all()
                .except(["bob"])
                .notify("chat", &json!({ "n": next }))
                .unwrap();
            next += 1;
            tokio::task::yield_now().await;
        }
        next
    })
}

/// Cut (both sides reset) while the server streams to alice; alice
/// reconnects and resumes. Five rounds; the frames in flight at each cut
/// are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_session_resumes_and_everything_sent_after_the_loss_arrives_once_in_order() {
    const ROUNDS: u64 = 5;
    /// How far the stream runs ahead of what alice read.
    const LAG: u64 = 200;
    let mut server = Server::start(resumable(), WsConfig::default()).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, mut alice) = bob_then_alice(&mut server, &proxy).await;
    let original = server.peer("alice");
    let mut around = Tally::default();
    let mut after_loss = 0;
    let mut received = Vec::new();
    let mut next = 0;
    for round in 0..ROUNDS {
        // A stream, cut while alice reads it.
        let (stop, stopped) = watch::channel(false);
        let streamer = stream(&server, next, LAG, alice.read.clone(), stopped);
        let first = alice.chats_until(next + 100).await;
        received.extend(&first);
        proxy.cut_all().await;
        let (rest, end) = alice.chats_until_end().await;
        received.extend(&rest);
        assert!(
            matches!(end, Got::Error(_)),
            "a reset, no close frame: {end:?}"
        );
        let Seen::Disconnected(reason) = server.next_seen("alice").await else {
            panic!("expected the loss");
        };
        assert!(reason.is_lost(), "{reason:?}");
        assert!(server.peer("alice").is_disconnected());
        stop.send_replace(true);
        let streamed = next..streamer.await.unwrap();

        // Sent after the loss was detected: held.
        let held = streamed.end..streamed.end + 100;
        server.chat("bob", held.clone());
        // Sent while alice reconnects, until 100 after the resume: held or
        // written after it (at most 5,000 before it).
        let (resumed_tx, mut resumed_rx) = watch::channel(false);
        let sender = tokio::spawn({
            let room = server.rooms.get("r").unwrap();
            let start = held.end;
            async move {
                let mut n = start;
                let mut after = 0;
                while after < 100 && n - start < 5_000 {
                    room.to_all()
                        .except(["bob"])
                        .notify("chat", &json!({ "n": n }))
                        .unwrap();
                    n += 1;
                    if *resumed_rx.borrow_and_update() {
                        after += 1;
                    }
                    tokio::task::yield_now().await;
                }
                n
            }
        });
        alice = Client::connect(proxy.addr(), "alice").await;
        assert!(matches!(
            server.next_seen("alice").await,
            Seen::Admitted(true)
        ));
        resumed_tx.send_replace(true);
        let Seen::Resumed(missed) = server.next_seen("alice").await else {
            panic!("expected the resume");
        };
        let racing = held.end..sender.await.unwrap();
        let after = alice.chats_until(racing.end - 1).await;
        received.extend(&after);

        assert_exactly_once_in_order(held.start..racing.end, &after);
        let cut = tally(streamed.clone(), &received);
        println!(
            "round {round}: {} streamed, cut after alice read {}: {} lost, {} duplicated; \
             {} sent after the loss was detected, {} held (missed {missed}): all once, in order",
            streamed.end - streamed.start,
            first.len(),
            cut.lost,
            cut.duplicated,
            racing.end - held.start,
            missed,
        );
        around.sent += cut.sent;
        around.lost += cut.lost;
        around.duplicated += cut.duplicated;
        after_loss += racing.end - held.start;
        next = racing.end;
    }
    println!(
        "cut, {ROUNDS} rounds: {} frames sent before the loss was detected: {} lost, {} \
         duplicated; {after_loss} sent after: 0 lost, 0 duplicated",
        around.sent, around.lost, around.duplicated,
    );
    // Without a frame written again, everything alice read is in order.
    if around.duplicated == 0 {
        assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");
    }
    // The same peer all along; bob saw nothing.
    assert!(Peer::ptr_eq(&original, &server.peer("alice")));
    assert!(!original.is_closed() && !original.is_disconnected());
    bob_saw_nothing(&mut bob, 1).await;
    assert_eq!(
        alice.echo(1, json!("still here")).await,
        json!("still here")
    );
}

/// Black-holed: the server does not notice; alice reconnects while the old
/// socket still looks open, which takes the session over. The old socket,
/// once reachable, gets 4000.
#[tokio::test]
async fn a_reconnect_takes_a_black_holed_session_over_and_the_old_socket_gets_4000() {
    let mut server = Server::start(resumable(), WsConfig::default()).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, mut old) = bob_then_alice(&mut server, &proxy).await;
    let original = server.peer("alice");
    server.chat("bob", 0..50);
    assert_eq!(old.chats_until(49).await, (0..50).collect::<Vec<_>>());

    proxy.blackhole_all().await;
    // Written to the old socket, which the proxy no longer reads.
    server.chat("bob", 50..100);
    assert!(!original.is_disconnected(), "the server noticed nothing");

    let mut alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(true)
    ));
    let Seen::Resumed(missed) = server.next_seen("alice").await else {
        panic!("expected the takeover");
    };
    server.chat("bob", 100..150);
    let fresh = alice.chats_until(149).await;
    assert_exactly_once_in_order(100..150, &fresh);
    let again = tally(50..100, &fresh);

    // The old socket, reachable again: what it was sent, then 4000.
    proxy.heal_all().await;
    let (stale, end) = old.chats_until_end().await;
    let Got::Close(code, reason) = end else {
        panic!("expected the close frame, got {end:?}");
    };
    assert_eq!((code, reason.as_str()), (Some(4000), TAKEN_OVER_REASON));
    println!(
        "black hole: 50 frames in flight on the old socket at the takeover: {} written again \
         on the new connection (missed {missed}), {} read by the old client later, {} lost to \
         both",
        50 - again.lost,
        stale.len(),
        tally(50..100, &[stale.as_slice(), fresh.as_slice()].concat()).lost,
    );
    assert!(Peer::ptr_eq(&original, &server.peer("alice")));
    bob_saw_nothing(&mut bob, 1).await;
    assert_eq!(alice.echo(1, json!("here")).await, json!("here"));
}

/// Black-holed, and the server's keepalive finds out: the session waits,
/// and alice's reconnect resumes it with what was sent meanwhile.
#[tokio::test]
async fn the_server_keepalive_finds_a_black_hole_and_the_session_waits() {
    let ws = WsConfig::default()
        .with_ping_interval(Some(Duration::from_millis(100)))
        .with_pong_timeout(Duration::from_millis(200));
    let mut server = Server::start(resumable(), ws).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, old) = bob_then_alice(&mut server, &proxy).await;
    proxy.blackhole_all().await;
    let Seen::Disconnected(reason) = server.next_seen("alice").await else {
        panic!("expected the loss");
    };
    assert_eq!(
        (reason.code, reason.initiator, reason.reason.as_str()),
        (None, Initiator::Local, "keepalive timeout")
    );
    server.chat("bob", 0..20);
    let mut alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(true)
    ));
    assert!(matches!(server.next_seen("alice").await, Seen::Resumed(20)));
    assert_eq!(alice.chats_until(19).await, (0..20).collect::<Vec<_>>());
    bob_saw_nothing(&mut bob, 1).await;
    drop(old);
}

/// Past the window the peer closes as without one: the others see it
/// leave, and a later connection is a new peer.
#[tokio::test]
async fn past_the_window_the_peer_closes_as_before() {
    let config = PeerConfig::default().with_resume_window(SHORT_WINDOW);
    let mut server = Server::start(config, WsConfig::default()).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, _alice) = bob_then_alice(&mut server, &proxy).await;
    proxy.cut_all().await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Disconnected(_)
    ));
    let lost = tokio::time::Instant::now();
    let Seen::Closed(reason) = server.next_seen("alice").await else {
        panic!("expected the close");
    };
    assert!(lost.elapsed() >= SHORT_WINDOW / 2, "not before the window");
    assert!(
        reason.is_lost(),
        "closed with the loss's reason: {reason:?}"
    );
    assert_eq!(
        bob.notification().await,
        ("peerClosed".to_owned(), json!({ "id": "alice" }))
    );
    let _alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(false)
    ));
    assert_eq!(
        bob.notification().await,
        ("newPeer".to_owned(), json!({ "id": "alice" }))
    );
}

/// A close frame from the client (1000, protoo-client's `close()`) ends
/// the session at once.
#[tokio::test]
async fn a_clean_close_ends_the_session_at_once() {
    let mut server = Server::start(resumable(), WsConfig::default()).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, mut alice) = bob_then_alice(&mut server, &proxy).await;
    alice
        .sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let Seen::Closed(reason) = server.next_seen("alice").await else {
        panic!("expected the close at once");
    };
    assert_eq!(
        (reason.code, reason.initiator),
        (Some(1000), Initiator::Remote)
    );
    assert_eq!(
        bob.notification().await,
        ("peerClosed".to_owned(), json!({ "id": "alice" }))
    );
}

/// Without a window, a cut closes the peer at once, as protoo does.
#[tokio::test]
async fn without_a_window_a_cut_closes_the_peer_as_before() {
    let mut server = Server::start(PeerConfig::default(), WsConfig::default()).await;
    let proxy = CutProxy::start(server.addr).await;
    let (mut bob, _alice) = bob_then_alice(&mut server, &proxy).await;
    proxy.cut_all().await;
    let Seen::Closed(reason) = server.next_seen("alice").await else {
        panic!("expected the close at once");
    };
    assert!(reason.is_lost(), "{reason:?}");
    assert_eq!(
        bob.notification().await,
        ("peerClosed".to_owned(), json!({ "id": "alice" }))
    );
    let _alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(false)
    ));
    assert_eq!(
        bob.notification().await,
        ("newPeer".to_owned(), json!({ "id": "alice" }))
    );
}
