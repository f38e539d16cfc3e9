//! The client's session across a lost connection, on real sockets: a
//! protoo-server room with a resume window, reached through a `CutProxy`
//! that resets, black-holes or refuses the client's connections.

use std::net::SocketAddr;
use std::time::Duration;

use protoo_client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientEvents, ClientOptions, RetryConfig,
    WsConfig,
};
use protoo_server::{
    CloseReason, ConnectionRequest, IncomingRequest, Joined, PeerConfig, PeerEvent, Rooms,
    ServerConfig, WebSocketServer,
};
use protoo_testkit::guard;
use protoo_testkit::proxy::CutProxy;
use serde_json::json;
use tokio::sync::mpsc;

const WINDOW: Duration = Duration::from_secs(15);

/// What the server saw of its peer.
#[derive(Debug)]
enum Seen {
    /// An admission: a new peer, or a resumed session (`true`).
    Admitted(bool),
    Disconnected(CloseReason),
    Resumed(usize),
    Notification(String),
    Closed(CloseReason),
}

/// A protoo-server room `r` whose peers have `window`: `hold` requests go
/// to the test, others are echoed; what the server sees goes to `seen`.
struct Server {
    addr: SocketAddr,
    rooms: Rooms,
    seen: mpsc::UnboundedReceiver<Seen>,
    held: mpsc::UnboundedReceiver<IncomingRequest>,
}

impl Server {
    async fn start(window: Duration) -> Server {
        let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
            .await
            .expect("bind");
        let addr = server.local_addr();
        let rooms = Rooms::new();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (held_tx, held) = mpsc::unbounded_channel();
        let config = PeerConfig::default().with_resume_window(window);
        tokio::spawn({
            let rooms = rooms.clone();
            async move {
                while let Some(request) = server.next_request().await {
                    let serve = serve(
                        request,
                        rooms.clone(),
                        config.clone(),
                        seen_tx.clone(),
                        held_tx.clone(),
                    );
                    tokio::spawn(serve);
                }
            }
        });
        Server {
            addr,
            rooms,
            seen,
            held,
        }
    }

    async fn next_seen(&mut self) -> Seen {
        guard("the server sees something", self.seen.recv())
            .await
            .expect("the server is gone")
    }

    async fn next_held(&mut self) -> IncomingRequest {
        guard("a held request", self.held.recv())
            .await
            .expect("the server is gone")
    }

    fn notify(&self, ns: std::ops::Range<u64>) {
        let peer = self.rooms.get("r").and_then(|room| room.peer("p")).unwrap();
        for n in ns {
            peer.notify("chat", &json!({ "n": n })).unwrap();
        }
    }
}

async fn serve(
    request: ConnectionRequest,
    rooms: Rooms,
    config: PeerConfig,
    seen: mpsc::UnboundedSender<Seen>,
    held: mpsc::UnboundedSender<IncomingRequest>,
) {
    let Ok(Joined {
        mut events,
        resumed,
        ..
    }) = request.admit(&rooms).config(config).join(()).await
    else {
        return;
    };
    let _ = seen.send(Seen::Admitted(resumed));
    while let Some(event) = events.next().await {
        let what = match event {
            PeerEvent::Request(request) if request.method() == "hold" => {
                let _ = held.send(request);
                continue;
            }
            PeerEvent::Request(request) => {
                let data = request.payload().clone();
                request.accept(&data);
                continue;
            }
            PeerEvent::Notification(notification) => {
                Seen::Notification(notification.method().to_owned())
            }
            PeerEvent::Disconnected(reason) => Seen::Disconnected(reason),
            PeerEvent::Resumed { missed } => Seen::Resumed(missed),
            PeerEvent::Closed(reason) => Seen::Closed(reason),
        };
        let _ = seen.send(what);
    }
}

fn client(proxy: &CutProxy, config: ClientConfig) -> (Client, ClientEvents) {
    let url = format!("ws://{}/?roomId=r&peerId=p", proxy.addr());
    let retry = RetryConfig::default().with_min_timeout(Duration::from_millis(20));
    Client::connect(ClientOptions::new(url), config.with_retry(retry))
}

async fn next(events: &mut ClientEvents) -> ClientEvent {
    guard("a client event", events.next())
        .await
        .expect("an event")
}

/// The next event that is not a failed attempt.
async fn next_but_failures(events: &mut ClientEvents) -> ClientEvent {
    loop {
        match next(events).await {
            ClientEvent::Failed(_) => {}
            event => return event,
        }
    }
}

