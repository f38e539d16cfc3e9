//! The room server and the raw clients of `sessions.rs`.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use protoo_server::{
    CloseReason, ConnectionRequest, DuplicatePolicy, Joined, Peer, PeerConfig, PeerEvent, Rooms,
    ServerConfig, WebSocketServer, WsConfig,
};
use protoo_testkit::proxy::CutProxy;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{RawWs, guard, handshake_on, upgrade_request};

/// Long enough never to end in a test that resumes.
pub const WINDOW: Duration = Duration::from_secs(15);

// ----- the server -----

/// What the server saw of a peer.
#[derive(Debug)]
pub enum Seen {
    /// An admission: a new peer, or the session of the one in the room
    /// resumed (`true`).
    Admitted(bool),
    Disconnected(CloseReason),
    Resumed(usize),
    Closed(CloseReason),
}

pub struct Server {
    pub addr: SocketAddr,
    pub rooms: Rooms,
    /// `(peer id, what)`, in the order the server saw them.
    pub seen: mpsc::UnboundedReceiver<(String, Seen)>,
}

impl Server {
    pub async fn start(peer: PeerConfig, ws: WsConfig) -> Server {
        let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default().with_ws(ws))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let rooms = Rooms::new();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn({
            let rooms = rooms.clone();
            async move {
                while let Some(request) = server.next_request().await {
                    tokio::spawn(admit(request, rooms.clone(), peer.clone(), seen_tx.clone()));
                }
            }
        });
        Server { addr, rooms, seen }
    }

    /// The next thing the server saw of `peer` (nothing of any other peer
    /// may come first).
    pub async fn next_seen(&mut self, peer: &str) -> Seen {
        let (id, seen) = guard("the server sees something", self.seen.recv())
            .await
            .expect("the server is gone");
        assert_eq!(id, peer, "{seen:?}");
        seen
    }

    pub fn peer(&self, id: &str) -> Peer {
        self.rooms
            .get("r")
            .and_then(|room| room.peer(id))
            .expect("the peer is in the room")
    }

    /// Sends `chat {n}` for each `n` to every member but `except`.
    pub fn chat(&self, except: &str, ns: std::ops::Range<u64>) {
        let room = self.rooms.get("r").expect("the room");
        for n in ns {
            room.to_all()
                .except([except])
                .notify("chat", &json!({ "n": n }))
                .expect("encoded");
        }
    }
}

pub async fn admit(
    request: ConnectionRequest,
    rooms: Rooms,
    config: PeerConfig,
    seen: mpsc::UnboundedSender<(String, Seen)>,
) {
    let Ok(joined) = request
        .admit(&rooms)
        .config(config)
        .policy(DuplicatePolicy::Replace)
        .join(())
        .await
    else {
        return;
    };
    let Joined {
        room,
        peer,
        mut events,
        resumed,
        ..
    } = joined;
    let id = peer.id().to_owned();
    let _ = seen.send((id.clone(), Seen::Admitted(resumed)));
    if resumed {
        // The peer's events go on in the loop of its first admission.
        return;
    }
    let _ = room
        .to_all()
        .except_peer(&peer)
        .notify("newPeer", &json!({ "id": id }));
    while let Some(event) = events.next().await {
        let what = match event {
            PeerEvent::Request(request) => {
                let data = request.payload().clone();
                request.accept(&data);
                continue;
            }
            PeerEvent::Notification(_) => continue,
            PeerEvent::Disconnected(reason) => Seen::Disconnected(reason),
            PeerEvent::Resumed { missed } => Seen::Resumed(missed),
            PeerEvent::Closed(reason) => {
                let _ = room
                    .to_all()
                    .except_peer(&peer)
                    .notify("peerClosed", &json!({ "id": id }));
                Seen::Closed(reason)
            }
        };
        let _ = seen.send((id.clone(), what));
    }
}

pub fn resumable() -> PeerConfig {
    PeerConfig::default().with_resume_window(WINDOW)
}

// ----- the clients -----

/// What a client read.
#[derive(Debug)]
pub enum Got {
    Frame(Value),
    /// A close frame, its code.
    Close(Option<u16>, String),
    /// The connection failed (a reset): the error.
    Error(String),
    /// The stream ended.
    End,
}

/// A raw protoo client: what it reads comes through `got`.
pub struct Client {
    pub sink: SplitSink<RawWs, Message>,
    pub got: mpsc::UnboundedReceiver<Got>,
    /// How many frames the reader task read so far (closed when it ends).
    pub read: watch::Receiver<u64>,
}

