//! Sessions that outlive their transport (`PeerConfig::resume_window`):
//! the peer stays in its room while its transport is lost, what is sent to
//! it meanwhile is held and written first on the connection that resumes
//! it, and the window, the session's buffer and the registry's bounds end
//! it as documented. Paused time for the windows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use protoo_core::handler::{Missed, Router};
use protoo_core::{
    CoreError, DuplicatePolicy, Identity, Joined, Peer, PeerConfig, PeerEvent, PeerEvents,
    RequestError, Rooms, SESSION_EVICTED_REASON, TAKEN_OVER_REASON,
};
use protoo_transport::{Initiator, SLOW_CONSUMER_REASON, Transport};
use serde_json::json;

const WINDOW: Duration = Duration::from_secs(15);

fn resumable() -> PeerConfig {
    PeerConfig::default().with_resume_window(WINDOW)
}

fn rooms() -> Rooms {
    Rooms::builder()
        .peer_config(resumable())
        .duplicate_policy(DuplicatePolicy::Replace)
        .build()
}

/// Ends the remote side of a pair as a lost connection would (1006, no
/// decision by either side).
fn cut(remote: Transport) {
    let (sink, _stream) = remote.into_parts();
    sink.close(1006, "connection lost");
}

/// The next event, skipping nothing.
async fn next(events: &mut PeerEvents) -> PeerEvent {
    events.next().await.expect("an event")
}

async fn join(rooms: &Rooms, peer: &str) -> (Joined, Transport) {
    let (local, remote) = pair();
    let joined = rooms.admit("r", peer).join(local, ()).await.unwrap();
    (joined, remote)
}

#[tokio::test(start_paused = true)]
async fn a_lost_transport_leaves_the_peer_in_its_room_and_a_new_one_resumes_it() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let (bob, mut raw_bob) = join(&rooms, "bob").await;
    let mut alice_events = alice.events;
    let room = alice.room.clone();

    cut(raw_alice);
    assert!(matches!(
        next(&mut alice_events).await,
        PeerEvent::Disconnected(reason) if reason.code == Some(1006)
    ));
    assert!(alice.peer.is_disconnected() && !alice.peer.is_closed());
    assert!(room.peer("alice").is_some(), "still in its room");
    assert_eq!(rooms.waiting_sessions().0, 1);

    // Sent while it is away: held, in order.
    for n in 0..3 {
        room.to_all()
            .except(["bob"])
            .notify("chat", &json!({ "n": n }))
            .unwrap();
    }
    alice.peer.notify("direct", &json!({})).unwrap();
    // Bob saw nothing of it.
    bob.peer.notify("ping", &()).unwrap();
    assert_eq!(recv_json(&mut raw_bob).await["method"], "ping");

    tokio::time::advance(WINDOW / 2).await;
    let (local, mut raw_again) = pair();
    let mut resumed = rooms.admit("r", "alice").join(local, ()).await.unwrap();
    assert!(resumed.resumed);
    assert!(Peer::ptr_eq(&resumed.peer, &alice.peer));
    // Inert: the events go on where they went; these yield nothing.
    assert!(resumed.events.next().await.is_none());
    for n in 0..3 {
        let frame = recv_json(&mut raw_again).await;
        assert_eq!(
            (frame["method"].clone(), frame["data"]["n"].clone()),
            (json!("chat"), json!(n))
        );
    }
    assert_eq!(recv_json(&mut raw_again).await["method"], "direct");
    assert!(matches!(
        next(&mut alice_events).await,
        PeerEvent::Resumed { missed: 4 }
    ));
    assert!(!alice.peer.is_disconnected());
    assert_eq!(rooms.waiting_sessions(), (0, 0));

    // Newer frames come after, and what the peer sends arrives as before.
    alice.peer.notify("after", &()).unwrap();
    assert_eq!(recv_json(&mut raw_again).await["method"], "after");
    send_raw(
        &raw_again,
        r#"{"notification":true,"method":"hi","data":{}}"#,
    );
    assert!(
        matches!(next(&mut alice_events).await, PeerEvent::Notification(n) if n.method() == "hi")
    );

    // Past the first window nothing ends it: the window starts at each loss.
    tokio::time::advance(WINDOW).await;
    assert!(!alice.peer.is_closed());
    drop(resumed);
    assert!(
        !alice.peer.is_closed(),
        "the resumed admission's events are inert"
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_ends_the_session_as_the_loss_would_have() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let (_bob, _raw_bob) = join(&rooms, "bob").await;
    let mut events = alice.events;
    cut(raw_alice);
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));
    alice.peer.notify("held", &()).unwrap();
    tokio::time::advance(WINDOW - Duration::from_millis(1)).await;
    assert!(!alice.peer.is_closed());
    tokio::time::advance(Duration::from_millis(2)).await;
    let PeerEvent::Closed(reason) = next(&mut events).await else {
        panic!("expected the close");
    };
    assert_eq!(
        (reason.code, reason.initiator),
        (Some(1006), Initiator::Remote)
    );
    assert!(alice.room.peer("alice").is_none());
    assert_eq!(rooms.waiting_sessions(), (0, 0));

    // Too late: a new peer.
    let (again, _raw) = join(&rooms, "alice").await;
    assert!(!again.resumed);
}

