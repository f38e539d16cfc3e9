//! The state of one node, shared by its [`RedisCluster`](crate::RedisCluster)
//! handles, its link task and its heartbeat task: what this node has in
//! which room, the queue of commands to Redis, and the handling of what
//! other nodes send.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use protoo_core::cluster::{LocalNode, LostMember, PeerMessage, PeerReply};
use protoo_core::transport::{ByteQueue, Refused, Weigh};
use protoo_core::{ErrorData, Frame, Payload, RequestError};
use redis::{Cmd, PushInfo, PushKind, Value};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::keys::Keys;
use crate::stats::Stats;
use crate::wire::{self, Message, Reply, ToPeer};
use crate::{RedisConfig, scripts};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One step for the link task, in the order it was queued.
pub(crate) enum Op {
    /// A command, sent in a pipeline with its neighbours; its reply goes to
    /// `reply`, if anyone waits for it.
    Cmd {
        cmd: Cmd,
        weight: usize,
        reply: Option<oneshot::Sender<Value>>,
    },
    /// Subscribe to a room's channel (a room's first member on this node).
    Subscribe(String),
    /// Unsubscribe from it (its last member left).
    Unsubscribe(String),
}

impl Op {
    pub(crate) fn cmd(cmd: Cmd, reply: Option<oneshot::Sender<Value>>) -> Op {
        let weight = OP_OVERHEAD + cmd.args_iter().map(|arg| arg_len(&arg)).sum::<usize>();
        Op::Cmd { cmd, weight, reply }
    }
}

fn arg_len(arg: &redis::Arg<&[u8]>) -> usize {
    match arg {
        redis::Arg::Simple(bytes) => bytes.len(),
        _ => 8,
    }
}

/// What an op costs beyond its arguments' bytes (the command's own memory).
const OP_OVERHEAD: usize = 64;

impl Weigh for Op {
    fn weight(&self) -> usize {
        match self {
            Op::Cmd { weight, .. } => *weight,
            Op::Subscribe(room) | Op::Unsubscribe(room) => OP_OVERHEAD + room.len(),
        }
    }
}

/// How an op is queued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A publish: dropped (and counted) when the link is down or the queue
    /// is over its limit.
    Publish,
    /// A change of this node's membership: when it cannot be sent, the
    /// node registers all its members again later (a resync).
    Membership,
    /// A question (presence, routing): its asker falls back at once.
    Query,
}

/// Something a node waits for from another node.
pub(crate) enum Answer {
    /// A replacement is done.
    Done,
    /// A request's outcome.
    Reply(PeerReply),
}

/// This node's members, as the backend knows them: room → peer →
/// incarnation (a number per admission on this node).
#[derive(Default)]
struct Local {
    rooms: HashMap<String, HashMap<String, u64>>,
}

pub(crate) struct Shared {
    pub(crate) node_id: Arc<str>,
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    /// Commands and publishes for Redis, in order, bounded in bytes.
    pub(crate) queue: ByteQueue<Op>,
    /// Whether the link to Redis is up (and this node registered on it).
    up: AtomicBool,
    /// The same, for who waits for it.
    up_watch: tokio::sync::watch::Sender<bool>,
    /// When the link last came up (`Ok`) or went down (`Err`).
    since: Mutex<Result<Instant, Instant>>,
    /// Membership changes could not be sent: register everything again.
    pub(crate) resync: AtomicBool,
    /// Wakes the link task (a resync is wanted).
    pub(crate) wake: Notify,
    local: Mutex<Local>,
    node: OnceLock<LocalNode>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_token: AtomicU64,
    next_incarnation: AtomicU64,
    /// Requests from other nodes waiting for this node's peers.
    incoming_requests: AtomicUsize,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn new(config: RedisConfig, node_id: String) -> Self {
        let keys = Keys::new(&config.prefix, &node_id);
        Shared {
            node_id: node_id.into(),
            keys,
            // Items are counted in bytes only; an idle node keeps no buffer.
            queue: ByteQueue::new(config.queue_limit, usize::MAX, 64),
            config,
            up: AtomicBool::new(false),
            up_watch: tokio::sync::watch::Sender::new(false),
            since: Mutex::new(Err(Instant::now())),
            resync: AtomicBool::new(false),
            wake: Notify::new(),
            local: Mutex::new(Local::default()),
            node: OnceLock::new(),
            waiting: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            next_incarnation: AtomicU64::new(1),
            incoming_requests: AtomicUsize::new(0),
            stats: Stats::default(),
        }
    }

    pub(crate) fn attach(&self, node: LocalNode) {
        if self.node.set(node).is_err() {
            tracing::warn!("a RedisCluster serves one Rooms registry: the second is ignored");
        }
    }

