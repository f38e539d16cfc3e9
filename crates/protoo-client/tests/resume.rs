//! The client's session across a lost connection
//! (`ClientConfig::with_resume_window`), on in-memory transports with paused
//! time: what stays pending, what is held, when the session ends.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use protoo_client::{Client, ClientConfig, ClientError, ClientEvent, ClientEvents, RetryConfig};
use protoo_transport::{Frame, Inbound, Transport, TransportError, memory};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(5);

/// A connector whose attempts succeed while `accepting` is set (the
/// server's end of each connection goes to the test) and are refused
/// otherwise.
struct Server {
    accepting: Arc<AtomicBool>,
    remotes: mpsc::UnboundedReceiver<Transport>,
}

fn client(config: ClientConfig) -> (Client, ClientEvents, Server) {
    let accepting = Arc::new(AtomicBool::new(true));
    let (remotes_tx, remotes) = mpsc::unbounded_channel();
    let flag = accepting.clone();
    let connector = move || {
        let result = if flag.load(Ordering::SeqCst) {
            let (local, remote) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
            let _ = remotes_tx.send(remote);
            Ok(local)
        } else {
            Err(TransportError::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        };
        async move { result }
    };
    let (client, events) = Client::with_connector(connector, config);
    (client, events, Server { accepting, remotes })
}

impl Server {
    fn accept(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::SeqCst);
    }

    async fn next(&mut self) -> Transport {
        self.remotes.recv().await.expect("a connection")
    }
}

fn resumable() -> ClientConfig {
    ClientConfig::default().with_resume_window(WINDOW)
}

/// Ends the server's end as a lost connection would (1006).
fn cut(remote: Transport) {
    let (sink, _stream) = remote.into_parts();
    sink.close(1006, "connection lost");
}

async fn recv_json(transport: &mut Transport) -> Value {
    match transport.recv().await {
        Inbound::Text(text) => serde_json::from_slice(&text).expect("JSON"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn respond(transport: &Transport, request: &Value, data: Value) {
    let response = json!({ "response": true, "id": request["id"], "ok": true, "data": data });
    transport
        .send(Frame::from(response.to_string()))
        .expect("response sent");
}

/// Polls `future` once: a request is written (or held) on its first poll.
async fn poll_once<F: Future + Unpin>(future: &mut F) {
    poll_fn(|cx| {
        assert!(
            Pin::new(&mut *future).poll(cx).is_pending(),
            "still pending"
        );
        Poll::Ready(())
    })
    .await;
}

async fn next(events: &mut ClientEvents) -> ClientEvent {
    events.next().await.expect("an event")
}

#[tokio::test(start_paused = true)]
async fn pending_requests_survive_a_loss_and_what_is_sent_meanwhile_is_held() {
    let (client, mut events, mut server) = client(resumable());
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let mut remote = server.next().await;

    let one = json!({ "n": 1 });
    let mut before = Box::pin(client.request("before", &one));
    poll_once(&mut before).await;
    let request = recv_json(&mut remote).await;
    assert_eq!(request["method"], "before");

    server.accept(false);
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    assert!(matches!(next(&mut events).await, ClientEvent::Failed(1)));
    assert!(!client.is_open() && !client.is_closed());

    // Sent while disconnected: held, in order.
    client.notify("away", &json!({ "n": 2 })).unwrap();
    let three = json!({ "n": 3 });
    let mut later = Box::pin(client.request("later", &three));
    poll_once(&mut later).await;

    server.accept(true);
    // The retry, 1 s later, resumes the session.
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Resumed { missed: 2 }
    ));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(client.is_open());
    let mut remote = server.next().await;
    let away = recv_json(&mut remote).await;
    assert_eq!(
        (away["method"].clone(), away["data"]["n"].clone()),
        (json!("away"), json!(2))
    );
    let later_request = recv_json(&mut remote).await;
    assert_eq!(later_request["method"], "later");

    // The request sent before the loss is answered on the new connection.
    respond(&remote, &request, json!({ "answer": 1 }));
    respond(&remote, &later_request, json!({ "answer": 3 }));
    assert_eq!(before.await.unwrap().as_str(), r#"{"answer":1}"#);
    assert_eq!(later.await.unwrap().as_str(), r#"{"answer":3}"#);

    // And the session goes on: a second loss resumes again.
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Resumed { missed: 0 }
    ));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    client.close();
    assert!(matches!(next(&mut events).await, ClientEvent::Close(_)));
}

#[tokio::test(start_paused = true)]
async fn past_the_window_pending_requests_fail_and_a_new_session_opens() {
    let (client, mut events, mut server) = client(resumable());
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let mut remote = server.next().await;
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("slow", &()).await }
    });
    recv_json(&mut remote).await;
    server.accept(false);
    let lost = Instant::now();
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    // Held, and failed with the session.
    let mut held = Box::pin(client.request("held", &()));
    poll_once(&mut held).await;

    let result = pending.await.unwrap();
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
    assert_eq!(lost.elapsed(), WINDOW);
    assert!(matches!(held.await, Err(ClientError::Disconnected)));
    // No session now: as without a window.
    assert!(matches!(
        client.notify("x", &()),
        Err(ClientError::Disconnected)
    ));

    server.accept(true);
    // Attempts at 0, 1, 3 and 7 s: failed 1 to 3, then a new session.
    for n in 1..=3 {
        assert!(matches!(next(&mut events).await, ClientEvent::Failed(a) if a == n));
    }
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let mut remote = server.next().await;
    client.notify("fresh", &()).unwrap();
    assert_eq!(recv_json(&mut remote).await["method"], "fresh");
}