#[tokio::test(start_paused = true)]
async fn a_clean_close_ends_the_peer_at_once() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    raw_alice.close(); // 4000 from the remote: a decision, not a loss.
    let PeerEvent::Closed(reason) = next(&mut events).await else {
        panic!("expected the close, not a disconnect");
    };
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(alice.room.peer("alice").is_none());

    // Nothing to resume: the peer closed, or had no window.
    let (spare, _raw_spare) = pair();
    assert!(matches!(
        alice.peer.resume(spare),
        Err(CoreError::NotResumable)
    ));
    let (local, _raw) = pair();
    let (plain, _events) = Peer::new("x", local, (), PeerConfig::default()).unwrap();
    let (spare, _raw_spare) = pair();
    assert!(matches!(plain.resume(spare), Err(CoreError::NotResumable)));
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_takes_over_an_old_one_that_still_looks_open() {
    let rooms = rooms();
    let (alice, mut raw_old) = join(&rooms, "alice").await;
    let mut events = alice.events;
    let (local, mut raw_new) = pair();
    let resumed = rooms.admit("r", "alice").join(local, ()).await.unwrap();
    assert!(resumed.resumed);
    let closed = recv_close(&mut raw_old).await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4000), TAKEN_OVER_REASON)
    );
    assert!(matches!(next(&mut events).await, PeerEvent::Resumed { .. }));
    alice.peer.notify("on the new one", &()).unwrap();
    assert_eq!(recv_json(&mut raw_new).await["method"], "on the new one");
    assert!(!alice.peer.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_request_answered_while_away_is_answered_on_the_resumed_connection() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    send_raw(
        &raw_alice,
        r#"{"request":true,"id":7,"method":"slow","data":{}}"#,
    );
    let PeerEvent::Request(request) = next(&mut events).await else {
        panic!("expected the request");
    };
    cut(raw_alice);
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));
    request.accept(&json!({ "done": true }));
    // A request to the peer keeps its timeout while it is away.
    let asked = tokio::spawn({
        let peer = alice.peer.clone();
        async move { peer.request("question", &()).await }
    });
    tokio::task::yield_now().await;

    let (local, mut raw_again) = pair();
    assert!(
        rooms
            .admit("r", "alice")
            .join(local, ())
            .await
            .unwrap()
            .resumed
    );
    let response = recv_json(&mut raw_again).await;
    assert_eq!(
        (response["id"].clone(), response["data"]["done"].clone()),
        (json!(7), json!(true))
    );
    let question = recv_json(&mut raw_again).await;
    assert_eq!(question["method"], "question");
    send_raw(
        &raw_again,
        &format!(
            r#"{{"response":true,"id":{},"ok":true,"data":{{"a":1}}}}"#,
            question["id"]
        ),
    );
    assert_eq!(asked.await.unwrap().unwrap().as_str(), r#"{"a":1}"#);
}

