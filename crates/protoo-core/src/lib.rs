//! protoo peers and rooms.
//!
//! The third layer of protoo-rs: on [`protoo_codec`] (the wire format) and
//! [`protoo_transport`] (how frames travel), under `protoo-server` (the
//! WebSocket server that hands each accepted connection to this crate). It
//! gives protoo's semantics to any [`Transport`]:
//!
//! - [`Peer`]: one remote. [`Peer::request`] resolves with the response data
//!   or fails with the remote's error, a timeout (protoo's `2000 × (15 + 0.1
//!   × pending)` ms by default) or "peer closed"; [`Peer::notify`];
//!   [`Peer::close`] (4000 `closed by protoo-server`). Incoming requests and
//!   notifications, then the close, arrive in order in its [`PeerEvents`].
//!   Each incoming request is an [`IncomingRequest`] that answers exactly
//!   once, 500 if the application drops it unanswered. A peer needs no room.
//! - [`Room`]: peers by id (empty and duplicate ids refused, or duplicates
//!   replaced under [`DuplicatePolicy::Replace`]), broadcast encoded once
//!   for all receivers, close. A closed peer leaves its room by itself.
//! - [`Rooms`]: rooms by id, created on demand in one atomic step with their
//!   first member ([`Rooms::admit`]: the one way into a room), removed when
//!   their last member leaves.
//! - [`handler`]: a [`Router`](handler::Router) of async handlers by
//!   method, with extractors and `?`, that runs a peer's loop; and
//!   [`Room::exclusive`], sections atomic with respect to the room's other
//!   sections (what Node gives between two `await`s).
//!
//! Each peer runs one task that reads its transport. Nothing here holds a
//! lock across an `.await`, every queue is bounded, and nothing a remote
//! sends can make it panic: invalid frames and responses to unknown requests
//! are logged (`tracing`) and dropped.
//!
//! # The per-peer loop
//!
//! A peer's [`PeerEvents`] is the application's handler: one loop per peer,
//! usually in its own task. Here the remote end of an in-memory pair is a
//! `Peer` too, as a client would be:
//!
//! ```
//! use protoo_core::{ErrorData, Peer, PeerConfig, PeerEvent, RequestError};
//! use protoo_transport::{memory, Initiator};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Sum { sum: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
//!
//! // The server side of the connection and its loop.
//! let (peer, mut events) = Peer::new("alice", server_side, (), PeerConfig::default())?;
//! let server = tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             PeerEvent::Request(request) => match request.method() {
//!                 "add" => {
//!                     // A handler error (here bad data) answers 500 with its message.
//!                     let result = request.data::<Add>().map(|add| Sum { sum: add.a + add.b });
//!                     request.respond(result);
//!                 }
//!                 "echo" => {
//!                     let data = request.payload().clone();
//!                     request.accept(&data);
//!                 }
//!                 _ => request.reject(404, "unknown method"),
//!             },
//!             PeerEvent::Notification(notification) => {
//!                 // Tell the remote we saw it.
//!                 let _ = peer.notify("seen", &serde_json::json!({"method": notification.method()}));
//!             }
//!             PeerEvent::Closed(reason) => return reason,
//!             // Only with a resume window (`PeerConfig::resume_window`).
//!             PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
//!         }
//!     }
//!     unreachable!("Closed is always the last event");
//! });
//!
//! // The client side.
//! let (client, _client_events) = Peer::new("server", client_side, (), PeerConfig::default())?;
//! let sum: Sum = client.request_as("add", &serde_json::json!({"a": 1, "b": 2})).await?;
//! assert_eq!(sum, Sum { sum: 3 });
//! let error = client.request("add", &serde_json::json!({"a": "one"})).await.unwrap_err();
//! assert_eq!(error.code(), Some(400));
//! let error = client.request("nope", &()).await.unwrap_err();
//! assert!(matches!(error, RequestError::Rejected(_)) && error.code() == Some(404));
//!
//! client.close();
//! let reason = server.await?;
//! assert_eq!((reason.code, reason.initiator), (Some(4000), Initiator::Remote));
//! # Ok(())
//! # }
//! ```
//!
//! A handler that awaits (a database, another peer) is best spawned with its
//! [`IncomingRequest`], so the loop keeps reading: the request can be
//! answered from any task. The [`handler`] module runs this loop for you,
//! and says what runs concurrently.
//!
//! # Rooms and broadcast
//!
//! [`Rooms::admit`] puts a new connection in its room, creating the room
//! if needed; the room goes away with its last peer. [`Room::to_all`]
//! encodes a notification once and queues the same bytes to every peer the
//! broadcast's [`Target`] chooses (all but some ids, the listed ones); it
//! never waits, and a peer too slow to keep up is
//! closed by its own queue limit without holding up the others.
//!
//! ```
//! use protoo_core::{DuplicatePolicy, Peer, PeerConfig, PeerEvent, Rooms};
//! use protoo_transport::memory;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rooms = Rooms::new();
//! let (mut clients, mut handlers) = (Vec::new(), Vec::new());
//! for id in ["alice", "bob"] {
//!     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
//!     // Application data: the display name.
//!     let name = id.to_uppercase();
//!     let joined = rooms
//!         .admit("r1", id)
//!         .policy(DuplicatePolicy::Replace)
//!         .join(server_side, name)
//!         .await?;
//!     let room = joined.room;
//!     // Each peer's events go to its handler (dropping them closes the peer).
//!     handlers.push(joined.events);
//!     room.to_all().except([id]).notify("newPeer", &serde_json::json!({"id": id}))?;
//!     clients.push(Peer::new("server", client_side, (), PeerConfig::default())?);
//! }
//! let room = rooms.get("r1").unwrap();
//! assert_eq!(room.peer("bob").unwrap().data(), "BOB");
//!
//! // alice heard of bob.
//! let Some(PeerEvent::Notification(n)) = clients[0].1.next().await else { panic!() };
//! assert_eq!(n.payload().as_str(), r#"{"id":"bob"}"#);
//!
//! // Closing the room closes both peers (the clients see 4000).
//! room.close();
//! for (_, events) in &mut clients {
//!     while let Some(event) = events.next().await {
//!         if let PeerEvent::Closed(reason) = event {
//!             assert_eq!(reason.code, Some(4000));
//!         }
//!     }
//! }
//! assert!(rooms.is_empty());
//! # Ok(())
//! # }
//! ```

