//! Peer behaviour over in-memory transports: requests, responses, timeouts,
//! notifications, close, and what a remote may send.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use protoo_core::{
    CoreError, ErrorData, Initiator, NOT_ANSWERED_REASON, PROTOO_CLOSED_REASON, Peer, PeerConfig,
    PeerError, PeerEvent, RequestError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Hello {
    foo: String,
}

/// Data serde cannot write as JSON (a map with non-string keys).
fn unencodable() -> BTreeMap<Vec<u8>, i32> {
    BTreeMap::from([(vec![1u8], 1)])
}

#[tokio::test]
async fn request_accepted_with_typed_data() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    let answer = tokio::spawn(async move {
        let request = expect_request(&mut client_events).await;
        assert_eq!(request.method(), "hello");
        assert_eq!(
            request.data::<Hello>().unwrap(),
            Hello { foo: "bar".into() }
        );
        assert_eq!(request.peer_id(), "server");
        request.accept(&json!({"text": "hi!"}));
        client_events
    });
    let data = server
        .request("hello", &json!({"foo": "bar"}))
        .await
        .unwrap();
    assert_eq!(data.as_str(), r#"{"text":"hi!"}"#);
    answer.await.unwrap();
    assert_eq!(server.pending_requests(), 0);
}

#[tokio::test]
async fn request_as_deserialises_the_response() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    tokio::spawn(async move {
        let request = expect_request(&mut client_events).await;
        let hello: Hello = request.data().unwrap();
        request.accept(&hello);
        let request = expect_request(&mut client_events).await;
        request.accept(&json!([1, 2]));
        client_events
    });
    let echoed: Hello = server
        .request_as("echo", &Hello { foo: "x".into() })
        .await
        .unwrap();
    assert_eq!(echoed.foo, "x");
    let error = server.request_as::<Hello>("echo", &()).await.unwrap_err();
    assert!(matches!(error, RequestError::InvalidResponse(_)), "{error}");
}

#[tokio::test]
async fn request_rejected_with_code_and_reason() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    tokio::spawn(async move {
        expect_request(&mut client_events)
            .await
            .reject(503, "WHO KNOWS!");
        client_events
    });
    let error = server.request("hello", &()).await.unwrap_err();
    assert!(matches!(error, RequestError::Rejected(_)));
    assert_eq!(error.code(), Some(503));
    assert_eq!(error.reason().as_deref(), Some("WHO KNOWS!"));
    assert_eq!(error.to_string(), "request rejected: WHO KNOWS! (code 503)");
}

#[tokio::test]
async fn respond_with_an_error_answers_500_with_its_message() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    tokio::spawn(async move {
        let request = expect_request(&mut client_events).await;
        request.respond::<(), _>(Err(std::io::Error::other("BOOM!!!")));
        let request = expect_request(&mut client_events).await;
        request.respond::<_, std::io::Error>(Ok(json!({"ok": 1})));
        client_events
    });
    let error = server.request("hello", &()).await.unwrap_err();
    assert_eq!(error.code(), Some(500));
    assert_eq!(error.reason().as_deref(), Some("BOOM!!!"));
    let data = server.request("hello", &()).await.unwrap();
    assert_eq!(data.as_str(), r#"{"ok":1}"#);
}

#[tokio::test]
async fn dropped_request_answers_500() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    tokio::spawn(async move {
        let request = expect_request(&mut client_events).await;
        drop(request);
        client_events
    });
    let error = server.request("hello", &()).await.unwrap_err();
    assert_eq!(error.code(), Some(500));
    assert_eq!(error.reason().as_deref(), Some(NOT_ANSWERED_REASON));
}

#[tokio::test]
async fn unencodable_accept_data_answers_500() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    tokio::spawn(async move {
        expect_request(&mut client_events)
            .await
            .accept(&unencodable());
        client_events
    });
    let error = server.request("hello", &()).await.unwrap_err();
    assert_eq!(error.code(), Some(500));
    let reason = error.reason().unwrap();
    assert!(reason.starts_with("data is not serialisable"), "{reason}");
}

