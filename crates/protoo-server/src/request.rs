//! [`ConnectionRequest`]: a WebSocket upgrade request waiting for the
//! application's decision, with what it carries (path, query, headers,
//! remote address, verified identity) and how it is accepted or rejected.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use http::HeaderMap;
use protoo_core::Identity;
use protoo_transport::Transport;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ServerError;

/// A transport whose client has not yet seen the WebSocket open, and what
/// opens it.
pub(crate) type Pending = (Transport, Opening);

/// What the application decided for a connection request.
pub(crate) enum Decision {
    /// Upgrade, and hand the transport back through this channel.
    Accept(oneshot::Sender<Result<Pending, ServerError>>),
    /// Answer the upgrade with this HTTP status and reason.
    Reject(u16, String),
}

/// Lets the client see its WebSocket open (the `101 Switching Protocols`
/// goes out): [`Opening::open`], or dropping it, which does the same.
///
/// Given by `ConnectionRequest::accept_pending` with a transport that
/// exists before the client can send or receive on it: the peer is put in
/// its room first, and anything sent to the room after the client's `open`
/// reaches it. Frames sent to the transport before it opens are queued.
#[derive(Debug)]
pub(crate) struct Opening(Option<oneshot::Sender<()>>);

impl Opening {
    pub(crate) fn new() -> (Opening, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Opening(Some(tx)), rx)
    }

    /// Opens the connection now.
    pub(crate) fn open(mut self) {
        if let Some(open) = self.0.take() {
            let _ = open.send(());
        }
    }
}

/// The parts of the HTTP upgrade request the application decides on.
/// (No `Debug`: its target may hold a token; see `ConnectionRequest`'s.)
pub(crate) struct RequestHead {
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) tls: bool,
    /// When the handshake times out.
    pub(crate) deadline: Instant,
    /// Who the connection's token says it is, when the server verifies
    /// tokens.
    pub(crate) identity: Option<Identity>,
}

/// A client asking to connect: protoo's `connectionrequest`.
///
/// The server has already checked what every protoo server checks (a valid
/// WebSocket upgrade, the `protoo` subprotocol, the origin allow-list, the
/// connection limit); the application decides the rest from the path,
/// query, headers and address, once: [`admit`](ConnectionRequest::admit) it
/// into a room, [`accept`](ConnectionRequest::accept) it (a bare transport,
/// for a peer outside any room), or [`reject`](ConnectionRequest::reject)
/// it. The decision may take a
/// while (an authentication lookup), within the handshake timeout; a
/// request dropped undecided is answered 500, and one left undecided past
/// the timeout 503.
pub struct ConnectionRequest {
    /// Boxed: a request is moved into the application's per-connection
    /// task, whose future keeps its size for the connection's whole life.
    head: Box<RequestHead>,
    reply: Option<oneshot::Sender<Decision>>,
}

impl ConnectionRequest {
    pub(crate) fn new(head: RequestHead, reply: oneshot::Sender<Decision>) -> Self {
        ConnectionRequest {
            head: Box::new(head),
            reply: Some(reply),
        }
    }

    /// The request target: path and query, as sent (`/?roomId=r&peerId=p`).
    pub fn path_and_query(&self) -> &str {
        &self.head.target
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.head
            .target
            .split_once('?')
            .map_or(&*self.head.target, |(path, _)| path)
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.head.target.split_once('?').map(|(_, query)| query)
    }

    /// The first value of the query parameter `name`, percent-decoded
    /// (`+` reads as a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        protoo_transport::ws::query_param(self.query()?, name)
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The `Origin` header, if any.
    pub fn origin(&self) -> Option<&str> {
        self.head.headers.get(http::header::ORIGIN)?.to_str().ok()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.head.remote_addr
    }

    /// Whether the connection came in over TLS (`wss://`) on a server bound
    /// with `bind_tls`. Behind the axum mount the HTTP server's TLS is not
    /// visible here, and this is `false` unless the request URI carries the
    /// `https` scheme.
    pub fn is_tls(&self) -> bool {
        self.head.tls
    }

    /// Who the connection is, as its token proves, when the server
    /// verifies tokens ([`ServerConfig::with_auth`](crate::ServerConfig::with_auth));
    /// [`admit`](ConnectionRequest::admit) gives it to the peer.
    pub fn identity(&self) -> Option<&Identity> {
        self.head.identity.as_ref()
    }

    /// When the handshake times out.
    pub(crate) fn deadline(&self) -> Instant {
        self.head.deadline
    }

    pub(crate) fn decide(&mut self, decision: Decision) -> bool {
        match self.reply.take() {
            Some(reply) => reply.send(decision).is_ok(),
            None => false,
        }
    }

    /// Accepts: completes the WebSocket upgrade (subprotocol `protoo`) and
    /// returns the peer's transport. Fails if the handshake timeout passed
    /// first or the connection broke.
    ///
    /// For a peer outside any room ([`Peer::new`](protoo_core::Peer::new));
    /// a peer that joins a room is admitted with
    /// [`ConnectionRequest::admit`] instead.
    ///
    /// It returns a boxed future: what the handshake holds is freed once it
    /// is done, instead of sizing the application's per-connection task for
    /// the peer's whole life.
    pub fn accept(self) -> impl Future<Output = Result<Transport, ServerError>> + Send {
        Box::pin(async move {
            let (transport, opening) = self.accept_pending().await?;
            opening.open();
            Ok(transport)
        })
    }

    /// Accepts, but holds the client's WebSocket open back: returns the
    /// peer's transport and the [`Opening`] that lets the client see it
    /// open. The admission ([`ConnectionRequest::admit`]) puts the peer in
    /// its room before opening, so nothing sent there after the client's
    /// `open` misses it, as with protoo-server.
    pub(crate) async fn accept_pending(mut self) -> Result<(Transport, Opening), ServerError> {
        let (tx, rx) = oneshot::channel();
        if !self.decide(Decision::Accept(tx)) {
            return Err(ServerError::HandshakeTimeout);
        }
        rx.await.unwrap_or(Err(ServerError::HandshakeTimeout))
    }

    /// Rejects with an HTTP `status` and `reason` (protoo's
    /// `reject(code, reason)`); protoo's defaults are 403 `Rejected`.
    pub fn reject(mut self, status: u16, reason: impl Into<String>) {
        let reason = reason.into();
        self.decide(Decision::Reject(status, reason));
    }
}

impl fmt::Debug for ConnectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionRequest")
            .field("target", &crate::auth::masked(&self.head.target))
            .field("identity", &self.head.identity)
            .field("origin", &self.origin())
            .field("remote_addr", &self.head.remote_addr)
            .field("tls", &self.head.tls)
            .field("decided", &self.reply.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str) -> ConnectionRequest {
        let (tx, _rx) = oneshot::channel();
        ConnectionRequest::new(
            RequestHead {
                target: target.into(),
                headers: HeaderMap::new(),
                remote_addr: ([127, 0, 0, 1], 1).into(),
                tls: false,
                deadline: Instant::now(),
                identity: None,
            },
            tx,
        )
    }

    #[test]
    fn query_parameters() {
        let r = request("/room?roomId=a%20b&peerId=p+1&x&peerId=second&bad=%zz");
        assert_eq!(r.path(), "/room");
        assert_eq!(r.query_param("roomId").as_deref(), Some("a b"));
        assert_eq!(r.query_param("peerId").as_deref(), Some("p 1"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(request("/").query_param("roomId"), None);
        assert_eq!(
            request("/?%C3%A9=%E2%82%AC").query_param("é").as_deref(),
            Some("€")
        );
    }
}
