//! A protoo client for Rust, with protoo-client's reconnect.
//!
//! Beside `protoo-server` at the top of protoo-rs, on [`protoo_core`] (each
//! connection is a [`Peer`](protoo_core::Peer) whose remote is the server)
//! and [`protoo_transport`] (the WebSocket connection, subprotocol
//! `protoo`). For Rust programs that join rooms: bots, recorders, load
//! tests, servers talking to each other.
//!
//! [`Client::connect`] opens a connection to a URL (extra headers and, with
//! the `tls` feature, `wss://` trusting Mozilla's root certificates or a
//! root store given through [`ClientOptions`]; see the `tls` module) and
//! keeps it up with the semantics of protoo-client
//! 4.0.8's `WebSocketTransport`:
//!
//! - before the first open of a round, each failed attempt is reported as
//!   [`ClientEvent::Failed`]`(attempt)` and retried after the
//!   [`RetryConfig`] wait (1, 2, 4, 8, 8... s by default, 10 retries); when
//!   the retries run out the client closes ([`ClientEvent::Close`]);
//! - an open connection that is lost reports [`ClientEvent::Disconnected`]
//!   and reconnects at once with a fresh retry budget (a new round);
//! - a close with code 4000 from the server ends the client for good
//!   ([`ClientEvent::Close`], no reconnect), as does [`Client::close`];
//! - [`ClientEvent::Open`] comes on every (re)connect, so the application
//!   joins its room again there.
//!
//! Two things differ from protoo-client, on purpose: a request pending when
//! the connection is lost fails at once with [`ClientError::Disconnected`]
//! (protoo-client leaves it to time out, about 22 s later), and a request or
//! notification while no connection is open fails with
//! [`ClientError::Disconnected`] instead of throwing.
//!
//! # Sessions that survive a lost connection
//!
//! With [`ClientConfig::with_resume_window`] (for a server with a resume
//! window of its own, such as the room example's `--resume-window`) the
//! client keeps its session across a lost connection, as protoo-client
//! keeps its pending requests:
//!
//! - a connection lost rather than closed (a reset or I/O error, a keepalive
//!   timeout, a close with 1001, 1006 or 1012: [`CloseReason::is_lost`])
//!   reports [`ClientEvent::Disconnected`] and reconnects as above, but the
//!   requests pending on it stay pending (their timeout runs on), and
//!   requests and notifications sent until the next connection are held
//!   (up to [`PeerConfig::resume_buffer`](protoo_core::PeerConfig::resume_buffer)
//!   bytes; past it the session ends, 1008);
//! - the next connection within the window resumes the session:
//!   [`ClientEvent::Resumed`] then [`ClientEvent::Open`]; what was held is
//!   written first, in order, and the pending requests are answered on it;
//! - when the window passes without a connection, the pending requests
//!   fail with [`ClientError::Disconnected`], and the next connection opens
//!   a new session ([`ClientEvent::Open`] alone); when the retries run out
//!   first, they fail with [`ClientError::Closed`] with the client;
//! - a clean close (4000 ends the client; any other close frame) ends the
//!   session at once, as without a window.
//!
//! Frames written on a connection just before it was lost, which the server
//! never read, are not written again: a request among them is answered by
//! its timeout. Whether the server resumed its side of the session is for
//! the application's protocol to tell (a server without a window sees a
//! new peer, and never answers the pending requests).
//!
//! The server's requests and notifications arrive as
//! [`ClientEvent::Request`] and [`ClientEvent::Notification`] in
//! [`ClientEvents`], a [`Stream`](futures_util::Stream).
//!
//! # Example
//!
//! ```
//! use protoo_client::{Client, ClientConfig, ClientEvent, ClientOptions};
//! use protoo_server::{PeerConfig, PeerEvent, ServerConfig, WebSocketServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server that answers `hello` and then closes the peer (4000).
//! let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! let url = format!("ws://{}/?roomId=r&peerId=p", server.local_addr());
//! tokio::spawn(async move {
//!     let request = server.next_request().await.unwrap();
//!     let transport = request.accept().await.unwrap();
//!     let (peer, mut events) = protoo_server::Peer::new("p", transport, (), PeerConfig::default()).unwrap();
//!     while let Some(PeerEvent::Request(request)) = events.next().await {
//!         request.accept(&serde_json::json!({"hi": "there"}));
//!         peer.close();
//!     }
//! });
//!
//! let (client, mut events) = Client::connect(ClientOptions::new(url), ClientConfig::default());
//! assert!(matches!(events.next().await, Some(ClientEvent::Open)));
//! let answer = client.request("hello", &()).await?;
//! assert_eq!(answer.as_str(), r#"{"hi":"there"}"#);
//! // The server closed with 4000: closed for good.
//! assert!(matches!(events.next().await, Some(ClientEvent::Close(_))));
//! assert!(client.is_closed());
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod error;
mod run;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

pub use client::{Client, ClientEvent, ClientEvents};
pub use config::{ClientConfig, RetryConfig};
pub use error::ClientError;

pub use protoo_core::{CloseReason, IncomingNotification, IncomingRequest, Payload};
pub use protoo_transport::ws::{ClientOptions, WsConfig};