#[tokio::test]
async fn unencodable_request_data_sends_nothing() {
    let (a, mut raw) = pair();
    let (peer, _events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let error = peer.request("m", &unencodable()).await.unwrap_err();
    assert!(matches!(error, RequestError::Encode(_)), "{error}");
    assert_eq!(peer.pending_requests(), 0);
    let error = peer.notify("m", &unencodable()).unwrap_err();
    assert!(matches!(error, PeerError::Encode(_)), "{error}");
    peer.notify("next", &()).unwrap();
    assert_eq!(
        recv_text(&mut raw).await,
        r#"{"notification":true,"method":"next","data":{}}"#
    );
}

#[tokio::test]
async fn request_frame_is_protoo_json() {
    let (a, mut raw) = pair();
    let (peer, _events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let task = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("hello", &json!({"foo": "bar"})).await }
    });
    let frame = recv_json(&mut raw).await;
    let id = frame["id"].as_u64().unwrap();
    assert!(id <= 10_000_000);
    assert_eq!(
        frame,
        json!({"request": true, "id": id, "method": "hello", "data": {"foo": "bar"}})
    );
    // A response whose id is written as a float still matches.
    send_raw(
        &raw,
        &format!(r#"{{"response":true,"id":{id}.0,"ok":true,"data":{{"x":1}}}}"#),
    );
    assert_eq!(task.await.unwrap().unwrap().as_str(), r#"{"x":1}"#);
}

#[tokio::test]
async fn respond_err_forwards_a_remote_error_unchanged() {
    let (a, mut raw) = pair();
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let task = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("ask", &()).await }
    });
    let id = recv_json(&mut raw).await["id"].as_u64().unwrap();
    send_raw(
        &raw,
        &format!(
            r#"{{"response":true,"id":{id},"errorCode":"E_WEIRD","errorReason":{{"detail":[1,2]}}}}"#
        ),
    );
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(error.code(), None);
    assert_eq!(error.reason(), None);
    let data: ErrorData = error.error_data().unwrap().clone();
    assert_eq!(data.raw_code(), Some(r#""E_WEIRD""#));

    send_raw(
        &raw,
        r#"{"request":true,"id":2,"method":"forward","data":{}}"#,
    );
    expect_request(&mut events)
        .await
        .respond(Err::<(), _>(data));
    assert_eq!(
        recv_text(&mut raw).await,
        r#"{"response":true,"id":2,"errorCode":"E_WEIRD","errorReason":{"detail":[1,2]}}"#
    );
}

/// A received payload is answered as it came, byte for byte (spacing,
/// escapes and key order kept), as the codec copies it.
#[tokio::test]
async fn accept_of_a_payload_sends_its_text_as_it_is() {
    let (a, mut raw) = pair();
    let (_peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let data = r#"{"b": [1, 2], "a":"\u00e9 é", "n": 1.50}"#;
    send_raw(
        &raw,
        &format!(r#"{{"request":true,"id":7,"method":"echo","data":{data}}}"#),
    );
    let mut request = expect_request(&mut events).await;
    let payload = request.take_payload();
    request.accept(&payload);
    assert_eq!(
        recv_text(&mut raw).await,
        format!(r#"{{"response":true,"id":7,"ok":true,"data":{data}}}"#)
    );
    // Nested in other data, it is still its own text.
    send_raw(&raw, r#"{"request":true,"id":8,"method":"wrap","data":{}}"#);
    #[derive(serde::Serialize)]
    struct Wrap<'a> {
        echo: &'a protoo_core::Payload,
    }
    expect_request(&mut events)
        .await
        .accept(&Wrap { echo: &payload });
    assert_eq!(
        recv_text(&mut raw).await,
        format!(r#"{{"response":true,"id":8,"ok":true,"data":{{"echo":{data}}}}}"#)
    );
}

#[tokio::test(start_paused = true)]
async fn request_times_out_after_protoo_default() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    let start = Instant::now();
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.request("slow", &()).await }
    });
    let held = expect_request(&mut client_events).await;
    assert_eq!(server.pending_requests(), 1);
    let result = task.await.unwrap();
    assert!(matches!(result, Err(RequestError::Timeout)), "{result:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(server.pending_requests(), 0);

    // The late answer matches nothing and is dropped; the peer keeps working.
    held.accept(&());
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.request("fast", &()).await }
    });
    expect_request(&mut client_events)
        .await
        .accept(&json!({"late": false}));
    assert_eq!(task.await.unwrap().unwrap().as_str(), r#"{"late":false}"#);
}

