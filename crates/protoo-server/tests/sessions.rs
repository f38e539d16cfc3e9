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
mod sessions_fixture;

use std::time::Duration;

use futures_util::SinkExt;
use protoo_server::core::TAKEN_OVER_REASON;
use protoo_server::{Initiator, Peer, PeerConfig, WsConfig};
use protoo_testkit::proxy::CutProxy;
use serde_json::json;
use sessions_fixture::*;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// For the test that lets the window pass: short, on real time.
const SHORT_WINDOW: Duration = Duration::from_millis(300);

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
