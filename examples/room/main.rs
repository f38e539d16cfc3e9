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
//!
//! With `--redis redis://HOST:PORT` (the `redis` feature), every process on
//! that Redis serves the same rooms: see cluster.rs.

mod alloc;
mod cluster;
mod flags;
mod ops;
mod page;

use clap::Parser;
use protoo_server::{
    ConnectionRequest, DuplicatePolicy, IncomingNotification, IncomingRequest, Payload, Peer,
    PeerEvent, PeerEvents, Room, Rooms, ServerError, WebSocketServer, log,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = flags::Args::parse();
    ops::init_logs(args.log_format);

    let config = args.server_config();
    let (server, mount) = WebSocketServer::mounted(config);
    let local_addr = page::serve(args.listen, mount)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    println!("listening on ws://{local_addr}/");

    let handle = server.handle();
    tokio::spawn(async move {
        ops::shutdown_signal().await;
        handle.shutdown().await;
    });

    // With `--redis`, the rooms span every process on that Redis
    // (cluster.rs); nothing below depends on it.
    let builder = Rooms::builder()
        .peer_config(args.peer_config())
        .duplicate_policy(DuplicatePolicy::Replace)
        .on_member_lost(cluster::member_lost);
    let (builder, cluster) = cluster::join(&args, builder).await?;
    let rooms: Rooms = builder.build();
    ops::start(
        args.metrics,
        server.handle(),
        rooms.clone(),
        cluster.as_ref(),
    )
    .await?;
    let handle = server.serve(move |request| {
        let rooms = rooms.clone();
        async move {
            if let Some((room, peer, events)) = admit(request, &rooms).await {
                run_peer(room, peer, events).await;
            }
        }
    });
    handle.stopped().await;
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// What `admit` hands to the peer's loop.
type Admitted = Option<(Room, Peer, PeerEvents)>;

/// Admits a connection into its room: the query's `roomId` and `peerId`
/// (rejected with 400 without them).
async fn admit(request: ConnectionRequest, rooms: &Rooms) -> Admitted {
    // A peer already here with this id is replaced (the registry's
    // policy): its loop tells the others it left before the newcomer's
    // first request is handled.
    let source = log::Source::from(request.remote_addr());
    match request.admit(rooms).join(()).await {
        Ok(joined) => Some((joined.room, joined.peer, joined.events)),
        Err(ServerError::MissingId(_)) => None,
        Err(error) => {
            // The remote decides how often: within its address's budget.
            protoo_server::remote_warn!(source, error = %log::Remote(&error), "peer refused");
            None
        }
    }
}

/// The per-peer loop: every request and notification of one peer, in order.
async fn run_peer(room: Room, peer: Peer, mut events: PeerEvents) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) if request.method() == "join" => {
                join(&room, &peer, request).await
            }
            PeerEvent::Request(request) => handle_request(&room, &peer, request),
            PeerEvent::Notification(notification) => {
                handle_notification(&room, &peer, notification)
            }
            PeerEvent::Closed(_) => {
                let _ = room
                    .to_all()
                    .except_peer(&peer)
                    .notify("peerClosed", &json!({ "peerId": peer.id() }));
            }
        }
    }
}

#[derive(Deserialize)]
struct Join {
    #[serde(rename = "displayName", default)]
    display_name: Option<String>,
}

/// What a joined peer is listed with (its presence in the room).
#[derive(Serialize, Deserialize)]
struct Listed {
    #[serde(rename = "displayName")]
    display_name: String,
}

#[derive(Serialize)]
struct PeerInfo {
    id: String,
    #[serde(rename = "displayName")]
    display_name: String,
}

/// `join`: the peer is listed from now on; answers the other listed
/// peers, then tells the others about the newcomer. Awaited by the peer's
/// loop, so the peer's next message is handled after it.
async fn join(room: &Room, peer: &Peer, request: IncomingRequest) {
    let display_name = request
        .data::<Join>()
        .ok()
        .and_then(|join| join.display_name)
        .unwrap_or_default();
    let listed = Listed { display_name };
    if let Err(error) = room.set_presence(peer.id(), &listed) {
        return request.reject(500, error.to_string());
    }
    let peers: Vec<PeerInfo> = room
        .presence()
        .await
        .into_iter()
        .filter(|other| other.peer_id != peer.id())
        .filter_map(|other| {
            let info: Listed = other.info_as().ok()?;
            Some(PeerInfo {
                id: other.peer_id,
                display_name: info.display_name,
            })
        })
        .collect();
    request.accept(&json!({ "peers": peers }));
    let _ = room.to_all().except_peer(peer).notify(
        "newPeer",
        &json!({ "id": peer.id(), "displayName": listed.display_name }),
    );
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

fn handle_request(room: &Room, peer: &Peer, request: IncomingRequest) {
    match request.method() {
        "echo" => {
            let mut request = request;
            let data = request.take_payload();
            request.accept(&data);
        }
        "broadcast" => {
            let _ = room
                .to_all()
                .except([peer.id()])
                .notify("chat", request.payload());
            request.accept(&json!({}));
        }
        "chat" => match request.data::<Chat>() {
            Ok(chat) => {
                let data = json!({ "peerId": peer.id(), "text": chat.text });
                let sent = room.to_all().except_peer(peer).notify("chat", &data);
                request.respond(sent.map(|_| json!({})));
            }
            Err(error) => request.respond(Err::<(), _>(error)),
        },
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
        "fail" => match request.data::<Fail>() {
            Ok(fail) => request.reject(fail.code, fail.reason),
            Err(error) => request.respond(Err::<(), _>(error)),
        },
        "crash" => request.respond(Err::<(), _>("handler failed on purpose")),
        "kick" => {
            request.accept(&());
            peer.close();
        }
        _ => request.reject(404, "unknown method"),
    }
}

fn handle_notification(room: &Room, peer: &Peer, notification: IncomingNotification) {
    if notification.method() != "chat" {
        return;
    }
    if let Ok(chat) = notification.data::<Chat>() {
        let data = json!({ "peerId": peer.id(), "text": chat.text });
        let _ = room.to_all().except_peer(peer).notify("chat", &data);
    }
}
