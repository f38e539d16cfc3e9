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
//! | `join {displayName}` | `{peers: [{id, displayName}]}` (the other joined peers), once the others got `newPeer {id, displayName}`; a `displayName` over 256 bytes: 400 `displayName too long`, nothing listed or sent (one that is not a string joins with an empty name). Idempotent: a peer already joined gets the current list again, and nobody gets a second `newPeer` (its name stays the first one) |
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
//! Sessions survive a blip (`--resume-window SECS`, default 15; 0 turns it
//! off, protoo's behaviour): a peer whose connection is lost without a
//! close from its client stays in its room for the window, the others see
//! nothing, and what is sent to it is held. A connection with the same
//! `roomId` and `peerId` (and token subject, with tokens) within the
//! window resumes the session: the held notifications and requests come
//! first, in order, then a notification `resumed {missed}` (how many were
//! held). An old connection that still looked open is closed with 4000. A
//! client that runs `join` again on every `open` (idempotent, above) gets
//! the list without anyone seeing it leave or join. At the end of the
//! window the peer leaves as before (`peerClosed`).
//!
//! Each peer's requests are handled one at a time, in order (`ask` excepted:
//! it waits for the same peer's answer, so it runs beside the others), by
//! the handlers below on a `protoo_server::handler::Router`.
//!
//! With `--redis redis://HOST:PORT` (the `redis` feature), every process on
//! that Redis serves the same rooms; `--redis-sentinel HOST:PORT[,...]
//! --redis-master NAME` and `--redis-cluster HOST:PORT[,...]` do the same
//! over Redis Sentinel or a Redis Cluster: see cluster.rs. With
//! `--auth-secret` or `--auth-public-key`, every connection needs a token
//! (`room token` mints one): see auth.rs.

mod alloc;
mod auth;
mod cluster;
mod flags;
mod ops;
mod page;

use std::convert::Infallible;
use std::error::Error;

use clap::Parser;
use protoo_server::codec::EncodeError;
use protoo_server::handler::{Data, Missed, Responder, Router, State};
use protoo_server::{
    CloseReason, DuplicatePolicy, ErrorData, Initiator, IntoErrorData, Members, Payload, Peer,
    PeerError, Presence, RequestError, Room, Rooms, ServerError, WebSocketServer, log, remote_warn,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The longest `displayName` a peer may join with, in bytes: `join`
/// answers every listed name, so the names bound what one `join` costs.
const MAX_DISPLAY_NAME: usize = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = flags::Args::parse();
    if let Some(command) = &args.command {
        return auth::run(command);
    }
    args.check_features()?;
    ops::init_logs(args.log_format);

    // With `--auth-secret` or `--auth-public-key`, a token on every
    // connection (auth.rs).
    let config = auth::configure(&args.auth, args.server_config())?;
    let (server, mount) = WebSocketServer::mounted(config);
    let local_addr = page::serve(args.listen, mount)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    println!("listening on ws://{local_addr}/");
    let handle = server.handle();
    // A shutdown (SIGTERM, Ctrl-C) drains: the connections are closed with
    // 1012 over `--drain-period` (flags.rs), and their clients come back on
    // other nodes, where their sessions move.
    tokio::spawn(async move {
        ops::shutdown_signal().await;
        handle.shutdown().await;
    });

    // A peer already here with the same id is replaced: its close handler
    // runs before the newcomer's first request is handled. With `--redis`,
    // the rooms span every process on that Redis (cluster.rs), and a member
    // lost with its process is announced as if it had left.
    let builder = Rooms::builder()
        .peer_config(args.peer_config())
        .duplicate_policy(DuplicatePolicy::Replace)
        .on_member_lost(|lost| Some(("peerClosed", json!({ "peerId": lost.peer_id }))));
    let (builder, cluster) = cluster::Cluster::join(&args, builder).await?;
    let rooms: Rooms = builder.build();
    let draining = rooms.clone();
    #[cfg(feature = "metrics")]
    ops::metrics::start(&args, server.handle(), rooms.clone(), cluster.link()).await?;

    let router = Router::new()
        .request("join", join)
        .request("chat", chat)
        .notification("chat", chat)
        .request("echo", echo)
        .request("broadcast", broadcast)
        .request("ask", ask)
        .concurrent()
        .request("fail", fail)
        .request("crash", crash)
        .request("kick", kick)
        .on_resumed(resumed)
        .on_close(left)
        .with_state(rooms.is_clustered());
    let handle = server.serve(move |request| {
        let (rooms, router) = (rooms.clone(), router.clone());
        async move {
            let source = log::Source::from(request.remote_addr());
            match request.admit(&rooms).join(()).await {
                Ok(joined) => router.run(joined).await,
                Err(ServerError::MissingId(_)) => {} // answered 400
                // The remote decides how often: within its address's budget.
                Err(error) => {
                    remote_warn!(source, error = %log::Remote(&error), "peer refused")
                }
            }
        }
    });
    handle.stopped().await;
    if draining.is_clustered() {
        // The sessions still here wait for their clients to resume them on
        // another node (or for their window): the node stays in the cluster
        // until each moved or ended.
        let bound = args.resume_window_duration() + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, draining.drained()).await;
    }
    cluster.leave().await;
    Ok(())
}

