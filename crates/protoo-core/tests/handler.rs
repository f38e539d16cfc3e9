//! The handler layer: routing by method, extractors, answers, the
//! responder, fallback, the close handler, state, concurrency and ordering,
//! and a request to the peer from inside its own handler.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{pair, recv_json, send_raw};
use protoo_core::handler::{Data, Responder, Router, State};
use protoo_core::{
    CloseReason, ErrorData, Method, Payload, Peer, PeerConfig, PeerEvent, PeerEvents, RequestError,
    Room, Rooms,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// Admits "alice" on `transport` into a room of its own registry and runs
/// `router` on it.
async fn run(
    router: Router,
    transport: protoo_core::Transport,
    config: PeerConfig,
) -> JoinHandle<()> {
    let rooms: Rooms = Rooms::new();
    let joined = rooms
        .admit("r", "alice")
        .config(config)
        .join(transport, ())
        .await
        .expect("peer");
    tokio::spawn(async move { router.run(joined).await })
}

/// A peer "alice" in a room, run by `router`; the client end as a peer.
async fn serve(router: Router, config: PeerConfig) -> (Peer, PeerEvents, JoinHandle<()>) {
    let (server_side, client_side) = pair();
    let task = run(router, server_side, config).await;
    let (client, client_events) =
        Peer::new("server", client_side, (), PeerConfig::default()).expect("client");
    (client, client_events, task)
}

/// As [`serve`], the client end as a raw transport.
async fn serve_raw(router: Router, config: PeerConfig) -> (protoo_core::Transport, JoinHandle<()>) {
    let (server_side, client_side) = pair();
    let task = run(router, server_side, config).await;
    (client_side, task)
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sum {
    sum: i64,
}

async fn add(Data(add): Data<Add>) -> Result<Sum, ErrorData> {
    let sum = add
        .a
        .checked_add(add.b)
        .ok_or(ErrorData::new(422, "overflow"))?;
    Ok(Sum { sum })
}

#[tokio::test]
async fn typed_data_answers_and_bad_data_is_400_with_serdes_message() {
    let (client, _events, _task) =
        serve(Router::new().request("add", add), PeerConfig::default()).await;
    let sum: Sum = client
        .request_as("add", &json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(sum, Sum { sum: 3 });
    let error = client
        .request("add", &json!({"a": "one"}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(400));
    let reason = error.reason().unwrap();
    assert!(reason.contains("invalid type"), "{reason}");
}

#[tokio::test]
async fn question_mark_errors_answer_with_their_code() {
    async fn ask(peer: Peer) -> Result<Payload, RequestError> {
        // The remote's rejection is forwarded as it is.
        peer.request("question", &()).await
    }
    let router = Router::new().request("add", add).request("ask", ask);
    let (client, mut events, _task) = serve(router, PeerConfig::default()).await;
    let error = client
        .request("add", &json!({"a": i64::MAX, "b": 1}))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.reason().as_deref()),
        (Some(422), Some("overflow"))
    );

    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request("ask", &()).await }
    });
    let Some(PeerEvent::Request(question)) = events.next().await else {
        panic!("no question")
    };
    question.reject(409, "no answer");
    let error = asking.await.unwrap().unwrap_err();
    assert_eq!(
        (error.code(), error.reason().as_deref()),
        (Some(409), Some("no answer"))
    );
}

#[tokio::test]
async fn unknown_methods_answer_404_without_a_fallback() {
    let (client, _events, _task) =
        serve(Router::new().request("add", add), PeerConfig::default()).await;
    let error = client.request("nope", &()).await.unwrap_err();
    assert_eq!(error.code(), Some(404));
    assert_eq!(
        error.reason().as_deref(),
        Some(protoo_core::handler::UNKNOWN_METHOD_REASON)
    );
}

