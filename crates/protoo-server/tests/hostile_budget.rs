//! Floods over real sockets against the per-peer incoming limits: `ask`
//! requests that pin large frames while the server waits for answers that
//! never come (the byte budget), and notifications sent faster than the
//! rate limit. Each test asserts the server-side accounting (bytes held,
//! messages refused, responses by id) and that the other peers of the room
//! lose nothing.

mod common;
mod support;

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{FutureExt, SinkExt, StreamExt};
use protoo_server::core::{OVER_BUDGET_CODE, OVER_BUDGET_REASON, RATE_LIMITED_CODE, Rate};
use protoo_server::transport::{Inbound, memory};
use protoo_server::{
    DuplicatePolicy, Joined, Peer, PeerConfig, PeerEvent, PeerEvents, RequestError, Rooms,
    ServerConfig,
};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The budget of the ask flood: room for ten asks.
const BUDGET: usize = 1 << 20;

/// Asks the flooder sends.
const ASKS: u32 = 120;

/// Padding of each ask, outside the `data` the server sends back: the
/// frame is large, the server's own request small.
const PADDING: usize = 100 * 1024;

/// The requests a client sent: every response it got, by id.
type Responses = HashMap<u64, Vec<Value>>;

/// An event already waiting, if any (none is awaited).
fn queued_event(events: &mut PeerEvents) -> Option<PeerEvent> {
    events.next().now_or_never().flatten()
}

/// Waits until every server-side peer of `ids` has closed.
async fn wait_all_closed(fixture: &mut Fixture, ids: &[&str]) {
    let mut closed = Vec::new();
    while !ids.iter().all(|id| closed.iter().any(|(c, _)| c == id)) {
        let next = guard("server-side peers close", fixture.closed.recv()).await;
        closed.push(next.expect("the server's peers are gone"));
    }
}