/// What a peer joins with, and is listed with (its presence in the room).
#[derive(Serialize, Deserialize)]
struct Listed {
    #[serde(rename = "displayName", default)]
    display_name: String,
}

impl Listed {
    /// The `displayName` of a `join`'s data; none (data that is not an
    /// object, a name that is not a string) joins with an empty name.
    fn of(data: &Payload) -> Listed {
        #[derive(Deserialize)]
        struct Join {
            #[serde(rename = "displayName")]
            display_name: Option<Value>,
        }
        let display_name = match data.deserialize::<Join>() {
            Ok(Join {
                display_name: Some(Value::String(name)),
            }) => name,
            _ => String::new(),
        };
        Listed { display_name }
    }
}

/// `join`: lists the peer, tells the others about it, and answers the
/// other listed peers (a peer listed already is only answered again), all
/// in one exclusive section of the room: of two
/// peers joining at once, exactly one lists the other, and a `newPeer` a
/// peer hears after its `join` answer is never of a peer that answer
/// listed. `newPeer` goes out before the answer: a client that acts on the
/// answer (another peer of it connects) finds the others told already, so
/// a peer that arrives later never hears of an earlier one's join. In a
/// cluster the answer is the cluster's list, read once this peer's own
/// entry is in Redis.
async fn join(
    peer: Peer,
    room: Room,
    responder: Responder,
    State(clustered): State<bool>,
    data: Payload,
) -> Result<(), ErrorData> {
    let join = Listed::of(&data);
    if join.display_name.len() > MAX_DISPLAY_NAME {
        return Err(ErrorData::new(400, "displayName too long"));
    }
    let mut responder = Some(responder);
    let section = |members: &Members<()>| -> Result<(), Box<dyn Error + Send + Sync>> {
        // Joined already (a client that rejoins on every `open`, after a
        // resume): the others heard of it once; only the answer again.
        let joined = (members.get(peer.id()))
            .is_some_and(|member| member.peer() == &peer && member.is_listed());
        if !joined {
            room.set_presence(peer.id(), &join)?;
            let newcomer = json!({ "id": peer.id(), "displayName": join.display_name });
            room.to_all().from(&peer).notify("newPeer", &newcomer)?;
        }
        if let Some(responder) = responder.take_if(|_| !clustered) {
            responder.accept(&Peers {
                peers: others(&peer, members, &[]),
            });
        }
        Ok(())
    };
    room.exclusive(section)
        .map_err(IntoErrorData::into_error_data)?;
    if let Some(responder) = responder {
        // The list is the cluster's, read after this peer's own entry was
        // written (one link to Redis, in order): a client that acts on the
        // answer finds the peer listed on every node.
        let elsewhere = room.presence().await;
        room.exclusive(|members| {
            let peers = others(&peer, members, &elsewhere);
            responder.accept(&Peers { peers });
        });
    }
    Ok(())
}

/// `join`'s answer: `{"peers": [{"displayName", "id"}, ..]}`, written
/// straight from the list (no `Value` tree per peer: a join in a room of
/// 100 built and dropped 99 maps).
#[derive(Serialize)]
struct Peers<'a> {
    peers: Vec<Other<'a>>,
}