#[tokio::test]
async fn a_fallback_takes_the_unknown_methods() {
    async fn fallback(method: Method, data: Payload) -> Result<serde_json::Value, ErrorData> {
        Ok(json!({"method": method.as_str(), "data": data}))
    }
    let router = Router::new().request("add", add).fallback(fallback);
    let (client, _events, _task) = serve(router, PeerConfig::default()).await;
    let answer = client.request("other", &json!({"x": 1})).await.unwrap();
    assert_eq!(
        answer.to_value(),
        json!({"method": "other", "data": {"x": 1}})
    );
    let sum: Sum = client
        .request_as("add", &json!({"a": 2, "b": 2}))
        .await
        .unwrap();
    assert_eq!(sum.sum, 4);
}

#[tokio::test]
async fn a_responder_answers_first_and_the_handler_works_on() {
    async fn join(responder: Responder, peer: Peer) -> Result<(), ErrorData> {
        responder.accept(&json!({"peers": []}));
        // After the answer: the remote already has it.
        peer.notify("welcome", &json!({"id": peer.id()}))
            .map_err(|_| ErrorData::new(500, "x"))?;
        Ok(())
    }
    let (client, mut events, _task) =
        serve(Router::new().request("join", join), PeerConfig::default()).await;
    let answer = client.request("join", &()).await.unwrap();
    assert_eq!(answer.to_value(), json!({"peers": []}));
    let Some(PeerEvent::Notification(welcome)) = events.next().await else {
        panic!()
    };
    assert_eq!(welcome.method(), "welcome");
}

#[tokio::test]
async fn an_error_after_the_responder_answered_is_not_sent() {
    async fn join(responder: Responder) -> Result<(), ErrorData> {
        responder.accept(&json!({"ok": 1}));
        Err(ErrorData::new(500, "later failure"))
    }
    #[derive(Deserialize)]
    struct Early {
        fail: bool,
    }
    async fn early(responder: Responder, Data(early): Data<Early>) -> Result<(), ErrorData> {
        if early.fail {
            return Err(ErrorData::new(403, "refused"));
        }
        responder.accept(&"fine");
        Ok(())
    }
    async fn dropped(_responder: Responder) -> Result<(), ErrorData> {
        Ok(())
    }
    let router = Router::new()
        .request("join", join)
        .request("early", early)
        .request("dropped", dropped);
    let (mut remote, _task) = serve_raw(router, PeerConfig::default()).await;
    send_raw(
        &remote,
        r#"{"request":true,"id":1,"method":"join","data":{}}"#,
    );
    send_raw(
        &remote,
        r#"{"request":true,"id":2,"method":"early","data":{"fail":true}}"#,
    );
    send_raw(
        &remote,
        r#"{"request":true,"id":3,"method":"early","data":{"fail":false}}"#,
    );
    send_raw(&remote, r#"{"request":true,"id":4,"method":"dropped"}"#);
    // One answer each, in order: no second answer to request 1.
    let answers = [
        recv_json(&mut remote).await,
        recv_json(&mut remote).await,
        recv_json(&mut remote).await,
        recv_json(&mut remote).await,
    ];
    assert_eq!(
        answers[0],
        json!({"response": true, "id": 1, "ok": true, "data": {"ok": 1}})
    );
    assert_eq!(
        answers[1],
        json!({"response": true, "id": 2, "errorCode": 403, "errorReason": "refused"})
    );
    assert_eq!(
        answers[2],
        json!({"response": true, "id": 3, "ok": true, "data": "fine"})
    );
    assert_eq!(
        answers[3],
        json!({"response": true, "id": 4, "errorCode": 500, "errorReason": protoo_core::NOT_ANSWERED_REASON})
    );
}

#[tokio::test]
async fn notifications_route_by_method_and_bad_data_is_dropped() {
    #[derive(Deserialize)]
    struct Chat {
        text: String,
    }
    async fn chat(Data(chat): Data<Chat>, State(seen): State<mpsc::UnboundedSender<String>>) {
        let _ = seen.send(chat.text);
    }
    async fn other(
        method: Method,
        State(seen): State<mpsc::UnboundedSender<String>>,
    ) -> Result<(), ErrorData> {
        let _ = seen.send(format!("other {method}"));
        Err(ErrorData::new(500, "logged only"))
    }
    let (seen, mut texts) = mpsc::unbounded_channel();
    let router = Router::new()
        .notification("chat", chat)
        .notification_fallback(other)
        .with_state(seen);
    let (client, _events, _task) = serve(router, PeerConfig::default()).await;
    client.notify("chat", &json!({"text": 1})).unwrap();
    client.notify("chat", &json!({"text": "hi"})).unwrap();
    client.notify("typing", &()).unwrap();
    assert_eq!(texts.recv().await.unwrap(), "hi");
    assert_eq!(texts.recv().await.unwrap(), "other typing");
}

#[tokio::test]
async fn the_close_handler_runs_once_with_the_reason() {
    async fn closed(
        peer: Peer,
        reason: CloseReason,
        State(tx): State<mpsc::UnboundedSender<(String, Option<u16>)>>,
    ) {
        let _ = tx.send((peer.id().to_owned(), reason.code));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .request("add", add)
        .on_close(closed)
        .with_state(tx);
    let (client, _events, task) = serve(router, PeerConfig::default()).await;
    client.close();
    task.await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), ("alice".to_owned(), Some(4000)));
    assert!(
        rx.recv().await.is_none(),
        "run returned: the router and its state are gone"
    );
}

