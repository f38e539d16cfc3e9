//! The calls of the core, as this node carries them to Redis: membership,
//! presence, broadcasts, messages to a peer elsewhere, and the
//! announcement of members lost with their node.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use protoo_core::cluster::{Handover, LostMember, PeerMessage, PeerReply};
use protoo_core::{Frame, Payload, RequestError, Target};
use redis::{Cmd, Value};
use tokio::sync::oneshot;

use super::{Answer, Class, Fingerprint, Incarnation, Op, Shared, lock};
use crate::scripts;
use crate::wire::{self, Message, ToPeer};

/// The calls of the core ([`ClusterBackend`](protoo_core::cluster::ClusterBackend)).
impl Shared {
    /// Returns the member's incarnation, and whether it is the room's
    /// first member here.
    pub(crate) fn add_member(
        &self,
        room: &str,
        peer: &str,
        who: Option<Fingerprint>,
    ) -> (Incarnation, bool) {
        let incarnation = Incarnation {
            number: self.next_incarnation.fetch_add(1, Ordering::Relaxed),
            who: who.map(Box::new),
        };
        let mut local = lock(&self.local);
        let first = !local.rooms.contains_key(room);
        local
            .rooms
            .entry(room.to_owned())
            .or_default()
            .insert(peer.to_owned(), incarnation.clone());
        (incarnation, first)
    }

    /// Queues the registration of a new member; the reply says what it
    /// replaced (`None`: not sent, the next resync registers it).
    pub(crate) fn register(
        &self,
        room: &str,
        peer: &str,
        incarnation: &Incarnation,
        first: bool,
        replace: bool,
        resume: bool,
    ) -> Option<oneshot::Receiver<Value>> {
        if first && self.is_up() {
            self.send_control(Op::Subscribe(room.to_owned()));
            // The node's room set lives in the node's slot: its own command.
            self.send(Op::cmd(self.add_room_cmd(room), None), Class::Membership);
        }
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::register(
            self.keys.room_names(room).keys(),
            peer,
            &self.entry_prefix(incarnation),
            replace,
            resume,
            &self.node_id,
            self.life(),
        );
        self.send(Op::cmd(cmd, Some(tx)), Class::Membership)
            .then_some(rx)
    }

    pub(crate) fn presence_set(&self, room: &str, peer: &str, info: &Payload) {
        let Some(incarnation) = self.incarnation(room, peer) else {
            return;
        };
        let cmd = scripts::cmd::set_info(
            &self.keys.room(room),
            peer,
            &self.entry_prefix(&incarnation),
            info.as_bytes(),
        );
        self.send(Op::cmd(cmd, None), Class::Membership);
    }

    pub(super) fn incarnation(&self, room: &str, peer: &str) -> Option<Incarnation> {
        lock(&self.local).rooms.get(room)?.get(peer).cloned()
    }

    pub(crate) fn member_removed(&self, room: &str, peer: &str) {
        let (incarnation, last) = {
            let mut local = lock(&self.local);
            let Some(peers) = local.rooms.get_mut(room) else {
                return;
            };
            let Some(incarnation) = peers.remove(peer) else {
                return;
            };
            let last = peers.is_empty();
            if last {
                local.rooms.remove(room);
            }
            (incarnation, last)
        };
        let cmd = scripts::cmd::remove(
            self.keys.room_names(room).keys(),
            peer,
            &self.entry_prefix(&incarnation),
            &self.node_id,
            last,
        );
        if self.send(Op::cmd(cmd, None), Class::Membership) && last {
            let forget = redis::cmd("SREM")
                .arg(&self.keys.node_rooms)
                .arg(room)
                .clone();
            self.send(Op::cmd(forget, None), Class::Membership);
            self.send_control(Op::Unsubscribe(room.to_owned()));
        }
    }

    pub(crate) fn broadcast(&self, room: &str, frame: &Frame, target: &Target) {
        self.publish_cmd(self.broadcast_cmd(room, frame, target));
    }

    /// The PUBLISH of a broadcast in `room` (on its channel, from this node).
    fn broadcast_cmd(&self, room: &str, frame: &Frame, target: &Target) -> Cmd {
        let message = Message::Broadcast {
            from: &self.node_id,
            target: Cow::Borrowed(target),
            frame: frame.as_bytes(),
        };
        scripts::cmd::publish_room(self.sharded, &self.keys.room(room), &wire::encode(&message))
    }

    /// The listed members of `room` on live nodes; `None` if Redis cannot
    /// tell now.
    pub(crate) async fn presence(
        self: Arc<Self>,
        room: String,
    ) -> Option<Vec<protoo_core::Presence>> {
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::presence(
            self.keys.room_names(&room).keys(),
            &self.node_id,
            self.life(),
        );
        if !self.send(Op::cmd(cmd, Some(tx)), Class::Query) {
            return None;
        }
        let value = tokio::time::timeout(self.config.response_timeout, rx)
            .await
            .ok()?
            .ok()?;
        let strings = strings(value)?;
        let mut listed = Vec::with_capacity(strings.len() / 2);
        for pair in strings.chunks_exact(2) {
            if let Ok(info) = Payload::from_json(pair[1].clone()) {
                listed.push(protoo_core::Presence::new(pair[0].clone(), info));
            }
        }
        Some(listed)
    }

    /// Whether a live member `peer` of `room` on another node has another
    /// identity than the fingerprint `who`; `false` when Redis cannot tell
    /// now (the registration decides).
    pub(crate) async fn taken(
        self: Arc<Self>,
        room: String,
        peer: String,
        who: Fingerprint,
    ) -> bool {
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::taken(
            self.keys.room_names(&room).keys(),
            &peer,
            &who.to_string(),
            &self.node_id,
        );
        if !self.send(Op::cmd(cmd, Some(tx)), Class::Query) {
            return false;
        }
        matches!(
            tokio::time::timeout(self.config.response_timeout, rx).await,
            Ok(Ok(Value::Int(1)))
        )
    }