impl Client {
    /// Connects to `addr` as `peer` of room `r`.
    pub async fn connect(addr: SocketAddr, peer: &str) -> Client {
        let tcp = guard("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        let request = upgrade_request(
            addr,
            &format!("/?roomId=r&peerId={peer}"),
            Some("protoo"),
            &[],
        );
        let ws = match guard("handshake", handshake_on(tcp, request)).await {
            Ok((ws, _)) => ws,
            Err(refused) => panic!("upgrade refused: {refused:?}"),
        };
        let (sink, mut stream) = ws.split();
        let (tx, got) = mpsc::unbounded_channel();
        let (progress, read) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let got = match stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        Got::Frame(serde_json::from_str(text.as_str()).expect("JSON"))
                    }
                    Some(Ok(Message::Close(frame))) => match frame {
                        Some(frame) => {
                            Got::Close(Some(u16::from(frame.code)), frame.reason.to_string())
                        }
                        None => Got::Close(None, String::new()),
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => Got::Error(error.to_string()),
                    None => Got::End,
                };
                let last = matches!(got, Got::Error(_) | Got::End);
                if matches!(got, Got::Frame(_)) {
                    progress.send_modify(|read| *read += 1);
                }
                if tx.send(got).is_err() || last {
                    return;
                }
            }
        });
        Client { sink, got, read }
    }

    pub async fn next(&mut self) -> Got {
        guard("the client reads", self.got.recv())
            .await
            .expect("the reader is gone")
    }

    /// The next frame, which must be a notification: `(method, data)`.
    pub async fn notification(&mut self) -> (String, Value) {
        match self.next().await {
            Got::Frame(frame) if frame["notification"] == true => (
                frame["method"].as_str().unwrap_or_default().to_owned(),
                frame["data"].clone(),
            ),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    /// A request and its response (which must come next).
    pub async fn echo(&mut self, id: u64, data: Value) -> Value {
        let request = json!({ "request": true, "id": id, "method": "echo", "data": data });
        self.sink
            .send(Message::text(request.to_string()))
            .await
            .expect("request sent");
        match self.next().await {
            Got::Frame(frame) if frame["response"] == true && frame["id"] == id => {
                frame["data"].clone()
            }
            other => panic!("expected the response, got {other:?}"),
        }
    }

    /// Reads `chat {n}` notifications until `n == last`: the ns.
    pub async fn chats_until(&mut self, last: u64) -> Vec<u64> {
        let mut ns = Vec::new();
        loop {
            let (method, data) = self.notification().await;
            assert_eq!(method, "chat", "{data}");
            let n = data["n"].as_u64().expect("n");
            ns.push(n);
            if n == last {
                return ns;
            }
        }
    }

    /// Reads chats until a close frame or the end of the connection: the
    /// chats read, then how it ended.
    pub async fn chats_until_end(&mut self) -> (Vec<u64>, Got) {
        let mut ns = Vec::new();
        loop {
            match self.next().await {
                Got::Frame(frame) if frame["method"] == "chat" => {
                    ns.push(frame["data"]["n"].as_u64().expect("n"));
                }
                Got::Frame(frame) => panic!("unexpected frame {frame}"),
                end => return (ns, end),
            }
        }
    }
}

/// Lost and duplicated frames among `sent` as `received` shows them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub sent: usize,
    pub lost: usize,
    pub duplicated: usize,
}

pub fn tally(sent: std::ops::Range<u64>, received: &[u64]) -> Tally {
    let mut counts = BTreeMap::new();
    for n in received.iter().filter(|n| sent.contains(n)) {
        *counts.entry(*n).or_insert(0usize) += 1;
    }
    Tally {
        sent: sent.clone().count(),
        lost: sent.filter(|n| !counts.contains_key(n)).count(),
        duplicated: counts.values().map(|c| c - 1).sum(),
    }
}

/// Every n of `sent` exactly once, in order, in `received`.
pub fn assert_exactly_once_in_order(sent: std::ops::Range<u64>, received: &[u64]) {
    let got: Vec<u64> = received
        .iter()
        .copied()
        .filter(|n| sent.contains(n))
        .collect();
    let want: Vec<u64> = sent.collect();
    assert_eq!(got, want, "exactly once, in order");
}

/// Bob, a member connected directly: he joins first, then sees alice join.
pub async fn bob_then_alice(server: &mut Server, proxy: &CutProxy) -> (Client, Client) {
    let bob = Client::connect(server.addr, "bob").await;
    assert!(matches!(
        server.next_seen("bob").await,
        Seen::Admitted(false)
    ));
    let alice = Client::connect(proxy.addr(), "alice").await;
    assert!(matches!(
        server.next_seen("alice").await,
        Seen::Admitted(false)
    ));
    let mut bob = bob;
    assert_eq!(
        bob.notification().await,
        ("newPeer".to_owned(), json!({ "id": "alice" }))
    );
    (bob, alice)
}

/// Bob saw nothing of alice since she joined (no `peerClosed`, no second
/// `newPeer`): the echo comes back first.
pub async fn bob_saw_nothing(bob: &mut Client, id: u64) {
    assert_eq!(
        bob.echo(id, json!({ "barrier": id })).await,
        json!({ "barrier": id })
    );
}
