//! Shared by the hostile-input, load and fault tests (`hostile_*.rs`): a
//! room server shaped like `examples/room/main.rs` whose every server-side event
//! the test can observe, raw WebSocket framing for byte-level attacks, and
//! the "back to baseline" checks (connections, requests in flight, tasks).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use protoo_server::{
    CloseReason, ConnectionRequest, DuplicatePolicy, IncomingRequest, Joined, Payload, Peer,
    PeerConfig, PeerEvent, PeerEvents, RequestError, Room, Rooms, ServerConfig, ServerHandle,
    WebSocketServer,
};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::{RawWs, eventually, guard, handshake_on, raw_upgrade, upgrade_request};

/// Tasks alive on the test's runtime (tokio's runtime metrics).
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The room server under test.
///
/// Clients connect to `/?roomId=R&peerId=P` (both required, else 400) and
/// are admitted into room `R` (a duplicate id replaces the old peer). Per
/// peer, in order:
///
/// | request | answer |
/// | --- | --- |
/// | `echo` | the request's data |
/// | `broadcast` | `{}`; every other peer of the room gets `chat` with the data unchanged |
/// | `hold` | handed to the test ([`Fixture::held`]), which answers it |
/// | `drop` | dropped unanswered (the remote gets 500 `request not answered`) |
/// | `panic` | a handler task panics holding it (500 too) |
/// | `ask {method, data}` | that request is sent back to the peer; `{response}`, its error, or 500 with our side's error (a timeout, say); the outcome on our side goes to [`Fixture::asked`] |
/// | other | 404 |
///
/// A notification `relay` goes to every other peer of the room as `chat`,
/// its data unchanged. Every server-side peer's close is reported in
/// [`Fixture::closed`].
pub struct Fixture {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub rooms: Rooms,
    /// `(peer id, reason)` of every server-side peer that closed.
    pub closed: mpsc::UnboundedReceiver<(String, CloseReason)>,
    /// The `hold` requests.
    pub held: mpsc::UnboundedReceiver<IncomingRequest>,
    /// `(peer id, outcome)` of the requests `ask` sent.
    pub asked: mpsc::UnboundedReceiver<(String, Result<Payload, RequestError>)>,
    /// Connection requests the application was handed.
    pub requests_seen: Arc<AtomicUsize>,
    /// Peers admitted into a room.
    pub admitted: Arc<AtomicUsize>,
    pub accept_loop: JoinHandle<()>,
}

#[derive(Clone)]
struct Channels {
    closed: mpsc::UnboundedSender<(String, CloseReason)>,
    held: mpsc::UnboundedSender<IncomingRequest>,
    asked: mpsc::UnboundedSender<(String, Result<Payload, RequestError>)>,
    admitted: Arc<AtomicUsize>,
}

impl Fixture {
    /// Starts the server on 127.0.0.1:0; `peer` configures server-side peers.
    pub async fn start(config: ServerConfig, peer: PeerConfig) -> Fixture {
        let mut server = WebSocketServer::bind("127.0.0.1:0", config)
            .await
            .expect("bind");
        let addr = server.local_addr();
        let handle = server.handle();
        let rooms = Rooms::new();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (held_tx, held) = mpsc::unbounded_channel();
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let requests_seen = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let channels = Channels {
            closed: closed_tx,
            held: held_tx,
            asked: asked_tx,
            admitted: admitted.clone(),
        };
        let accept_loop = tokio::spawn({
            let rooms = rooms.clone();
            let seen = requests_seen.clone();
            async move {
                while let Some(request) = server.next_request().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(admit(
                        request,
                        rooms.clone(),
                        peer.clone(),
                        channels.clone(),
                    ));
                }
            }
        });
        Fixture {
            addr,
            handle,
            rooms,
            closed,
            held,
            asked,
            requests_seen,
            admitted,
            accept_loop,
        }
    }

    /// The URL path and query for `peer` in `room`.
    pub fn target(room: &str, peer: &str) -> String {
        format!("/?roomId={room}&peerId={peer}")
    }

    /// The server-side peer `peer` of room `room`, if it is there.
    pub fn server_peer(&self, room: &str, peer: &str) -> Option<Peer> {
        self.rooms.get(room)?.peer(peer)
    }

    /// Waits until the server-side peer `peer_id` closes: its reason. Closes
    /// of other peers met on the way are returned in `others`.
    pub async fn wait_closed(
        &mut self,
        peer_id: &str,
        others: &mut Vec<(String, CloseReason)>,
    ) -> CloseReason {
        loop {
            let (id, reason) = guard("a server-side peer closes", self.closed.recv())
                .await
                .expect("the server's peers are gone");
            if id == peer_id {
                return reason;
            }
            others.push((id, reason));
        }
    }

    /// Waits until every connection, request in flight and task (down to
    /// `tasks`) is gone.
    pub async fn back_to_baseline(&self, tasks: usize) {
        eventually("no connection left", || self.handle.connections() == 0).await;
        eventually("no request in flight", || {
            self.handle.requests_in_flight() == 0
        })
        .await;
        eventually("tasks back to the baseline", || alive_tasks() <= tasks).await;
        assert_eq!(alive_tasks(), tasks, "tasks back to the baseline");
    }
}

async fn admit(request: ConnectionRequest, rooms: Rooms, config: PeerConfig, channels: Channels) {
    let Ok(Joined {
        room, peer, events, ..
    }) = request
        .admit(&rooms)
        .config(config)
        .policy(DuplicatePolicy::Replace)
        .join(())
        .await
    else {
        return;
    };
    channels.admitted.fetch_add(1, Ordering::SeqCst);
    run_peer(room, peer, events, channels).await;
}

