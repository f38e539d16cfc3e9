//! Targeted broadcast: one notification, encoded once, to the peers of a
//! room chosen by a [`Target`] (data, the same on every node of a cluster)
//! and, on this node only, by a predicate.

use std::fmt;
use std::sync::Arc;

use protoo_codec::{EncodeError, Frame, encode};
use protoo_transport::TransportError;
use serde::{Deserialize, Serialize};

use crate::peer::PeerState;
use crate::peer::remote_warn;
use crate::sync::lock;
use crate::{Peer, Room};

/// What a broadcast did, peer by peer of the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Peers the notification was queued to.
    pub delivered: usize,
    /// Peers left out: excluded by the target or the filter, or already
    /// closed.
    pub skipped: usize,
    /// Peers whose outbound queue had no room for it: they have closed
    /// themselves (their own byte limit) and did not get it.
    pub overflowed: usize,
    /// The sender ([`Broadcast::from`]) owed fan-out bytes
    /// ([`PeerConfig::fan_out_rate`](crate::PeerConfig::fan_out_rate)):
    /// nothing was sent, to any node, and every peer counts as skipped.
    pub rate_limited: bool,
}

/// Which peers of a room a broadcast reaches: the one value a
/// [`Broadcast`] builds, handed whole to the cluster backend
/// ([`ClusterBackend::broadcast`](crate::cluster::ClusterBackend::broadcast))
/// and applied on every node ([`LocalNode::deliver`](crate::cluster::LocalNode::deliver)).
///
/// It serialises with serde, so a backend carries it as it is (a new
/// targeting option is a new field here and the code that applies it,
/// nothing in between). The default reaches every peer of the room, on
/// every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// The ids of the peers left out.
    pub except: Vec<Arc<str>>,
    /// Only the peers listed in the room ([`Room::set_presence`]).
    pub listed: bool,
    /// Only the peers on this node: nothing is handed to the cluster
    /// backend ([`Broadcast::local`]).
    pub local: bool,
}

impl BroadcastReport {
    /// This report, or [`PeerError::RateLimited`](crate::PeerError::RateLimited)
    /// if the broadcast was not sent because its sender owed fan-out bytes
    /// ([`rate_limited`](Self::rate_limited)): in a handler,
    /// `room.to_all().from(&peer).notify("chat", &data)?.within_rate()?`
    /// answers the sender 429 `rate limit exceeded` then.
    pub fn within_rate(self) -> Result<Self, crate::PeerError> {
        if self.rate_limited {
            Err(crate::PeerError::RateLimited)
        } else {
            Ok(self)
        }
    }
}

impl Target {
    /// Whether the peer `peer_id` (`listed` or not in its room) is chosen.
    pub fn chooses(&self, peer_id: &str, listed: bool) -> bool {
        (!self.listed || listed) && !self.except.iter().any(|id| **id == *peer_id)
    }
}

/// A predicate on a peer.
type Keep<'a, D> = dyn Fn(&Peer<D>) -> bool + 'a;

/// A predicate on a peer, owned.
type Predicate<'a, D> = Box<Keep<'a, D>>;

