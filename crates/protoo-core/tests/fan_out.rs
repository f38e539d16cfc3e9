//! The fan-out budget: bytes delivered on a sender's behalf (frame length
//! × recipients) per second, charged by `Broadcast::from`; past it the
//! sender's broadcasts are dropped and its requests answered 429, as the
//! incoming rate limits do. On memory transports and paused time, so the
//! counts are exact.

mod common;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protoo_core::codec::encode;
use protoo_core::{
    BroadcastReport, DuplicatePolicy, Joined, Payload, Peer, PeerConfig, PeerError, PeerEvent,
    RATE_LIMITED_CODE, Rate, Room, Rooms,
};
use protoo_transport::{Inbound, memory};
use serde_json::{Value, json};

const MEMBERS: u64 = 99;

/// Admits `MEMBERS` silent members into `room_id`; returns the bytes and
/// frames they will have received.
async fn members(rooms: &Rooms, room_id: &str) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let bytes = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    for i in 0..MEMBERS {
        let (server_end, mut client_end) = memory::pair(4 << 20);
        let Joined { events, .. } = rooms
            .admit(room_id, format!("m{i}"))
            .policy(DuplicatePolicy::Refuse)
            .join(server_end, ())
            .await
            .unwrap();
        events.detach();
        let (bytes, frames) = (bytes.clone(), frames.clone());
        tokio::spawn(async move {
            loop {
                match poll_fn(|cx| client_end.poll_recv(cx)).await {
                    Inbound::Text(text) => {
                        bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Inbound::Binary(_) => {}
                    Inbound::Closed(_) => break,
                }
            }
        });
    }
    (bytes, frames)
}

/// Waits (yielding, on paused time) until `counter` reaches `expected`.
async fn settle(counter: &AtomicU64, expected: u64) -> u64 {
    for _ in 0..1_000_000 {
        if counter.load(Ordering::Relaxed) >= expected {
            break;
        }
        tokio::task::yield_now().await;
    }
    counter.load(Ordering::Relaxed)
}

/// The room example's `broadcast` on the sender's behalf: `chat` to every
/// other member, 429 when the sender owes fan-out bytes.
fn serve_sender(room: Room, joined_peer: Peer, mut events: protoo_core::PeerEvents) {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                PeerEvent::Request(request) => {
                    let sent = room
                        .to_all()
                        .from(&joined_peer)
                        .notify("chat", request.payload())
                        .map_err(PeerError::from)
                        .and_then(BroadcastReport::within_rate);
                    request.respond(sent.map(|_| json!({})));
                }
                PeerEvent::Notification(notification) => {
                    let _ = room
                        .to_all()
                        .from(&joined_peer)
                        .notify("chat", notification.payload());
                }
                PeerEvent::Closed(_) => break,
                PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
            }
        }
    });
}

/// Sends `broadcast` requests one after the other until one is refused:
/// how many were carried out.
async fn until_refused(client: &Peer, data: &Value) -> u64 {
    let mut ok = 0;
    loop {
        match client.request("broadcast", data).await {
            Ok(_) => ok += 1,
            Err(error) => {
                assert_eq!(error.code(), Some(RATE_LIMITED_CODE), "{error:?}");
                return ok;
            }
        }
        assert!(ok < 10_000, "never refused");
    }
}