#[tokio::test]
async fn state_is_shared_by_the_handlers() {
    async fn count(State(count): State<Arc<AtomicUsize>>) -> Result<usize, ErrorData> {
        Ok(count.fetch_add(1, Ordering::SeqCst) + 1)
    }
    let counter = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .request("count", count)
        .with_state(counter.clone());
    let (client, _events, _task) = serve(router.clone(), PeerConfig::default()).await;
    let (other, _other_events, _other_task) = serve(router, PeerConfig::default()).await;
    assert_eq!(client.request_as::<usize>("count", &()).await.unwrap(), 1);
    assert_eq!(other.request_as::<usize>("count", &()).await.unwrap(), 2);
    assert_eq!(counter.load(Ordering::SeqCst), 2);
}

type Log = Arc<Mutex<Vec<String>>>;

#[tokio::test]
async fn one_at_a_time_handlers_run_in_arrival_order() {
    async fn step(Data(n): Data<u32>, State(log): State<Log>) -> Result<u32, ErrorData> {
        // Numbers from 1: protoo sends a falsy `data` as `{}`.
        log.lock().unwrap().push(format!("start {n}"));
        // A handler that waits: the next event is not read meanwhile.
        for _ in 0..(10 - n) {
            tokio::task::yield_now().await;
        }
        log.lock().unwrap().push(format!("end {n}"));
        Ok(n)
    }
    let log = Log::default();
    let router = Router::new().request("step", step).with_state(log.clone());
    let (mut remote, _task) = serve_raw(router, PeerConfig::default()).await;
    for n in 1..=5 {
        send_raw(
            &remote,
            &format!(r#"{{"request":true,"id":{n},"method":"step","data":{n}}}"#),
        );
    }
    for n in 1..=5 {
        let answer = recv_json(&mut remote).await;
        assert_eq!((&answer["id"], &answer["data"]), (&json!(n), &json!(n)));
    }
    let expected: Vec<String> = (1..=5)
        .flat_map(|n| [format!("start {n}"), format!("end {n}")])
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
}

#[tokio::test]
async fn a_concurrent_handler_does_not_hold_up_the_peer() {
    async fn ask(State(gate): State<Arc<Notify>>) -> Result<&'static str, ErrorData> {
        gate.notified().await;
        Ok("late")
    }
    async fn ping(State(gate): State<Arc<Notify>>) -> Result<&'static str, ErrorData> {
        // Answered while `ask` still waits; then let it go.
        gate.notify_one();
        Ok("pong")
    }
    let gate = Arc::new(Notify::new());
    let router = Router::new()
        .request("ask", ask)
        .concurrent()
        .request("ping", ping)
        .with_state(gate);
    let (client, _events, _task) = serve(router, PeerConfig::default()).await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request_as::<String>("ask", &()).await }
    });
    assert_eq!(
        client.request_as::<String>("ping", &()).await.unwrap(),
        "pong"
    );
    assert_eq!(asking.await.unwrap().unwrap(), "late");
}