#[derive(Deserialize)]
struct Ask {
    method: String,
    #[serde(default)]
    data: Payload,
}

async fn run_peer(room: Room, peer: Peer, mut events: PeerEvents, channels: Channels) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) => handle(&room, &peer, request, &channels),
            PeerEvent::Notification(notification) => {
                if notification.method() == "relay" {
                    let _ = room
                        .to_all()
                        .except_peer(&peer)
                        .notify("chat", notification.payload());
                }
            }
            PeerEvent::Closed(reason) => {
                let _ = channels.closed.send((peer.id().to_owned(), reason));
            }
            PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
        }
    }
}

fn handle(room: &Room, peer: &Peer, request: IncomingRequest, channels: &Channels) {
    match request.method() {
        "echo" => {
            let data = request.payload().clone();
            request.accept(&data);
        }
        "broadcast" => {
            let result = room
                .to_all()
                .except_peer(peer)
                .notify("chat", request.payload());
            request.respond(result.map(|_| json!({})));
        }
        "hold" => {
            let _ = channels.held.send(request);
        }
        "drop" => drop(request),
        "panic" => {
            tokio::spawn(async move {
                let _request = request;
                panic!("handler panics on purpose (expected by the test)");
            });
        }
        "ask" => {
            let ask = match request.data::<Ask>() {
                Ok(ask) => ask,
                Err(error) => return request.reject(400, error.to_string()),
            };
            let peer = peer.clone();
            let asked = channels.asked.clone();
            tokio::spawn(async move {
                let result = peer.request(&ask.method, &ask.data).await;
                match &result {
                    Ok(response) => request.accept(&json!({ "response": response })),
                    Err(RequestError::Rejected(error)) => {
                        request.respond(Err::<(), _>(error.clone()))
                    }
                    Err(error) => request.reject(500, error.to_string()),
                }
                let _ = asked.send((peer.id().to_owned(), result));
            });
        }
        _ => request.reject(404, "unknown method"),
    }
}

// ----- raw WebSocket, byte by byte -----

/// A client frame (masked, as clients must) with `opcode` and FIN bit.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(opcode, fin, payload.len() as u64, true);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A frame header announcing `len` payload bytes (the mask key, when
/// `masked`, is not included).
pub fn frame_header(opcode: u8, fin: bool, len: u64, masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask = u8::from(masked) << 7;
    if len < 126 {
        out.push(mask | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

/// A protoo request frame's text.
pub fn request_text(id: u32, method: &str, data: serde_json::Value) -> String {
    json!({ "request": true, "id": id, "method": method, "data": data }).to_string()
}

/// A TCP connection to the server with the given receive buffer size (to
/// make a client that stops reading fill up quickly).
pub async fn tcp_with_recv_buffer(addr: SocketAddr, bytes: u32) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    guard("tcp connect", socket.connect(addr))
        .await
        .expect("tcp connect")
}

/// A tokio-tungstenite client for `target` (offering `protoo`) on `tcp`.
pub async fn raw_ws_on(tcp: TcpStream, addr: SocketAddr, target: &str) -> RawWs {
    let request = upgrade_request(addr, target, Some("protoo"), &[]);
    match guard("handshake", handshake_on(tcp, request)).await {
        Ok((ws, _)) => ws,
        Err(refused) => panic!("upgrade refused: {refused:?}"),
    }
}

/// A tokio-tungstenite client for `target` (offering `protoo`).
pub async fn raw_ws(addr: SocketAddr, target: &str) -> RawWs {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    raw_ws_on(tcp, addr, target).await
}

/// A TCP connection on which the upgrade to `target` succeeded, for writing
/// frames byte by byte.
pub async fn raw_tcp_ws(addr: SocketAddr, target: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(raw_upgrade(target).as_bytes())
        .await
        .expect("write the upgrade request");
    // Read the answer head byte by byte, so that nothing after it is taken.
    let mut head = Vec::new();
    guard("101 answer", async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tcp.read_u8().await.expect("read the upgrade answer");
            head.push(byte);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "upgrade refused: {head:?}"
    );
    tcp
}

/// A frame the server sent.
#[derive(Debug)]
pub struct ServerFrame {
    pub opcode: u8,
    pub fin: bool,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How reading a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server closed its side (FIN).
    Eof,
    /// The connection was reset.
    Reset,
}

/// Reads everything the server sends until it closes the connection
/// (bounded by the guard): the frames, and how it ended.
pub async fn read_until_end(tcp: &mut TcpStream) -> (Vec<ServerFrame>, Ending) {
    let mut bytes = Vec::new();
    let ending = guard("the server ends the connection", async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) => return Ending::Eof,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(_) => return Ending::Reset,
            }
        }
    })
    .await;
    (parse_server_frames(&bytes), ending)
}

/// Parses unmasked server frames (a truncated last frame is left out).
pub fn parse_server_frames(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    loop {
        if bytes.len() < 2 {
            return frames;
        }
        let fin = bytes[0] & 0x80 != 0;
        let opcode = bytes[0] & 0x0f;
        assert_eq!(bytes[1] & 0x80, 0, "the server masked a frame");
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return frames,
            n => (u64::from(n), 2),
        };
        let end = header + len as usize;
        if bytes.len() < end {
            return frames;
        }
        frames.push(ServerFrame {
            opcode,
            fin,
            payload: bytes[header..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
}

/// A short timer setting for keepalive and handshake tests.
pub const SHORT: Duration = Duration::from_millis(100);
