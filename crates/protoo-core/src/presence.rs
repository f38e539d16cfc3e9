//! Who is listed in a room: the peers that announced themselves (a
//! `join`), with the small information a member list carries (a display
//! name), and the operations that reach a peer of the room by its id.
//!
//! A room's members are its peers, listed or not: a broadcast reaches all
//! of them. Presence only decides who a member list shows, which is what a
//! mediasoup-demo `join` answers. It is kept apart from the peer data `D`
//! because it is what a room spanning several processes has to share:
//! the application says what is listed, the room says who is listed
//! wherever the peers are.

use std::fmt;

use protoo_codec::{Payload, encode};
use serde::Serialize;

use crate::cluster::PeerMessage;
use crate::sync::lock;
use crate::{Peer, PeerError, RequestError, Room};

/// A listed peer of a room: its id and the information given to
/// [`Room::set_presence`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// The peer's id.
    pub peer_id: String,
    /// What the application listed it with, as JSON.
    pub info: Payload,
}

impl Presence {
    /// A listed peer: its id and its information (a cluster backend makes
    /// these from what other nodes listed).
    pub fn new(peer_id: impl Into<String>, info: Payload) -> Self {
        Presence {
            peer_id: peer_id.into(),
            info,
        }
    }

    /// The listed information as a typed value.
    pub fn info_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.info.deserialize()
    }
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence")
            .field("peer_id", &self.peer_id)
            .field("info", &self.info.as_str())
            .finish()
    }
}

