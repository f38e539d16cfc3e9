//! Rooms of protoo-rs that span several server processes, over Redis.
//!
//! Beside the layers of protoo-rs, on `protoo-core`: a
//! [`ClusterBackend`] that makes every
//! process using the same Redis (and the same [prefix](RedisConfig::prefix))
//! a **node** of one cluster, in which a room of one id is one room. An
//! application switches to it with one line at startup; its handlers (join
//! lists, broadcasts, replacement, messages to a peer by id) stay the same.
//!
//! ```no_run
//! use protoo_core::{DuplicatePolicy, Rooms};
//! use protoo_redis::{RedisCluster, RedisConfig};
//!
//! # async fn run() -> Result<(), protoo_redis::Error> {
//! let cluster = RedisCluster::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! let rooms: Rooms = Rooms::builder()
//!     .duplicate_policy(DuplicatePolicy::Replace)
//!     .cluster(cluster.clone())
//!     .on_member_lost(|lost| {
//!         Some(("peerClosed", serde_json::json!({ "peerId": lost.peer_id })))
//!     })
//!     .build();
//! // ... serve peers with `rooms` ...
//! // At the end: tell the other nodes this one left in good order.
//! cluster.shutdown().await;
//! # drop(rooms);
//! # Ok(())
//! # }
//! ```
//!
//! # Topologies
//!
//! [`RedisConfig`] chooses the Redis ([`RedisTopology`]): one server
//! ([`RedisConfig::new`]), a master watched by Redis Sentinel
//! ([`RedisConfig::sentinel`]: each link asks the sentinels for the master,
//! and asks again when it breaks, when a sentinel announces
//! `+switch-master`, or when the master turns `READONLY`), or a
//! Redis Cluster ([`RedisConfig::cluster`]: slots discovered from the
//! seeds, `MOVED`/`ASK` followed and the topology refreshed by the `redis`
//! crate's cluster client; a room's broadcasts over sharded pub/sub on its
//! slot's shard; a room whose slot moved subscribed again where it went).
//! Everything below holds on all three; a failover, or a slot moved, is a
//! lost link (below) that ends when the new master answers.
//! [`RedisCluster::shards`] reports the link to each shard.
//!
//! # What the cluster guarantees
//!
//! - A broadcast is encoded once and published once per room (the frame
//!   and its exclusions); each node delivers the same bytes to its own
//!   members; members on the sender's node get it without a round trip
//!   through Redis. Every member gets it once, and one sender's messages
//!   arrive in the order it sent them, on every node.
//! - Presence lives in Redis, per room, each entry owned by the node of its
//!   peer: [`Room::presence`](protoo_core::Room::presence) lists the peers
//!   listed on every live node. A departure is written before the
//!   broadcast that announces it, so a `join` handled after the others
//!   heard `peerClosed` no longer lists the departed peer.
//! - A peer id joining on one node closes the peer with that id on another
//!   (4000), and the newcomer reads nothing until that node handled the
//!   close (what it broadcast about it, `peerClosed`, arrives first).
//! - Each node pushes its deadline on every 2 s (6 s ahead); every node
//!   looks for nodes past theirs, and the one that takes a dead node's
//!   sweep lock (`SET NX`) removes its members and broadcasts, for each,
//!   what [`RoomsBuilder::on_member_lost`](protoo_core::RoomsBuilder::on_member_lost)
//!   makes: once, cluster-wide, within about 8 s of the death.
//! - Keys: a room's hash goes with its last member; a node's keys expire
//!   when it is gone (see [`keys`](crate#keys)).
//!
//! # What it does not guarantee: a lost link
//!
//! While a node cannot reach Redis (Redis restarting, a network cut):
//!
//! - its members keep getting each other's messages (local delivery never
//!   waits on Redis);
//! - what it would publish (broadcasts, departures, messages to peers
//!   elsewhere) is dropped and counted ([`ClusterStats`]); what other nodes
//!   publish meanwhile does not reach it. Signalling messages are stale by
//!   the time the link is back, so none are replayed;
//! - [`Room::presence`](protoo_core::Room::presence) answers with this
//!   node's own members.
//!
//! Within about a second of Redis answering again the node reconnects,
//! subscribes again and registers every member it has (its own state is
//! the truth): members that joined meanwhile are listed, and entries of
//! members that left meanwhile are removed and announced gone to the other
//! nodes (with `on_member_lost`'s notification), unless Redis lost its data
//! in between (then there is nothing left to announce, and the other nodes'
//! peers learn of those departures only from later `join` lists). A node
//! whose link is down longer than the heartbeat TTL is taken for dead by
//! the others, and its members announced gone; they are listed again when
//! it is back.
//!
//! The same holds when Redis closes this node's subscriber connection
//! because it fell behind its pub/sub output buffer limit
//! (`client-output-buffer-limit pubsub`, 32 MB by default): a broken link,
//! counted in [`ClusterStats::disconnects`], and what was published to it
//! meanwhile is lost.
//!
//! # Bounds
//!
//! The queue of commands and publishes waiting for Redis is bounded in
//! bytes ([`RedisConfig::queue_limit`]): past it, publishes are dropped and
//! counted, and membership changes are made good by a full registration
//! once the queue drains. On one server and Sentinel, deliveries from other
//! nodes are not queued: the subscriber connection hands each message to
//! the members' own bounded queues as it reads it. On Redis Cluster the
//! `redis` crate's cluster client reads every shard without backpressure
//! (into an unbounded channel of its own, which Redis's output buffer
//! limit cannot bound), so each message it reads goes at once into a
//! queue bounded in bytes by the same [`RedisConfig::queue_limit`]: past
//! it, messages are dropped and counted
//! ([`ClusterStats::dropped_received`]; what waits is
//! [`ClusterStats::received_bytes`]). Requests from other nodes to this node's peers
//! are bounded in number ([`RedisConfig::max_incoming_requests`]).
//!
//! # Keys
//!
//! Under the prefix `P` ([`RedisConfig::prefix`]), each name with a hash
//! tag (`{...}`) so that what one script touches shares one hash slot: a
//! room's keys and channel live on one shard of a Redis Cluster, and no
//! step of the backend crosses slots.
//!
//! | name | kind | holds | lifetime |
//! | --- | --- | --- | --- |
//! | `{P:room:R}` | hash | peer id → `NODE:INCARNATION\|INFO` | deleted with its last entry |
//! | `{P:room:R}:nodes` | hash | node id → deadline (ms) of each node with a member in R | pushed on with each heartbeat (`node_ttl` ahead); deleted with the room's last entry |
//! | `{P:node:N}:rooms` | set | the rooms with a member on N | TTL a minute, refreshed with the heartbeat; deleted when N leaves or is swept |
//! | `{P}:nodes` | sorted set | node id → deadline (ms) | a node leaves it when it shuts down or is swept |
//! | `{P}:sweep:N` | string | who sweeps dead node N | `SET NX EX 60` |
//!
//! Whether a node is alive is read in the room's own slot (its deadline in
//! `{P:room:R}:nodes`, pushed on by its heartbeat in every room it has
//! members in), never from another slot inside a script. Channels:
//! `{P:room:R}` (broadcasts in R, subscribed by the nodes with a member
//! in R) and `{P:node:N}` (messages for node N). Redis 7 or later. The
//! prefix must not hold `{` or `}`.

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use protoo_core::cluster::{
    Admission, ClusterBackend, ClusterFuture, LocalNode, PeerMessage, PeerReply,
};
use protoo_core::{Frame, Identity, Payload, Presence, Target};
use tokio::task::JoinHandle;
use tracing::Instrument;

