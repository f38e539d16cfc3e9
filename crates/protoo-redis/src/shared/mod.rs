//! The state of one node, shared by its [`RedisCluster`](crate::RedisCluster)
//! handles, its link task and its heartbeat task: what this node has in
//! which room and the queue of commands to Redis. `calls.rs` carries the
//! core's calls to Redis, `inbound.rs` what other nodes send.

mod calls;
mod inbound;

pub(crate) use calls::strings;
pub(crate) use inbound::{Received, deliver};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use protoo_core::cluster::{LocalNode, PeerReply};
use protoo_queue::{ByteQueue, Refused, Weigh};
use redis::{Cmd, Value};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::keys::Keys;
use crate::stats::Stats;
use crate::wire::{self, Message};
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
    /// Ask every shard whether it answers (for [`Shared::shards`]).
    Probe,
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
            Op::Probe => OP_OVERHEAD,
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
    /// A replacement moved a session here: what the other node handed over.
    Handover(protoo_core::cluster::Handover),
    /// A request's outcome.
    Reply(PeerReply),
}

/// This node's members, as the backend knows them: room → peer →
/// incarnation.
#[derive(Default)]
struct Local {
    rooms: HashMap<String, HashMap<String, Incarnation>>,
}

/// One admission of a member on this node: a number, and the fingerprint
/// of the member's identity if it has one (compared, in the registration
/// script, with a newcomer's of its id on another node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Incarnation {
    pub(crate) number: u64,
    /// Boxed: a member without an identity pays a pointer.
    pub(crate) who: Option<Box<Fingerprint>>,
}

/// The fingerprint of an identity that a member's entry carries: the first
/// 16 bytes of the SHA-1 of its subject and room (the subject's length
/// first, so that no two pairs meet), written as 32 hex digits. Never the
/// credential.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 16]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The fingerprint of `identity`.
pub(crate) fn fingerprint(identity: &protoo_core::Identity) -> Fingerprint {
    let mut hash = sha1_smol::Sha1::new();
    hash.update(&(identity.subject().len() as u64).to_le_bytes());
    hash.update(identity.subject().as_bytes());
    hash.update(identity.room().as_bytes());
    let digest = hash.digest().bytes();
    let mut prefix = [0; 16];
    prefix.copy_from_slice(&digest[..16]);
    Fingerprint(prefix)
}

pub(crate) struct Shared {
    pub(crate) node_id: Arc<str>,
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    /// Whether rooms' broadcasts go over sharded pub/sub (Redis Cluster).
    pub(crate) sharded: bool,
    /// Commands and publishes for Redis, in order, bounded in bytes.
    pub(crate) queue: ByteQueue<Op>,
    /// On Redis Cluster: messages read from Redis, in order, waiting for
    /// [`deliver`] (bounded in bytes by the same limit).
    pub(crate) inbound: ByteQueue<Received>,
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
    /// The link to each shard, as last probed.
    shards: Mutex<Vec<crate::ShardLink>>,
}

impl Shared {
    pub(crate) fn new(config: RedisConfig, node_id: String) -> Self {
        let keys = Keys::new(&config.prefix, &node_id);
        Shared {
            node_id: node_id.into(),
            keys,
            sharded: config.topology.sharded(),
            // Items are counted in bytes only; an idle node keeps no buffer.
            queue: ByteQueue::new(config.queue_limit, usize::MAX, 64),
            inbound: ByteQueue::new(config.queue_limit, usize::MAX, 64),
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
            shards: Mutex::new(Vec::new()),
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

    /// The link to each shard, as last probed (each down while the link
    /// is).
    pub(crate) fn shards(&self) -> Vec<crate::ShardLink> {
        let up = self.is_up();
        lock(&self.shards)
            .iter()
            .map(|shard| crate::ShardLink {
                address: shard.address.clone(),
                connected: up && shard.connected,
            })
            .collect()
    }

    /// What a probe found.
    pub(crate) fn set_shards(&self, shards: Vec<crate::ShardLink>) {
        *lock(&self.shards) = shards;
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

    /// `NODE:NUMBER|`, or `NODE:NUMBER~FINGERPRINT|` for a member with an
    /// identity: what a member's entry starts with.
    pub(crate) fn entry_prefix(&self, incarnation: &Incarnation) -> String {
        format!("{}|", self.entry_tag(incarnation))
    }

    /// A member's entry prefix without its `|`: how a replacement names
    /// the member it replaces.
    pub(crate) fn entry_tag(&self, incarnation: &Incarnation) -> String {
        match &incarnation.who {
            Some(who) => format!("{}:{}~{who}", self.node_id, incarnation.number),
            None => format!("{}:{}", self.node_id, incarnation.number),
        }
    }

    /// The lifetimes the scripts give a node's deadlines, in ms.
    pub(crate) fn life(&self) -> scripts::Lifetimes {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        scripts::Lifetimes {
            ttl: ms(self.config.node_ttl),
            keep: ms(self.config.rooms_ttl()),
        }
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
        self.publish_cmd(scripts::cmd::publish(channel, &wire::encode(message)))
    }

    /// Queues a PUBLISH (dropped and counted if it cannot be sent).
    fn publish_cmd(&self, publish: Cmd) -> bool {
        let sent = self.send(Op::cmd(publish, None), Class::Publish);
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

    /// Redis ended a sharded subscription: ours (the room's last member
    /// left), or the shard's when the room's slot moved to another shard
    /// (or the shard became a replica). While the room has members here,
    /// it is subscribed again, where the slot is now (the client follows
    /// the redirection); Redis keeps one subscription per channel, so a
    /// subscription made twice delivers once.
    pub(crate) fn on_sunsubscribe(&self, data: &[Value]) {
        let Some(Value::BulkString(channel)) = data.first() else {
            return;
        };
        let Some(room) = self.keys.room_of(channel) else {
            return;
        };
        if lock(&self.local).rooms.contains_key(room) {
            tracing::debug!(
                node_id = %self.node_id,
                room = %protoo_core::transport::log::Remote(room),
                "a room's shard ended its subscription: subscribing where its slot is now"
            );
            self.send_control(Op::Subscribe(room.to_owned()));
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// The fingerprint reads as the first 32 hex digits of the SHA-1, as
    /// the member entries of every node carry it.
    #[test]
    fn a_fingerprint_reads_as_32_hex_digits_of_the_sha1() {
        let identity = protoo_core::Identity::new(
            "alice",
            "room-1",
            SystemTime::now() + Duration::from_secs(60),
        );
        let mut hash = sha1_smol::Sha1::new();
        hash.update(&5u64.to_le_bytes());
        hash.update(b"alice");
        hash.update(b"room-1");
        let hex = hash.digest().to_string();
        assert_eq!(fingerprint(&identity).to_string(), hex[..32]);
        assert_eq!(std::mem::size_of::<Incarnation>(), 16);
    }
}
