//! The semantics every transport shares, written once and run over the
//! memory pair and over real WebSockets on 127.0.0.1 (with the server as
//! the first side, and with the client as the first side).

mod common;

use std::future::Future;

use protoo_transport::ws::WsConfig;
use protoo_transport::{
    CloseReason, FRAME_OVERHEAD, Frame, Inbound, Initiator, PROTOO_CLOSED_REASON,
    SLOW_CONSUMER_REASON, Transport, TransportError, close_code, memory,
};

use common::{closed, closed_skipping, text, ws_pair};

fn frame(text: impl Into<String>) -> Frame {
    Frame::from(text.into())
}

async fn frames_both_ways<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (mut a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    for i in 0..100 {
        a.send(frame(format!(r#"{{"n":{i}}}"#))).unwrap();
    }
    for i in 0..100 {
        assert_eq!(text(&mut b).await, format!(r#"{{"n":{i}}}"#));
    }
    b.send(Frame::from_static("reply")).unwrap();
    assert_eq!(text(&mut a).await, "reply");
    // Empty and large (multi-read) frames arrive intact too.
    a.send(Frame::from_static("")).unwrap();
    let large = "x".repeat(200_000);
    a.send(frame(large.clone())).unwrap();
    assert_eq!(text(&mut b).await, "");
    assert_eq!(text(&mut b).await, large);
    assert!(!a.is_closed() && !b.is_closed());
}

async fn close_is_seen_on_both_sides<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (mut a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    a.close_with(4001, "bye now");
    assert!(a.is_closed(), "closed as soon as close is called");
    let local = closed(&mut a).await;
    assert_eq!(
        local,
        CloseReason::new(Some(4001), "bye now", Initiator::Local)
    );
    let remote = closed(&mut b).await;
    assert_eq!(
        remote,
        CloseReason::new(Some(4001), "bye now", Initiator::Remote)
    );
    assert!(b.is_closed());
    // Reported once, then the same again.
    assert_eq!(closed(&mut a).await, local);
    assert_eq!(closed(&mut b).await, remote);
}

async fn default_close_is_protoo_4000<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    a.close();
    let reason = closed(&mut b).await;
    assert_eq!(reason.code, Some(close_code::PROTOO_CLOSED));
    assert_eq!(reason.reason, PROTOO_CLOSED_REASON);
    assert_eq!(reason.initiator, Initiator::Remote);
}

async fn frames_sent_before_close_arrive_first<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    for i in 0..50 {
        a.send(frame(format!("{i}"))).unwrap();
    }
    a.close_with(close_code::NORMAL, "done");
    for i in 0..50 {
        assert_eq!(text(&mut b).await, format!("{i}"));
    }
    assert_eq!(
        closed(&mut b).await,
        CloseReason::new(Some(close_code::NORMAL), "done", Initiator::Remote)
    );
}

async fn close_is_idempotent<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (mut a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    a.close_with(4001, "first");
    a.close_with(4002, "second");
    a.close();
    assert_eq!(closed(&mut a).await.code, Some(4001));
    let remote = closed(&mut b).await;
    assert_eq!((remote.code, remote.reason.as_str()), (Some(4001), "first"));
    // The other side closing afterwards changes nothing.
    b.close_with(4003, "late");
    assert_eq!(closed(&mut b).await, remote);
}

async fn send_after_close_gives_the_frame_back<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    let (a, mut b) = make(memory::DEFAULT_QUEUE_LIMIT).await;
    a.close();
    match a.send(Frame::from_static("late")) {
        Err(TransportError::Closed(f)) => assert_eq!(f.as_str(), "late"),
        other => panic!("expected Closed, got {other:?}"),
    }
    closed(&mut b).await;
    assert!(b.is_closed());
    let err = b.send(Frame::from_static("late too")).unwrap_err();
    assert_eq!(err.into_frame().unwrap().as_str(), "late too");
}

/// A peer that stops reading: the sender's queue passes its limit, the
/// transport closes with 1008 and the queue is freed at once.
async fn slow_consumer_is_closed_and_freed<F, Fut>(make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (Transport, Transport)>,
{
    const LIMIT: usize = 64 * 1024;
    let (mut a, mut b) = make(LIMIT).await;
    let payload = "y".repeat(8 * 1024);
    let mut sent = 0usize;
    let rejected = loop {
        match a.send(frame(payload.clone())) {
            Ok(()) => {
                sent += 1;
                // The documented bound: the limit plus one frame.
                assert!(a.sink().queued_bytes() <= LIMIT + payload.len() + FRAME_OVERHEAD);
                // Let the connection move what it can before the next one.
                tokio::task::yield_now().await;
            }
            Err(e) => break e,
        }
    };
    assert!(sent >= LIMIT / (payload.len() + FRAME_OVERHEAD));
    match rejected {
        TransportError::QueueFull(f) => assert_eq!(f.len(), payload.len()),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(a.sink().queued_bytes(), 0, "the queue is freed at once");
    assert!(a.is_closed());
    assert!(matches!(
        a.send(Frame::from_static("{}")),
        Err(TransportError::Closed(_))
    ));
    assert_eq!(
        closed(&mut a).await,
        CloseReason::new(
            Some(close_code::POLICY_VIOLATION),
            SLOW_CONSUMER_REASON,
            Initiator::Local
        )
    );
    // The stalled side finds the transport closed once it reads again:
    // with the 1008 close frame, or, when the writer had to give up on a
    // socket that did not drain, as a lost connection.
    let remote = closed_skipping(&mut b).await;
    assert_eq!(remote.initiator, Initiator::Remote);
    assert!(
        matches!(remote.code, None | Some(close_code::POLICY_VIOLATION)),
        "{remote:?}"
    );
}

macro_rules! semantic_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn frames_both_ways() {
                super::frames_both_ways($make).await;
            }

            #[tokio::test]
            async fn close_is_seen_on_both_sides() {
                super::close_is_seen_on_both_sides($make).await;
            }

            #[tokio::test]
            async fn default_close_is_protoo_4000() {
                super::default_close_is_protoo_4000($make).await;
            }

            #[tokio::test]
            async fn frames_sent_before_close_arrive_first() {
                super::frames_sent_before_close_arrive_first($make).await;
            }

            #[tokio::test]
            async fn close_is_idempotent() {
                super::close_is_idempotent($make).await;
            }

            #[tokio::test]
            async fn send_after_close_gives_the_frame_back() {
                super::send_after_close_gives_the_frame_back($make).await;
            }

            #[tokio::test]
            async fn slow_consumer_is_closed_and_freed() {
                super::slow_consumer_is_closed_and_freed($make).await;
            }
        }
    };
}

semantic_tests!(memory_pair, |limit| async move { memory::pair(limit) });

semantic_tests!(websocket_server_first, |limit| async move {
    ws_pair(WsConfig::default().with_max_queued_bytes(limit)).await
});

semantic_tests!(websocket_client_first, |limit| async move {
    let (server, client) = ws_pair(WsConfig::default().with_max_queued_bytes(limit)).await;
    (client, server)
});

/// Inbound is what the traits promise: the memory pair and WebSockets yield
/// `Text` for every frame, whatever its content.
#[tokio::test]
async fn any_text_is_delivered_as_is() {
    for (a, mut b) in [
        memory::pair(memory::DEFAULT_QUEUE_LIMIT),
        ws_pair(WsConfig::default()).await,
    ] {
        a.send(Frame::from_static("not json at all")).unwrap();
        assert_eq!(b.recv().await, Inbound::Text("not json at all".into()));
    }
}