    /// A message for a peer on another node, routed by its entry.
    pub(crate) async fn to_peer(
        self: Arc<Self>,
        room: String,
        peer: String,
        message: PeerMessage,
    ) -> PeerReply {
        let (payload, token) = match &message {
            PeerMessage::Notify(frame) => (
                wire_to_peer(&room, &peer, ToPeer::Notify(frame.as_bytes())),
                None,
            ),
            PeerMessage::Request { method, data } => {
                let (token, rx) = self.token();
                let request = ToPeer::Request {
                    method,
                    data: data.as_str(),
                    reply_to: &self.node_id,
                    token,
                };
                (wire_to_peer(&room, &peer, request), Some((token, rx)))
            }
            _ => (wire_to_peer(&room, &peer, ToPeer::Close), None),
        };
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::route(
            self.keys.room_names(&room).keys(),
            &peer,
            &self.keys.node_prefix,
            &payload,
            self.config.counts_receivers(),
        );
        let routed = self.send(Op::cmd(cmd, Some(tx)), Class::Query)
            && matches!(
                tokio::time::timeout(self.config.response_timeout, rx).await,
                Ok(Ok(Value::Int(receivers))) if receivers > 0
            );
        match token {
            None if routed => Ok(None),
            None => Err(RequestError::PeerClosed),
            Some((token, _)) if !routed => {
                self.forget(token);
                Err(RequestError::PeerClosed)
            }
            Some((token, rx)) => match self.wait_for(token, rx, self.config.request_wait).await {
                Some(Answer::Reply(reply)) => reply,
                _ => Err(RequestError::Timeout),
            },
        }
    }

    /// After a registration: close the peer with this id on the live node
    /// that had it, and wait until that node handled its close; what it
    /// handed over if it moved the peer's session here instead.
    pub(crate) async fn replace_elsewhere(
        &self,
        room: &str,
        peer: &str,
        previous: &str,
    ) -> Option<Handover> {
        let (incarnation, _) = previous.split_once('|')?;
        let (node, _) = incarnation.split_once(':')?;
        let (token, rx) = self.token();
        let message = Message::Replace {
            room,
            peer,
            incarnation,
            reply_to: &self.node_id,
            token,
        };
        if !self.publish(&self.keys.node_of(node), &message) {
            self.forget(token);
            return None;
        }
        match self.wait_for(token, rx, self.config.replace_wait).await {
            Some(Answer::Handover(handover)) => Some(handover),
            Some(_) => None,
            None => {
                tracing::debug!(
                    room = %protoo_core::transport::log::Remote(room),
                    peer = %protoo_core::transport::log::Remote(peer),
                    node = %protoo_core::transport::log::Remote(node),
                    "the replaced peer's node did not answer in time"
                );
                None
            }
        }
    }

    /// Announces a member lost with its node (or whose departure other
    /// nodes missed): what the application makes of it, delivered here
    /// when `here`, and published to the other nodes.
    pub(crate) fn announce_lost(&self, room: &str, peer: &str, entry: &str, here: bool) {
        if let Some(publish) = self.lost_publication(room, peer, entry, here) {
            self.publish_cmd(publish);
        }
    }

    /// [`Shared::announce_lost`], with the publish handed back to the
    /// caller rather than queued.
    pub(crate) fn lost_publication(
        &self,
        room: &str,
        peer: &str,
        entry: &str,
        here: bool,
    ) -> Option<Cmd> {
        let node = self.node()?;
        let info = entry
            .split_once('|')
            .map(|(_, info)| info)
            .filter(|info| !info.is_empty())
            .and_then(|info| Payload::from_json(info).ok());
        let member = LostMember::new(room, peer, info);
        self.stats.member_lost();
        let frame = node.lost_frame(&member)?;
        let mut target = Target::default();
        target.except.push(peer.into());
        if here {
            node.deliver(room, &frame, &target);
        }
        Some(self.broadcast_cmd(room, &frame, &target))
    }

    /// `SADD` of `room` to this node's room set (and its TTL pushed on).
    pub(crate) fn add_room_cmd(&self, room: &str) -> Cmd {
        let mut pipe_cmd = redis::cmd("SADD");
        pipe_cmd.arg(&self.keys.node_rooms).arg(room);
        pipe_cmd
    }

    /// The rooms this node has members in.
    pub(crate) fn local_room_ids(&self) -> Vec<String> {
        lock(&self.local).rooms.keys().cloned().collect()
    }

    /// Every member of this node (room, peer, incarnation), grouped by room.
    pub(crate) fn local_rooms(&self) -> Vec<(String, Vec<(String, Incarnation)>)> {
        lock(&self.local)
            .rooms
            .iter()
            .map(|(room, peers)| {
                let peers = peers
                    .iter()
                    .map(|(peer, inc)| (peer.clone(), inc.clone()))
                    .collect();
                (room.clone(), peers)
            })
            .collect()
    }
}

fn wire_to_peer(room: &str, peer: &str, message: ToPeer<'_>) -> Vec<u8> {
    wire::encode(&Message::ToPeer {
        room,
        peer,
        message,
    })
}

/// An array or set of strings (a script's list, a set's members), if
/// `value` is one.
pub(crate) fn strings(value: Value) -> Option<Vec<String>> {
    match value {
        // RESP3 answers a set (SMEMBERS) as a set.
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .map(|item| match item {
                Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                Value::SimpleString(text) => Some(text),
                _ => None,
            })
            .collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}
