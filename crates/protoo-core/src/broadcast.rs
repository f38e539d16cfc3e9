//! Targeted broadcast: one notification, encoded once, to the peers of a
//! room chosen by id and by a predicate on each peer.

use std::borrow::Cow;
use std::fmt;

use protoo_codec::{EncodeError, Frame, Payload, encode};
use protoo_transport::TransportError;
use serde::Serialize;

use crate::peer::lock;
use crate::{Peer, Room};

/// What a broadcast did, peer by peer of the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Peers the notification was queued to.
    pub delivered: usize,
    /// Peers left out: excluded by id, refused by the predicate, or already
    /// closed.
    pub skipped: usize,
    /// Peers whose outbound queue had no room for it: they have closed
    /// themselves (their own byte limit) and did not get it.
    pub overflowed: usize,
}

/// A predicate on a peer.
type Predicate<'a, D> = Box<dyn Fn(&Peer<D>) -> bool + 'a>;

/// A broadcast being aimed: [`Room::to_all`], then
/// [`except`](Broadcast::except) and [`filter`](Broadcast::filter), then
/// [`notify`](Broadcast::notify).
///
/// The targeting is data (the excluded ids) plus a predicate evaluated on
/// each peer where it is, so the same choice can be applied to the peers of
/// a room wherever they live.
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
/// // Every joined peer but alice: bob.
/// let report = room
///     .to_all()
///     .except(["alice"])
///     .filter(|peer| *peer.data())
///     .notify("newPeer", &serde_json::json!({"id": "alice"}))?;
/// assert_eq!((report.delivered, report.skipped, report.overflowed), (1, 2, 0));
/// # Ok(())
/// # }
/// ```
#[must_use = "a broadcast is sent by `notify` or `send_frame`"]
pub struct Broadcast<'a, D, R = ()> {
    room: &'a Room<D, R>,
    /// Borrowed when given as a slice ([`Room::broadcast`]): no allocation.
    except: Cow<'a, [&'a str]>,
    filter: Option<Predicate<'a, D>>,
    /// Only the peers listed in the room ([`Room::set_presence`]).
    listed: bool,
}

impl<'a, D, R> Broadcast<'a, D, R> {
    pub(crate) fn new(room: &'a Room<D, R>) -> Self {
        Broadcast {
            room,
            except: Cow::Borrowed(&[]),
            filter: None,
            listed: false,
        }
    }

    /// Leaves out the peers with these ids.
    pub fn except(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        self.except.to_mut().extend(ids);
        self
    }

    /// Leaves out the peers whose ids are in `ids` (borrowed as it is).
    pub(crate) fn except_slice(mut self, ids: &'a [&'a str]) -> Self {
        if self.except.is_empty() {
            self.except = Cow::Borrowed(ids);
        } else {
            self.except.to_mut().extend_from_slice(ids);
        }
        self
    }

    /// Sends only to the peers listed in the room (those that set their
    /// [presence](Room::set_presence): the joined peers of a
    /// mediasoup-demo room). Unlike a [`filter`](Broadcast::filter), this
    /// choice is data, so it holds for the room's peers wherever they are.
    pub fn listed(mut self) -> Self {
        self.listed = true;
        self
    }

    /// Sends only to the peers for which `predicate` holds (called once per
    /// peer not excluded by id, outside the room's lock). A second call
    /// replaces the first predicate.
    pub fn filter(mut self, predicate: impl Fn(&Peer<D>) -> bool + 'a) -> Self {
        self.filter = Some(Box::new(predicate));
        self
    }

    /// Encodes the notification once and queues it to every chosen peer;
    /// never waits.
    pub fn notify(
        self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<BroadcastReport, EncodeError> {
        let frame = encode::notification(method, data)?;
        Ok(self.send_frame(&frame))
    }

    /// Like [`notify`](Broadcast::notify), with a received payload as the
    /// data, as it is (its JSON text copied, not parsed and encoded again):
    /// forwarding what one peer sent to the others.
    pub fn notify_payload(self, method: &str, data: &Payload) -> BroadcastReport {
        let frame = encode::notification_payload(method, data);
        self.send_frame(&frame)
    }

    /// Queues an already-encoded frame to every chosen peer.
    ///
    /// Without a predicate, the peers are visited under the room's lock
    /// (queueing never waits, and takes no room lock): no list of them is
    /// built and no peer handle is cloned. With one, the predicate runs on a
    /// snapshot, outside the lock, so that it may look at the room.
    ///
    /// In a room that spans several processes
    /// ([`RoomsBuilder::cluster`](crate::RoomsBuilder::cluster)), the frame
    /// is then handed once to the cluster backend for the members on the
    /// other nodes, with the excluded ids and [`listed`](Broadcast::listed);
    /// the report counts this node's peers. A broadcast with a
    /// [`filter`](Broadcast::filter) reaches this node's peers only: the
    /// predicate is a closure, it cannot run elsewhere.
    pub fn send_frame(self, frame: &Frame) -> BroadcastReport {
        let report = self.deliver_here(frame);
        if self.filter.is_none()
            && let Some(cluster) = &self.room.inner.cluster
        {
            cluster.broadcast(self.room.id(), frame, &self.except, self.listed);
        }
        report
    }

    /// Queues `frame` to the chosen peers of this node.
    pub(crate) fn deliver_here(&self, frame: &Frame) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        match &self.filter {
            None => {
                let state = lock(&self.room.inner.state);
                for (id, peer) in &state.peers {
                    let chosen = !self.except.contains(&peer.id())
                        && (!self.listed || state.presence.contains_key(id));
                    self.offer(peer, frame, chosen, &mut report);
                }
                Self::count(state.peers.values().next(), frame, &report);
            }
            Some(keep) => {
                // With whether each is listed, taken under the same lock.
                let peers: Vec<(Peer<D>, bool)> = {
                    let state = lock(&self.room.inner.state);
                    state
                        .peers
                        .iter()
                        .map(|(id, peer)| (peer.clone(), state.presence.contains_key(id)))
                        .collect()
                };
                for (peer, listed) in &peers {
                    let chosen = !self.except.contains(&peer.id())
                        && (!self.listed || *listed)
                        && keep(peer);
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
                    room_id = %protoo_transport::log::Remote(self.room.id()),
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
            .field("except", &self.except)
            .field("filter", &self.filter.is_some())
            .field("listed", &self.listed)
            .finish()
    }
}