#[tokio::test(start_paused = true)]
async fn a_request_to_the_peer_times_out_during_the_window_as_before() {
    let rooms = Rooms::builder()
        .peer_config(resumable().with_request_timeout(Duration::from_secs(2)))
        .build();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    cut(raw_alice);
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));
    let outcome = alice.peer.request("question", &()).await;
    assert!(matches!(outcome, Err(RequestError::Timeout)));
    assert!(!alice.peer.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_session_holds_at_most_its_buffer_then_ends_as_a_slow_consumer() {
    let rooms = Rooms::builder()
        .peer_config(resumable().with_resume_buffer(1024))
        .build();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    cut(raw_alice);
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));
    let text = "x".repeat(300);
    let mut sent = 0;
    while alice.peer.notify("big", &text).is_ok() {
        sent += 1;
        assert!(sent < 10, "the buffer bounds what is held");
    }
    let PeerEvent::Closed(reason) = next(&mut events).await else {
        panic!("expected the close");
    };
    assert_eq!(
        (reason.code, reason.reason.as_str()),
        (Some(1008), SLOW_CONSUMER_REASON)
    );
    assert_eq!(rooms.waiting_sessions(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn past_the_registry_bound_the_oldest_waiting_session_ends_first() {
    let rooms = Rooms::builder()
        .peer_config(resumable())
        .max_parked_sessions(2)
        .build();
    let mut peers = Vec::new();
    for name in ["a", "b", "c"] {
        let (joined, raw) = join(&rooms, name).await;
        peers.push((joined, raw));
    }
    let mut events = Vec::new();
    for (joined, raw) in peers {
        let mut peer_events = joined.events;
        cut(raw);
        assert!(matches!(
            next(&mut peer_events).await,
            PeerEvent::Disconnected(_)
        ));
        events.push((joined.peer, peer_events));
    }
    let PeerEvent::Closed(reason) = next(&mut events[0].1).await else {
        panic!("the oldest ends");
    };
    assert_eq!(reason.reason, SESSION_EVICTED_REASON);
    assert!(!events[1].0.is_closed() && !events[2].0.is_closed());
    assert_eq!(rooms.waiting_sessions().0, 2);

    // The bytes bound too.
    let rooms = Rooms::builder()
        .peer_config(resumable())
        .max_parked_bytes(1000)
        .build();
    let (first, raw_first) = join(&rooms, "first").await;
    let (second, raw_second) = join(&rooms, "second").await;
    let (mut first_events, mut second_events) = (first.events, second.events);
    cut(raw_first);
    cut(raw_second);
    assert!(matches!(
        next(&mut first_events).await,
        PeerEvent::Disconnected(_)
    ));
    assert!(matches!(
        next(&mut second_events).await,
        PeerEvent::Disconnected(_)
    ));
    first.peer.notify("held", &"x".repeat(400)).unwrap();
    second.peer.notify("held", &"x".repeat(400)).unwrap();
    assert!(
        matches!(next(&mut first_events).await, PeerEvent::Closed(r) if r.reason == SESSION_EVICTED_REASON)
    );
    assert!(!second.peer.is_closed());
    assert!(rooms.waiting_sessions().1 <= 1000);
}

#[tokio::test(start_paused = true)]
async fn only_the_same_identity_resumes_a_session() {
    let rooms = rooms();
    let expiry = std::time::SystemTime::now() + Duration::from_secs(3600);
    let identity = |subject: &str| Identity::new(subject, "r", expiry);
    let (local, raw) = pair();
    let alice = rooms
        .admit("r", "alice")
        .identity(identity("alice"))
        .join(local, ())
        .await
        .unwrap();
    let mut events = alice.events;
    cut(raw);
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));

    let (local, _raw) = pair();
    let mallory = rooms
        .admit("r", "alice")
        .identity(identity("mallory"))
        .join(local, ())
        .await;
    assert!(matches!(mallory, Err(CoreError::IdentityMismatch(_))));
    let (local, _raw) = pair();
    let anonymous = rooms.admit("r", "alice").join(local, ()).await;
    assert!(matches!(anonymous, Err(CoreError::IdentityMismatch(_))));

    let (local, _raw) = pair();
    let back = rooms
        .admit("r", "alice")
        .identity(identity("alice"))
        .join(local, ())
        .await
        .unwrap();
    assert!(back.resumed && Peer::ptr_eq(&back.peer, &alice.peer));
}

