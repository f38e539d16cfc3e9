//! The WebSocket transport, client and server side: frames read and written
//! by the connection task itself (headers and close codes by tungstenite),
//! the client handshake by tokio-tungstenite.
//!
//! # Server side
//!
//! The handshake decision belongs to the server (protoo's
//! `connectionrequest`), so it is split in steps the server facade drives:
//! [`read_upgrade_request`] reads the HTTP upgrade request from any byte
//! stream (TCP, TLS) into an [`UpgradeRequest`] exposing path, query,
//! headers, origin and offered subprotocols; the application decides,
//! possibly asynchronously; [`ServerTransport::builder`] accepts it
//! (answers `101` with the `protoo` subprotocol and returns the
//! [`Transport`](crate::Transport)), or [`UpgradeRequest::reject`] answers
//! an HTTP error status. The same builder makes a transport over a stream
//! upgraded by an HTTP framework.
//!
//! # Client side
//!
//! [`connect`] (and [`connect_with`] for extra headers or `wss://`) opens a
//! connection offering the `protoo` subprotocol, and fails unless the
//! server selects it.
//!
//! # The connection task
//!
//! Each connection is driven by one tokio task, which:
//! - writes the outbound queue: queued frames (up to 128 KiB at a time) go
//!   out in vectored writes, each frame's header beside its payload (the
//!   payload of a broadcast shared by every peer it goes to, not copied;
//!   small frames are gathered), then the socket is flushed once; a send
//!   that finds the queue already at [`WsConfig::max_queued_bytes`] closes the
//!   connection with 1008 `outbound queue limit exceeded` and frees the
//!   queue at once, and a writer blocked on a socket the peer does not read
//!   gives up and drops the socket;
//! - reads incoming messages into a small inbox (32 messages or
//!   [`WsConfig::max_message_size`] bytes) for the transport's reader; when
//!   the reader is behind, the task stops reading the socket and TCP flow
//!   control slows the remote down. Text messages are delivered as they
//!   are (the transport does not parse them); binary messages are dropped
//!   with a warning, as protoo does (unless
//!   [`WsConfig::binary_messages`] is set, for a non-protoo endpoint: then
//!   they are delivered as [`Inbound::Binary`](crate::Inbound::Binary) and
//!   [`FrameSink::send_binary`](crate::FrameSink::send_binary) sends them).
//!   Pings are answered;
//! - enforces [`WsConfig::max_message_size`] and
//!   [`WsConfig::max_frame_size`]: a message passing them (even in
//!   fragments) closes the connection with 1009;
//! - sends a keepalive ping every [`WsConfig::ping_interval`] and drops the
//!   connection when nothing at all arrives within
//!   [`WsConfig::pong_timeout`] after one;
//! - on `close(code, reason)` writes what was queued, then the close frame,
//!   and waits (at most [`WsConfig::close_timeout`]) for the remote's reply.
//!
//! How each connection ends is reported once by the transport's reader:
//!
//! | what happened | `code` | `reason` | `initiator` |
//! | --- | --- | --- | --- |
//! | the application closed | its code | its reason | `Local` |
//! | the remote sent a close frame | its code (1005 if none) | its reason | `Remote` |
//! | the connection dropped without a close frame | `None` | `connection lost` | `Remote` |
//! | no answer to a keepalive ping | `None` | `keepalive timeout` | `Local` |
//! | an incoming message over a limit | 1009 | `message too big` | `Local` |
//! | the outbound queue overflowed | 1008 | `outbound queue limit exceeded` | `Local` |
//! | invalid UTF-8 in a text message | 1007 | `invalid UTF-8` | `Local` |
//! | another WebSocket protocol violation | 1002 | `protocol error` | `Local` |
//!
//! [`CloseReason::is_lost`](crate::CloseReason::is_lost) tells the ends
//! where a client is expected to come back (no close frame, a keepalive
//! timeout, 1001, 1006, 1012) from decisions.
//!
//! # Frames the remote has not confirmed
//!
//! After [`FrameSink::retain_unconfirmed`](crate::FrameSink::retain_unconfirmed),
//! the connection keeps each text frame it writes until a pong confirms it:
//! while kept frames wait, it sends, about once per
//! [`WsConfig::confirm_interval`] (with the first frame after a pause, and
//! spaced out to 4 intervals under a steady stream), a ping whose payload is the 8-byte
//! big-endian count of kept frames written before it; the remote's
//! WebSocket stack (a browser, protoo-client over `ws`, tungstenite) answers
//! with the same payload once it has read every frame before the ping, and
//! the answer lets go of them. [`FrameSink::take_unconfirmed`](crate::FrameSink::take_unconfirmed)
//! then gives back the frames written and not confirmed, and those still
//! queued, in order, for a session resumed on another connection: at least
//! once for the in-flight tail, exactly once for the rest. A connection that
//! does not retain sends no such ping and keeps nothing.
//!
//! [`Transport::is_closed`](crate::Transport::is_closed) is true as soon as
//! either side closes; sending after that gives the frame back in
//! [`TransportError::Closed`](crate::TransportError::Closed). Dropping the
//! receiving half discards incoming messages from then on; dropping both
//! halves (every clone of the sending half, and the receiving half) closes
//! the connection with 1000.
//!
//! # Memory
//!
//! An idle connection holds no read or write buffer: the read buffer exists
//! while the connection is busy (see [`WsConfig::read_buffer_size`]) and the
//! frames being written are the queue's own. What an idle server-side
//! connection holds with the default [`WsConfig`], in heap bytes as
//! requested from the allocator (`tests/idle_memory.rs`,
//! `idle_connection_heap_bytes`, counts them over 1,000 connections on
//! 127.0.0.1 with a counting global allocator and bounds the total; debug
//! build, x86-64):
//!
//! | item | bytes |
//! | --- | ---: |
//! | the connection task: tokio's task (104 bytes of header and trailer, rounded up to a multiple of 128) around the connection's state (344 bytes over a `TcpStream`: the socket and its tokio handle, the decoder's state, the write list, the keepalive state and timeouts) and what the caller keeps alive with it | 512 |
//! | the state the task shares with the transport's halves (outbound queue, inbox, close report; an `Arc`) | 320 |
//! | tokio's registration of the socket (`ScheduledIo`, 128-byte aligned, in an `Arc`) | 256 |
//! | the timer (tokio's `Sleep`, boxed) | 112 |
//! | the sending half (`Arc<dyn FrameSink>`) and the receiving half (`Box<dyn FrameStream>`) | 32 |
//! | **total** | **1,232** (6 allocations) |
//!
//! The same after a small message or a 16 KB one. The connection task
//! carries no tracing span unless one is enabled where it is started
//! (an instrumented task is 40 bytes larger: behind an HTTP framework's
//! upgrade, as in the room example, that made it 640 bytes instead of 512).
//! In resident memory this is about 1.6 KB per connection with glibc's
//! allocator (`tests/idle_memory.rs`, run by hand). A connection that
//! stopped reading costs at most [`WsConfig::max_queued_bytes`] plus one
//! batch being written (128 KiB) before it is closed. What a protoo peer
//! holds above this is in `protoo_core`'s documentation (`Memory per idle
//! peer`).
//!
//! # Example
//!
//! ```
//! use protoo_transport::{ws, Frame, Inbound, Initiator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = ws::WsConfig::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/?roomId=r1&peerId=alice", listener.local_addr()?);
//!
//! let server = tokio::spawn({
//!     let config = config.clone();
//!     async move {
//!         let (socket, _) = listener.accept().await?;
//!         socket.set_nodelay(true)?;
//!         let request = ws::read_upgrade_request(socket, &config).await?;
//!         if !request.wants_protoo() {
//!             request.reject(403, "invalid/missing Sec-WebSocket-Protocol").await?;
//!             return Err("rejected".into());
//!         }
//!         let peer_id = request.query_param("peerId");
//!         let transport = ws::ServerTransport::builder(&config).accept(request).await?;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>((peer_id, transport))
//!     }
//! });
//!
//! let mut client = ws::connect(&url, &config).await?;
//! let (peer_id, mut server_side) = server.await??;
//! assert_eq!(peer_id.as_deref(), Some("alice"));
//!
//! client.send(Frame::from_static(r#"{"notification":true,"method":"hi","data":{}}"#))?;
//! let Inbound::Text(text) = server_side.recv().await else { panic!() };
//! assert!(text.starts_with(b"{\"notification\""));
//!
//! server_side.close(); // 4000 "closed by protoo-server"
//! let Inbound::Closed(reason) = client.recv().await else { panic!() };
//! assert_eq!(reason.code, Some(4000));
//! assert_eq!(reason.initiator, Initiator::Remote);
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod conn;
mod server;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod upgrade;

/// The `http` crate, whose types ([`HeaderMap`](http::HeaderMap),
/// [`HeaderValue`](http::HeaderValue), [`Uri`](http::Uri)) appear in this
/// module's API.
pub use http;

pub use client::{ClientOptions, connect, connect_with};
pub use config::{DEFAULT_CONFIRM_INTERVAL, WsConfig};
pub use server::{
    PendingOpen, ServerTransport, ServerTransportBuilder, UpgradeRequest, query_param,
    read_upgrade_request,
};
pub use upgrade::{InvalidUpgrade, offered_protocols, protoo_subprotocol, validate_upgrade};

/// The WebSocket subprotocol of protoo.
pub const PROTOO_SUBPROTOCOL: &str = "protoo";
