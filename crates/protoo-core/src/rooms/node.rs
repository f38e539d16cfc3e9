//! This node's rooms as a cluster backend reaches them
//! ([`LocalNode`](crate::cluster::LocalNode)): what other nodes send,
//! delivered to the peers here.

use std::future::ready;
use std::sync::Arc;

use protoo_codec::Frame;

use super::{RegistryInner, Slot};
use crate::cluster::{
    ClusterFuture, Handover, LostMember, Member, NodeRooms, PeerMessage, PeerReply,
};
use crate::session::SESSION_MOVED_REASON;
use crate::sync::lock;
use crate::{PeerError, RequestError, Room, Target};
use protoo_transport::{CloseReason, Initiator, close_code};

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> RegistryInner<D, R> {
    /// The room with this id on this node, if any.
    fn local_room(&self, room_id: &str) -> Option<Room<D, R>> {
        lock(&self.rooms)
            .get(room_id)
            .and_then(Slot::ready)
            .cloned()
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> NodeRooms for RegistryInner<D, R> {
    fn deliver(&self, room_id: &str, frame: &Frame, target: &Target) -> usize {
        let Some(room) = self.local_room(room_id) else {
            return 0;
        };
        room.deliver(frame, target, None).delivered
    }

    fn replace(&self, room_id: &str, peer_id: &str) -> Option<ClusterFuture<Option<Handover>>> {
        let room = self.local_room(room_id)?;
        let peer = room.member(peer_id).ok()?;
        let core = peer.core().clone();
        drop(peer);
        let handover = core
            .session
            .as_ref()
            .and_then(|session| session.hand_over());
        let handover = match handover {
            Some(frames) => {
                tracing::debug!(
                    room_id = %protoo_transport::log::Remote(room_id),
                    peer_id = %protoo_transport::log::Remote(peer_id),
                    frames = frames.len(),
                    "session moved to another node"
                );
                let presence = lock(&room.inner.state).presence.get(peer_id).cloned();
                let mut handover = Handover::new(frames, presence);
                // In flight until the backend is done with it: counted
                // before the peer leaves, which may close the room (and let
                // a drain end).
                handover.in_flight = Some(Arc::new(Handing::new(&self.handovers)));
                core.finish(
                    CloseReason::new(
                        Some(close_code::PROTOO_CLOSED),
                        SESSION_MOVED_REASON,
                        Initiator::Moved,
                    ),
                    false,
                );
                Some(handover)
            }
            None => {
                tracing::debug!(
                    room_id = %protoo_transport::log::Remote(room_id),
                    peer_id = %protoo_transport::log::Remote(peer_id),
                    "peer replaced by a new one with its id on another node"
                );
                core.close_replaced();
                None
            }
        };
        Some(Box::pin(async move {
            core.events_finished().await;
            handover
        }))
    }

    fn lost_frame(&self, member: &LostMember) -> Option<Frame> {
        self.on_member_lost.as_ref().and_then(|hook| hook(member))
    }

    fn to_peer(
        &self,
        room_id: &str,
        peer_id: &str,
        message: PeerMessage,
    ) -> ClusterFuture<PeerReply> {
        let Some(peer) = self
            .local_room(room_id)
            .and_then(|room| room.member(peer_id).ok())
        else {
            return Box::pin(ready(Err(RequestError::PeerClosed)));
        };
        match message {
            PeerMessage::Notify(frame) => {
                Box::pin(ready(peer.send_frame(frame).map(|()| None).map_err(
                    |error| match PeerError::from_transport(error) {
                        PeerError::Send(error) => RequestError::Send(error),
                        _ => RequestError::PeerClosed,
                    },
                )))
            }
            PeerMessage::Close => {
                peer.close();
                Box::pin(ready(Ok(None)))
            }
            PeerMessage::Request { method, data } => {
                Box::pin(async move { peer.request(&method, &data).await.map(Some) })
            }
        }
    }

    fn members(&self) -> Vec<Member> {
        let rooms: Vec<Room<D, R>> = lock(&self.rooms)
            .values()
            .filter_map(Slot::ready)
            .cloned()
            .collect();
        let mut members = Vec::new();
        for room in rooms {
            let state = lock(&room.inner.state);
            for (id, peer) in &state.peers {
                if peer.is_closed() {
                    continue;
                }
                members.push(Member {
                    room_id: room.id().to_owned(),
                    peer_id: id.to_string(),
                    info: state.presence.get(id).cloned(),
                });
            }
        }
        members
    }
}

/// One session handed over and not yet taken by the cluster backend.
struct Handing(tokio::sync::watch::Sender<usize>);

impl Handing {
    fn new(count: &tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|count| *count += 1);
        Handing(count.clone())
    }
}

impl Drop for Handing {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}
