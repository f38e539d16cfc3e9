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
//! usual `peerClosed {peerId}`, once, by the node that sweeps it (main.rs's
//! `on_member_lost`).

use std::error::Error;

use protoo_server::RoomsBuilder;

use crate::flags::Args;

/// The cluster this process is a node of, if any.
#[derive(Default)]
pub(crate) struct Cluster {
    #[cfg(feature = "redis")]
    node: Option<protoo_redis::RedisCluster>,
}

/// The state of the link to the cluster, for the health check: how long it
/// has been down, if it is, and each shard's address and whether it
/// answers (the one server, Sentinel's master, every master of a Redis
/// Cluster).
#[cfg(feature = "metrics")]
pub(crate) struct LinkState {
    pub(crate) down_for: Option<std::time::Duration>,
    pub(crate) shards: Vec<(String, bool)>,
}

/// How the health check reads the link.
#[cfg(feature = "metrics")]
pub(crate) type Link = std::sync::Arc<dyn Fn() -> LinkState + Send + Sync>;

impl Cluster {
    /// Joins the cluster when `--redis`, `--redis-sentinel` or
    /// `--redis-cluster` is given (`Args::check_features` refused them
    /// already without the `redis` feature): the rooms built from the
    /// returned builder span every node.
    pub(crate) async fn join(
        args: &Args,
        builder: RoomsBuilder,
    ) -> Result<(RoomsBuilder, Cluster), Box<dyn Error>> {
        #[cfg(feature = "redis")]
        if let Some((config, what)) = topology(args) {
            let config = config.with_prefix(&args.redis_prefix);
            let node = protoo_redis::RedisCluster::connect(config)
                .await
                .map_err(|error| format!("{what}: {error}"))?;
            println!("cluster node {} over {what}", node.node_id());
            let builder = builder.cluster(node.clone());
            return Ok((builder, Cluster { node: Some(node) }));
        }
        let _ = args;
        Ok((builder, Cluster::default()))
    }

    /// The state of the link, for the health check (`None`: no cluster).
    #[cfg(feature = "metrics")]
    pub(crate) fn link(&self) -> Option<Link> {
        #[cfg(feature = "redis")]
        if let Some(node) = self.node.clone() {
            return Some(std::sync::Arc::new(move || LinkState {
                down_for: node.disconnected_for(),
                shards: (node.shards().into_iter())
                    .map(|shard| (shard.address, shard.connected))
                    .collect(),
            }));
        }
        None
    }

    /// Leaves the cluster in good order (after the peers closed).
    pub(crate) async fn leave(self) {
        #[cfg(feature = "redis")]
        if let Some(node) = self.node {
            node.shutdown().await;
        }
    }
}

/// Which Redis the flags name, if any (`--redis`, `--redis-sentinel` with
/// `--redis-master`, or `--redis-cluster`), and how to name it in messages.
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
