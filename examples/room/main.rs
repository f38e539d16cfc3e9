//! A multi-room signaling server shaped like mediasoup-demo's use of protoo.
//!
//! ```sh
//! cargo run --release --example room -- --listen 127.0.0.1:4443
//! ```
//!
//! Clients connect to `ws://HOST:PORT/?roomId=R&peerId=P` with the `protoo`
//! subprotocol (the JavaScript `protoo-client` does). The same port serves
//! a chat page at `/` (`/?roomId=R&peerId=P&displayName=N`, each optional;
//! see `page.rs`): open it in two tabs and they chat. Rooms are created on
//! demand and removed when their last peer leaves; a second connection with
//! a peer id already in the room replaces the old peer.
//!
//! | request | answer |
//! | --- | --- |
//! | `join {displayName}` | `{peers: [{id, displayName}]}` (the other joined peers); the others get `newPeer {id, displayName}` |
//! | `chat {text}` | `{}`; the others get `chat {peerId, text}` |
//! | `echo` | the request's data, unchanged |
//! | `broadcast` | `{}`; the others get `chat` with the request's data unchanged |
//! | `ask {method, data}` | sends that request back to the same peer; `{response}` or its error |
//! | `fail {code, reason}` | that error |
//! | `crash` | the handler fails: 500 |
//! | `kick` | `{}`, then the server closes the peer (4000) |
//! | anything else | 404 |
//!
//! A notification `chat {text}` is relayed like the request. When a peer
//! leaves, the others get `peerClosed {peerId}`. This example is the contract
//! the interop suites and the benchmarks run against.

mod ops;
mod page;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use protoo_server::core::Rate;
use protoo_server::{
    ConnectionRequest, DuplicatePolicy, ErrorData, IncomingNotification, IncomingRequest, Payload,
    Peer, PeerConfig, PeerEvent, PeerEvents, Room, Rooms, ServerConfig, WebSocketServer, WsConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The room example server.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4443")]
    listen: SocketAddr,
    /// Largest incoming message in bytes (default: the transport's, 1 MiB).
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Outbound queue limit per peer in bytes (default: 4 MiB).
    #[arg(long)]
    max_queue: Option<usize>,
    /// Keepalive ping interval in seconds (default: 60).
    #[arg(long)]
    ping_interval: Option<u64>,
    /// Incoming requests and notifications per second per peer; past it a
    /// request is answered 429 and a notification dropped. 0: no limit.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_RATE)]
    message_rate: u64,
    /// Burst of `--message-rate`, in messages (default: twice the rate).
    #[arg(long)]
    message_burst: Option<u64>,
    /// Incoming request and notification bytes per second per peer,
    /// handled as `--message-rate`. 0: no limit.
    #[arg(long, default_value_t = DEFAULT_BYTE_RATE)]
    byte_rate: u64,
    /// Burst of `--byte-rate`, in bytes (default: twice the rate).
    #[arg(long)]
    byte_burst: Option<u64>,
    /// Bytes of incoming frames a peer may make the server hold (queued
    /// events and unanswered requests); past it a request is answered 503
    /// and a notification dropped.
    #[arg(long, default_value_t = protoo_server::core::DEFAULT_INCOMING_BUDGET)]
    incoming_budget: usize,
    /// Invalid messages after which a peer is closed with 1008. 0: never.
    #[arg(long, default_value_t = DEFAULT_MAX_INVALID_MESSAGES)]
    max_invalid_messages: u32,
    /// Serve `GET /metrics` and `GET /healthz` on this address (built with
    /// the `metrics` feature; see ops.rs).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    log_format: ops::LogFormat,
}

/// Default of `--message-rate`: far above what a signaling client sends
/// (mediasoup-demo's send a few messages a second, a burst of a few dozen
/// when joining), low enough that one sender in a room of 1,000 makes the
/// server send at most 200 × 999 notifications a second (400 × 999 in a
/// burst), well within what it can write.
const DEFAULT_MESSAGE_RATE: u64 = 200;

/// Default of `--byte-rate`: 2 MiB/s, bursts of 4 MiB: a client may send a
/// few messages of the largest size (1 MiB) at once, and no more than that
/// on average.
const DEFAULT_BYTE_RATE: u64 = 2 << 20;

/// Default of `--max-invalid-messages`: a client that sends this many
/// frames that are not protoo messages is broken or hostile.
const DEFAULT_MAX_INVALID_MESSAGES: u32 = 100;

impl Args {
    /// The per-peer settings: the incoming limits from the flags.
    fn peer_config(&self) -> PeerConfig {
        let rate = |per_second: u64, burst: Option<u64>| {
            (per_second > 0).then(|| {
                Rate::per_second(per_second)
                    .with_burst(burst.unwrap_or(per_second.saturating_mul(2)))
            })
        };
        let mut config = PeerConfig::default().with_incoming_budget(self.incoming_budget);
        config.message_rate = rate(self.message_rate, self.message_burst);
        config.byte_rate = rate(self.byte_rate, self.byte_burst);
        config.max_invalid_messages =
            (self.max_invalid_messages > 0).then_some(self.max_invalid_messages);
        config
    }
}

/// What the server keeps per peer: its display name, set by `join` (the
/// peer is listed to others from then on).
#[derive(Debug, Default)]
struct PeerState {
    display_name: Mutex<Option<String>>,
}