/// A broadcast being aimed: [`Room::to_all`], then
/// [`from`](Broadcast::from), [`except`](Broadcast::except),
/// [`except_peer`](Broadcast::except_peer) and [`listed`](Broadcast::listed),
/// then [`notify`](Broadcast::notify) or [`send_frame`](Broadcast::send_frame).
///
/// A broadcast the application makes on a peer's behalf (relaying its chat
/// message, announcing it) names it with [`from`](Broadcast::from): the
/// peer is left out and pays for the fan-out, its frame length × the peers
/// reached, from its [`PeerConfig::fan_out_rate`](crate::PeerConfig::fan_out_rate).
///
/// Its choice is a [`Target`], data, so it reaches the chosen peers of the
/// room wherever they are (on every node of a cluster). A predicate on
/// each peer can only run here: [`local`](Broadcast::local) says so first,
/// then [`filter`](LocalBroadcast::filter).
///
/// ```
/// use protoo_core::Rooms;
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Peer data: whether the peer has joined.
/// let rooms: Rooms<bool> = Rooms::new();
/// let mut remotes = Vec::new();
/// let mut handlers = Vec::new();
/// for (id, joined) in [("alice", true), ("bob", true), ("carol", false)] {
///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
///     // Each peer's (peer, events) go to its handler; dropping the events
///     // would close the peer.
///     let admitted = rooms.admit("r", id).join(server_side, joined).await?;
///     handlers.push((admitted.peer, admitted.events));
///     remotes.push(client_side);
/// }
/// let room = rooms.get("r").unwrap();
/// // Everybody but alice.
/// let report = room
///     .to_all()
///     .except(["alice"])
///     .notify("newPeer", &serde_json::json!({"id": "alice"}))?;
/// assert_eq!((report.delivered, report.skipped, report.overflowed), (2, 1, 0));
/// // Every joined peer of this node but alice: bob.
/// let report = room
///     .to_all()
///     .except(["alice"])
///     .local()
///     .filter(|peer| *peer.data())
///     .notify("newPeer", &serde_json::json!({"id": "alice"}))?;
/// assert_eq!((report.delivered, report.skipped, report.overflowed), (1, 2, 0));
/// # Ok(())
/// # }
/// ```
#[must_use = "a broadcast is sent by `notify` or `send_frame`"]
pub struct Broadcast<'a, D, R = ()> {
    room: &'a Room<D, R>,
    target: Target,
    /// The peer on whose behalf it is sent ([`Broadcast::from`]).
    sender: Option<Arc<PeerState>>,
}

impl<'a, D, R> Broadcast<'a, D, R> {
    pub(crate) fn new(room: &'a Room<D, R>) -> Self {
        Broadcast {
            room,
            target: Target::default(),
            sender: None,
        }
    }

    /// Sends on behalf of `sender`: leaves it out (as
    /// [`except_peer`](Broadcast::except_peer)) and charges it for the
    /// fan-out, the frame's length × the peers it reached, against its
    /// [`PeerConfig::fan_out_rate`](crate::PeerConfig::fan_out_rate) (without
    /// one, nothing is charged).
    ///
    /// While the sender owes fan-out bytes the broadcast is not sent (its
    /// report says [`rate_limited`](BroadcastReport::rate_limited)) and is
    /// counted among the sender's [refused messages](Peer::refused_messages),
    /// and the sender's incoming requests are answered 429 and its
    /// notifications dropped until it has paid them back. In a room that
    /// spans several processes, only this node's recipients are charged.
    ///
    /// ```
    /// use protoo_core::{PeerConfig, Rate, Rooms};
    /// use protoo_transport::memory;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // 10 KB/s delivered on each peer's behalf.
    /// let config = PeerConfig::default().with_fan_out_rate(Rate::per_second(10_000));
    /// let rooms: Rooms = Rooms::builder().peer_config(config).build();
    /// let mut kept = Vec::new();
    /// for id in ["alice", "bob", "carol"] {
    ///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    ///     let joined = rooms.admit("r", id).join(server_side, ()).await?;
    ///     kept.push((joined.peer, joined.events, client_side));
    /// }
    /// let (alice, room) = (&kept[0].0, rooms.get("r").unwrap());
    /// let text = "x".repeat(6_000);
    /// // Bob and carol get it: alice owes 2 KB.
    /// let report = room.to_all().from(alice).notify("chat", &text)?;
    /// assert_eq!((report.delivered, report.rate_limited), (2, false));
    /// // Until she has paid them back, nothing more goes out on her behalf.
    /// let report = room.to_all().from(alice).notify("chat", &text)?;
    /// assert_eq!((report.delivered, report.rate_limited), (0, true));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from(mut self, sender: &Peer<D>) -> Self {
        self.target.except.push(sender.core().id.clone());
        self.sender = Some(sender.core().clone());
        self
    }

    /// Leaves out the peers with these ids.
    pub fn except<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.target
            .except
            .extend(ids.into_iter().map(|id| Arc::from(id.as_ref())));
        self
    }

    /// Leaves out `peer` (its id, shared rather than copied), without
    /// charging it: a broadcast on the peer's behalf is aimed with
    /// [`from`](Broadcast::from).
    pub fn except_peer(mut self, peer: &Peer<D>) -> Self {
        self.target.except.push(peer.core().id.clone());
        self
    }

    /// Sends only to the peers listed in the room (those that set their
    /// [presence](Room::set_presence): the joined peers of a
    /// mediasoup-demo room), wherever they are.
    pub fn listed(mut self) -> Self {
        self.target.listed = true;
        self
    }

    /// Reaches this node's peers only: in a room that spans several
    /// processes, nothing goes to the other nodes. The only way to a
    /// [`filter`](LocalBroadcast::filter), which is a closure and can only
    /// run here.
    pub fn local(mut self) -> LocalBroadcast<'a, D, R> {
        self.target.local = true;
        LocalBroadcast {
            room: self.room,
            target: self.target,
            sender: self.sender,
            filter: None,
        }
    }

    /// Encodes the notification once (a [`Payload`](protoo_codec::Payload)
    /// as data is copied as it is, not parsed again) and queues it to every
    /// chosen peer; never waits.
    pub fn notify(
        self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<BroadcastReport, EncodeError> {
        let frame = encode::notification(method, data)?;
        Ok(self.send_frame(&frame))
    }

    /// Queues an already-encoded frame to every chosen peer.
    ///
    /// This node's peers are visited under the room's lock (queueing never
    /// waits, and takes no room lock): no list of them is built and no peer
    /// handle is cloned. In a room that spans several processes
    /// ([`RoomsBuilder::cluster`](crate::RoomsBuilder::cluster)), the frame
    /// is then handed once to the cluster backend with the [`Target`], for
    /// the members on the other nodes; the report counts this node's peers.
    ///
    /// A broadcast [`from`](Broadcast::from) a peer that owes fan-out bytes
    /// is not sent (see there); otherwise the sender is charged for this
    /// node's deliveries.
    pub fn send_frame(self, frame: &Frame) -> BroadcastReport {
        self.room
            .send(frame, &self.target, self.sender.as_deref(), None)
    }
}