#[tokio::test(start_paused = true)]
async fn default_timeout_grows_with_pending_requests() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut held = Vec::new();
    for _ in 0..5 {
        let server = server.clone();
        tasks.push(tokio::spawn(
            async move { server.request("slow", &()).await },
        ));
        held.push(expect_request(&mut client_events).await);
    }
    assert_eq!(server.pending_requests(), 5);
    // Sent with 5 pending: 2000 × (15 + 0.1 × 5) ms = 31 s.
    let sixth = tokio::spawn({
        let server = server.clone();
        async move { server.request("slow", &()).await }
    });
    held.push(expect_request(&mut client_events).await);
    for (i, task) in tasks.into_iter().enumerate() {
        assert!(matches!(task.await.unwrap(), Err(RequestError::Timeout)));
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(30_000 + 200 * i as u64)
        );
    }
    assert!(matches!(sixth.await.unwrap(), Err(RequestError::Timeout)));
    assert_eq!(start.elapsed(), Duration::from_secs(31));
    assert_eq!(server.pending_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn fixed_request_timeout() {
    let (a, _raw) = pair();
    let config = PeerConfig::default().with_request_timeout(Duration::from_millis(1500));
    let (peer, _events) = Peer::new("p", a, (), config).unwrap();
    let start = Instant::now();
    let error = peer.request("m", &()).await.unwrap_err();
    assert!(matches!(error, RequestError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(peer.pending_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_request_is_forgotten() {
    let (a, mut raw) = pair();
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(1), peer.request("m", &())).await;
    assert!(cancelled.is_err());
    assert_eq!(peer.pending_requests(), 0);
    // Its late response is dropped without harm.
    let id = recv_json(&mut raw).await["id"].as_u64().unwrap();
    send_raw(&raw, &format!(r#"{{"response":true,"id":{id},"ok":true}}"#));
    send_raw(&raw, r#"{"notification":true,"method":"after"}"#);
    assert_eq!(expect_notification(&mut events).await.method(), "after");
    assert!(!peer.is_closed());
}

#[tokio::test]
async fn pending_requests_fail_when_the_peer_closes() {
    let ((server, mut server_events), (_client, mut client_events)) = peers();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.request("slow", &()).await })
        })
        .collect();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(expect_request(&mut client_events).await);
    }
    assert_eq!(server.pending_requests(), 3);
    server.close();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(RequestError::PeerClosed)));
    }
    assert_eq!(server.pending_requests(), 0);
    assert!(matches!(
        server.request("again", &()).await,
        Err(RequestError::PeerClosed)
    ));
    assert!(matches!(server.notify("n", &()), Err(PeerError::Closed)));
    assert_eq!(expect_closed(&mut server_events).await.code, Some(4000));
}

#[tokio::test]
async fn pending_requests_fail_when_the_remote_closes() {
    let ((server, mut server_events), (client, mut client_events)) = peers();
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.request("slow", &()).await }
    });
    let _held = expect_request(&mut client_events).await;
    client.close();
    assert!(matches!(task.await.unwrap(), Err(RequestError::PeerClosed)));
    assert_eq!(server.pending_requests(), 0);
    let reason = expect_closed(&mut server_events).await;
    assert_eq!(reason.initiator, Initiator::Remote);
}