mod config;
mod conn;
mod keys;
mod link;
mod scripts;
mod shared;
mod stats;
mod sweep;
mod wire;

pub use config::{RedisConfig, RedisTopology};
pub use stats::ClusterStats;

use shared::{Shared, lock};

/// The link of a node to one shard of its Redis: the one server, the
/// master Sentinel names, or one master of a Redis Cluster
/// ([`RedisCluster::shards`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardLink {
    /// The shard's address (`HOST:PORT`).
    pub address: String,
    /// Whether it answered the last probe (one per heartbeat) and the
    /// node's link is up.
    pub connected: bool,
}

/// Why [`RedisCluster::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address is not a Redis URL or `HOST:PORT`.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The prefix holds `{` or `}` (it goes inside the keys' hash tags).
    #[error("the key prefix {0:?} holds a brace")]
    Prefix(String),
    /// Redis could not be reached.
    #[error("cannot reach Redis: {0}")]
    Connect(#[source] redis::RedisError),
}

/// This process as a node of a cluster over Redis: the backend to give to
/// [`RoomsBuilder::cluster`](protoo_core::RoomsBuilder::cluster).
///
/// A cheap handle (an `Arc` inside). The node runs two tasks (the link to
/// Redis, the heartbeat), and on Redis Cluster a thread that hands what it
/// receives to its members (see [`ClusterStats::received_bytes`]), until [`RedisCluster::shutdown`], or until its
/// last handle is dropped (then as if the process had died: the other
/// nodes sweep it). One `RedisCluster` serves one [`Rooms`](protoo_core::Rooms).
#[derive(Clone)]
pub struct RedisCluster {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        // Ends the delivery thread (Redis Cluster).
        self.shared.inbound.close(());
    }
}

