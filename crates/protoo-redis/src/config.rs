//! [`RedisConfig`]: the backend's settings, each with its default and why,
//! and [`RedisTopology`]: which Redis.

use std::time::Duration;

/// Which Redis the nodes use: one server, a master watched by Sentinel,
/// or a Redis Cluster. The rest of the application is the same for all
/// three.
///
/// Addresses are `HOST:PORT` or URLs (`redis://[:PASSWORD@]HOST:PORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One redis-server (`redis://HOST:PORT[/DB]`, with a password as
    /// `redis://:PASSWORD@HOST:PORT`): the simple default. While it is
    /// down, cross-node delivery and presence stop.
    Single {
        /// Its URL.
        url: String,
    },
    /// A master and its replicas, watched by Redis Sentinel: each link
    /// asks the sentinels for the master, and asks again when it breaks,
    /// so a failover is an outage of a few seconds, not the end.
    Sentinel {
        /// The master's name in the sentinels' configuration
        /// (`sentinel monitor NAME ...`).
        master: String,
        /// Sentinel addresses (any one that answers will do). Their
        /// credentials, if a URL carries some, are the master's too.
        sentinels: Vec<String>,
    },
    /// A Redis Cluster: slots discovered from the seeds, `MOVED`/`ASK`
    /// followed, the topology refreshed; a room's broadcasts go through
    /// its slot's shard only (sharded pub/sub, `SPUBLISH`).
    Cluster {
        /// Addresses of some of its nodes (any one that answers will do).
        seeds: Vec<String>,
    },
}

impl RedisTopology {
    /// Whether a room's broadcasts go over sharded pub/sub.
    pub(crate) fn sharded(&self) -> bool {
        matches!(self, RedisTopology::Cluster { .. })
    }
}

/// Settings of a [`RedisCluster`](crate::RedisCluster) node. Every node of a
/// cluster uses the same Redis and the same [`prefix`](RedisConfig::prefix);
/// the timings should match across nodes too.
///
/// ```
/// use std::time::Duration;
/// use protoo_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379")
///     .with_prefix("signaling-eu")
///     .with_queue_limit(16 << 20);
/// assert_eq!(config.heartbeat, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Which Redis: one server, Sentinel or Cluster. Redis 7 or later.
    pub topology: RedisTopology,
    /// What every key and channel name starts with, so that several
    /// clusters (or other applications) share one Redis. Default `protoo`.
    pub prefix: String,
    /// How often a node pushes its deadline on (its heartbeat) and looks for dead
    /// nodes. Default 2 s.
    pub heartbeat: Duration,
    /// How far ahead a heartbeat pushes the node's deadline: a node silent for this long
    /// is dead, and its members are swept (announced gone) by another node
    /// within one more [`heartbeat`](RedisConfig::heartbeat). Default 6 s,
    /// three heartbeats, so a node is not declared dead for one slow
    /// round trip; a killed node's members are gone within about 8 s.
    /// (The socket.io cluster adapter uses 5 s / 10 s, Centrifugo 3 s /
    /// 7 s.)
    pub node_ttl: Duration,
    /// Bytes of commands and publishes waiting for Redis, per node, past
    /// which a publish is dropped (and counted) and a membership change is
    /// left to the next full re-registration. Default 8 MiB: twice the
    /// outbound queue of one peer, several seconds of a busy node's
    /// traffic.
    ///
    /// On Redis Cluster the same limit bounds, apart, the messages read
    /// from Redis and waiting to be handed to this node's members: past it
    /// they are dropped and counted
    /// ([`ClusterStats::dropped_received`](crate::ClusterStats::dropped_received)).
    /// (On one server and Sentinel nothing waits there: a node that falls
    /// behind stops reading, and Redis's own output buffer limit for
    /// subscribers applies.)
    pub queue_limit: usize,
    /// How long a peer joining on this node waits, at most, for another
    /// node to close the peer it replaces (and for that node's application
    /// to handle the close). Default 3 s: within the core's own bound
    /// ([`CLUSTER_ADMISSION_WAIT`](protoo_core::CLUSTER_ADMISSION_WAIT)).
    pub replace_wait: Duration,
    /// How long a request to a peer on another node
    /// ([`Room::request_peer`](protoo_core::Room::request_peer)) waits for
    /// its answer before it fails with a timeout; the peer's own request
    /// timeout applies on its node first. Default 60 s.
    pub request_wait: Duration,
    /// Requests from other nodes to this node's peers waiting for their
    /// answer, past which another is answered 503 at once. Default 1024.
    pub max_incoming_requests: usize,
    /// How long a command waits for Redis's answer before the link is
    /// taken as broken (and made anew). Default 5 s.
    pub response_timeout: Duration,
    /// Waits between reconnection attempts double from 50 ms up to this.
    /// Default 1 s: a Redis that is back is used again within about a
    /// second.
    pub max_reconnect_wait: Duration,
}

impl RedisConfig {
    /// The defaults, for the one Redis server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig::with_topology(RedisTopology::Single { url: url.into() })
    }

    /// The defaults, for the master `master` of the given sentinels.
    ///
    /// ```
    /// use protoo_redis::RedisConfig;
    ///
    /// let config = RedisConfig::sentinel("signaling", ["10.0.0.1:26379", "10.0.0.2:26379"]);
    /// # let _ = config;
    /// ```
    pub fn sentinel(
        master: impl Into<String>,
        sentinels: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        RedisConfig::with_topology(RedisTopology::Sentinel {
            master: master.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        })
    }

    /// The defaults, for the Redis Cluster reached through `seeds`.
    ///
    /// ```
    /// use protoo_redis::RedisConfig;
    ///
    /// let config = RedisConfig::cluster(["10.0.0.1:7000", "10.0.0.2:7000"]);
    /// # let _ = config;
    /// ```
    pub fn cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RedisConfig::with_topology(RedisTopology::Cluster {
            seeds: seeds.into_iter().map(Into::into).collect(),
        })
    }

    /// The defaults, for `topology`.
    pub fn with_topology(topology: RedisTopology) -> Self {
        RedisConfig {
            topology,
            prefix: "protoo".to_owned(),
            heartbeat: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            queue_limit: 8 << 20,
            replace_wait: Duration::from_secs(3),
            request_wait: Duration::from_secs(60),
            max_incoming_requests: 1024,
            response_timeout: Duration::from_secs(5),
            max_reconnect_wait: Duration::from_secs(1),
        }
    }

    /// Sets [`prefix`](RedisConfig::prefix).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`heartbeat`](RedisConfig::heartbeat) and
    /// [`node_ttl`](RedisConfig::node_ttl).
    pub fn with_heartbeat(mut self, heartbeat: Duration, node_ttl: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.node_ttl = node_ttl;
        self
    }

    /// Sets [`queue_limit`](RedisConfig::queue_limit).
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = bytes;
        self
    }

    /// Whether a `PUBLISH` count says who received it (not on Redis
    /// Cluster, where it counts one shard's subscribers).
    pub(crate) fn counts_receivers(&self) -> bool {
        !self.topology.sharded()
    }

    /// How long the key listing a node's rooms outlives the node's last
    /// heartbeat: long enough for a sweep (a minute, or ten TTLs).
    pub(crate) fn rooms_ttl(&self) -> Duration {
        Duration::from_secs(60).max(self.node_ttl * 10)
    }
}
