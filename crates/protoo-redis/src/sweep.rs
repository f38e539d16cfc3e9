//! The heartbeat task: refreshes this node's heartbeat key, and sweeps
//! dead nodes (in the node set, without a heartbeat): the node that takes a
//! dead node's sweep lock removes its members room by room and announces
//! each one gone, once cluster-wide.
//!
//! A node sweeps only once its own heartbeats have gone through on time
//! for a whole `node_ttl` (the link up, no heartbeat late): after an
//! outage or a stall of Redis, every live node has had the time to refresh
//! its heartbeat first, so no live node is taken for dead (Redis keeps TTLs
//! running while it is stalled, or down if it keeps its data).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::Value;
use tokio::time::Instant;

use crate::scripts::cmd;
use crate::shared::{Shared, strings};

pub(crate) async fn run(shared: Arc<Shared>) {
    let heartbeat_every = shared.config.heartbeat;
    let mut ticker = tokio::time::interval(heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when this node's heartbeats have gone through on time.
    let mut healthy_since: Option<Instant> = None;
    let mut last_beat = Instant::now();
    loop {
        ticker.tick().await;
        if shared.queue.is_closed() {
            return;
        }
        if !shared.is_up() {
            healthy_since = None;
            continue;
        }
        let on_time = heartbeat(&shared).await;
        let now = Instant::now();
        if !on_time || now - last_beat > heartbeat_every * 2 {
            healthy_since = None;
        } else if healthy_since.is_none() {
            healthy_since = Some(now);
        }
        last_beat = now;
        let healthy = healthy_since.is_some_and(|since| now - since >= shared.config.node_ttl);
        let linked = shared
            .up_for()
            .is_some_and(|up| up >= shared.config.node_ttl);
        if healthy && linked {
            sweep(&shared).await;
        }
    }
}

/// Refreshes the heartbeat; returns whether Redis answered.
async fn heartbeat(shared: &Shared) -> bool {
    let keys = &shared.keys;
    let ttl_ms = u64::try_from(shared.config.node_ttl.as_millis()).unwrap_or(u64::MAX);
    let beat = cmd::heartbeat(
        &keys.node,
        &keys.node_rooms,
        &keys.nodes,
        &shared.node_id,
        ttl_ms,
        shared.config.rooms_ttl().as_secs(),
    );
    match shared.query(beat).await {
        Some(Value::Int(1)) => {
            // Not in the node set: swept as dead, or Redis lost its data.
            tracing::warn!(node_id = %shared.node_id, "this node was unknown to Redis: registering its members again");
            shared.resync.store(true, Ordering::Release);
            shared.wake.notify_one();
            true
        }
        Some(_) => true,
        None => false,
    }
}

/// Sweeps every dead node this node gets the lock of.
async fn sweep(shared: &Shared) {
    let keys = &shared.keys;
    loop {
        let find = cmd::find_dead(
            &keys.nodes,
            &keys.node_prefix,
            &keys.sweep_prefix,
            &shared.node_id,
        );
        let dead = match shared.query(find).await {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            other => {
                tracing::trace!(node_id = %shared.node_id, ?other, "no dead node to sweep");
                return;
            }
        };
        let dead_rooms = format!("{}:rooms", keys.node_of(&dead));
        let rooms = shared
            .query(redis::cmd("SMEMBERS").arg(&dead_rooms).clone())
            .await
            .and_then(strings)
            .unwrap_or_default();
        let dead_prefix = format!("{dead}:");
        let mut lost = 0;
        for room in &rooms {
            let removed = shared
                .query(cmd::sweep_room(&keys.room(room), &dead_prefix))
                .await
                .and_then(strings)
                .unwrap_or_default();
            for gone in removed.chunks_exact(2) {
                shared.announce_lost(room, &gone[0], &gone[1], true);
                lost += 1;
            }
        }
        shared
            .query(cmd::forget_node(
                &dead_rooms,
                &keys.nodes,
                &format!("{}{dead}", keys.sweep_prefix),
                &dead,
            ))
            .await;
        shared.stats.node_swept();
        tracing::info!(node_id = %shared.node_id, dead, rooms = rooms.len(), lost, "swept a dead node");
    }
}