/// The `chat` notifications until `last`: their ns.
async fn chats_until(events: &mut ClientEvents, last: u64) -> Vec<u64> {
    let mut ns = Vec::new();
    loop {
        match next(events).await {
            ClientEvent::Notification(notification) => {
                assert_eq!(notification.method(), "chat");
                let data: serde_json::Value = notification.data().expect("JSON");
                let n = data["n"].as_u64().expect("n");
                ns.push(n);
                if n == last {
                    return ns;
                }
            }
            other => panic!("expected a chat, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_sent_before_a_cut_is_answered_after_it_and_nothing_sent_meanwhile_is_lost() {
    let mut server = Server::start(WINDOW).await;
    let proxy = CutProxy::start(server.addr).await;
    let (client, mut events) = client(&proxy, ClientConfig::default().with_resume_window(WINDOW));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(matches!(server.next_seen().await, Seen::Admitted(false)));

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("hold", &json!({ "n": 1 })).await }
    });
    let held = server.next_held().await;

    // Cut, and no way back for now.
    proxy.refuse(true);
    proxy.cut_all().await;
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    assert!(matches!(server.next_seen().await, Seen::Disconnected(reason) if reason.is_lost()));
    // Both sides send while apart: held on each side.
    client.notify("away", &()).unwrap();
    held.accept(&json!({ "answer": 1 }));
    server.notify(0..20);

    proxy.refuse(false);
    // `away`, held; and the `hold` request again if the server had not
    // confirmed it before the cut (at least once).
    assert!(matches!(
        next_but_failures(&mut events).await,
        ClientEvent::Resumed { missed: 1 | 2 }
    ));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(matches!(server.next_seen().await, Seen::Admitted(true)));
    // The answer and the 20 chats, held; and what the client had not
    // confirmed before the cut, again.
    assert!(matches!(server.next_seen().await, Seen::Resumed(n) if n >= 21));
    assert!(matches!(server.next_seen().await, Seen::Notification(method) if method == "away"));
    // What the server sent while the client was away, in order, once.
    assert_eq!(
        chats_until(&mut events, 19).await,
        (0..20).collect::<Vec<_>>()
    );
    let answer = guard("the answer", pending).await.unwrap().unwrap();
    assert_eq!(answer.as_str(), r#"{"answer":1}"#);
    // And the session goes on.
    let echo = client.request("echo", &json!("after")).await.unwrap();
    assert_eq!(echo.as_str(), r#""after""#);
    client.close();
    assert!(matches!(next(&mut events).await, ClientEvent::Close(_)));
    assert!(matches!(server.next_seen().await, Seen::Closed(reason) if reason.code == Some(1000)));
}

/// A black hole the server does not notice: the client's keepalive finds
/// it, and its new connection takes the session over on the server.
#[tokio::test]
async fn the_client_keepalive_finds_a_black_hole_and_its_reconnect_takes_the_session_over() {
    let mut server = Server::start(WINDOW).await;
    let proxy = CutProxy::start(server.addr).await;
    let ws = WsConfig::default()
        .with_ping_interval(Some(Duration::from_millis(100)))
        .with_pong_timeout(Duration::from_millis(200));
    let config = ClientConfig::default()
        .with_resume_window(WINDOW)
        .with_ws(ws);
    let (client, mut events) = client(&proxy, config);
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(matches!(server.next_seen().await, Seen::Admitted(false)));
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("hold", &()).await }
    });
    let held = server.next_held().await;

    proxy.blackhole_all().await;
    // Written to the black-holed socket: in flight.
    server.notify(0..10);
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    // The client wrote nothing while away; what the server had not yet
    // confirmed of its old connection (the `hold` request, if the black
    // hole came first) is written again: at least once.
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Resumed { missed: 0 | 1 }
    ));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(matches!(server.next_seen().await, Seen::Admitted(true)));
    let Seen::Resumed(missed) = server.next_seen().await else {
        panic!("expected the takeover");
    };
    held.accept(&json!("late"));
    server.notify(10..20);
    let ns = chats_until(&mut events, 19).await;
    let in_flight = ns.iter().filter(|&&n| n < 10).count();
    assert_eq!(
        ns.iter().copied().filter(|&n| n >= 10).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    println!(
        "black hole found by the client: of 10 frames in flight on the old socket, {in_flight} \
         written again on the new connection (missed {missed}); the 10 sent after the takeover \
         once, in order"
    );
    let answer = guard("the answer", pending).await.unwrap().unwrap();
    assert_eq!(answer.as_str(), r#""late""#);
}

#[tokio::test]
async fn past_the_window_pending_requests_fail_and_the_next_connection_is_a_new_session() {
    let window = Duration::from_millis(300);
    let mut server = Server::start(window).await;
    let proxy = CutProxy::start(server.addr).await;
    let (client, mut events) = client(&proxy, ClientConfig::default().with_resume_window(window));
    assert!(matches!(next(&mut events).await, ClientEvent::Open));
    assert!(matches!(server.next_seen().await, Seen::Admitted(false)));
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.request("hold", &()).await }
    });
    let _held = server.next_held().await;
    proxy.refuse(true);
    proxy.cut_all().await;
    assert!(matches!(next(&mut events).await, ClientEvent::Disconnected));
    let result = guard("the window passes", pending).await.unwrap();
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
    assert!(matches!(server.next_seen().await, Seen::Disconnected(_)));
    assert!(matches!(server.next_seen().await, Seen::Closed(reason) if reason.is_lost()));
    proxy.refuse(false);
    // A new session on both sides.
    assert!(matches!(
        next_but_failures(&mut events).await,
        ClientEvent::Open
    ));
    assert!(matches!(server.next_seen().await, Seen::Admitted(false)));
}