#[tokio::test]
async fn response_with_unknown_id_is_dropped() {
    let (a, mut raw) = pair();
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let task = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("q", &()).await }
    });
    let id = recv_json(&mut raw).await["id"].as_u64().unwrap();
    for bogus in [
        "10000001",
        "-1",
        "1.5",
        "99999999999999999999",
        "1e400",
        &(id + 1).to_string(),
    ] {
        send_raw(
            &raw,
            &format!(r#"{{"response":true,"id":{bogus},"ok":true,"data":{{"wrong":true}}}}"#),
        );
    }
    // Frames are handled in order: once this request arrives, the bogus
    // responses have been dropped.
    send_raw(&raw, r#"{"request":true,"id":7,"method":"ping"}"#);
    expect_request(&mut events).await.accept(&());
    assert_eq!(
        recv_text(&mut raw).await,
        r#"{"response":true,"id":7,"ok":true,"data":{}}"#
    );
    assert_eq!(peer.pending_requests(), 1);
    send_raw(
        &raw,
        &format!(r#"{{"response":true,"id":{id},"ok":true,"data":{{"right":true}}}}"#),
    );
    assert_eq!(task.await.unwrap().unwrap().as_str(), r#"{"right":true}"#);
}

#[tokio::test]
async fn invalid_frames_are_ignored() {
    let (a, mut raw) = pair();
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    for junk in [
        "null",
        "[]",
        r#""x""#,
        "42",
        "true",
        "",
        "{",
        "{}",
        r#"{"request":true,"id":1}"#,
        r#"{"request":true,"method":"m"}"#,
        r#"{"request":true,"id":"1","method":"m"}"#,
        r#"{"response":true,"ok":true}"#,
        r#"{"notification":true}"#,
        r#"{"notification":true,"method":5}"#,
        r#"{"request":false,"id":1,"method":"m"}"#,
        "\u{0}\u{1}",
    ] {
        send_raw(&raw, junk);
    }
    send_raw(&raw, r#"{"request":true,"id":9,"method":"valid"}"#);
    let request = expect_request(&mut events).await;
    assert_eq!(request.method(), "valid");
    request.accept(&json!({"fine": true}));
    assert_eq!(
        recv_text(&mut raw).await,
        r#"{"response":true,"id":9,"ok":true,"data":{"fine":true}}"#
    );
    assert!(!peer.is_closed());
}

#[tokio::test]
async fn notifications_both_ways() {
    let ((server, mut server_events), (client, mut client_events)) = peers();
    server.notify("hello", &json!({"foo": "bar"})).unwrap();
    let notification = expect_notification(&mut client_events).await;
    assert_eq!(notification.method(), "hello");
    assert_eq!(
        notification.data::<Hello>().unwrap(),
        Hello { foo: "bar".into() }
    );

    client.notify("bye", &()).unwrap();
    let notification = expect_notification(&mut server_events).await;
    assert_eq!(notification.method(), "bye");
    assert!(notification.payload().is_empty_object());
    assert_eq!(notification.into_inner().method, "bye");
}

#[tokio::test]
async fn close_is_reported_once_on_both_sides() {
    let ((server, mut server_events), (client, mut client_events)) = peers();
    server.close_with(4321, "bye");
    server.close(); // no effect: already closed
    assert!(server.is_closed());
    let local = expect_closed(&mut server_events).await;
    assert_eq!(
        (local.code, local.reason.as_str(), local.initiator),
        (Some(4321), "bye", Initiator::Local)
    );
    assert_eq!(server.close_reason(), Some(local));

    let remote = expect_closed(&mut client_events).await;
    assert_eq!(
        (remote.code, remote.reason.as_str(), remote.initiator),
        (Some(4321), "bye", Initiator::Remote)
    );
    client.closed().await;
    server.closed().await;
    assert!(client.is_closed());
}

#[tokio::test]
async fn default_close_is_protoo_4000() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    server.close();
    let reason = expect_closed(&mut client_events).await;
    assert_eq!(
        (reason.code, reason.reason.as_str()),
        (Some(4000), PROTOO_CLOSED_REASON)
    );
}

#[tokio::test]
async fn events_before_the_close_are_delivered_first() {
    let ((server, _server_events), (_client, mut client_events)) = peers();
    server.notify("one", &()).unwrap();
    server.notify("two", &()).unwrap();
    server.close();
    assert_eq!(
        expect_notification(&mut client_events).await.method(),
        "one"
    );
    assert_eq!(
        expect_notification(&mut client_events).await.method(),
        "two"
    );
    assert_eq!(expect_closed(&mut client_events).await.code, Some(4000));
}

#[tokio::test]
async fn events_keep_their_order_through_a_small_queue() {
    let (a, raw) = pair();
    let config = PeerConfig::default().with_event_queue(1);
    let (_peer, mut events) = Peer::new("p", a, (), config).unwrap();
    for n in 0..100 {
        send_raw(
            &raw,
            &format!(r#"{{"notification":true,"method":"n","data":{{"n":{n}}}}}"#),
        );
    }
    for n in 0..100 {
        let notification = expect_notification(&mut events).await;
        assert_eq!(notification.payload().to_value(), json!({"n": n}));
    }
}

#[tokio::test]
async fn local_close_while_the_application_lags() {
    let (a, raw) = pair();
    let config = PeerConfig::default().with_event_queue(1);
    let (peer, mut events) = Peer::new("p", a, (), config).unwrap();
    for _ in 0..5 {
        send_raw(&raw, r#"{"request":true,"id":1,"method":"m"}"#);
    }
    // Let the reader fill the queue and wait for room.
    tokio::task::yield_now().await;
    peer.close();
    let reason = until_closed(&mut events).await;
    assert_eq!(reason.initiator, Initiator::Local);
}

#[tokio::test]
async fn dropped_events_answer_requests_with_500_and_the_peer_keeps_working() {
    let (a, mut raw) = pair();
    let (peer, events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    events.detach();
    send_raw(&raw, r#"{"request":true,"id":3,"method":"m"}"#);
    assert_eq!(
        recv_json(&mut raw).await,
        json!({"response": true, "id": 3, "errorCode": 500, "errorReason": NOT_ANSWERED_REASON})
    );
    let task = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("q", &()).await }
    });
    let id = recv_json(&mut raw).await["id"].as_u64().unwrap();
    send_raw(
        &raw,
        &format!(r#"{{"response":true,"id":{id},"ok":true,"data":[1]}}"#),
    );
    assert_eq!(task.await.unwrap().unwrap().as_str(), "[1]");
    assert!(!peer.is_closed());
}

#[tokio::test]
async fn dropping_every_handle_and_the_events_closes_the_peer() {
    let (a, mut raw) = pair();
    let (peer, events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let other = peer.clone();
    drop(peer);
    events.detach();
    // One handle left: still open.
    other.notify("still", &()).unwrap();
    assert!(recv_text(&mut raw).await.contains("still"));
    drop(other);
    let reason = recv_close(&mut raw).await;
    assert_eq!(
        (reason.code, reason.reason.as_str(), reason.initiator),
        (Some(4000), PROTOO_CLOSED_REASON, Initiator::Remote)
    );
}

#[tokio::test]
async fn events_alone_keep_the_peer_open() {
    let (a, mut raw) = pair();
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    drop(peer);
    send_raw(&raw, r#"{"request":true,"id":4,"method":"m"}"#);
    expect_request(&mut events).await.accept(&());
    assert_eq!(
        recv_text(&mut raw).await,
        r#"{"response":true,"id":4,"ok":true,"data":{}}"#
    );
    raw.close_with(1000, "done");
    let reason = expect_closed(&mut events).await;
    assert_eq!(
        (reason.code, reason.initiator),
        (Some(1000), Initiator::Remote)
    );
}

#[tokio::test]
async fn empty_id_is_refused_and_the_transport_closed() {
    let (a, mut raw) = pair();
    let result = Peer::new("", a, (), PeerConfig::default());
    assert!(matches!(result, Err(CoreError::EmptyId)));
    assert_eq!(recv_close(&mut raw).await.code, Some(4000));
}

#[test]
fn outside_a_runtime_is_an_error() {
    let (a, b) = pair();
    let result = Peer::new("p", a, (), PeerConfig::default());
    assert!(matches!(result, Err(CoreError::NoRuntime)));
    assert!(b.is_closed());
}

#[tokio::test]
async fn peer_on_a_closed_transport_reports_its_close() {
    let (a, raw) = pair();
    raw.close_with(1001, "gone");
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let reason = expect_closed(&mut events).await;
    assert_eq!((reason.code, reason.reason.as_str()), (Some(1001), "gone"));
    assert!(peer.is_closed());
}

#[tokio::test]
async fn concurrent_requests_get_distinct_ids_and_their_own_responses() {
    let (a, mut raw) = pair();
    let (peer, _events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move {
                let data = peer.request("n", &json!({ "i": i })).await.unwrap();
                assert_eq!(data.to_value(), json!({ "i": i }));
            })
        })
        .collect();
    let mut requests = Vec::new();
    for _ in 0..200 {
        requests.push(recv_json(&mut raw).await);
    }
    let ids: HashSet<u64> = requests.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 200);
    assert!(ids.iter().all(|id| *id <= 10_000_000));
    assert_eq!(peer.pending_requests(), 200);
    // Answer in reverse order, echoing the data.
    for request in requests.iter().rev() {
        let response =
            json!({"response": true, "id": request["id"], "ok": true, "data": request["data"]});
        send_raw(&raw, &response.to_string());
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(peer.pending_requests(), 0);
}

#[tokio::test]
async fn application_data_is_typed() {
    use std::sync::Mutex;
    let (a, _raw) = pair();
    let (peer, _events) =
        Peer::new("p", a, Mutex::new(vec!["joined"]), PeerConfig::default()).unwrap();
    peer.clone().data().lock().unwrap().push("spoke");
    assert_eq!(*peer.data().lock().unwrap(), ["joined", "spoke"]);
    assert_eq!(peer.id(), "p");
    assert!(format!("{peer:?}").contains("\"p\""));
}

#[tokio::test]
async fn an_event_loop_answers_every_request() {
    // The loop of the crate docs, driven by a second peer.
    let ((server, mut server_events), (client, _client_events)) = peers();
    let server_loop = tokio::spawn(async move {
        let mut requests = 0;
        while let Some(event) = server_events.next().await {
            match event {
                PeerEvent::Request(request) => {
                    requests += 1;
                    match request.method() {
                        "echo" => {
                            let data = request.payload().clone();
                            request.accept(&data);
                        }
                        "spawned" => {
                            tokio::spawn(async move { request.accept(&json!("later")) });
                        }
                        _ => request.reject(404, "unknown method"),
                    }
                }
                PeerEvent::Notification(_) => {}
                PeerEvent::Closed(reason) => return (requests, reason),
                PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
            }
        }
        unreachable!()
    });
    let data = client.request("echo", &json!({"a": [1]})).await.unwrap();
    assert_eq!(data.as_str(), r#"{"a":[1]}"#);
    let data = client.request("spawned", &()).await.unwrap();
    assert_eq!(data.as_str(), r#""later""#);
    let error = client.request("nope", &()).await.unwrap_err();
    assert_eq!(error.code(), Some(404));
    client.close();
    let (requests, reason) = server_loop.await.unwrap();
    assert_eq!(requests, 3);
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(server.is_closed());
}

#[tokio::test]
async fn a_full_queue_is_a_send_error_and_closes_the_peer() {
    // The remote never reads and the queue holds about 1 KiB.
    let (a, _raw) = protoo_transport::memory::pair(1024);
    let (peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    let mut sent = 0;
    let error = loop {
        match peer.notify("n", &json!({"pad": "x".repeat(100)})) {
            Ok(()) => sent += 1,
            Err(error) => break error,
        }
    };
    assert!(sent > 0);
    assert!(
        matches!(
            error,
            PeerError::Send(protoo_core::TransportError::QueueFull(_))
        ),
        "{error}"
    );
    let reason = expect_closed(&mut events).await;
    assert_eq!(reason.code, Some(protoo_core::close_code::POLICY_VIOLATION));
    assert!(matches!(
        peer.request("m", &()).await,
        Err(RequestError::PeerClosed)
    ));
    assert!(matches!(
        peer.send_frame(protoo_core::Frame::from_static("{}")),
        Err(protoo_core::TransportError::Closed(_))
    ));
}

#[tokio::test]
async fn requests_in_flight_are_tracked_until_answered() {
    let tracker = protoo_transport::Tracker::new();
    let (a, mut raw) = pair();
    let a = a.with_request_tracker(tracker.clone());
    let (_peer, mut events) = Peer::new("p", a, (), PeerConfig::default()).unwrap();
    send_raw(&raw, r#"{"request":true,"id":1,"method":"one"}"#);
    send_raw(&raw, r#"{"request":true,"id":2,"method":"two"}"#);
    let one = expect_request(&mut events).await;
    let two = expect_request(&mut events).await;
    assert_eq!(tracker.count(), 2);
    one.accept(&());
    assert_eq!(tracker.count(), 1);
    let idle = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.idle().await }
    });
    drop(two);
    idle.await.unwrap();
    assert_eq!(tracker.count(), 0);
    assert!(recv_text(&mut raw).await.contains(r#""id":1"#));
    assert!(recv_text(&mut raw).await.contains(r#""errorCode":500"#));
}