/// One listed peer in `join`'s answer (keys in the order `json!` wrote
/// them).
#[derive(Serialize)]
struct Other<'a> {
    #[serde(rename = "displayName")]
    display_name: String,
    id: &'a str,
}

/// The listed peers but `peer`, as `join` answers them: this process's
/// (`members`), then the other processes' (`elsewhere`).
fn others<'a>(peer: &Peer, members: &'a Members<()>, elsewhere: &'a [Presence]) -> Vec<Other<'a>> {
    let here = (members.listed()).filter_map(|m| Some((m.id(), m.presence()?.deserialize().ok()?)));
    let there = (elsewhere.iter())
        .filter(|listed| members.get(&listed.peer_id).is_none())
        .filter_map(|listed| Some((listed.peer_id.as_str(), listed.info_as().ok()?)));
    (here.chain(there))
        .filter(|(id, _)| *id != peer.id())
        .map(|(id, listed): (&str, Listed)| Other {
            display_name: listed.display_name,
            id,
        })
        .collect()
}

#[derive(Deserialize)]
struct Chat {
    #[serde(default)]
    text: Value,
}

/// `chat`, request or notification: the others get `chat {peerId, text}`.
/// The sender pays for the fan-out (`--fan-out-rate`): past it, 429.
async fn chat(peer: Peer, room: Room, Data(chat): Data<Chat>) -> Result<(), PeerError> {
    let data = json!({ "peerId": peer.id(), "text": chat.text });
    room.to_all()
        .from(&peer)
        .notify("chat", &data)?
        .within_rate()?;
    Ok(())
}

/// `echo`: the request's data, as it came (its text copied, not parsed).
async fn echo(payload: Payload) -> Result<Payload, Infallible> {
    Ok(payload)
}

/// `broadcast`: the others get `chat` with the request's data as it came;
/// the sender pays for the fan-out, as for `chat`.
async fn broadcast(peer: Peer, room: Room, payload: Payload) -> Result<(), PeerError> {
    room.to_all()
        .from(&peer)
        .notify("chat", &payload)?
        .within_rate()?;
    Ok(())
}

#[derive(Deserialize)]
struct Ask {
    method: String,
    #[serde(default)]
    data: Payload,
}

/// `ask`: sends the request to the same peer and answers its answer (or its
/// error). Concurrent: the answer is read while this waits.
async fn ask(peer: Peer, Data(ask): Data<Ask>) -> Result<Value, RequestError> {
    let response = peer.request(&ask.method, &ask.data).await?;
    Ok(json!({ "response": response }))
}

#[derive(Deserialize)]
struct Fail {
    code: u16,
    #[serde(default)]
    reason: String,
}

/// `fail`: answers the error asked for.
async fn fail(Data(fail): Data<Fail>) -> Result<(), ErrorData> {
    Err(ErrorData::new(fail.code, fail.reason))
}

/// `crash`: the handler fails as an exception would (500).
async fn crash() -> Result<(), &'static str> {
    Err("handler failed on purpose")
}

/// `kick`: answers, then closes the peer (4000).
async fn kick(peer: Peer, responder: Responder) -> Result<(), ErrorData> {
    responder.accept(&());
    peer.close();
    Ok(())
}

/// A new connection resumed the peer's session, after what was held for
/// it (`missed` frames) was written: the peer gets `resumed {missed}`, so
/// that its client tells a resume from a fresh start.
async fn resumed(peer: Peer, Missed(missed): Missed) -> Result<(), PeerError> {
    peer.notify("resumed", &json!({ "missed": missed }))
}

/// A peer left (or was replaced): the others get `peerClosed {peerId}`;
/// not for a peer whose session moved to another node (a drain, a client
/// that came back elsewhere), which did not leave.
async fn left(peer: Peer, room: Room, reason: CloseReason) -> Result<(), EncodeError> {
    if reason.initiator == Initiator::Moved {
        // Its session went on on another node: nobody left.
        return Ok(());
    }
    room.to_all()
        .except_peer(&peer)
        .notify("peerClosed", &json!({ "peerId": peer.id() }))
        .map(drop)
}
