//! Rooms across several processes: `--redis redis://HOST:PORT` (built with
//! the `redis` feature: `cargo run --release -p protoo-examples --features
//! redis --example room -- --redis redis://127.0.0.1:6379`) makes this
//! process a node of the cluster of every process using the same Redis and
//! `--redis-prefix`. The handlers in main.rs are the same either way.
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

/// How long the link to the cluster has been down, if it is (for the
/// health check).
#[cfg(feature = "metrics")]
pub(crate) type Link = std::sync::Arc<dyn Fn() -> Option<std::time::Duration> + Send + Sync>;

impl Cluster {
    /// Joins the cluster when `--redis` is given (`Args::check_features`
    /// refused it already without the `redis` feature): the rooms built from
    /// the returned builder span every node.
    pub(crate) async fn join(
        args: &Args,
        builder: RoomsBuilder,
    ) -> Result<(RoomsBuilder, Cluster), Box<dyn Error>> {
        #[cfg(feature = "redis")]
        if let Some(url) = &args.redis {
            let config = protoo_redis::RedisConfig::new(url).with_prefix(&args.redis_prefix);
            let node = protoo_redis::RedisCluster::connect(config)
                .await
                .map_err(|error| format!("--redis {url}: {error}"))?;
            println!("cluster node {} over {url}", node.node_id());
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
            return Some(std::sync::Arc::new(move || node.disconnected_for()));
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
