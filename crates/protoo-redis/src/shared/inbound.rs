//! What other nodes send, as this node's subscriber connection reads it:
//! broadcasts delivered to the local members as they are read, and
//! replacements, messages for a local peer and answers.
//!
//! On one server and on Sentinel the subscriber connection's reader hands
//! each message over as it reads it ([`Shared::on_push`]): a node that
//! cannot keep up stops reading, and Redis closes the subscriber at its
//! output buffer limit. On Redis Cluster the `redis` crate's cluster client
//! cannot be held back that way: each shard connection's reader
//! (`aio/multiplexed_connection.rs`, `PipelineSink::send_result`) pushes
//! into one unbounded channel (`cluster_handling/async_connection/mod.rs`,
//! `ClusterConnection::new_inner`, `futures_channel::mpsc::unbounded`,
//! through `AddressedPushSender::send`), and one task of the crate drains
//! it into our callback; the crate has no bounded option (redis 1.8). So
//! the callback only moves each message into [`Shared::inbound`], bounded
//! in bytes ([`RedisConfig::queue_limit`](crate::RedisConfig::queue_limit);
//! past it, messages are dropped and counted), which keeps the crate's
//! channel drained at the pace of a queue push, and [`deliver`] hands them
//! over in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use protoo_core::cluster::{Handover, PeerMessage, PeerReply};
use protoo_core::{ErrorData, Frame, Payload, RequestError};
use protoo_queue::{Popped, Refused, Weigh};
use redis::{PushInfo, PushKind, Value};

use super::{Answer, Shared};
use crate::wire::{self, Message, Reply, ToPeer};

/// A message read from Redis Cluster, waiting in [`Shared::inbound`].
pub(crate) struct Received {
    info: PushInfo,
    weight: usize,
}

/// What a received message costs beyond its bytes (the `PushInfo` and its
/// values).
const RECEIVED_OVERHEAD: usize = 96;

impl Weigh for Received {
    fn weight(&self) -> usize {
        self.weight
    }
}

impl Received {
    fn new(info: PushInfo) -> Received {
        let weight = RECEIVED_OVERHEAD
            + info
                .data
                .iter()
                .map(|value| match value {
                    Value::BulkString(bytes) => bytes.len(),
                    _ => 16,
                })
                .sum::<usize>();
        Received { info, weight }
    }
}

/// On Redis Cluster: starts the thread that hands what
/// [`Shared::receive`] queued to [`Shared::on_push`], in order, until the
/// queue is closed (the node shut down, aborted, or its last handle
/// dropped).
///
/// A thread of its own, not a task: the crate's task that feeds
/// [`Shared::receive`] drains its channel in one go while the shards'
/// readers keep it full, and a task it wakes waits on its worker until it
/// is done (tokio runs a task woken that way next on the same worker, and
/// no other worker takes it), so deliveries would wait for whole bursts
/// and the queue overflow needlessly. The thread runs in the runtime's
/// context (deliveries spawn tasks).
pub(crate) fn deliver(shared: &Arc<Shared>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("protoo-redis-deliver".to_owned())
        .spawn(move || {
            let _runtime = runtime.enter();
            let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
            let cx = Context::from_waker(&waker);
            let mut taken = Vec::new();
            loop {
                // One message at a time: what waits is what is counted.
                match shared
                    .inbound
                    .poll_take(&cx, 0, |received| taken.push(received), |_| ())
                {
                    Poll::Ready(Popped::Items) => {
                        for received in taken.drain(..) {
                            shared.on_push(received.info);
                        }
                    }
                    Poll::Ready(Popped::Closed(())) => return,
                    Poll::Pending => std::thread::park(),
                }
            }
        })
        .map(drop)
}

/// Wakes the delivery thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// What other nodes send, as the subscriber connection receives it.
impl Shared {
    /// On Redis Cluster, what the crate's cluster client read: messages
    /// are queued for [`deliver`] (dropped and counted past the limit);
    /// the end of a sharded subscription is handled at once (it must not
    /// be dropped).
    pub(crate) fn receive(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {}
            PushKind::SUnsubscribe => return self.on_sunsubscribe(&info.data),
            _ => return,
        }
        match self.inbound.try_push(Received::new(info)) {
            Ok(()) => {}
            Err(Refused::Full(_)) => self.stats.received_dropped(),
            // Closed: the node is shutting down.
            Err(Refused::Closed(_)) => {}
        }
    }

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
                            let sent = shared.publish(&channel, &message);
                            tracing::debug!(sent, "handover published");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisConfig;

    fn message(channel: &str, bytes: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::SMessage,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(vec![b'x'; bytes]),
            ],
        }
    }

    /// A flood read while nothing hands it over (the delivery task is not
    /// running): what is held stays within the limit plus one message, the
    /// rest is counted as dropped, and what was kept is handed over in
    /// full once delivery runs.
    #[tokio::test]
    async fn a_flood_while_delivery_is_stalled_is_held_within_the_limit() {
        let limit = 64 << 10;
        let config = RedisConfig::cluster(["127.0.0.1:1"]).with_queue_limit(limit);
        let shared = Arc::new(Shared::new(config, "n".to_owned()));
        let channel = shared.keys.room("r");
        const FLOOD: u64 = 10_000;
        let one = Received::new(message(&channel, 1024)).weight();
        let mut peak = 0;
        for _ in 0..FLOOD {
            shared.receive(message(&channel, 1024));
            peak = peak.max(shared.inbound.queued_bytes());
        }
        assert!(peak <= limit + one, "{peak} held, limit {limit}");
        let kept = shared.inbound.len() as u64;
        assert_eq!(kept, (limit as u64).div_ceil(one as u64));
        let stats = shared.stats.snapshot();
        assert_eq!(stats.dropped_received, FLOOD - kept);
        // An end of subscription is never dropped: it asks for a new one
        // (here the link is down, so nothing is queued to Redis).
        shared.receive(PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![Value::BulkString(channel.as_bytes().to_vec())],
        });
        assert_eq!(shared.stats.snapshot().dropped_received, FLOOD - kept);

        // Delivery resumes: every kept message is handed over (these are
        // not the backend's messages: counted invalid), then the queue's
        // close ends the task.
        shared.inbound.close(());
        deliver(&shared).unwrap();
        while shared.stats.snapshot().invalid < kept {
            tokio::task::yield_now().await;
        }
        assert_eq!(shared.stats.snapshot().invalid, kept);
        assert_eq!(shared.inbound.queued_bytes(), 0);
    }
}
