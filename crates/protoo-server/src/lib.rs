//! protoo-server for Rust: the crate a signaling application depends on.
//!
//! The top of protoo-rs, over [`protoo_core`] (`Peer`, `Room`),
//! [`protoo_transport`] (WebSocket and in-memory transports) and
//! [`protoo_codec`] (the wire format), all re-exported here so an
//! application needs this crate alone.
//!
//! A [`WebSocketServer`] listens for WebSocket connections (or, with the
//! `axum` feature, is mounted on a route of an axum application), checks
//! what protoo checks (the `protoo` subprotocol: 403 without it) plus what a
//! public server needs (origin allow-list, connection limit, handshake
//! timeout, size limits), and [serves](WebSocketServer::serve) each
//! connection to the application's handler as a [`ConnectionRequest`] to
//! accept or reject: protoo's `connectionrequest` event.
//! [`ConnectionRequest::admit`] puts the connection straight into a
//! [`Room`] of a [`Rooms`] registry; [`ConnectionRequest::accept`] gives a
//! bare [`Transport`] for a peer outside any room.
//!
//! # A room server in a few lines
//!
//! ```no_run
//! use protoo_server::{
//!     BroadcastReport, DuplicatePolicy, PeerError, PeerEvent, Rooms, ServerConfig, WebSocketServer,
//! };
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let server = WebSocketServer::bind("127.0.0.1:4443", ServerConfig::default()).await?;
//!     let rooms: Rooms = Rooms::builder().duplicate_policy(DuplicatePolicy::Replace).build();
//!     let handle = server.serve(move |request| {
//!         let rooms = rooms.clone();
//!         async move {
//!             // The query's roomId and peerId (400 without them).
//!             let Ok(joined) = request.admit(&rooms).join(()).await else {
//!                 return;
//!             };
//!             let (room, peer, mut events) = (joined.room, joined.peer, joined.events);
//!             while let Some(event) = events.next().await {
//!                 match event {
//!                     PeerEvent::Request(request) if request.method() == "chat" => {
//!                         // On the sender's behalf: it is left out, and pays for the
//!                         // fan-out from its `PeerConfig::fan_out_rate` (429 past it).
//!                         let sent = room.to_all().from(&peer).notify("chat", request.payload());
//!                         request.respond(sent.map_err(PeerError::from).and_then(BroadcastReport::within_rate).map(|_| ()));
//!                     }
//!                     PeerEvent::Request(request) => request.reject(404, "unknown method"),
//!                     PeerEvent::Notification(_) | PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
//!                     PeerEvent::Closed(_) => {
//!                         let _ = room.to_all().notify("peerClosed", &serde_json::json!({ "peerId": peer.id() }));
//!                     }
//!                 }
//!             }
//!         }
//!     });
//!     handle.stopped().await;
//!     Ok(())
//! }
//! ```
//!
//! # Shutdown
//!
//! [`ServerHandle::stop`] stops accepting, like protoo's `stop()`.
//! [`ServerHandle::shutdown`] is the graceful version: stop accepting, let
//! the requests peers already sent be answered (bounded by
//! [`ServerConfig::shutdown_grace`]), close every peer with 1001, and return
//! once every connection task has ended.
//!
//! # Features
//!
//! - `tls`: `wss://` with rustls ([`WebSocketServer::bind_tls`]).
//! - `axum`: mount the server on an axum route.
//! - `auth`: verify connection tokens (JWTs) before the upgrade
//!   ([`auth::JwtVerifier`], [`ServerConfig::with_auth`]); an
//!   application's own [`auth::Verifier`] needs no feature.
//! - `metrics`: report connections, peers, rooms, messages, requests and
//!   closes through the [`metrics`](https://docs.rs/metrics) facade (see
//!   [`metrics`]); the application installs the recorder of its choice.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod admit;
pub mod auth;
mod config;
mod descriptors;
mod error;
mod handshake;
pub mod metrics;
mod request;
mod server;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
/// Building TLS settings for `wss://` (re-exported from the transport).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use protoo_transport::ws::tls;

pub use admit::ServerAdmit;
pub use config::ServerConfig;
pub use error::ServerError;
pub use request::ConnectionRequest;
pub use server::{DRAIN_REASON, SHUTDOWN_REASON, ServerHandle, WebSocketServer};

pub use protoo_codec as codec;
pub use protoo_core as core;
pub use protoo_transport as transport;

pub use protoo_codec::{ErrorData, Frame, Id, Method, Payload};
pub use protoo_core::handler;
pub use protoo_core::{
    Broadcast, BroadcastReport, Context, CoreError, DuplicatePolicy, Identity,
    IncomingNotification, IncomingRequest, IntoErrorData, Joined, LocalBroadcast, Member, Members,
    Peer, PeerConfig, PeerError, PeerEvent, PeerEvents, Presence, RequestError, Room, RoomHold,
    RoomSetup, Rooms, RoomsBuilder, Target,
};
pub use protoo_transport::ws::{self, WsConfig};
pub use protoo_transport::{CloseReason, Initiator, Transport, TransportError, close_code};
pub use protoo_transport::{log, remote_warn};

/// The workspace README's code, compiled as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The porting guide's code (`docs/porting-from-node.md`), compiled as doc
/// tests so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/porting-from-node.md")]
pub struct PortingGuideDoctests;