/// A broadcast to this node's peers of a room only ([`Broadcast::local`]),
/// which may choose them with a predicate ([`filter`](LocalBroadcast::filter)).
#[must_use = "a broadcast is sent by `notify` or `send_frame`"]
pub struct LocalBroadcast<'a, D, R = ()> {
    room: &'a Room<D, R>,
    target: Target,
    sender: Option<Arc<PeerState>>,
    filter: Option<Predicate<'a, D>>,
}

impl<'a, D, R> LocalBroadcast<'a, D, R> {
    /// Sends only to the peers for which `predicate` holds (called once per
    /// peer the target chose, outside the room's lock). A second call
    /// replaces the first predicate.
    pub fn filter(mut self, predicate: impl Fn(&Peer<D>) -> bool + 'a) -> Self {
        self.filter = Some(Box::new(predicate));
        self
    }

    /// As [`Broadcast::notify`], to this node's chosen peers.
    pub fn notify(
        self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<BroadcastReport, EncodeError> {
        let frame = encode::notification(method, data)?;
        Ok(self.send_frame(&frame))
    }

    /// Queues an already-encoded frame to this node's chosen peers. With a
    /// predicate, it runs on a snapshot of the peers, outside the room's
    /// lock, so that it may look at the room.
    ///
    /// A sender ([`Broadcast::from`]) is charged as there.
    pub fn send_frame(self, frame: &Frame) -> BroadcastReport {
        self.room.send(
            frame,
            &self.target,
            self.sender.as_deref(),
            self.filter.as_deref(),
        )
    }
}

/// Charges `sender`, if any, for the deliveries of a broadcast.
fn charge(sender: Option<&PeerState>, frame: &Frame, report: &BroadcastReport) {
    if let Some(sender) = sender {
        let bytes = u64::try_from(frame.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::try_from(report.delivered).unwrap_or(u64::MAX));
        sender.charge_fan_out(bytes);
    }
}

impl<D, R> Room<D, R> {
    /// Sends a broadcast (both builders end here): refused while `sender`
    /// owes fan-out bytes; else delivered to this node's chosen peers, the
    /// sender charged for them, and, unless the target is
    /// [`local`](Target::local), handed once to the cluster backend.
    fn send(
        &self,
        frame: &Frame,
        target: &Target,
        sender: Option<&PeerState>,
        filter: Option<&Keep<'_, D>>,
    ) -> BroadcastReport {
        if let Some(report) = self.refused_fan_out(sender, frame) {
            return report;
        }
        let report = self.deliver(frame, target, filter);
        charge(sender, frame, &report);
        if let (false, Some(cluster)) = (target.local, &self.inner.cluster) {
            cluster.broadcast(self.id(), frame, target);
        }
        report
    }

