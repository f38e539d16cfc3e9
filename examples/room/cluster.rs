//! Rooms across several processes: `--redis redis://HOST:PORT` (built with
//! the `redis` feature: `cargo run --release -p protoo-examples --features
//! redis --example room -- --redis redis://127.0.0.1:6379`) makes this
//! process a node of the cluster of every process using the same Redis and
//! `--redis-prefix`. The handlers in main.rs are the same either way.
//!
//! A member lost with its node (a process killed) is announced with the
//! usual `peerClosed {peerId}`, once, by the node that sweeps it.

use protoo_server::{RoomsBuilder, core::cluster::LostMember};
use serde_json::{Value, json};

use crate::flags::Args;

/// What the rooms broadcast about a member whose node died.
pub(crate) fn member_lost(lost: &LostMember) -> Option<(&'static str, Value)> {
    Some(("peerClosed", json!({ "peerId": lost.peer_id })))
}

/// The cluster this process is a node of, if any.
pub(crate) struct Cluster {
    #[cfg(feature = "redis")]
    node: protoo_redis::RedisCluster,
}

/// Joins the cluster when `--redis` is given: the rooms built from the
/// returned builder span every node.
#[cfg(feature = "redis")]
pub(crate) async fn join(
    args: &Args,
    builder: RoomsBuilder,
) -> Result<(RoomsBuilder, Option<Cluster>), Box<dyn std::error::Error>> {
    let Some(url) = &args.redis else {
        return Ok((builder, None));
    };
    let config = protoo_redis::RedisConfig::new(url).with_prefix(&args.redis_prefix);
    let node = protoo_redis::RedisCluster::connect(config)
        .await
        .map_err(|error| format!("--redis {url}: {error}"))?;
    println!("cluster node {} over {url}", node.node_id());
    Ok((builder.cluster(node.clone()), Some(Cluster { node })))
}

/// Without the `redis` feature there is no cluster: `--redis` is refused.
#[cfg(not(feature = "redis"))]
pub(crate) async fn join(
    args: &Args,
    builder: RoomsBuilder,
) -> Result<(RoomsBuilder, Option<Cluster>), Box<dyn std::error::Error>> {
    match args.redis {
        None => Ok((builder, None)),
        Some(_) => Err("--redis needs the room example built with `--features redis`".into()),
    }
}

/// How long the link to the cluster has been down, if it is (for the
/// health check).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) type Link = std::sync::Arc<dyn Fn() -> Option<std::time::Duration> + Send + Sync>;

impl Cluster {
    /// The state of the link, for the health check.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn link(&self) -> Link {
        #[cfg(feature = "redis")]
        {
            let node = self.node.clone();
            std::sync::Arc::new(move || node.disconnected_for())
        }
        #[cfg(not(feature = "redis"))]
        std::sync::Arc::new(|| None)
    }

    /// Leaves the cluster in good order (after the peers closed).
    pub(crate) async fn leave(self) {
        #[cfg(feature = "redis")]
        self.node.shutdown().await;
    }
}