impl PeerState {
    fn display_name(&self) -> Option<String> {
        self.display_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    ops::init_logs(args.log_format);

    let mut ws = WsConfig::default();
    if let Some(size) = args.max_message_size {
        ws = ws.with_max_message_size(size).with_max_frame_size(size);
    }
    if let Some(bytes) = args.max_queue {
        ws = ws.with_max_queued_bytes(bytes);
    }
    if let Some(secs) = args.ping_interval {
        ws = ws.with_ping_interval(Some(Duration::from_secs(secs)));
    }
    let config = ServerConfig::default().with_ws(ws);
    let (mut server, mount) = WebSocketServer::mounted(config.clone());
    let local_addr = page::serve(args.listen, mount, &config)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    println!("listening on ws://{local_addr}/");

    let handle = server.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        handle.shutdown().await;
    });

    let rooms: Rooms<PeerState> =
        Rooms::with_defaults(args.peer_config(), DuplicatePolicy::Replace);
    ops::start(args.metrics, server.handle(), rooms.clone()).await?;
    while let Some(request) = server.next_request().await {
        let rooms = rooms.clone();
        tokio::spawn(async move {
            if let Some((room, peer, events)) = admit(request, &rooms).await {
                run_peer(room, peer, events).await;
            }
        });
    }
    server.handle().stopped().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// What `admit` hands to the peer's loop.
type Admitted = Option<(Room<PeerState>, Peer<PeerState>, PeerEvents)>;

/// Accepts a connection into its room, or rejects it with 400.
async fn admit(request: ConnectionRequest, rooms: &Rooms<PeerState>) -> Admitted {
    let param = |name| request.query_param(name).filter(|value| !value.is_empty());
    let (Some(room_id), Some(peer_id)) = (param("roomId"), param("peerId")) else {
        request.reject(400, "missing roomId or peerId");
        return None;
    };
    // A peer already here with this id is replaced (the registry's
    // policy): its loop tells the others it left before the newcomer's
    // first request is handled.
    let admitted = request
        .accept_join(rooms, &room_id, peer_id, PeerState::default())
        .await;
    match admitted {
        Ok(admitted) => Some(admitted),
        Err(error) => {
            tracing::warn!(%error, "peer refused");
            None
        }
    }
}

/// The per-peer loop: every request and notification of one peer, in order.
async fn run_peer(room: Room<PeerState>, peer: Peer<PeerState>, mut events: PeerEvents) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) => handle_request(&room, &peer, request),
            PeerEvent::Notification(notification) => {
                handle_notification(&room, &peer, notification)
            }
            PeerEvent::Closed(_) => {
                let _ = room.broadcast("peerClosed", &json!({ "peerId": peer.id() }), &[peer.id()]);
            }
        }
    }
}

#[derive(Deserialize)]
struct Join {
    #[serde(rename = "displayName", default)]
    display_name: Option<String>,
}

#[derive(Serialize)]
struct PeerInfo {
    id: String,
    #[serde(rename = "displayName")]
    display_name: String,
}

#[derive(Deserialize)]
struct Chat {
    #[serde(default)]
    text: serde_json::Value,
}

#[derive(Deserialize)]
struct Ask {
    method: String,
    #[serde(default)]
    data: Payload,
}

#[derive(Deserialize)]
struct Fail {
    code: u16,
    #[serde(default)]
    reason: String,
}

fn handle_request(room: &Room<PeerState>, peer: &Peer<PeerState>, request: IncomingRequest) {
    match request.method() {
        "echo" => {
            let mut request = request;
            let data = request.take_payload();
            request.accept_payload(&data);
        }
        "broadcast" => {
            let _ = room
                .to_all()
                .except([peer.id()])
                .notify_payload("chat", request.payload());
            request.accept(&json!({}));
        }
        "chat" => request.handle(|chat: Chat| {
            let data = json!({ "peerId": peer.id(), "text": chat.text });
            room.broadcast("chat", &data, &[peer.id()])
                .map(|_| json!({}))
        }),
        "join" => {
            let display_name = request
                .data::<Join>()
                .ok()
                .and_then(|join| join.display_name)
                .unwrap_or_default();
            *peer
                .data()
                .display_name
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(display_name.clone());
            let peers: Vec<PeerInfo> = room
                .peers()
                .into_iter()
                .filter(|other| other.id() != peer.id())
                .filter_map(|other| {
                    Some(PeerInfo {
                        id: other.id().to_owned(),
                        display_name: other.data().display_name()?,
                    })
                })
                .collect();
            request.accept(&json!({ "peers": peers }));
            let _ = room.broadcast(
                "newPeer",
                &json!({ "id": peer.id(), "displayName": display_name }),
                &[peer.id()],
            );
        }
        "ask" => {
            let ask = match request.data::<Ask>() {
                Ok(ask) => ask,
                Err(error) => return request.reject(400, error.to_string()),
            };
            // The answer comes from the same peer: wait for it in a task of
            // its own so this loop goes on reading.
            let peer = peer.clone();
            tokio::spawn(async move {
                let response = peer.request(&ask.method, &ask.data).await;
                request.respond(response.map(|response| json!({ "response": response })));
            });
        }
        "fail" => request.handle(|fail: Fail| Err::<(), _>(ErrorData::new(fail.code, fail.reason))),
        "crash" => request.fail("handler failed on purpose"),
        "kick" => {
            request.accept(&());
            peer.close();
        }
        _ => request.reject(404, "unknown method"),
    }
}

fn handle_notification(
    room: &Room<PeerState>,
    peer: &Peer<PeerState>,
    notification: IncomingNotification,
) {
    if notification.method() != "chat" {
        return;
    }
    if let Ok(chat) = notification.data::<Chat>() {
        let data = json!({ "peerId": peer.id(), "text": chat.text });
        let _ = room.broadcast("chat", &data, &[peer.id()]);
    }
}