#[tokio::test(start_paused = true)]
async fn the_router_runs_the_resume_hooks_and_returns_at_once_for_a_resume() {
    let rooms = rooms();
    let disconnects = Arc::new(AtomicUsize::new(0));
    let counted = disconnects.clone();
    let router = Router::new()
        .on_disconnected(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_resumed(|peer: Peer, Missed(missed): Missed| async move {
            let _ = peer.notify("resumed", &json!({ "missed": missed }));
        });
    let (joined, raw) = join(&rooms, "alice").await;
    let peer = joined.peer.clone();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run(joined).await }
    });
    cut(raw);
    while !peer.is_disconnected() {
        tokio::task::yield_now().await;
    }
    peer.notify("while away", &()).unwrap();
    let (local, mut raw_again) = pair();
    let resumed = rooms.admit("r", "alice").join(local, ()).await.unwrap();
    router.run(resumed).await; // at once
    assert_eq!(recv_json(&mut raw_again).await["method"], "while away");
    let notice = recv_json(&mut raw_again).await;
    assert_eq!(
        (notice["method"].clone(), notice["data"]["missed"].clone()),
        (json!("resumed"), json!(1))
    );
    assert_eq!(disconnects.load(Ordering::SeqCst), 1);
    peer.close();
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn what_is_sent_after_the_transport_ended_but_before_the_peer_saw_it_is_held() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    // The transport ends; the peer's reader task has not run yet.
    cut(raw_alice);
    alice.peer.notify("right after", &()).unwrap();
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Disconnected(_)
    ));
    alice.peer.notify("later", &()).unwrap();
    let (local, mut raw_again) = pair();
    let resumed = rooms.admit("r", "alice").join(local, ()).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(recv_json(&mut raw_again).await["method"], "right after");
    assert_eq!(recv_json(&mut raw_again).await["method"], "later");
    assert!(matches!(
        next(&mut events).await,
        PeerEvent::Resumed { missed: 2 }
    ));
}

#[tokio::test(start_paused = true)]
async fn what_is_sent_as_the_transport_closes_cleanly_goes_with_the_peer() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    let mut events = alice.events;
    let (sink, _stream) = raw_alice.into_parts();
    sink.close(1000, "bye");
    // Before the peer saw the close: taken, then dropped with the peer.
    alice.peer.notify("right after", &()).unwrap();
    let reason = until_closed(&mut events).await;
    assert_eq!(reason.code, Some(1000));
    assert!(alice.peer.notify("after the close", &()).is_err());
    assert_eq!(rooms.waiting_sessions(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn what_the_ended_transport_refused_goes_to_a_connection_that_takes_over_at_once() {
    let rooms = rooms();
    let (alice, raw_alice) = join(&rooms, "alice").await;
    cut(raw_alice);
    alice.peer.notify("refused", &()).unwrap();
    // Resumed directly by the peer (no await in between): the reader task
    // has not seen the end; the new connection takes over.
    let (local, mut raw_again) = pair();
    alice.peer.resume(local).unwrap();
    alice.peer.notify("after", &()).unwrap();
    assert_eq!(recv_json(&mut raw_again).await["method"], "refused");
    assert_eq!(recv_json(&mut raw_again).await["method"], "after");
}