    pub(crate) fn node(&self) -> Option<&LocalNode> {
        self.node.get()
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The link came up (`true`) or went down.
    pub(crate) fn set_up(&self, up: bool) {
        let mut since = lock(&self.since);
        match (*since, up) {
            (Ok(_), true) | (Err(_), false) => {}
            _ => {
                *since = if up {
                    Ok(Instant::now())
                } else {
                    Err(Instant::now())
                }
            }
        }
        drop(since);
        self.up.store(up, Ordering::Release);
        self.stats.set_connected(up);
        self.up_watch.send_replace(up);
    }

    /// Waits until the link is up.
    pub(crate) async fn connected(&self) {
        let mut up = self.up_watch.subscribe();
        let _ = up.wait_for(|up| *up).await;
    }

    /// How long the link has been up.
    pub(crate) fn up_for(&self) -> Option<Duration> {
        lock(&self.since).ok().map(|since| since.elapsed())
    }

    /// How long the link has been down.
    pub(crate) fn down_for(&self) -> Option<Duration> {
        lock(&self.since).err().map(|since| since.elapsed())
    }

    /// `NODE:INCARNATION|`: what a member's entry starts with.
    pub(crate) fn entry_prefix(&self, incarnation: u64) -> String {
        format!("{}:{incarnation}|", self.node_id)
    }

    /// `NODE:`: what every entry of this node starts with.
    pub(crate) fn own_prefix(&self) -> String {
        format!("{}:", self.node_id)
    }

    fn rooms_ttl(&self) -> u64 {
        self.config.rooms_ttl().as_secs()
    }

    /// Queues an op of `class`; `false` if it was not queued (and what
    /// that means for its class is done).
    fn send(&self, op: Op, class: Class) -> bool {
        if !self.is_up() {
            self.not_sent(class);
            return false;
        }
        match self.queue.try_push(op) {
            Ok(()) => true,
            Err(Refused::Full(_) | Refused::Closed(_)) => {
                self.not_sent(class);
                false
            }
        }
    }

    fn not_sent(&self, class: Class) {
        match class {
            Class::Publish => self.stats.publish_dropped(self.is_up()),
            Class::Membership => {
                if !self.resync.swap(true, Ordering::AcqRel) {
                    self.wake.notify_one();
                }
            }
            Class::Query => {}
        }
    }

    /// Queues an op that must not be lost while the link is up (control:
    /// heartbeats, subscriptions; one at a time or one per room, so
    /// bounded by themselves).
    pub(crate) fn send_control(&self, op: Op) {
        if self.is_up() {
            let _ = self.queue.push(op);
        }
    }

    /// Runs `cmd` as a control op and waits for its reply (`None`: the
    /// link failed, or Redis did not answer in time).
    pub(crate) async fn query(&self, cmd: Cmd) -> Option<Value> {
        let (tx, rx) = oneshot::channel();
        self.send_control(Op::cmd(cmd, Some(tx)));
        tokio::time::timeout(self.config.response_timeout * 2, rx)
            .await
            .ok()?
            .ok()
    }

    /// Publishes `message` on `channel` (in order with everything queued).
    fn publish(&self, channel: &str, message: &Message<'_>) -> bool {
        let sent = self.send(
            Op::cmd(scripts::cmd::publish(channel, &wire::encode(message)), None),
            Class::Publish,
        );
        if sent {
            self.stats.published();
        }
        sent
    }

    fn token(&self) -> (u64, oneshot::Receiver<Answer>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(token, tx);
        (token, rx)
    }

    fn forget(&self, token: u64) {
        lock(&self.waiting).remove(&token);
    }

    fn answer(&self, token: u64, answer: Answer) {
        if let Some(tx) = lock(&self.waiting).remove(&token) {
            let _ = tx.send(answer);
        }
    }

    /// Waits for the answer to `token` for at most `wait`.
    async fn wait_for(
        &self,
        token: u64,
        rx: oneshot::Receiver<Answer>,
        wait: Duration,
    ) -> Option<Answer> {
        let answer = tokio::time::timeout(wait, rx).await;
        self.forget(token);
        answer.ok()?.ok()
    }
}

/// The calls of the core ([`ClusterBackend`](protoo_core::cluster::ClusterBackend)).
impl Shared {
    /// Returns the member's incarnation, and whether it is the room's
    /// first member here.
    pub(crate) fn add_member(&self, room: &str, peer: &str) -> (u64, bool) {
        let incarnation = self.next_incarnation.fetch_add(1, Ordering::Relaxed);
        let mut local = lock(&self.local);
        let first = !local.rooms.contains_key(room);
        local
            .rooms
            .entry(room.to_owned())
            .or_default()
            .insert(peer.to_owned(), incarnation);
        (incarnation, first)
    }

