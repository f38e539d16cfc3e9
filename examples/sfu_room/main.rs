//! mediasoup-demo's server signalling (`server/lib/Room.js` and the protoo
//! and broadcaster parts of `server/server.js`) on protoo-rs.
//!
//! ```sh
//! cargo run -p protoo-examples --example sfu_room -- --listen 127.0.0.1:4443
//! ```
//!
//! mediasoup-demo's browser app connects to
//! `ws://HOST:PORT/?roomId=R&peerId=P[&consumerReplicas=N]` and signals as
//! with its Node server: `getRouterRtpCapabilities`, `join`,
//! `createWebRtcTransport`, `connectWebRtcTransport`, `restartIce`,
//! `produce`, `closeProducer`, `pauseProducer`, `resumeProducer`,
//! `pauseConsumer`, `resumeConsumer`, `setConsumerPreferredLayers`,
//! `setConsumerPriority`, `requestConsumerKeyFrame`, `changeDisplayName`,
//! `getTransportStats`, `getProducerStats`, `getConsumerStats`; the server
//! asks each joined peer `newConsumer` for the other peers' producers and
//! tells it `newPeer`, `peerClosed`, `peerDisplayNameChanged`,
//! `consumerClosed`, `consumerPaused`, `consumerResumed`, `consumerScore`.
//! The broadcaster REST API is on the same port (rest.rs), and `GET /stats`
//! lists the rooms and counts the live routers.
//!
//! The media (mediasoup's worker, routers, transports, producers and
//! consumers) is behind the traits of media.rs; this example runs on their
//! in-memory stand-in, which moves no media. Data channels, the bot, the
//! audio observers and network throttling are not ported.
//!
//! Rooms: created by the first admission (its `consumerReplicas` query
//! parameter, or a REST request's), closed with their router when their last
//! member leaves; a REST broadcaster is a member (a `RoomHold`), so a room
//! with a broadcaster stays open without peers.

mod handlers;
mod media;
mod rest;
mod room;

use std::net::SocketAddr;
use std::sync::Arc;

use protoo_server::{
    ConnectionRequest, DuplicatePolicy, Rooms, ServerConfig, WebSocketServer, WsConfig, log,
    remote_warn,
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::media::{MemoryWorker, Worker};
use crate::room::SfuRooms;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let listen = std::env::args().skip_while(|arg| arg != "--listen").nth(1);
    let worker: Arc<dyn Worker> = Arc::new(MemoryWorker::new());
    let rooms: SfuRooms = Rooms::builder()
        .duplicate_policy(DuplicatePolicy::Replace)
        .on_close(room::closed)
        .setup({
            let worker = worker.clone();
            move |setup| room::create(worker.clone(), setup)
        });
    // As mediasoup-demo's protoo server: messages up to 960 kB.
    let ws = WsConfig::default()
        .with_max_message_size(960_000)
        .with_max_frame_size(960_000);
    let (server, mount) = WebSocketServer::mounted(ServerConfig::default().with_ws(ws));
    let app = rest::routes(rooms.clone(), worker).route("/", mount.route());
    let listener =
        tokio::net::TcpListener::bind(listen.as_deref().unwrap_or("127.0.0.1:4443")).await?;
    println!("listening on ws://{}/", listener.local_addr()?);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(mount.listener(listener), app).await });
    let peers = handlers::router();
    let handle = server.serve(move |request: ConnectionRequest| {
        let (rooms, peers) = (rooms.clone(), peers.clone());
        let source = log::Source::from(request.remote_addr());
        async move {
            match request.admit(&rooms).join(Default::default()).await {
                Ok(joined) => {
                    let _ = joined
                        .peer
                        .notify("mediasoup-version", &json!({ "version": "stand-in" }));
                    peers.run(joined).await;
                }
                Err(error) => {
                    remote_warn!(source, error = %log::Remote(&error), "connection refused")
                }
            }
        }
    });
    signal(SignalKind::terminate())?.recv().await;
    handle.shutdown().await;
    Ok(())
}
