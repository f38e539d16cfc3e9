//! Targeted broadcast: one notification, encoded once, to the peers of a
//! room chosen by id and by a predicate on each peer.

use std::fmt;

use protoo_codec::{EncodeError, Frame, encode};
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
/// use protoo_core::{PeerConfig, Room};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Peer data: whether the peer has joined.
/// let room: Room<bool> = Room::with_id("r");
/// let mut remotes = Vec::new();
/// let mut handlers = Vec::new();
/// for (id, joined) in [("alice", true), ("bob", true), ("carol", false)] {
///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
///     // Each peer's (peer, events) go to its handler; dropping the events
///     // would close the peer.
///     handlers.push(room.create_peer(id, server_side, joined, PeerConfig::default())?);
///     remotes.push(client_side);
/// }
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
    except: Vec<&'a str>,
    filter: Option<Predicate<'a, D>>,
}

impl<'a, D, R> Broadcast<'a, D, R> {
    pub(crate) fn new(room: &'a Room<D, R>) -> Self {
        Broadcast {
            room,
            except: Vec::new(),
            filter: None,
        }
    }

    /// Leaves out the peers with these ids.
    pub fn except(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        self.except.extend(ids);
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

    /// Queues an already-encoded frame to every chosen peer.
    pub fn send_frame(self, frame: &Frame) -> BroadcastReport {
        let peers: Vec<Peer<D>> = lock(&self.room.inner.state)
            .peers
            .values()
            .cloned()
            .collect();
        let mut report = BroadcastReport::default();
        for peer in &peers {
            let chosen = !self.except.contains(&peer.id())
                && !peer.is_closed()
                && self.filter.as_ref().is_none_or(|keep| keep(peer));
            if !chosen {
                report.skipped += 1;
                continue;
            }
            match peer.core().send_uncounted(frame.clone()) {
                Ok(()) => report.delivered += 1,
                Err(TransportError::Closed(_)) => report.skipped += 1,
                Err(error) => {
                    tracing::debug!(room_id = self.room.id(), peer_id = peer.id(), %error, "broadcast: peer overflowed");
                    report.overflowed += 1;
                }
            }
        }
        if let Some(peer) = peers.first() {
            // Every peer's handles are the same series: count once.
            let counted = crate::metrics::Sent::of(frame.as_bytes());
            peer.core().metrics.sent_many(counted, report.delivered);
        }
        report
    }
}

impl<D, R> fmt::Debug for Broadcast<'_, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("room", &self.room.id())
            .field("except", &self.except)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}