/// Item 1: a client sends 120 `ask` requests of ~100 KB each to a server
/// whose incoming budget is 1 MiB, and never answers the requests the
/// server sends back. The frames of the asks waiting for those answers
/// stay charged until the server's requests time out; past the budget
/// the asks are answered 503 at once. The bytes held never exceed the
/// budget, every ask gets exactly one response (503 at once, or 500 when
/// the server's request timed out), the peer stays open, and a second
/// peer's echoes meanwhile all come back intact.
///
/// The configuration names every limit in play, so that only the byte
/// budget is exercised: the unanswered-request cap (1024) and the event
/// queue (256) are above what the budget lets through, no rate limit,
/// invalid messages never close the peer, the server's requests are small
/// (the padding sits outside the data sent back, so the outbound queue
/// holds a few KB), and the flooder reads everything the server sends
/// while it floods. A client that stopped reading instead would see its
/// server-side peer closed by the outbound queue limit (1008) or by the
/// keepalive, which is the slow-reader rule and not this one. And a flooder
/// written as a protoo `Peer` must keep its `PeerEvents`: dropped (`let
/// (peer, _) = client(..)`), they close that client at once with 1011 `peer
/// events dropped`, and every ask then ends with the peer closed instead of
/// a 503 or a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_flood_is_bounded_by_the_budget_and_every_ask_is_answered_once() {
    // Long enough for the flood to be refused while the first asks wait;
    // the flood's outcome is the same if some expire early.
    const TIMEOUT: Duration = Duration::from_secs(3);
    let peer_config = PeerConfig::default()
        .with_incoming_budget(BUDGET)
        .with_max_unanswered_requests(1024)
        .with_event_queue(256)
        .with_request_timeout(TIMEOUT);
    let mut fixture = Fixture::start(ServerConfig::default(), peer_config).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    let (other, mut other_events) = client(addr, &Fixture::target("flood", "other")).await;
    let flooder = raw_ws(addr, &Fixture::target("flood", "flooder")).await;
    eventually("both peers in the room", || {
        fixture
            .rooms
            .get("flood")
            .is_some_and(|room| room.len() == 2)
    })
    .await;
    let server_side = fixture.server_peer("flood", "flooder").unwrap();

    // The server-side accounting, sampled all along.
    let max_held = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (max_held, done, peer) = (max_held.clone(), done.clone(), server_side.clone());
        async move {
            while !done.load(Ordering::Acquire) {
                max_held.fetch_max(peer.incoming_bytes(), Ordering::AcqRel);
                tokio::task::yield_now().await;
            }
        }
    });

    let (mut sink, mut stream) = flooder.split();
    // Reads everything: responses by id, and the server's requests (never
    // answered), until every ask has its response.
    let reader = tokio::spawn(async move {
        let mut responses = Responses::new();
        let mut questions = 0usize;
        let mut answered = 0;
        while answered < ASKS as usize {
            let message = match stream.next().await {
                Some(Ok(message)) => message,
                other => panic!("the flooder's connection ended: {other:?}"),
            };
            let Message::Text(text) = message else {
                assert!(!message.is_close(), "closed: {message:?}");
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["request"] == true {
                assert_eq!(value["method"], "question");
                questions += 1;
            } else {
                let id = value["id"].as_u64().expect("a response id");
                let entry = responses.entry(id).or_default();
                entry.push(value);
                if entry.len() == 1 {
                    answered += 1;
                }
            }
        }
        (responses, questions, stream)
    });
    let padding = "p".repeat(PADDING);
    let flood = async {
        for id in 1..=ASKS {
            let data = json!({ "method": "question", "data": { "n": id }, "padding": padding });
            let text = request_text(id, "ask", data);
            sink.send(Message::text(text)).await.expect("send an ask");
        }
    };
    // The other peer's echoes run during the flood.
    let echoes = async {
        for n in 0..100u32 {
            let data = json!({ "n": n, "body": "e".repeat(10 * 1024) });
            let echoed = guard("echo", other.request("echo", &data)).await.unwrap();
            assert_eq!(echoed.to_value(), data);
        }
    };
    guard(
        "the flood and the echoes",
        futures_util::future::join(flood, echoes),
    )
    .await;
    let (responses, questions, stream) = guard("every ask answered", reader).await.unwrap();
    done.store(true, Ordering::Release);
    sampler.await.unwrap();

    // Exactly one response per ask.
    assert_eq!(responses.len(), ASKS as usize);
    let mut over_budget = 0u64;
    let mut timed_out = 0u64;
    for id in 1..=u64::from(ASKS) {
        let answers = &responses[&id];
        assert_eq!(answers.len(), 1, "ask {id} answered {answers:?}");
        let answer = &answers[0];
        assert_ne!(answer["ok"], true, "ask {id}: {answer}");
        match answer["errorCode"].as_u64() {
            Some(code) if code == u64::from(OVER_BUDGET_CODE) => {
                assert_eq!(answer["errorReason"], OVER_BUDGET_REASON);
                over_budget += 1;
            }
            Some(500) => {
                assert_eq!(answer["errorReason"], "request timeout");
                timed_out += 1;
            }
            _ => panic!("ask {id}: unexpected answer {answer}"),
        }
    }
    // The asks the application got are the server's questions, each timed
    // out; the others were refused without reaching it.
    let mut outcomes = 0;
    while let Ok((id, outcome)) = fixture.asked.try_recv() {
        assert_eq!(id, "flooder");
        assert!(matches!(outcome, Err(RequestError::Timeout)), "{outcome:?}");
        outcomes += 1;
    }
    assert_eq!(outcomes, timed_out);
    assert_eq!(questions as u64, timed_out);
    assert_eq!(server_side.refused_messages(), over_budget);
    assert!(over_budget > 0, "the flood passed the budget");
    assert!(timed_out > 0, "some asks fit in the budget");

    // Never more than the budget held (a frame is ~100 KB, far below it).
    let max_held = max_held.load(Ordering::Acquire);
    assert!(max_held <= BUDGET, "held {max_held} bytes, budget {BUDGET}");
    assert!(
        max_held > PADDING,
        "the asks were charged ({max_held} bytes)"
    );
    eventually("nothing held once answered", || {
        server_side.incoming_bytes() == 0 && server_side.unanswered_requests() == 0
    })
    .await;
    assert!(!server_side.is_closed(), "the flooder stays connected");
    assert_eq!(fixture.rooms.get("flood").unwrap().len(), 2);
    // The other peer got nothing it did not ask for.
    assert!(queued_event(&mut other_events).is_none());

    let mut ws = sink.reunite(stream).unwrap();
    ws.close(None).await.unwrap();
    other.close();
    expect_closed(&mut other_events).await;
    wait_all_closed(&mut fixture, &["flooder", "other"]).await;
    drop((other, other_events, server_side));
    fixture.back_to_baseline(tasks).await;
}

