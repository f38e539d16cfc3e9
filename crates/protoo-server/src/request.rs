use std::fmt;
use std::net::SocketAddr;

use http::HeaderMap;
use protoo_core::{DuplicatePolicy, Peer, PeerConfig, PeerEvents, Room, Rooms};
use protoo_transport::Transport;
use tokio::sync::oneshot;

use crate::ServerError;

/// What the application decided for a connection request.
pub(crate) enum Decision {
    /// Upgrade, and hand the transport back through this channel.
    Accept(oneshot::Sender<Result<Transport, ServerError>>),
    /// Answer the upgrade with this HTTP status and reason.
    Reject(u16, String),
}

/// The parts of the HTTP upgrade request the application decides on.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) tls: bool,
}

/// A client asking to connect: protoo's `connectionrequest`.
///
/// The server has already checked what every protoo server checks (a valid
/// WebSocket upgrade, the `protoo` subprotocol, the origin allow-list, the
/// connection limit); the application decides the rest from the path,
/// query, headers and address: [`accept`](ConnectionRequest::accept) it or
/// [`reject`](ConnectionRequest::reject) it, once. The decision may take a
/// while (an authentication lookup), within the handshake timeout; a
/// request dropped undecided is answered 500, and one left undecided past
/// the timeout 503.
pub struct ConnectionRequest {
    head: RequestHead,
    reply: Option<oneshot::Sender<Decision>>,
}

impl ConnectionRequest {
    pub(crate) fn new(head: RequestHead, reply: oneshot::Sender<Decision>) -> Self {
        ConnectionRequest {
            head,
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

    fn decide(&mut self, decision: Decision) -> bool {
        match self.reply.take() {
            Some(reply) => reply.send(decision).is_ok(),
            None => false,
        }
    }

    /// Accepts: completes the WebSocket upgrade (subprotocol `protoo`) and
    /// returns the peer's transport. Fails if the handshake timeout passed
    /// first or the connection broke.
    pub async fn accept(mut self) -> Result<Transport, ServerError> {
        let (tx, rx) = oneshot::channel();
        if !self.decide(Decision::Accept(tx)) {
            return Err(ServerError::HandshakeTimeout);
        }
        rx.await.unwrap_or(Err(ServerError::HandshakeTimeout))
    }

    /// Accepts and admits the peer into `room` with `peer_id`; see
    /// [`Room::create_peer_with`].
    pub async fn accept_into<D: Send + Sync + 'static>(
        self,
        room: &Room<D>,
        peer_id: impl Into<String>,
        data: D,
        config: PeerConfig,
        policy: DuplicatePolicy,
    ) -> Result<(Peer<D>, PeerEvents), ServerError> {
        let transport = self.accept().await?;
        Ok(room.create_peer_with(peer_id, transport, data, config, policy)?)
    }

    /// Accepts and admits the peer into the room `room_id` of `rooms`,
    /// creating the room if needed; see [`Rooms::create_peer`].
    pub async fn accept_into_rooms<D: Send + Sync + 'static>(
        self,
        rooms: &Rooms<D>,
        room_id: &str,
        peer_id: impl Into<String>,
        data: D,
        config: PeerConfig,
        policy: DuplicatePolicy,
    ) -> Result<(Room<D>, Peer<D>, PeerEvents), ServerError> {
        let transport = self.accept().await?;
        Ok(rooms.create_peer(room_id, peer_id, transport, data, config, policy)?)
    }

    /// Accepts and admits the peer into the room `room_id` of `rooms` with
    /// the registry's defaults; see [`Rooms::join`].
    pub async fn accept_join<D: Send + Sync + 'static>(
        self,
        rooms: &Rooms<D>,
        room_id: &str,
        peer_id: impl Into<String>,
        data: D,
    ) -> Result<(Room<D>, Peer<D>, PeerEvents), ServerError> {
        let transport = self.accept().await?;
        Ok(rooms.join(room_id, peer_id, transport, data)?)
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
            .field("target", &self.head.target)
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