//!
//! # Memory per idle peer
//!
//! What an idle peer holds above its transport, in heap bytes as
//! requested from the allocator (`tests/idle_bytes.rs` counts them with a
//! counting global allocator over 1,000 peers, prints this table's figures
//! and bounds their totals; debug build, x86-64). Tokio rounds every task
//! up to a multiple of 128 bytes (its header and trailer take 104), so a
//! task's figure is its future's size rounded up; a state in an `Arc` adds
//! the two counts (16 bytes).
//!
//! | item | echo example | room example, joined |
//! | --- | ---: | ---: |
//! | peer state (`Arc`: pending requests, close, event queue, budgets, room link) | 448 | 448 |
//! | `Peer` handle (`Arc` of the state and the application data) | 24 | 24 |
//! | incoming budget (`Arc`) | 56 | 56 |
//! | peer id (`Arc<str>`, `peer-123`) | 24 | 24 |
//! | reader task (its future: 120 bytes) | 256 | 256 |
//! | the application's loop task (echo: `while let` over the events; room: [`Router::run`](handler::Router::run)) | 256 | 384 |
//! | incoming rate limits (message and byte rate, boxed; the example's defaults, off in `cargo xtask bench`) | - | 112 |
//! | fan-out budget (boxed; the same) | - | 64 |
//! | room entry (the peer by id; amortised over a room of 100) | - | 35 |
//! | presence (`{"displayName":"p1234"}` and its entry) | - | 118 |
//! | **total** | **1,064** (6 allocations) | **1,521** (10 allocations) |
//! | a 15 s resume window (the room example's default; `Session`) | - | +216 |
//!
//! Before issue #25's changes the room peer held 1,913 bytes. What changed,
//! and what it costs elsewhere:
//! - its loop task was 768 bytes: [`Router::run`](handler::Router::run)
//!   kept the event being handled (128 bytes) and `Joined` beside its
//!   parts in its state; it now routes each event synchronously and keeps
//!   only the handler it awaits (384). Nothing per message: the same work
//!   and allocations (`cargo bench -p protoo-core --bench allocations`: 3.0
//!   per request through the router before and after);
//! - the peer state was 440 bytes (456 with its `Arc`, which jemalloc, the
//!   room example's allocator, rounds to 512); two limits stored in 4 bytes
//!   each make it 448, a size class of its own. A presence limit above 4
//!   GiB counts as 4 GiB;
//! - a connection's task and the server's per-connection task carry a
//!   tracing span only when one is enabled where they start (40 bytes less
//!   each; the room example's connection task, behind axum's upgrade, went
//!   from 640 to 512 bytes). Nothing when a span is enabled: the task is
//!   instrumented as before.
//!
//! Below this crate, the WebSocket transport of an idle connection holds
//! 1,232 bytes in 6 allocations (its task, the state its halves share,
//! its timer, tokio's registration of the socket: the table is in
//! `protoo_transport::ws`, `Memory`). The echo example's whole server
//! side, transport, peer, its task and the server's entry for it, holds
//! 2,342 bytes in 12 allocations (protoo-server's `tests/idle_bytes.rs`):
//! 1,232 + 808 + a 256-byte task + 46 of the server's table of live
//! connections. The room example's joined peer adds, to its 1,232-byte
//! transport and the 1,521 bytes above, hyper's upgraded stream (boxed)
//! and the same server entry.
//!
//! In resident memory (S4 of `cargo xtask bench`: 10,000 idle peers in
//! rooms of 100, RSS after a second's settling; `protoo-bench --scenario
//! s4`, on a shared 2-core machine where two runs differ by up to 150
//! bytes), with the allocator's own overhead, in KB per peer:
//!
//! | server | before #25 | now |
//! | --- | ---: | ---: |
//! | echo example (glibc) | 2.90, 2.91 | 2.91 |
//! | room example (jemalloc) as `cargo xtask bench` runs it (no rate limits, no resume window), admitted, not listed | 3.53 (`BENCHMARKS.md`) | 3.05, 3.22 |
//! | the same, joined (`protoo-bench --join`: listed, the others told) | - | 3.31, 3.40 |
//! | room example with its default rate limits, not listed | 3.94 | 3.41 |
//! | room example with its default rate limits, joined | 4.03, 4.04 | 3.54 |
//!
//! What stands between these and 2 KB per peer is mostly tasks and
//! separate states: an idle joined peer has three tasks (its connection's,
//! 512 bytes; its reader's, 256; its loop's, 384) and two shared states
//! (the transport's, 320 bytes, and the peer's, 448), beside tokio's 256
//! bytes for the socket. Running the reader inside the loop's task, and
//! the transport's state beside the peer's, would save about 600 bytes
//! more; both change which task runs what, and are not done.
//!
//! # Features
//!
//! - `metrics`: peers, rooms, messages, requests and closes reported
//!   through the `metrics` facade (see [`metrics`]).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod broadcast;
mod budget;
pub mod cluster;
mod config;
mod error;
mod events;
mod exclusive;
pub mod handler;
mod identity;
mod ids;
pub mod metrics;
mod peer;
mod presence;
mod rate;
mod room;
mod rooms;
mod session;
mod sync;