impl<D, R> Room<D, R> {
    /// Lists the peer `peer_id` of the room with `info` (replacing what it
    /// was listed with): from now on [`Room::presence`] shows it. A peer
    /// stays listed until it leaves the room; a peer that replaces another
    /// with its id is not listed until it sets its own presence.
    ///
    /// Fails with [`PeerError::Closed`] if no open peer has this id in the
    /// room, with [`PeerError::Encode`] if `info` cannot be encoded, and
    /// with [`PeerError::PresenceTooLarge`] if the encoded `info` is longer
    /// than the peer's [`PeerConfig::max_presence_bytes`](crate::PeerConfig::max_presence_bytes)
    /// (4 KiB by default; a handler returning that error answers 400).
    ///
    /// ```
    /// use protoo_core::Rooms;
    /// use protoo_transport::memory;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rooms: Rooms = Rooms::new();
    /// let mut kept = Vec::new();
    /// for id in ["alice", "bob"] {
    ///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    ///     let joined = rooms.admit("r", id).join(server_side, ()).await?;
    ///     kept.push((joined.peer, joined.events, client_side));
    /// }
    /// let room = rooms.get("r").unwrap();
    /// // Only alice has joined: both are members, only she is listed.
    /// room.set_presence("alice", &serde_json::json!({"displayName": "Alice"}))?;
    /// let listed = room.presence().await;
    /// assert_eq!(listed.len(), 1);
    /// assert_eq!(listed[0].peer_id, "alice");
    /// assert_eq!(listed[0].info.as_str(), r#"{"displayName":"Alice"}"#);
    /// assert_eq!(room.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_presence(
        &self,
        peer_id: &str,
        info: &(impl Serialize + ?Sized),
    ) -> Result<(), PeerError> {
        let info = Payload::from_serialize(info)?;
        self.set_presence_payload(peer_id, info)
    }

    /// [`Room::set_presence`] with information already encoded (a received
    /// payload, kept as it is).
    pub fn set_presence_payload(&self, peer_id: &str, info: Payload) -> Result<(), PeerError> {
        let mut state = lock(&self.inner.state);
        let Some((id, peer)) = state.peers.get_key_value(peer_id) else {
            return Err(PeerError::Closed);
        };
        if peer.is_closed() {
            return Err(PeerError::Closed);
        }
        let max = peer.core().max_presence_bytes as usize;
        let bytes = info.as_str().len();
        if bytes > max {
            return Err(PeerError::PresenceTooLarge { bytes, max });
        }
        let id = id.clone();
        if let Some(cluster) = &self.inner.cluster {
            cluster.presence_set(&self.inner.id, &id, &info);
        }
        state.presence.insert(id, info);
        Ok(())
    }

    /// Whether the peer `peer_id` is listed in the room.
    pub fn is_listed(&self, peer_id: &str) -> bool {
        lock(&self.inner.state).presence.contains_key(peer_id)
    }

    /// The listed peers of the room, in no particular order.
    ///
    /// Asynchronous because a room whose peers live in several processes
    /// answers with the peers listed in all of them (from the cluster
    /// backend; this process's own list when the backend cannot answer);
    /// a room of this process alone answers at once.
    pub async fn presence(&self) -> Vec<Presence> {
        if let Some(cluster) = &self.inner.cluster
            && let Some(listed) = cluster.presence(&self.inner.id).await
        {
            return listed;
        }
        self.local_presence()
    }

    /// The listed peers of this process's part of the room.
    fn local_presence(&self) -> Vec<Presence> {
        lock(&self.inner.state)
            .presence
            .iter()
            .map(|(id, info)| Presence {
                peer_id: id.to_string(),
                info: info.clone(),
            })
            .collect()
    }

    /// Sends a notification to the peer `peer_id` of the room, on this
    /// node or, in a room spanning several processes, on whatever node it
    /// is. Fails with [`PeerError::Closed`] if there is none (or it is
    /// closed).
    pub async fn notify_peer(
        &self,
        peer_id: &str,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<(), PeerError> {
        match (self.member(peer_id), &self.inner.cluster) {
            (Ok(peer), _) => peer.notify(method, data),
            (Err(error), None) => Err(error),
            (Err(_), Some(cluster)) => {
                let frame = encode::notification(method, data)?;
                let sent = cluster.to_peer(&self.inner.id, peer_id, PeerMessage::Notify(frame));
                sent.await.map(drop).map_err(|_| PeerError::Closed)
            }
        }
    }

    /// Sends a request to the peer `peer_id` of the room (on whatever node
    /// it is, as [`Room::notify_peer`]) and waits for its response (see
    /// [`Peer::request`]). Fails with [`RequestError::PeerClosed`] if there
    /// is no such peer.
    pub async fn request_peer(
        &self,
        peer_id: &str,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<Payload, RequestError> {
        match (self.member(peer_id), &self.inner.cluster) {
            (Ok(peer), _) => peer.request(method, data).await,
            (Err(_), None) => Err(RequestError::PeerClosed),
            (Err(_), Some(cluster)) => {
                let data = Payload::from_serialize(data).map_err(RequestError::Encode)?;
                let message = PeerMessage::Request {
                    method: method.to_owned(),
                    data,
                };
                let reply = cluster.to_peer(&self.inner.id, peer_id, message).await?;
                Ok(reply.unwrap_or_default())
            }
        }
    }

    /// Closes the peer `peer_id` of the room (4000, as [`Peer::close`]), on
    /// whatever node it is (as [`Room::notify_peer`]); returns whether
    /// there was one open.
    pub async fn close_peer(&self, peer_id: &str) -> bool {
        match (self.member(peer_id), &self.inner.cluster) {
            (Ok(peer), _) => {
                peer.close();
                true
            }
            (Err(_), None) => false,
            (Err(_), Some(cluster)) => cluster
                .to_peer(&self.inner.id, peer_id, PeerMessage::Close)
                .await
                .is_ok(),
        }
    }

    /// The open peer `peer_id` of the room.
    pub(crate) fn member(&self, peer_id: &str) -> Result<Peer<D>, PeerError> {
        match lock(&self.inner.state).peers.get(peer_id) {
            Some(peer) if !peer.is_closed() => Ok(peer.clone()),
            _ => Err(PeerError::Closed),
        }
    }
}
