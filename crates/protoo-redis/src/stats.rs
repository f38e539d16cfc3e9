//! What a node counts of its cluster traffic: [`ClusterStats`], and the same
//! counts through the `metrics` facade with the `metrics` feature.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What this node has done over Redis since it started
/// ([`RedisCluster::stats`](crate::RedisCluster::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Whether the link to Redis is up now.
    pub connected: bool,
    /// Bytes of commands and publishes waiting for Redis now (at most
    /// [`RedisConfig::queue_limit`](crate::RedisConfig::queue_limit) plus
    /// one message).
    pub queued_bytes: usize,
    /// Messages published (broadcasts, and messages to other nodes).
    pub published: u64,
    /// Publishes dropped because the link was down, or lost with it
    /// (queued, or sent and unanswered, when it broke).
    pub dropped_while_down: u64,
    /// Publishes dropped because the queue to Redis was over its limit.
    pub dropped_over_limit: u64,
    /// On Redis Cluster: bytes of messages read from Redis and waiting to
    /// be handed to this node's members now (at most
    /// [`RedisConfig::queue_limit`](crate::RedisConfig::queue_limit) plus
    /// one message). Always 0 on one server and on Sentinel, where each
    /// message is handed over as it is read.
    pub received_bytes: usize,
    /// On Redis Cluster: messages read from Redis and dropped because the
    /// bytes waiting to be handed over were at the limit (this node fell
    /// behind what it receives).
    pub dropped_received: u64,
    /// Broadcasts received from other nodes and delivered here.
    pub received: u64,
    /// Received messages that were not the backend's (dropped).
    pub invalid: u64,
    /// Times the link to Redis was lost (each followed by a reconnection
    /// and a full re-registration).
    pub disconnects: u64,
    /// Full re-registrations of this node's members.
    pub resyncs: u64,
    /// Members of dead nodes (or whose departure the cluster missed)
    /// announced gone by this node.
    pub lost_members: u64,
    /// Dead nodes this node swept.
    pub swept_nodes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    connected: AtomicBool,
    published: AtomicU64,
    dropped_while_down: AtomicU64,
    dropped_over_limit: AtomicU64,
    dropped_received: AtomicU64,
    received: AtomicU64,
    invalid: AtomicU64,
    disconnects: AtomicU64,
    resyncs: AtomicU64,
    lost_members: AtomicU64,
    swept_nodes: AtomicU64,
}

fn add(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

impl Stats {
    pub(crate) fn snapshot(&self) -> ClusterStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ClusterStats {
            connected: self.connected.load(Ordering::Relaxed),
            queued_bytes: 0,
            published: get(&self.published),
            dropped_while_down: get(&self.dropped_while_down),
            dropped_over_limit: get(&self.dropped_over_limit),
            received_bytes: 0,
            dropped_received: get(&self.dropped_received),
            received: get(&self.received),
            invalid: get(&self.invalid),
            disconnects: get(&self.disconnects),
            resyncs: get(&self.resyncs),
            lost_members: get(&self.lost_members),
            swept_nodes: get(&self.swept_nodes),
        }
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        meter::connected(up);
    }

    pub(crate) fn published(&self) {
        add(&self.published);
        meter::count("protoo_cluster_published_total", None);
    }

    /// A publish dropped: the link was up (queue over its limit) or down.
    pub(crate) fn publish_dropped(&self, up: bool) {
        let (counter, reason) = if up {
            (&self.dropped_over_limit, "over_limit")
        } else {
            (&self.dropped_while_down, "disconnected")
        };
        let n = add(counter);
        meter::count("protoo_cluster_publish_dropped_total", Some(reason));
        // The first, then one in a thousand: a flood of drops is one line
        // a second or so, not one per message.
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(dropped = n, reason, "cluster publishes dropped");
        }
    }

    /// A message read from Redis dropped: the bytes waiting to be handed
    /// over were at the limit.
    pub(crate) fn received_dropped(&self) {
        let n = add(&self.dropped_received);
        meter::count("protoo_cluster_received_dropped_total", None);
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                dropped = n,
                "messages from Redis dropped: this node fell behind what it receives"
            );
        }
    }

    pub(crate) fn received(&self) {
        add(&self.received);
        meter::count("protoo_cluster_received_total", None);
    }

    pub(crate) fn invalid(&self) {
        let n = add(&self.invalid);
        meter::count("protoo_cluster_invalid_total", None);
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                invalid = n,
                "messages on the cluster's channels that are not its own dropped"
            );
        }
    }

    pub(crate) fn disconnected(&self) {
        add(&self.disconnects);
        meter::count("protoo_cluster_disconnects_total", None);
    }

    pub(crate) fn resynced(&self) {
        add(&self.resyncs);
        meter::count("protoo_cluster_resyncs_total", None);
    }

    pub(crate) fn member_lost(&self) {
        add(&self.lost_members);
        meter::count("protoo_cluster_lost_members_total", None);
    }

    pub(crate) fn node_swept(&self) {
        add(&self.swept_nodes);
        meter::count("protoo_cluster_swept_nodes_total", None);
    }
}

#[cfg(feature = "metrics")]
mod meter {
    pub(super) fn count(name: &'static str, reason: Option<&'static str>) {
        match reason {
            Some(reason) => metrics::counter!(name, "reason" => reason).increment(1),
            None => metrics::counter!(name).increment(1),
        }
    }

    pub(super) fn connected(up: bool) {
        metrics::gauge!("protoo_cluster_connected").set(if up { 1.0 } else { 0.0 });
    }
}

#[cfg(not(feature = "metrics"))]
mod meter {
    pub(super) fn count(_name: &'static str, _reason: Option<&'static str>) {}

    pub(super) fn connected(_up: bool) {}
}
