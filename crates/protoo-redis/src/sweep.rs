//! The heartbeat task: pushes this node's deadline on (in the node set and
//! in each room it has members in), and sweeps dead nodes (in the node set,
//! past their deadline): the node that takes a
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
use crate::shared::{Op, Shared, strings};

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

/// Refreshes the heartbeat: this node's deadline in the node set, in
/// each room it has members in, and its room set's TTL; returns whether
/// Redis answered.
async fn heartbeat(shared: &Shared) -> bool {
    let keys = &shared.keys;
    let life = shared.life();
    let expire = redis::cmd("EXPIRE")
        .arg(&keys.node_rooms)
        .arg(shared.config.rooms_ttl().as_secs())
        .clone();
    shared.send_control(Op::cmd(expire, None));
    shared.send_control(Op::Probe);
    for room in shared.local_room_ids() {
        let names = keys.room_names(&room);
        let refresh = cmd::refresh_room(names.keys(), &shared.node_id, life);
        shared.send_control(Op::cmd(refresh, None));
    }
    match shared
        .query(cmd::heartbeat(&keys.nodes, &shared.node_id, life))
        .await
    {
        Some(Value::Int(1)) => {
            // Not in the node set: swept as dead, or Redis lost its data.
            tracing::warn!(node_id = %shared.node_id, "this node was unknown to Redis: registering its members again");
            shared.resync.store(true, Ordering::Release);
            shared.wake.notify_one();
            true
        }
        Some(Value::Int(_)) => true,
        _ => false,
    }
}

/// Sweeps every dead node this node gets the lock of.
async fn sweep(shared: &Shared) {
    let keys = &shared.keys;
    let dead = shared
        .query(cmd::find_dead(&keys.nodes, &shared.node_id))
        .await
        .and_then(strings)
        .unwrap_or_default();
    for dead in dead {
        let lock = keys.sweep_lock(&dead);
        let take = redis::cmd("SET")
            .arg(&lock)
            .arg(&*shared.node_id)
            .arg("NX")
            .arg("EX")
            .arg(60)
            .clone();
        match shared.query(take).await {
            Some(Value::Okay | Value::SimpleString(_)) => {}
            other => {
                tracing::trace!(node_id = %shared.node_id, dead, ?other, "another node sweeps it");
                continue;
            }
        }
        let dead_rooms = keys.rooms_of(&dead);
        let rooms = shared
            .query(redis::cmd("SMEMBERS").arg(&dead_rooms).clone())
            .await
            .and_then(strings)
            .unwrap_or_default();
        let mut lost = 0;
        for room in &rooms {
            let names = keys.room_names(room);
            let removed = shared
                .query(cmd::sweep_room(names.keys(), &dead))
                .await
                .and_then(strings)
                .unwrap_or_default();
            for gone in removed.chunks_exact(2) {
                shared.announce_lost(room, &gone[0], &gone[1], true);
                lost += 1;
            }
        }
        // The dead node's room set (its slot), then its place in the node
        // set and the lock (the cluster's slot).
        shared
            .query(redis::cmd("DEL").arg(&dead_rooms).clone())
            .await;
        shared
            .query(redis::cmd("ZREM").arg(&keys.nodes).arg(&dead).clone())
            .await;
        shared.query(redis::cmd("DEL").arg(&lock).clone()).await;
        shared.stats.node_swept();
        tracing::info!(node_id = %shared.node_id, dead, rooms = rooms.len(), lost, "swept a dead node");
    }
}
