//! Load and slow consumers over real sockets (issue 8, items 7-8): a busy
//! room loses nothing and keeps each sender's order; a member that stops
//! reading is cut off by its queue limit (1008) without holding up the
//! sender or the other members.

mod common;
mod support;

use std::collections::HashMap;

use common::*;
use futures_util::StreamExt;
use protoo_server::transport::SLOW_CONSUMER_REASON;
use protoo_server::{
    Initiator, PeerConfig, PeerEvent, PeerEvents, ServerConfig, WsConfig, close_code,
};
use serde::Deserialize;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Deserialize)]
struct Relayed {
    from: String,
    n: u64,
}

/// The bound on the whole exchange of item 7 (a failure guard only).
const LONG: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads `expected` `chat` notifications, checking that each sender's
/// arrive once each, in order; returns how many came from each sender.
async fn receive_in_order(events: &mut PeerEvents, expected: usize) -> HashMap<String, u64> {
    let mut next: HashMap<String, u64> = HashMap::new();
    for _ in 0..expected {
        match tokio::time::timeout(LONG, events.next())
            .await
            .expect("timed out: next notification")
        {
            Some(PeerEvent::Notification(notification)) => {
                assert_eq!(notification.method(), "chat");
                let relayed: Relayed = notification.data().expect("relayed data");
                let slot = next.entry(relayed.from.clone()).or_default();
                assert_eq!(
                    relayed.n, *slot,
                    "notification from {} out of order or lost",
                    relayed.from
                );
                *slot += 1;
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    next
}

/// Item 7: 50 peers × 1,000 notifications in one room: every member gets
/// the 49,000 notifications of the others, each exactly once, in each
/// sender's order; every request is answered.
///
/// The outbound queue limit is raised to 64 MiB here so that a slow test
/// machine cannot turn a loaded receiver into a cut-off slow consumer: this
/// test is about loss and order (item 8 tests the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_peers_times_a_thousand_notifications_nothing_lost_order_kept() {
    const PEERS: usize = 50;
    const EACH: u64 = 1_000;
    let config =
        ServerConfig::default().with_ws(WsConfig::default().with_max_queued_bytes(64 << 20));
    let mut fixture = Fixture::start(config, PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    // Each echo waits behind the 49,000 notifications sent to its client:
    // the exchange's bound is `LONG`, not protoo's request timeout.
    let patient = PeerConfig::default().with_request_timeout(LONG);
    let mut clients = Vec::new();
    for i in 0..PEERS {
        let target = Fixture::target("busy", &format!("p{i}"));
        clients.push(client_with(addr, &target, patient.clone()).await);
    }
    eventually("every peer in the room", || {
        fixture
            .rooms
            .get("busy")
            .is_some_and(|room| room.len() == PEERS)
    })
    .await;

    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, (peer, mut events)) in clients.into_iter().enumerate() {
        receivers.push(tokio::spawn(async move {
            let expected = (PEERS - 1) * EACH as usize;
            let counts = receive_in_order(&mut events, expected).await;
            (counts, events)
        }));
        senders.push(tokio::spawn(async move {
            let id = format!("p{i}");
            for n in 0..EACH {
                peer.notify("relay", &json!({ "from": id, "n": n }))
                    .expect("notify");
            }
            // Answered after the server read every notification before it.
            let data = tokio::time::timeout(LONG, peer.request("echo", &json!({ "id": id })))
                .await
                .expect("timed out: echo after the burst")
                .expect("echo answered");
            assert_eq!(data.to_value(), json!({ "id": id }));
            peer
        }));
    }
    let started = std::time::Instant::now();
    let mut peers = Vec::new();
    for sender in senders {
        peers.push(sender.await.expect("sender"));
    }
    let mut all_events = Vec::new();
    for (i, receiver) in receivers.into_iter().enumerate() {
        let (counts, events) = receiver.await.expect("receiver");
        assert_eq!(counts.len(), PEERS - 1, "p{i} heard every other peer");
        assert!(!counts.contains_key(&format!("p{i}")), "p{i} heard itself");
        assert!(counts.values().all(|&n| n == EACH));
        all_events.push(events);
    }
    assert!(fixture.closed.try_recv().is_err(), "nobody was cut off");
    println!(
        "{} notifications delivered in {:?}",
        PEERS * (PEERS - 1) * EACH as usize,
        started.elapsed()
    );

    for peer in &peers {
        peer.close();
    }
    for events in &mut all_events {
        expect_closed(events).await;
    }
    for _ in 0..PEERS {
        guard("server-side close", fixture.closed.recv()).await;
    }
    drop((peers, all_events));
    fixture.back_to_baseline(tasks).await;
}

/// Item 8: a member that stops reading during a broadcast. Its outbound
/// queue never holds more than the limit; once a broadcast would pass it,
/// the member is closed with 1008 and leaves the room; the sender's
/// requests are answered all along and every other member receives every
/// notification in order.
///
/// What the stalled member sees when it reads again: a gapless prefix of
/// the broadcasts, then the end of the connection. The close frame (1008)
/// is sent best-effort: when the overflow happens while the socket is full
/// (the usual case) the writer gives up at once and the connection is
/// dropped without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_cut_off_and_nobody_else_waits() {
    const LIMIT: usize = 64 * 1024;
    const PAD: usize = 4 * 1024;
    /// Broadcasts at most (about 80 MB): far more than socket buffers hold.
    const CAP: u64 = 20_000;
    const AFTER: u64 = 200;
    let config = ServerConfig::default().with_ws(WsConfig::default().with_max_queued_bytes(LIMIT));
    let mut fixture = Fixture::start(config, PeerConfig::default()).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    let (sender, mut sender_events) = client(addr, &Fixture::target("r", "sender")).await;
    let mut readers = Vec::new();
    for name in ["carol", "dave"] {
        let (peer, mut events) = client(addr, &Fixture::target("r", name)).await;
        // Each reader consumes as it goes; it reports how many it got once
        // the stop notification arrives.
        let reader = tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                let notification = expect_notification(&mut events).await;
                let data = notification.payload().to_value();
                if data["stop"] == true {
                    return (next, events);
                }
                assert_eq!(data["n"], next, "lost or reordered");
                next += 1;
            }
        });
        readers.push((peer, reader));
    }
    // The stalled member: a small receive buffer, a completed handshake,
    // and then no reading at all.
    let tcp = tcp_with_recv_buffer(addr, 4096).await;
    let mut stalled = raw_ws_on(tcp, addr, &Fixture::target("r", "stalled")).await;
    eventually("four peers in the room", || {
        fixture.rooms.get("r").is_some_and(|room| room.len() == 4)
    })
    .await;
    let stalled_peer = fixture.server_peer("r", "stalled").expect("stalled peer");

    let pad = "p".repeat(PAD);
    let mut cut_off_after = None;
    let mut sent = 0u64;
    let mut most_queued = 0;
    while sent < CAP {
        let data = json!({ "n": sent, "pad": pad });
        guard("broadcast answered", sender.request("broadcast", &data))
            .await
            .expect("the sender is served");
        sent += 1;
        most_queued = most_queued.max(stalled_peer.queued_bytes());
        // The documented bound: the limit plus one frame (the pad, its
        // JSON envelope and the per-frame overhead).
        assert!(
            stalled_peer.queued_bytes() <= LIMIT + PAD + 1024,
            "the stalled member's queue passed its limit plus one frame"
        );
        match cut_off_after {
            None if stalled_peer.is_closed() => cut_off_after = Some(sent),
            Some(at) if sent >= at + AFTER => break,
            _ => {}
        }
    }
    let cut_off_after = cut_off_after.expect("the stalled member was never cut off");
    assert!(most_queued > 0, "the stalled member's queue was used");
    guard(
        "stop",
        sender.request("broadcast", &json!({ "stop": true })),
    )
    .await
    .expect("the sender is served");

    // The server closed it with 1008 and took it out of the room.
    let reason = fixture.wait_closed("stalled", &mut Vec::new()).await;
    assert_eq!(reason.code, Some(close_code::POLICY_VIOLATION));
    assert_eq!(reason.reason, SLOW_CONSUMER_REASON);
    assert_eq!(reason.initiator, Initiator::Local);
    assert_eq!(stalled_peer.queued_bytes(), 0, "its queue was freed");
    assert!(fixture.server_peer("r", "stalled").is_none());

    // Every other member got everything.
    for (peer, reader) in readers {
        let (received, mut events) = guard("reader", reader).await.expect("reader");
        assert_eq!(received, sent, "a reader lost notifications");
        assert!(!peer.is_closed());
        peer.close();
        expect_closed(&mut events).await;
    }

    // The stalled member reads at last: a gapless prefix, then the end.
    let mut next = 0u64;
    let mut close_code_seen = None;
    loop {
        match guard("stalled member reads", stalled.next()).await {
            Some(Ok(Message::Text(text))) => {
                let data: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(data["method"], "chat");
                assert_eq!(
                    data["data"]["n"], next,
                    "a gap in what the stalled member got"
                );
                next += 1;
            }
            Some(Ok(Message::Close(frame))) => {
                close_code_seen = frame.map(|f| u16::from(f.code));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert!(next <= cut_off_after, "it got nothing after it was cut off");
    assert!(
        matches!(close_code_seen, None | Some(close_code::POLICY_VIOLATION)),
        "close code {close_code_seen:?}"
    );
    println!(
        "stalled member: cut off after {cut_off_after} broadcasts of {PAD} bytes, had read {next}, \
         close frame: {close_code_seen:?}; most queued: {most_queued} bytes (limit {LIMIT})"
    );

    sender.close();
    expect_closed(&mut sender_events).await;
    drop((sender, sender_events, stalled, stalled_peer));
    fixture.back_to_baseline(tasks).await;
}
