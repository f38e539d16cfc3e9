//! What other nodes send, as this node's subscriber connection reads it:
//! broadcasts delivered to the local members as they are read, and
//! replacements, messages for a local peer and answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use protoo_core::cluster::{Handover, PeerMessage, PeerReply};
use protoo_core::{ErrorData, Frame, Payload, RequestError};
use redis::{PushInfo, PushKind, Value};

use super::{Answer, Shared};
use crate::wire::{self, Message, Reply, ToPeer};

/// What other nodes send, as the subscriber connection receives it.
impl Shared {
    pub(crate) fn on_push(self: &Arc<Self>, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {}
            PushKind::SUnsubscribe => return self.on_sunsubscribe(&info.data),
            _ => return,
        }
        let mut data = info.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return;
        };
        let payload = Bytes::from(payload);
        let Some(message) = wire::decode(&payload) else {
            self.stats.invalid();
            return;
        };
        match message {
            Message::Broadcast {
                from,
                target,
                frame,
            } => {
                if from == &*self.node_id {
                    // Delivered here when it was sent.
                    return;
                }
                let (Some(room), Ok(frame)) = (
                    self.keys.room_of(&channel),
                    Frame::try_from_bytes(payload.slice_ref(frame)),
                ) else {
                    self.stats.invalid();
                    return;
                };
                self.stats.received();
                if let Some(node) = self.node() {
                    let delivered = node.deliver(room, &frame, &target);
                    tracing::trace!(
                        node_id = %self.node_id,
                        from = %protoo_core::transport::log::Remote(&from),
                        room = %protoo_core::transport::log::Remote(&room),
                        delivered,
                        "broadcast received"
                    );
                }
            }
            Message::Replace {
                room,
                peer,
                incarnation,
                reply_to,
                token,
            } => self.on_replace(room, peer, incarnation, reply_to, token),
            Message::Done { token } => self.answer(token, Answer::Done),
            Message::Handover {
                token,
                frames,
                presence,
            } => {
                let frames: Result<Vec<Frame>, _> = frames
                    .into_iter()
                    .map(|frame| Frame::try_from_bytes(payload.slice_ref(frame)))
                    .collect();
                let presence = presence.and_then(|info| Payload::from_json(info).ok());
                match frames {
                    Ok(frames) => {
                        self.answer(token, Answer::Handover(Handover::new(frames, presence)))
                    }
                    Err(_) => {
                        self.stats.invalid();
                        self.answer(token, Answer::Done);
                    }
                }
            }
            Message::ToPeer {
                room,
                peer,
                message,
            } => self.on_to_peer(room, peer, message, &payload),
            Message::Reply { token, reply } => {
                self.answer(token, Answer::Reply(reply.into_result()))
            }
        }
    }

    fn on_replace(
        self: &Arc<Self>,
        room: &str,
        peer: &str,
        incarnation: &str,
        reply_to: &str,
        token: u64,
    ) {
        let ours = self
            .incarnation(room, peer)
            .is_some_and(|current| incarnation == self.entry_tag(&current));
        let replaced = if ours {
            self.node().and_then(|node| node.replace(room, peer))
        } else {
            None
        };
        let channel = self.keys.node_of(reply_to);
        match replaced {
            None => {
                self.publish(&channel, &Message::Done { token });
            }
            Some(handled) => {
                let shared = self.clone();
                let wait = self.config.replace_wait;
                tokio::spawn(async move {
                    match tokio::time::timeout(wait, handled).await {
                        Ok(Some(handover)) => {
                            let frames: Vec<&serde_bytes::Bytes> = handover
                                .frames
                                .iter()
                                .map(|frame| serde_bytes::Bytes::new(frame.as_bytes()))
                                .collect();
                            let message = Message::Handover {
                                token,
                                frames,
                                presence: handover.presence.as_ref().map(Payload::as_str),
                            };
                            shared.publish(&channel, &message);
                        }
                        _ => {
                            shared.publish(&channel, &Message::Done { token });
                        }
                    }
                });
            }
        }
    }

    fn on_to_peer(self: &Arc<Self>, room: &str, peer: &str, message: ToPeer<'_>, payload: &Bytes) {
        let Some(node) = self.node() else {
            return;
        };
        let message = match message {
            ToPeer::Notify(frame) => match Frame::try_from_bytes(payload.slice_ref(frame)) {
                Ok(frame) => PeerMessage::Notify(frame),
                Err(_) => return self.stats.invalid(),
            },
            ToPeer::Close => PeerMessage::Close,
            ToPeer::Request {
                method,
                data,
                reply_to,
                token,
            } => {
                let channel = self.keys.node_of(reply_to);
                let data = match Payload::from_json(data) {
                    Ok(data) => data,
                    Err(_) => return self.stats.invalid(),
                };
                if self.incoming_requests.fetch_add(1, Ordering::AcqRel)
                    >= self.config.max_incoming_requests
                {
                    self.incoming_requests.fetch_sub(1, Ordering::AcqRel);
                    let busy: PeerReply = Err(RequestError::Rejected(ErrorData::new(
                        503,
                        "too many requests from other nodes",
                    )));
                    self.publish(
                        &channel,
                        &Message::Reply {
                            token,
                            reply: Reply::of(&busy),
                        },
                    );
                    return;
                }
                let answered = node.to_peer(
                    room,
                    peer,
                    PeerMessage::Request {
                        method: method.to_owned(),
                        data,
                    },
                );
                let shared = self.clone();
                tokio::spawn(async move {
                    let reply = answered.await;
                    shared.incoming_requests.fetch_sub(1, Ordering::AcqRel);
                    shared.publish(
                        &channel,
                        &Message::Reply {
                            token,
                            reply: Reply::of(&reply),
                        },
                    );
                });
                return;
            }
        };
        // A notification is queued and a close done at once: the future is
        // ready, polled once in a task of its own.
        tokio::spawn(node.to_peer(room, peer, message));
    }
}