/// A request to the peer from inside its own one-at-a-time handler: its
/// response is read by the peer's reader task, not queued behind the
/// handler, so it completes.
#[tokio::test]
async fn a_handler_may_await_a_request_to_its_own_peer() {
    async fn ask(peer: Peer) -> Result<Payload, RequestError> {
        peer.request("question", &()).await
    }
    let (client, mut events, _task) =
        serve(Router::new().request("ask", ask), PeerConfig::default()).await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request("ask", &()).await }
    });
    let Some(PeerEvent::Request(question)) = events.next().await else {
        panic!()
    };
    question.accept(&json!({"answer": 42}));
    assert_eq!(
        asking.await.unwrap().unwrap().to_value(),
        json!({"answer": 42})
    );
}

/// ... unless the remote sends more than the event queue holds meanwhile:
/// the reader then stops reading until the handler takes an event, the
/// response waits behind those events, and the request can only time out.
#[tokio::test(start_paused = true)]
async fn a_full_event_queue_stalls_a_request_to_the_own_peer_until_its_timeout() {
    async fn ask(peer: Peer) -> Result<Payload, RequestError> {
        peer.request("question", &()).await
    }
    let (tx, mut seen) = mpsc::unbounded_channel::<String>();
    let router = Router::new()
        .request("ask", ask)
        .notification_fallback(move |method: Method| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(method.to_string());
            }
        });
    let config = PeerConfig::default()
        .with_event_queue(1)
        .with_request_timeout(Duration::from_secs(5));
    let (mut remote, _task) = serve_raw(router, config).await;
    send_raw(&remote, r#"{"request":true,"id":1,"method":"ask"}"#);
    let question = recv_json(&mut remote).await;
    assert_eq!(question["method"], "question");
    // One notification fills the queue, the second stops the reader; the
    // response comes after them.
    send_raw(&remote, r#"{"notification":true,"method":"n1"}"#);
    send_raw(&remote, r#"{"notification":true,"method":"n2"}"#);
    let response = json!({"response": true, "id": question["id"], "ok": true, "data": {}});
    send_raw(&remote, &response.to_string());
    let started = tokio::time::Instant::now();
    let answer = recv_json(&mut remote).await;
    assert_eq!(answer["errorCode"], 500);
    assert_eq!(answer["errorReason"], "request timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // The loop goes on.
    assert_eq!(seen.recv().await.unwrap(), "n1");
    assert_eq!(seen.recv().await.unwrap(), "n2");
}

#[tokio::test]
async fn extraction_failures_in_notifications_drop_only_that_event() {
    // A responder in a notification handler does not extract.
    async fn wrong(_responder: Responder, State(tx): State<mpsc::UnboundedSender<&'static str>>) {
        let _ = tx.send("wrong");
    }
    async fn right(State(tx): State<mpsc::UnboundedSender<&'static str>>) {
        let _ = tx.send("right");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .notification("wrong", wrong)
        .notification("right", right)
        .with_state(tx);
    let (client, _events, _task) = serve(router, PeerConfig::default()).await;
    client.notify("wrong", &()).unwrap();
    client.notify("right", &()).unwrap();
    assert_eq!(rx.recv().await.unwrap(), "right");
}

#[tokio::test]
async fn eight_extractors_and_the_room() {
    #[allow(clippy::too_many_arguments)]
    async fn all(
        room: Room,
        peer: Peer,
        method: Method,
        payload: Payload,
        Data(n): Data<u32>,
        State(k): State<u32>,
        responder: Responder,
        _again: Peer,
    ) -> Result<(), ErrorData> {
        responder.accept(&json!([
            room.id(),
            peer.id(),
            method.as_str(),
            payload,
            n + k
        ]));
        Ok(())
    }
    let router = Router::new().request("all", all).with_state(10u32);
    let (client, _events, _task) = serve(router, PeerConfig::default()).await;
    let answer = client.request("all", &1).await.unwrap();
    assert_eq!(answer.to_value(), json!(["r", "alice", "all", 1, 11]));
}