/// One sender in a room of 100 relays 8 KB messages as fast as it can
/// with a budget of ten broadcasts' worth per second: ten go out at once,
/// then ten each second, and the bytes the members receive never pass
/// `burst + rate × t + one broadcast`. Its requests past the budget are
/// answered 429, its notifications dropped and counted; another sender of
/// the room is not touched.
#[tokio::test(start_paused = true)]
async fn one_sender_gets_its_fan_out_budget_in_bytes_and_no_more() {
    let rooms = Rooms::<()>::new();
    let (delivered, _) = members(&rooms, "big").await;

    let data = json!({ "body": "x".repeat(8_000) });
    let frame = encode::notification("chat", &Payload::from_serialize(&data).unwrap()).unwrap();
    let cost = frame.len() as u64 * MEMBERS;
    // Ten broadcasts less one byte: the tenth puts the sender one byte in
    // debt, and each second pays back ten more.
    let rate = 10 * cost - 1;
    let config = PeerConfig::default().with_fan_out_rate(Rate::per_second(rate));

    let (server_end, client_end) = memory::pair(16 << 20);
    let Joined {
        room,
        peer: sender,
        events,
        ..
    } = rooms
        .admit("big", "sender")
        .config(config)
        .join(server_end, ())
        .await
        .unwrap();
    serve_sender(room.clone(), sender.clone(), events);
    let (client, _client_events) =
        Peer::new("server", client_end, (), PeerConfig::default()).unwrap();

    assert_eq!(until_refused(&client, &data).await, 10);
    assert_eq!(settle(&delivered, 10 * cost).await, 10 * cost);
    // Still in debt: refused at once, by the reader, without reaching the
    // application; a notification is dropped.
    let refused = sender.refused_messages();
    let error = client.request("broadcast", &data).await.unwrap_err();
    assert_eq!(error.code(), Some(RATE_LIMITED_CODE));
    client.notify("broadcast", &data).unwrap();
    let echo = client.request("broadcast", &data).await.unwrap_err();
    assert_eq!(echo.code(), Some(RATE_LIMITED_CODE));
    assert_eq!(sender.refused_messages(), refused + 3);

    // Another member's broadcast is not charged to the sender.
    let other = room.peer("m0").unwrap();
    let report = room.to_all().from(&other).notify("chat", &data).unwrap();
    assert_eq!((report.delivered, report.rate_limited), (99, false));
    // Its 98 fellow members count here (the sender's client does not).
    let extra = frame.len() as u64 * 98;

    for second in 1..=3u64 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(until_refused(&client, &data).await, 10, "second {second}");
        let expected = (10 + 10 * second) * cost + extra;
        assert_eq!(settle(&delivered, expected).await, expected);
        assert!(expected - extra <= rate + rate * second + cost);
    }
    tokio::task::yield_now().await;
    assert_eq!(delivered.load(Ordering::Relaxed), 40 * cost + extra);
    rooms.close_all();
}

/// A broadcast on behalf of a sender in debt is not sent at all (to no
/// node, no peer), counted among the sender's refused messages; one
/// aimed with `except_peer` is not charged; without a budget nothing is
/// charged.
#[tokio::test(start_paused = true)]
async fn a_sender_in_debt_broadcasts_nothing_until_it_has_paid() {
    let rooms = Rooms::<()>::new();
    let (_, frames) = members(&rooms, "r").await;
    let (server_end, _client_end) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let Joined {
        room,
        peer: sender,
        events: _events,
        ..
    } = rooms
        .admit("r", "sender")
        .config(PeerConfig::default().with_fan_out_rate(Rate::per_second(1000)))
        .join(server_end, ())
        .await
        .unwrap();
    let big = "y".repeat(2_000);
    // Larger than the burst: goes out once, whole.
    let report = room.to_all().from(&sender).notify("chat", &big).unwrap();
    assert_eq!(
        (report.delivered, report.skipped, report.rate_limited),
        (99, 1, false)
    );
    let report = room.to_all().from(&sender).notify("chat", &big).unwrap();
    assert_eq!(
        (report.delivered, report.skipped, report.rate_limited),
        (0, 100, true)
    );
    let report = room
        .to_all()
        .from(&sender)
        .local()
        .filter(|_| true)
        .notify("chat", "x")
        .unwrap();
    assert!(report.rate_limited);
    assert!(matches!(report.within_rate(), Err(PeerError::RateLimited)));
    let answer = protoo_core::IntoErrorData::into_error_data(PeerError::RateLimited);
    assert_eq!(answer.code(), Some(RATE_LIMITED_CODE));
    assert_eq!(sender.refused_messages(), 2);
    // Not charged: excluded only.
    let report = room
        .to_all()
        .except_peer(&sender)
        .notify("chat", "x")
        .unwrap();
    assert_eq!(report.delivered, 99);
    assert_eq!(settle(&frames, 2 * 99).await, 2 * 99);

    // Owes 99 × 2 KB: paid back in about 200 s, not before.
    tokio::time::advance(Duration::from_secs(150)).await;
    assert!(
        room.to_all()
            .from(&sender)
            .notify("chat", "x")
            .unwrap()
            .rate_limited
    );
    tokio::time::advance(Duration::from_secs(100)).await;
    assert!(
        !room
            .to_all()
            .from(&sender)
            .notify("chat", "x")
            .unwrap()
            .rate_limited
    );

    // Without a budget, `from` only leaves the sender out.
    let free = room.peer("m1").unwrap();
    for _ in 0..100 {
        let report = room.to_all().from(&free).notify("chat", &big).unwrap();
        assert_eq!((report.delivered, report.rate_limited), (99, false));
    }
    rooms.close_all();
}