#[tokio::test(start_paused = true)]
async fn retries_running_out_within_the_window_end_the_session_with_the_client() {
    let config = resumable().with_retry(RetryConfig::default().with_retries(1));
    let (client, mut events, mut server) = client(config);
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let mut remote = server.next().await;
    let mut pending = Box::pin(client.request("slow", &()));
    poll_once(&mut pending).await;
    recv_json(&mut remote).await;
    server.accept(false);
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    assert!(matches!(next(&mut events).await, ClientEvent::Failed(1)));
    assert!(matches!(next(&mut events).await, ClientEvent::Failed(2)));
    assert!(matches!(next(&mut events).await, ClientEvent::Close(None)));
    assert!(matches!(pending.await, Err(ClientError::Closed)));
    assert!(client.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_clean_close_by_the_server_ends_the_session_at_once() {
    let (client, mut events, mut server) = client(resumable());
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let mut remote = server.next().await;
    let mut pending = Box::pin(client.request("slow", &()));
    poll_once(&mut pending).await;
    recv_json(&mut remote).await;
    let start = Instant::now();
    remote.close_with(1000, "bye");
    assert!(matches!(pending.await, Err(ClientError::Disconnected)));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    // A new session: Open without Resumed.
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let remote = server.next().await;
    // 4000 ends the client for good, as without a window.
    remote.close();
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Close(Some(reason)) if reason.code == Some(4000)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_local_close_while_disconnected_fails_what_is_held() {
    let (client, mut events, mut server) = client(resumable());
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let remote = server.next().await;
    server.accept(false);
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    let mut held = Box::pin(client.request("held", &()));
    poll_once(&mut held).await;
    client.close();
    assert!(matches!(held.await, Err(ClientError::Closed)));
    loop {
        match next(&mut events).await {
            ClientEvent::Failed(_) => {}
            ClientEvent::Close(None) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn what_is_held_while_disconnected_is_bounded_by_the_resume_buffer() {
    let peer = protoo_core::PeerConfig::default()
        .with_resume_window(WINDOW)
        .with_resume_buffer(1_000);
    let (client, mut events, mut server) = client(ClientConfig::default().with_peer(peer));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    let remote = server.next().await;
    server.accept(false);
    cut(remote);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    let mut pending = Box::pin(client.request("held", &()));
    poll_once(&mut pending).await;
    // Held up to the buffer; past it the session ends (1008), and what it
    // held with it.
    let mut sent = 0;
    let error = loop {
        match client.notify("away", &json!({ "pad": "x".repeat(100) })) {
            Ok(()) => sent += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, ClientError::Send(_)), "{error:?}");
    assert!((4..=6).contains(&sent), "{sent} held");
    assert!(matches!(pending.await, Err(ClientError::Disconnected)));
    assert!(matches!(
        client.notify("x", &()),
        Err(ClientError::Disconnected)
    ));
    // The next connection opens a new session.
    server.accept(true);
    assert!(matches!(next(&mut events).await, ClientEvent::Failed(1)));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
}
