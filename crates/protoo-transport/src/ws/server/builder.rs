//! The one way to make a server-side WebSocket transport:
//! [`ServerTransport::builder`], then a source: an [`UpgradeRequest`] this
//! crate read ([`accept`](ServerTransportBuilder::accept),
//! [`accept_pending`](ServerTransportBuilder::accept_pending)), a stream an
//! HTTP framework upgraded ([`upgraded`](ServerTransportBuilder::upgraded)),
//! or an upgrade still to come ([`upgrade`](ServerTransportBuilder::upgrade)).

use std::fmt;
use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::UpgradeRequest;
use super::opening::{LateIo, PendingOpen};
use crate::ws::{WsConfig, conn};
use crate::{Transport, TransportError};

/// The server side of a WebSocket connection: see
/// [`ServerTransport::builder`]. (A name to build from; the transport
/// itself is a [`Transport`].)
#[derive(Debug)]
pub enum ServerTransport {}

impl ServerTransport {
    /// A builder for a server-side transport with the limits of `config`.
    /// Set what applies ([`guard`](ServerTransportBuilder::guard),
    /// [`leftover`](ServerTransportBuilder::leftover)), then give it the
    /// connection:
    ///
    /// | you have | call | the `101` |
    /// | --- | --- | --- |
    /// | an [`UpgradeRequest`] | [`accept`](ServerTransportBuilder::accept) | written now |
    /// | an [`UpgradeRequest`], and a peer to place first | [`accept_pending`](ServerTransportBuilder::accept_pending) | written by [`PendingOpen::open`] |
    /// | a stream upgraded elsewhere | [`upgraded`](ServerTransportBuilder::upgraded) | written already |
    /// | an upgrade still to come (hyper's `OnUpgrade`) | [`upgrade`](ServerTransportBuilder::upgrade) | written by the framework |
    ///
    /// ```
    /// use protoo_transport::ws::{self, ServerTransport, WsConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = WsConfig::default();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let url = format!("ws://{}/", listener.local_addr()?);
    /// let client = tokio::spawn(async move { ws::connect(&url, &WsConfig::default()).await });
    ///
    /// let (socket, _) = listener.accept().await?;
    /// let request = ws::read_upgrade_request(socket, &config).await?;
    /// let counted = std::sync::Arc::new(()); // dropped when the connection ends
    /// let _transport = ServerTransport::builder(&config)
    ///     .guard(counted.clone())
    ///     .accept(request)
    ///     .await?;
    /// let _client = client.await??;
    /// assert_eq!(std::sync::Arc::strong_count(&counted), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(config: &WsConfig) -> ServerTransportBuilder<'_> {
        ServerTransportBuilder {
            config,
            leftover: Vec::new(),
            guard: (),
        }
    }
}

/// Builds a server-side [`Transport`]: see [`ServerTransport::builder`].
#[must_use = "a builder does nothing until given a connection"]
pub struct ServerTransportBuilder<'a, G = ()> {
    config: &'a WsConfig,
    leftover: Vec<u8>,
    guard: G,
}

impl<'a, G> ServerTransportBuilder<'a, G>
where
    G: Send + 'static,
{
    /// The connection task keeps `guard` until it ends: drop-based
    /// bookkeeping, such as counting connections for a graceful shutdown,
    /// without a task of its own.
    pub fn guard<H: Send + 'static>(self, guard: H) -> ServerTransportBuilder<'a, H> {
        ServerTransportBuilder {
            config: self.config,
            leftover: self.leftover,
            guard,
        }
    }

    /// Bytes already read from the stream after the request head (by
    /// whoever read it), to be read as WebSocket input first. A request
    /// read by [`read_upgrade_request`](super::read_upgrade_request)
    /// carries its own, read before these.
    pub fn leftover(mut self, bytes: Vec<u8>) -> Self {
        self.leftover = bytes;
        self
    }

    /// Accepts `request`: answers `101 Switching Protocols` (selecting the
    /// `protoo` subprotocol when the client offered it) and starts the
    /// connection task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// An invalid upgrade request is answered (400, or 426 for another
    /// WebSocket version) and reported as [`TransportError::Rejected`]; a
    /// failure to write the answer is [`TransportError::Io`].
    pub async fn accept<S>(self, request: UpgradeRequest<S>) -> Result<Transport, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (transport, pending) = self.accept_pending(request).await?;
        pending.open().await?;
        Ok(transport)
    }

    /// Accepts `request` without answering it yet: returns the transport
    /// (frames sent to it are queued) and the [`PendingOpen`] that writes
    /// the `101` and starts the connection (or answers an HTTP error after
    /// all). Put the peer in its room first, and nothing sent there after
    /// the client's `open` misses it.
    ///
    /// ```no_run
    /// use protoo_transport::ws::{self, ServerTransport, WsConfig};
    ///
    /// # async fn run(socket: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    /// let config = WsConfig::default();
    /// let request = ws::read_upgrade_request(socket, &config).await?;
    /// let (transport, pending) = ServerTransport::builder(&config).accept_pending(request).await?;
    /// // ... put the peer on `transport` in its room ...
    /// pending.open().await?; // now the client sees the connection open
    /// # drop(transport);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`ServerTransportBuilder::accept`], for an invalid request.
    pub async fn accept_pending<S>(
        self,
        request: UpgradeRequest<S>,
    ) -> Result<(Transport, PendingOpen<S, G>), TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let had_leftover = !request.leftover.is_empty();
        let (stream, mut leftover, response) = request.prepare().await?;
        leftover.extend_from_slice(&self.leftover);
        let (transport, conn) = conn::start(stream, leftover, Role::Server, self.config);
        let pending = PendingOpen {
            conn: Some(conn),
            response,
            had_leftover,
            guard: Some(self.guard),
        };
        Ok((transport, pending))
    }

    /// A transport over `io`, a byte stream on which the WebSocket
    /// handshake was already done by someone else (an HTTP framework's
    /// upgrade: hyper's `Upgraded` wrapped in `TokioIo`), with the
    /// [`leftover`](ServerTransportBuilder::leftover) bytes read first.
    /// Starts the connection task on the current tokio runtime.
    pub fn upgraded<S>(self, io: S) -> Transport
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (transport, conn) = conn::start(io, self.leftover, Role::Server, self.config);
        conn::spawn(conn, self.guard);
        transport
    }

    /// A transport over a connection an HTTP framework will upgrade once
    /// its handler returns the `101` (hyper's `OnUpgrade`, mapped to the
    /// upgraded I/O): the connection task starts now and waits for
    /// `upgrade` before its first read or write; frames sent meanwhile are
    /// queued. If `upgrade` fails (the handler answered something else,
    /// the client went away), the transport reports a lost connection.
    pub fn upgrade<F, S>(self, upgrade: F) -> Transport
    where
        F: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = LateIo::Upgrading(Box::pin(upgrade));
        let (transport, conn) = conn::start(io, self.leftover, Role::Server, self.config);
        conn::spawn(conn, self.guard);
        transport
    }
}

impl<G> fmt::Debug for ServerTransportBuilder<'_, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTransportBuilder")
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}