impl RedisCluster {
    /// Connects to Redis and starts this node (a new node id for each
    /// call: a process restarted is a new node). Fails if the URL is
    /// invalid or Redis cannot be reached now; once started, the node
    /// survives any later outage.
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        if config.prefix.contains(['{', '}']) {
            return Err(Error::Prefix(config.prefix));
        }
        let connector = conn::Connector::new(&config)?;
        let shared = Arc::new(Shared::new(config, new_node_id()));
        let first = link::connect(&shared, &connector)
            .await
            .map_err(Error::Connect)?;
        // Everything the node's tasks log says which node it is.
        let span = tracing::info_span!("protoo_cluster", node_id = %shared.node_id);
        if shared.sharded {
            shared::deliver(&shared).map_err(|error| Error::Connect(error.into()))?;
        }
        let tasks = vec![
            tokio::spawn(link::run(shared.clone(), connector, first).instrument(span.clone())),
            tokio::spawn(sweep::run(shared.clone()).instrument(span)),
        ];
        // Started once registered on the link (if that link breaks at once,
        // the node carries on and registers on the next one).
        let _ = tokio::time::timeout(shared.config.response_timeout, shared.connected()).await;
        tracing::info!(node_id = %shared.node_id, prefix = %shared.config.prefix, "cluster node started");
        Ok(RedisCluster {
            handle: Arc::new(Handle {
                shared,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// This node's id: random, new for each [`RedisCluster::connect`].
    pub fn node_id(&self) -> &str {
        &self.shared().node_id
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared().config
    }

    /// Whether the link to Redis is up now.
    pub fn is_connected(&self) -> bool {
        self.shared().is_up()
    }

    /// How long the link to Redis has been down, if it is (`None`: up).
    /// What a health check reports: a node cut off from the cluster for
    /// longer than a grace serves its own peers only.
    pub fn disconnected_for(&self) -> Option<std::time::Duration> {
        self.shared().down_for()
    }

    /// The link to each shard, as probed with every heartbeat: the one
    /// server, the master Sentinel names now, or each master of a Redis
    /// Cluster. What a health check lists.
    pub fn shards(&self) -> Vec<ShardLink> {
        self.shared().shards()
    }

    /// Waits until the link to Redis is up and this node's members are
    /// registered on it (at once if they are).
    pub async fn connected(&self) {
        self.shared().connected().await;
    }

    /// What this node has done over Redis so far.
    pub fn stats(&self) -> ClusterStats {
        let shared = self.shared();
        let mut stats = shared.stats.snapshot();
        stats.queued_bytes = shared.queue.queued_bytes();
        stats.received_bytes = shared.inbound.queued_bytes();
        stats
    }

    /// Leaves the cluster in good order: sends what is queued (for at most
    /// the response timeout), removes this node's keys, and stops its
    /// tasks. Close the peers first (a server's shutdown does): each
    /// member's departure is then sent before the node leaves. Later calls
    /// of the backend do nothing.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.queue.close(());
        let tasks: Vec<JoinHandle<()>> = lock(&self.handle.tasks).drain(..).collect();
        let mut tasks = tasks.into_iter();
        // The link task ends once it sent what was queued and the node left.
        if let Some(mut link) = tasks.next()
            && tokio::time::timeout(shared.config.response_timeout, &mut link)
                .await
                .is_err()
        {
            tracing::warn!("the Redis link did not finish in time: leaving without it");
            link.abort();
        }
        for task in tasks {
            task.abort();
        }
        shared.inbound.close(());
        shared.set_up(false);
    }

    /// Stops this node at once, telling Redis nothing: what a killed
    /// process does. The other nodes sweep it after its heartbeat expires.
    /// For tests and drills.
    pub fn abort(&self) {
        // The tasks stop where they are; nothing is closed in good order
        // (closing the queue would make the link task leave the cluster).
        self.shared().set_up(false);
        for task in lock(&self.handle.tasks).drain(..) {
            task.abort();
        }
        self.shared().inbound.close(());
    }
}

/// A random node id: 16 hex digits from the standard library's randomly
/// keyed hasher (seeded from the operating system).
fn new_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let hash = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{hash:016x}")
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node_id", &self.node_id())
            .field("prefix", &self.shared().config.prefix)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl ClusterBackend for RedisCluster {
    fn attach(&self, node: LocalNode) {
        self.shared().attach(node);
    }

    fn node_id(&self) -> Option<Arc<str>> {
        Some(self.shared().node_id.clone())
    }

    fn member_added(
        &self,
        room_id: &str,
        peer_id: &str,
        replace: bool,
        identity: Option<&Identity>,
        resume: bool,
    ) -> ClusterFuture<Admission> {
        let shared = self.shared();
        let who = identity.map(shared::fingerprint);
        let (incarnation, first) = shared.add_member(room_id, peer_id, who);
        let Some(registered) =
            shared.register(room_id, peer_id, &incarnation, first, replace, resume)
        else {
            return Box::pin(std::future::ready(Admission::Admitted));
        };
        let shared = shared.clone();
        let (room, peer) = (room_id.to_owned(), peer_id.to_owned());
        Box::pin(async move {
            let Ok(value) = registered.await else {
                // The link broke: the next registration covers the peer.
                return Admission::Admitted;
            };
            let answer = shared::strings(value).unwrap_or_default();
            match (answer.first().map(String::as_str), answer.get(1)) {
                (Some("refused"), _) => Admission::Refused,
                (Some("alive"), Some(previous)) => {
                    match shared.replace_elsewhere(&room, &peer, previous).await {
                        Some(handover) => Admission::Resumed(handover),
                        None => Admission::Admitted,
                    }
                }
                (Some("dead"), Some(previous)) => {
                    // Its node died before it was swept: announced here.
                    shared.announce_lost(&room, &peer, previous, true);
                    Admission::Admitted
                }
                _ => Admission::Admitted,
            }
        })
    }

    fn taken_elsewhere(
        &self,
        room_id: &str,
        peer_id: &str,
        identity: &Identity,
    ) -> ClusterFuture<bool> {
        Box::pin(self.shared().clone().taken(
            room_id.to_owned(),
            peer_id.to_owned(),
            shared::fingerprint(identity),
        ))
    }

    fn presence_set(&self, room_id: &str, peer_id: &str, info: &Payload) {
        self.shared().presence_set(room_id, peer_id, info);
    }

    fn member_removed(&self, room_id: &str, peer_id: &str) {
        self.shared().member_removed(room_id, peer_id);
    }

    fn broadcast(&self, room_id: &str, frame: &Frame, target: &Target) {
        self.shared().broadcast(room_id, frame, target);
    }

    fn presence(&self, room_id: &str) -> ClusterFuture<Option<Vec<Presence>>> {
        Box::pin(self.shared().clone().presence(room_id.to_owned()))
    }

    fn to_peer(
        &self,
        room_id: &str,
        peer_id: &str,
        message: PeerMessage,
    ) -> ClusterFuture<PeerReply> {
        Box::pin(
            self.shared()
                .clone()
                .to_peer(room_id.to_owned(), peer_id.to_owned(), message),
        )
    }
}