/// Item 2: notifications past the rate limit are dropped and counted. A
/// flooder sends 500 `relay` notifications as fast as it can to a server
/// that takes 50 per second (burst 50); a polite peer sends 20 within its
/// own limit. The member of the room receives exactly the flooder's
/// notifications that were not counted as refused, in order, and every one
/// of the polite peer's; requests past the limit are answered 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_flood_is_dropped_and_counted_and_others_lose_nothing() {
    const FLOOD: u64 = 500;
    const POLITE: u64 = 20;
    let peer_config = PeerConfig::default().with_message_rate(Rate::per_second(50));
    let mut fixture = Fixture::start(ServerConfig::default(), peer_config).await;
    let tasks = alive_tasks();
    let addr = fixture.addr;

    let (member, mut member_events) = client(addr, &Fixture::target("n", "member")).await;
    let (polite, polite_events) = client(addr, &Fixture::target("n", "polite")).await;
    let mut flooder = raw_ws(addr, &Fixture::target("n", "flooder")).await;
    eventually("three peers in the room", || {
        fixture.rooms.get("n").is_some_and(|room| room.len() == 3)
    })
    .await;
    let server_side = fixture.server_peer("n", "flooder").unwrap();

    let body = "b".repeat(1024);
    for n in 0..FLOOD {
        let data = json!({ "from": "flooder", "n": n, "body": body });
        let text = json!({ "notification": true, "method": "relay", "data": data });
        flooder
            .feed(Message::text(text.to_string()))
            .await
            .expect("send a notification");
    }
    // A request after the flood: its answer (429 or the echo) comes once
    // every notification before it was counted or queued.
    flooder
        .send(Message::text(request_text(
            1,
            "echo",
            json!({ "last": true }),
        )))
        .await
        .unwrap();
    let answer = loop {
        match guard("the flooder's echo", flooder.next()).await {
            Some(Ok(Message::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("the flooder's connection ended: {other:?}"),
        }
    };
    assert_eq!(answer["id"], 1);
    let echo_refused = if answer["ok"] == true {
        assert_eq!(answer["data"], json!({ "last": true }));
        0
    } else {
        assert_eq!(answer["errorCode"], RATE_LIMITED_CODE);
        1
    };
    let refused = server_side.refused_messages() - echo_refused;
    assert!(refused > 0, "the flood passed the rate");
    assert!(refused < FLOOD, "the burst went through");
    let delivered = FLOOD - refused;

    // The polite peer, within its own limit, loses nothing.
    for n in 0..POLITE {
        polite
            .notify("relay", &json!({ "from": "polite", "n": n }))
            .unwrap();
    }
    // The member gets exactly what was not refused, each sender in order.
    let mut next = HashMap::from([("flooder", 0u64), ("polite", 0u64)]);
    let mut from_flooder = 0;
    let mut from_polite = 0;
    let mut polite_seen = Vec::new();
    while from_flooder < delivered || from_polite < POLITE {
        let notification = expect_notification(&mut member_events).await;
        assert_eq!(notification.method(), "chat");
        let data = notification.payload().to_value();
        let from = data["from"].as_str().unwrap().to_owned();
        let n = data["n"].as_u64().unwrap();
        let expected = next.get_mut(from.as_str()).unwrap();
        assert!(n >= *expected, "{from} out of order: {n} after {expected}");
        *expected = n + 1;
        if from == "flooder" {
            from_flooder += 1;
        } else {
            polite_seen.push(n);
            from_polite += 1;
        }
    }
    assert_eq!(polite_seen, (0..POLITE).collect::<Vec<_>>());
    assert_eq!(from_flooder, delivered);
    // The polite peer also gets the flooder's notifications, and was never
    // refused anything.
    let polite_side = fixture.server_peer("n", "polite").unwrap();
    assert_eq!(polite_side.refused_messages(), 0);
    let echoed = guard("member echo", member.request("echo", &json!({ "ok": 1 })))
        .await
        .unwrap();
    assert_eq!(echoed.to_value(), json!({ "ok": 1 }));
    // Nothing more came to the member than counted.
    assert!(
        !matches!(
            queued_event(&mut member_events),
            Some(PeerEvent::Notification(_))
        ),
        "more notifications than delivered"
    );
    assert!(!server_side.is_closed());
    assert_eq!(server_side.incoming_bytes(), 0);

    flooder.close(None).await.unwrap();
    member.close();
    polite.close();
    wait_all_closed(&mut fixture, &["flooder", "member", "polite"]).await;
    drop((
        member,
        member_events,
        polite,
        polite_events,
        server_side,
        polite_side,
    ));
    fixture.back_to_baseline(tasks).await;
}

/// The room example's default rate limit (`--message-rate 200`, burst
/// twice that).
const EXAMPLE_RATE: u64 = 200;
const EXAMPLE_BURST: u64 = 2 * EXAMPLE_RATE;

/// `count` `broadcast` requests sent at once by `client`: how many were
/// carried out and how many answered 429.
async fn broadcast_round(client: &Peer, count: u64) -> (u64, u64) {
    let data: Vec<Value> = (0..count).map(|n| json!({ "n": n })).collect();
    let requests = data.iter().map(|data| client.request("broadcast", data));
    let (mut ok, mut limited) = (0, 0);
    for outcome in futures_util::future::join_all(requests).await {
        match outcome {
            Ok(_) => ok += 1,
            Err(error) if error.code() == Some(RATE_LIMITED_CODE) => limited += 1,
            Err(error) => panic!("unexpected outcome: {error:?}"),
        }
    }
    (ok, limited)
}

/// Item 5: one sender in a room of 1,000 peers sends `broadcast` requests
/// as fast as it can; the server, with the room example's default limit
/// (200 per second, bursts of 400), carries out at most that many and so
/// sends at most that many notifications times the other members, whatever
/// the sender does: the frames delivered to the members are counted.
///
/// Everything is in process on memory transports (1,000 WebSocket
/// connections in a test would mostly measure the machine's file
/// descriptor limit), on paused time, so the counts are exact: a full
/// bucket's burst first, then the rate for each second that passes.
#[tokio::test(start_paused = true)]
async fn one_sender_in_a_room_of_1000_makes_the_server_send_at_most_its_limit_times_the_members() {
    const MEMBERS: u64 = 999;
    const FLOOD: u64 = 2_000;
    let rooms = Rooms::<()>::new();
    let limited = PeerConfig::default()
        .with_message_rate(Rate::per_second(EXAMPLE_RATE).with_burst(EXAMPLE_BURST));
    let delivered = Arc::new(AtomicU64::new(0));
    for i in 0..MEMBERS {
        let (server_end, mut client_end) = memory::pair(1 << 20);
        let Joined { events, .. } = rooms
            .admit("big", format!("m{i}"))
            .config(limited.clone())
            .policy(DuplicatePolicy::Refuse)
            .join(server_end, ())
            .await
            .unwrap();
        // Members send nothing: no loop for their events.
        events.detach();
        let delivered = delivered.clone();
        tokio::spawn(async move {
            loop {
                match poll_fn(|cx| client_end.poll_recv(cx)).await {
                    Inbound::Text(_) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Inbound::Binary(_) => {}
                    Inbound::Closed(_) => break,
                }
            }
        });
    }
    let (server_end, client_end) = memory::pair(16 << 20);
    let Joined {
        room,
        peer: sender,
        mut events,
        ..
    } = rooms
        .admit("big", "sender")
        .config(limited)
        .policy(DuplicatePolicy::Refuse)
        .join(server_end, ())
        .await
        .unwrap();
    assert_eq!(room.len() as u64, MEMBERS + 1);
    // The room example's `broadcast`: every other member gets `chat`.
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let PeerEvent::Request(request) = event {
                let result = room
                    .to_all()
                    .except_peer(&sender)
                    .notify("chat", request.payload());
                request.respond(result.map(|_| json!({})));
            }
        }
    });
    let (client, _client_events) =
        Peer::new("server", client_end, (), PeerConfig::default()).unwrap();

    // Every frame of a carried-out broadcast is queued before its response
    // is sent; the members' readers then take them.
    let settle = |expected: u64| {
        let delivered = delivered.clone();
        async move {
            for _ in 0..1_000_000 {
                if delivered.load(Ordering::Relaxed) >= expected {
                    break;
                }
                tokio::task::yield_now().await;
            }
            delivered.load(Ordering::Relaxed)
        }
    };

    // At once: the burst, no more.
    let (ok, refused) = broadcast_round(&client, FLOOD).await;
    assert_eq!((ok, refused), (EXAMPLE_BURST, FLOOD - EXAMPLE_BURST));
    assert_eq!(settle(ok * MEMBERS).await, EXAMPLE_BURST * MEMBERS);

    // Each second after: the rate, no more.
    for second in 1..=3 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let (ok, refused) = broadcast_round(&client, FLOOD).await;
        assert_eq!(
            (ok, refused),
            (EXAMPLE_RATE, FLOOD - EXAMPLE_RATE),
            "second {second}"
        );
        let expected = (EXAMPLE_BURST + second * EXAMPLE_RATE) * MEMBERS;
        assert_eq!(settle(expected).await, expected);
    }
    // Nothing more arrives later.
    tokio::task::yield_now().await;
    assert_eq!(
        delivered.load(Ordering::Relaxed),
        (EXAMPLE_BURST + 3 * EXAMPLE_RATE) * MEMBERS
    );
    let server_side = rooms.get("big").unwrap().peer("sender").unwrap();
    assert_eq!(
        server_side.refused_messages(),
        4 * FLOOD - EXAMPLE_BURST - 3 * EXAMPLE_RATE
    );
    rooms.close_all();
}
