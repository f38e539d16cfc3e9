//! Rooms across several processes: `--redis redis://HOST:PORT` (built with
//! the `redis` feature: `cargo run --release -p protoo-examples --features
//! redis --example room -- --redis redis://127.0.0.1:6379`) makes this
//! process a node of the cluster of every process using the same Redis and
//! `--redis-prefix`. The handlers in main.rs are the same either way.
//!
//! The highly available topologies: `--redis-sentinel HOST:PORT[,...]
//! --redis-master NAME` (a master watched by Redis Sentinel, found again
//! after a failover) and `--redis-cluster HOST:PORT[,...]` (a Redis
//! Cluster, each room on its slot's shard).
//!
//! A member lost with its node (a process killed) is announced with the
//! usual `peerClosed {peerId}`, once, by the node that sweeps it.

use protoo_server::codec::encode;
use protoo_server::{Frame, RoomsBuilder, core::cluster::LostMember};
use serde_json::json;

use crate::flags::Args;

/// What the rooms broadcast about a member whose node died.
pub(crate) fn member_lost(lost: &LostMember) -> Option<Frame> {
    encode::notification("peerClosed", &json!({ "peerId": lost.peer_id })).ok()
}

/// The cluster this process is a node of, if any.
pub(crate) struct Cluster {
    #[cfg(feature = "redis")]
    node: protoo_redis::RedisCluster,
}

/// Which Redis the flags name, if any: `--redis`, `--redis-sentinel` with
/// `--redis-master`, or `--redis-cluster`, as the flag and a description.
#[cfg(feature = "redis")]
fn topology(args: &Args) -> Option<(protoo_redis::RedisConfig, String)> {
    use protoo_redis::RedisConfig;
    if let Some(url) = &args.redis {
        return Some((RedisConfig::new(url), format!("--redis {url}")));
    }
    if let (Some(sentinels), Some(master)) = (&args.redis_sentinel, &args.redis_master) {
        let config = RedisConfig::sentinel(master, sentinels.iter().cloned());
        let what = format!(
            "--redis-sentinel {} --redis-master {master}",
            sentinels.join(",")
        );
        return Some((config, what));
    }
    let seeds = args.redis_cluster.as_ref()?;
    let what = format!("--redis-cluster {}", seeds.join(","));
    Some((RedisConfig::cluster(seeds.iter().cloned()), what))
}

/// Joins the cluster when `--redis`, `--redis-sentinel` or
/// `--redis-cluster` is given: the rooms built from the returned builder
/// span every node.
#[cfg(feature = "redis")]
pub(crate) async fn join(
    args: &Args,
    builder: RoomsBuilder,
) -> Result<(RoomsBuilder, Option<Cluster>), Box<dyn std::error::Error>> {
    let Some((config, what)) = topology(args) else {
        return Ok((builder, None));
    };
    let config = config.with_prefix(&args.redis_prefix);
    let node = protoo_redis::RedisCluster::connect(config)
        .await
        .map_err(|error| format!("{what}: {error}"))?;
    println!("cluster node {} over {what}", node.node_id());
    Ok((builder.cluster(node.clone()), Some(Cluster { node })))
}

/// Without the `redis` feature there is no cluster: `--redis` and the
/// other topologies are refused.
#[cfg(not(feature = "redis"))]
pub(crate) async fn join(
    args: &Args,
    builder: RoomsBuilder,
) -> Result<(RoomsBuilder, Option<Cluster>), Box<dyn std::error::Error>> {
    if args.redis.is_none() && args.redis_sentinel.is_none() && args.redis_cluster.is_none() {
        return Ok((builder, None));
    }
    Err("--redis, --redis-sentinel and --redis-cluster need the room example built with `--features redis`".into())
}

/// The state of the link to the cluster (for the health check): how long
/// it has been down, if it is, and each shard's address and whether it
/// answers.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct LinkState {
    pub(crate) down_for: Option<std::time::Duration>,
    pub(crate) shards: Vec<(String, bool)>,
}

/// How the health check reads the link.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) type Link = std::sync::Arc<dyn Fn() -> LinkState + Send + Sync>;

impl Cluster {
    /// The state of the link, for the health check.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn link(&self) -> Link {
        #[cfg(feature = "redis")]
        {
            let node = self.node.clone();
            std::sync::Arc::new(move || LinkState {
                down_for: node.disconnected_for(),
                shards: node
                    .shards()
                    .into_iter()
                    .map(|shard| (shard.address, shard.connected))
                    .collect(),
            })
        }
        #[cfg(not(feature = "redis"))]
        std::sync::Arc::new(|| LinkState {
            down_for: None,
            shards: Vec::new(),
        })
    }

    /// Leaves the cluster in good order (after the peers closed).
    pub(crate) async fn leave(self) {
        #[cfg(feature = "redis")]
        self.node.shutdown().await;
    }
}
