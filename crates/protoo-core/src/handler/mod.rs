//! Handlers: a [`Router`] of async functions by request and notification
//! method, run over a peer's [`PeerEvents`](crate::PeerEvents), in the
//! manner of axum and socketioxide.
//!
//! A handler is an `async fn` whose arguments are extractors
//! ([`FromRequest`]):
//!
//! - [`Data<T>`](Data): the data deserialised into `T` (a request whose
//!   data does not fit is answered 400 with serde's message; such a
//!   notification is dropped, logged at debug level);
//! - [`Payload`](crate::Payload): the data as raw JSON;
//! - [`Peer<D>`](crate::Peer): the peer; [`Room<D, R>`](crate::Room): its
//!   room; [`State<S>`](State): the application state
//!   ([`Router::with_state`]); [`Method`](crate::Method): the method name;
//!   [`CloseReason`](crate::CloseReason): for the close handler;
//! - [`Responder`]: answers a request before the handler returns.
//!
//! A request handler returns `Result<T: Serialize, E: IntoErrorData>`:
//! `Ok` answers with `T` as the data, `Err` with the error's
//! [`IntoErrorData`](crate::IntoErrorData) conversion, so `?` works
//! ([`ErrorData`](crate::ErrorData) as it is, a serde error 400, a failed
//! request to another peer its error, a string 500). A request with no
//! handler answers 404 [`UNKNOWN_METHOD_REASON`] unless a
//! [`fallback`](Router::fallback) is registered. A notification handler
//! returns `()` or `Result<(), E>` (its error is logged at debug level); a
//! notification with no handler is dropped unless a
//! [`notification_fallback`](Router::notification_fallback) takes it.
//!
//! ```
//! use protoo_core::handler::{Data, Router, State};
//! use protoo_core::{ErrorData, Peer, PeerConfig, PeerError, PeerEvent, Room, Rooms};
//! use protoo_transport::memory;
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! /// What the application shares with every handler.
//! #[derive(Clone)]
//! struct App { motd: &'static str }
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Join { display_name: String }
//!
//! async fn join(
//!     peer: Peer,
//!     room: Room,
//!     State(app): State<App>,
//!     Data(join): Data<Join>,
//! ) -> Result<serde_json::Value, PeerError> {
//!     room.set_presence(peer.id(), &json!({"displayName": join.display_name}))?;
//!     room.to_all().except([peer.id()]).notify("newPeer", &json!({"id": peer.id()}))?;
//!     Ok(json!({"motd": app.motd}))
//! }
//!
//! #[derive(Deserialize)]
//! struct Chat { text: String }
//!
//! async fn chat(peer: Peer, room: Room, Data(chat): Data<Chat>) -> Result<(), PeerError> {
//!     room.to_all()
//!         .except([peer.id()])
//!         .notify("chat", &json!({"from": peer.id(), "text": chat.text}))?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new()
//!     .request("join", join)
//!     .notification("chat", chat)
//!     .with_state(App { motd: "hello" });
//!
//! let rooms: Rooms = Rooms::new();
//! let mut clients = Vec::new();
//! for id in ["alice", "bob"] {
//!     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
//!     let joined = rooms.admit("lobby", id).join(server_side, ()).await?;
//!     // One task per peer runs its handlers.
//!     tokio::spawn({
//!         let router = router.clone();
//!         async move { router.run(joined).await }
//!     });
//!     // The client end, as a peer too.
//!     clients.push(Peer::new("server", client_side, (), PeerConfig::default())?);
//! }
//! let [(alice, alice_events), (bob, _bob_events)] = &mut clients[..] else { unreachable!() };
//!
//! let answer = alice.request("join", &json!({"displayName": "Alice"})).await?;
//! assert_eq!(answer.to_value(), json!({"motd": "hello"}));
//! let error = bob.request("join", &json!({"name": "Bob"})).await.unwrap_err();
//! assert_eq!(error.code(), Some(400)); // missing field `displayName`
//! let error = bob.request("leave", &()).await.unwrap_err();
//! assert_eq!(error.code(), Some(404));
//!
//! bob.notify("chat", &json!({"text": "hi"}))?;
//! let Some(PeerEvent::Notification(chat)) = alice_events.next().await else { panic!() };
//! assert_eq!(chat.payload().to_value(), json!({"from": "bob", "text": "hi"}));
//! # Ok(())
//! # }
//! ```
//!
//! # What runs concurrently
//!
//! A peer's handlers run one at a time, in the order its events arrived:
//! [`Router::run`] reads the next event only once the handler of the
//! previous one has finished. That is what protoo applications expect of a
//! peer (its `join` done before its `produce` starts) and what a per-peer
//! loop over [`PeerEvents`](crate::PeerEvents) does. A route opts in to
//! concurrency with [`Router::concurrent`]: each of its events is spawned in
//! its own task, and the loop reads on at once (for a handler that waits
//! long on something else and whose order does not matter).
//!
//! Different peers' handlers run in parallel (each peer's loop is its own
//! task, on every thread of the runtime), unlike Node's, where one piece of
//! JavaScript runs at a time. Steps that must not interleave with other
//! peers' handlers (mark joined then read the producers, against add a
//! producer then read the joined peers) go in a
//! [`Room::exclusive`](crate::Room::exclusive) section.
//!
//! # Awaiting a request to the same peer inside its handler
//!
//! A one-at-a-time handler may await [`Peer::request`](crate::Peer::request)
//! to its own peer (mediasoup-demo's `join` awaits the newcomer's answers to
//! `newConsumer`): responses are not events. The peer's reader task
//! completes the pending request as soon as it reads the response, while
//! the handler is still running, so the response does not wait behind the
//! handler.
//!
//! It can stall in one case: the reader stops reading the transport when
//! the peer's event queue is full
//! ([`PeerConfig::event_queue`](crate::PeerConfig::event_queue) events, 256
//! by default, waiting for a handler). If, while the handler awaits, the
//! remote sends that many requests and notifications before the response,
//! the response sits behind them in the transport; the handler waits for
//! the response, the reader for the handler. Nothing deadlocks forever: the
//! request fails with [`RequestError::Timeout`](crate::RequestError::Timeout)
//! after its timeout, the handler goes on (with `?`, its request answers
//! 500 `request timeout`), and the loop takes the queued events. A
//! remote that floods its own peer this way only delays itself; to avoid
//! even that, await the request in a [`concurrent`](Router::concurrent)
//! handler or a spawned task.

mod extract;
mod impls;
mod responder;
mod router;

pub use extract::{Data, FromRequest, Missed, Parts, State};
pub use impls::{
    HandlerFuture, NotificationHandler, NotificationOutput, RequestHandler, RequestOutput,
};
pub use responder::Responder;
pub use router::{Router, UNKNOWN_METHOD_REASON};