pub use broadcast::{Broadcast, BroadcastReport, LocalBroadcast, Target};
pub use config::{
    DEFAULT_EVENT_QUEUE, DEFAULT_INCOMING_BUDGET, DEFAULT_MAX_PRESENCE_BYTES,
    DEFAULT_MAX_UNANSWERED_REQUESTS, DEFAULT_RESUME_BUFFER, PeerConfig,
};
pub use error::{CoreError, PRESENCE_TOO_LARGE_REASON, PeerError, RequestError};
pub use events::{
    EVENTS_DROPPED_REASON, IncomingNotification, IncomingRequest, IntoErrorData,
    NOT_ANSWERED_REASON, OVER_BUDGET_CODE, OVER_BUDGET_REASON, PeerEvent, RATE_LIMITED_CODE,
    RATE_LIMITED_REASON, SHUTTING_DOWN_REASON, TOO_MANY_INVALID_REASON,
};
pub use exclusive::{Member, Members};
pub use identity::{
    Identity, METHOD_NOT_ALLOWED_CODE, METHOD_NOT_ALLOWED_REASON, TOKEN_EXPIRED_REASON,
};
pub use peer::{
    CLUSTER_ADMISSION_WAIT, DUPLICATE_ELSEWHERE_REASON, Peer, PeerEvents, REPLACEMENT_WAIT,
};
pub use presence::Presence;
pub use rate::Rate;
pub use room::{DuplicatePolicy, Room};
pub use rooms::{
    Admit, Connecting, Context, DEFAULT_MAX_ID_BYTES, Joined, RoomHold, RoomSetup, Rooms,
    RoomsBuilder,
};
pub use session::{
    DEFAULT_MAX_PARKED_BYTES, DEFAULT_MAX_PARKED_SESSIONS, SESSION_EVICTED_REASON,
    SESSION_MOVED_REASON, TAKEN_OVER_REASON,
};

pub use protoo_codec::{self as codec, EncodeError, ErrorData, Frame, Id, Method, Payload};
pub use protoo_transport::{
    self as transport, CloseReason, Initiator, PROTOO_CLOSED_REASON, Transport, TransportError,
    close_code,
};