    /// The report of a broadcast not sent because its sender owes fan-out
    /// bytes, counted as one of its refused messages; `None` when it may be
    /// sent.
    fn refused_fan_out(
        &self,
        sender: Option<&PeerState>,
        frame: &Frame,
    ) -> Option<BroadcastReport> {
        let sender = sender?;
        if !sender.fan_out_in_debt() {
            return None;
        }
        sender.budget.count_refused();
        crate::metrics::refused(true, false);
        remote_warn!(
            sender,
            room_id = %protoo_transport::log::Remote(self.id()),
            bytes = frame.len(),
            "broadcast dropped: fan-out rate exceeded"
        );
        Some(BroadcastReport {
            skipped: lock(&self.inner.state).peers.len(),
            rate_limited: true,
            ..BroadcastReport::default()
        })
    }

    /// Queues `frame` to this node's peers that `target` (and `filter`, if
    /// any) chooses: what every broadcast does here, and what a broadcast
    /// from another node does on arrival.
    pub(crate) fn deliver(
        &self,
        frame: &Frame,
        target: &Target,
        filter: Option<&Keep<'_, D>>,
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        match filter {
            None => {
                let state = lock(&self.inner.state);
                for (id, peer) in &state.peers {
                    let chosen = target.chooses(id, state.presence.contains_key(id));
                    self.offer(peer, frame, chosen, &mut report);
                }
                Self::count(state.peers.values().next(), frame, &report);
            }
            Some(keep) => {
                // Whether each is chosen by the target, under the same lock.
                let peers: Vec<(Peer<D>, bool)> = {
                    let state = lock(&self.inner.state);
                    state
                        .peers
                        .iter()
                        .map(|(id, peer)| {
                            let chosen = target.chooses(id, state.presence.contains_key(id));
                            (peer.clone(), chosen)
                        })
                        .collect()
                };
                for (peer, chosen) in &peers {
                    let chosen = *chosen && keep(peer);
                    self.offer(peer, frame, chosen, &mut report);
                }
                Self::count(peers.first().map(|(peer, _)| peer), frame, &report);
            }
        }
        report
    }

    /// Counts the deliveries of a broadcast at once, with the handles of
    /// one of the room's peers (every peer's handles are the same series).
    fn count(peer: Option<&Peer<D>>, frame: &Frame, report: &BroadcastReport) {
        if let Some(peer) = peer {
            let sent = crate::metrics::Sent::of(frame.as_bytes());
            peer.core().metrics.sent_many(sent, report.delivered);
        }
    }

    /// Queues `frame` to `peer` if it is chosen and open, counting what
    /// happened.
    fn offer(&self, peer: &Peer<D>, frame: &Frame, chosen: bool, report: &mut BroadcastReport) {
        if !chosen || peer.is_closed() {
            report.skipped += 1;
            return;
        }
        // Counted by `count`, once for the whole broadcast.
        match peer.core().send_uncounted(frame.clone()) {
            Ok(()) => report.delivered += 1,
            Err(TransportError::Closed(_)) => report.skipped += 1,
            Err(error) => {
                tracing::debug!(
                    room_id = %protoo_transport::log::Remote(self.id()),
                    peer_id = %protoo_transport::log::Remote(peer.id()),
                    %error,
                    "broadcast: peer overflowed"
                );
                report.overflowed += 1;
            }
        }
    }
}

impl<D, R> fmt::Debug for Broadcast<'_, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("room", &self.room.id())
            .field("target", &self.target)
            .field("sender", &self.sender.as_ref().map(|sender| &sender.id))
            .finish()
    }
}

impl<D, R> fmt::Debug for LocalBroadcast<'_, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroadcast")
            .field("room", &self.room.id())
            .field("target", &self.target)
            .field("sender", &self.sender.as_ref().map(|sender| &sender.id))
            .field("filter", &self.filter.is_some())
            .finish()
    }
}