    /// Queues the registration of a new member; the reply says what it
    /// replaced (`None`: not sent, the next resync registers it).
    pub(crate) fn register(
        &self,
        room: &str,
        peer: &str,
        incarnation: u64,
        first: bool,
        replace: bool,
    ) -> Option<oneshot::Receiver<Value>> {
        if first && self.is_up() {
            self.send_control(Op::Subscribe(room.to_owned()));
        }
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::register(
            &self.keys.room(room),
            &self.keys.node_rooms,
            peer,
            &self.entry_prefix(incarnation),
            room,
            replace,
            &self.keys.node_prefix(),
            &self.node_id,
            self.rooms_ttl(),
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
            &self.entry_prefix(incarnation),
            info.as_bytes(),
        );
        self.send(Op::cmd(cmd, None), Class::Membership);
    }

    fn incarnation(&self, room: &str, peer: &str) -> Option<u64> {
        lock(&self.local).rooms.get(room)?.get(peer).copied()
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
            &self.keys.room(room),
            &self.keys.node_rooms,
            peer,
            &self.entry_prefix(incarnation),
            room,
            last,
        );
        if self.send(Op::cmd(cmd, None), Class::Membership) && last {
            self.send_control(Op::Unsubscribe(room.to_owned()));
        }
    }

    pub(crate) fn broadcast(&self, room: &str, frame: &Frame, except: &[&str], listed_only: bool) {
        let message = Message::Broadcast {
            from: &self.node_id,
            except: except.to_vec(),
            listed_only,
            frame: frame.as_bytes(),
        };
        self.publish(&self.keys.room(room), &message);
    }

    /// The listed members of `room` on live nodes; `None` if Redis cannot
    /// tell now.
    pub(crate) async fn presence(
        self: Arc<Self>,
        room: String,
    ) -> Option<Vec<protoo_core::Presence>> {
        let (tx, rx) = oneshot::channel();
        let cmd = scripts::cmd::presence(
            &self.keys.room(&room),
            &self.keys.node_prefix(),
            &self.keys.nodes,
            &self.node_id,
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
            &self.keys.room(&room),
            &peer,
            &self.keys.node_prefix(),
            &payload,
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
    /// that had it, and wait until that node handled its close.
    pub(crate) async fn replace_elsewhere(&self, room: &str, peer: &str, previous: &str) {
        let Some((incarnation, _)) = previous.split_once('|') else {
            return;
        };
        let Some((node, _)) = incarnation.split_once(':') else {
            return;
        };
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
            return;
        }
        if self
            .wait_for(token, rx, self.config.replace_wait)
            .await
            .is_none()
        {
            tracing::debug!(
                room,
                peer,
                node,
                "the replaced peer's node did not answer in time"
            );
        }
    }

    /// Announces a member lost with its node (or whose departure other
    /// nodes missed): what the application makes of it, delivered here
    /// when `here`, and published to the other nodes.
    pub(crate) fn announce_lost(&self, room: &str, peer: &str, entry: &str, here: bool) {
        if let Some(publish) = self.lost_publication(room, peer, entry, here)
            && self.send(Op::cmd(publish, None), Class::Publish)
        {
            self.stats.published();
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
        let except = [peer];
        if here {
            node.deliver(room, &frame, &except, false);
        }
        let message = Message::Broadcast {
            from: &self.node_id,
            except: except.to_vec(),
            listed_only: false,
            frame: frame.as_bytes(),
        };
        Some(scripts::cmd::publish(
            &self.keys.room(room),
            &wire::encode(&message),
        ))
    }

    /// Every member of this node (room, peer, incarnation), grouped by room.
    pub(crate) fn local_rooms(&self) -> Vec<(String, Vec<(String, u64)>)> {
        lock(&self.local)
            .rooms
            .iter()
            .map(|(room, peers)| {
                let peers = peers
                    .iter()
                    .map(|(peer, inc)| (peer.clone(), *inc))
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

/// What other nodes send, as the subscriber connection receives it.
impl Shared {
    pub(crate) fn on_push(self: &Arc<Self>, info: PushInfo) {
        if info.kind != PushKind::Message {
            return;
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
                except,
                listed_only,
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
                    let delivered = node.deliver(room, &frame, &except, listed_only);
                    tracing::trace!(node_id = %self.node_id, from, room, delivered, "broadcast received");
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
            .is_some_and(|current| incarnation == format!("{}:{current}", self.node_id));
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
                    let _ = tokio::time::timeout(wait, handled).await;
                    shared.publish(&channel, &Message::Done { token });
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
