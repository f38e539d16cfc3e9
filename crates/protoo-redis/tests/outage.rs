//! The cluster when Redis fails: restarted, stalled, closing a subscriber
//! that fell behind, or too slow for what a node publishes; and, on Redis
//! Cluster, a flood of messages to a node. Each case runs on each
//! topology (`one_server`, `sentinel`, `redis_cluster`), on a Redis of its
//! own (see `support/setup.rs`), since it restarts, pauses or reconfigures
//! it. On the HA topologies it is the master that fails (every master of a
//! Redis Cluster, or the one of the room's slot), with failovers held off:
//! those are `failover.rs`'s.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Each case on each topology: a module named after the case, with one
/// test per topology.
macro_rules! on_each_topology {
    ($name:ident, $case:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_server() {
                $case(Setup::start(Kind::Single).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel() {
                $case(Setup::start(Kind::Sentinel).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                $case(Setup::start(Kind::Cluster).await).await;
            }
        }
    };
}

/// The key of room `r`'s slot.
fn room_key(prefix: &str) -> String {
    format!("{{{prefix}:room:r}}")
}

on_each_topology!(
    a_redis_restart_keeps_local_delivery_and_recovers_the_cluster,
    restart
);

/// The master of the room's slot is killed and started again, empty (on
/// one server: the server; on Sentinel: the master, its replica syncing
/// anew from it; on Redis Cluster: the master of the room's slot, the whole
/// cluster down meanwhile).
async fn restart(mut setup: Setup) {
    let (prefix, nodes) = setup.nodes::<2>(|config| config).await;
    let a1 = nodes[0].connect("r", "a1").await;
    a1.join("A1").await;
    let mut a2 = nodes[0].connect("r", "a2").await;
    a2.join("A2").await;
    let mut b = nodes[1].connect("r", "b").await;
    assert_eq!(b.join("B").await, ["a1", "a2"]);

    let master = setup.master_of(&room_key(&prefix)).await;
    setup.kill(master).await;
    // During the outage, members of one node keep talking.
    a1.broadcast(&json!({ "during": 1 })).await;
    assert_eq!(a2.expect("chat").await, json!({ "during": 1 }));
    // Nobody exits; a join answers with the node's own members.
    let a3 = nodes[0].connect("r", "a3").await;
    assert_eq!(a3.join("A3").await, ["a1", "a2"]);

    setup.restart(master).await;
    let back = Instant::now();
    for node in &nodes {
        tokio::time::timeout(Duration::from_secs(10), node.cluster.connected())
            .await
            .expect("the node is back within 10 s");
    }
    println!(
        "{:?}: both nodes linked again {:?} after the restart",
        setup.kind(),
        back.elapsed()
    );
    // Cross-node delivery works again, and every member is listed again
    // (this Redis came back empty: the nodes registered them anew).
    a1.broadcast(&json!({ "after": 1 })).await;
    assert_eq!(b.expect("chat").await, json!({ "after": 1 }));
    assert!(back.elapsed() < Duration::from_secs(10));
    let c = nodes[1].connect("r", "c").await;
    assert_eq!(c.join("C").await, ["a1", "a2", "a3", "b"]);
    for node in &nodes {
        let stats = node.cluster.stats();
        assert!(stats.disconnects >= 1 && stats.resyncs >= 2, "{stats:?}");
    }
}

on_each_topology!(
    a_subscriber_redis_disconnects_for_its_output_buffer_is_made_anew,
    output_buffer_cut
);

/// Every master closes a pub/sub client whose output passes 1 KiB: the one
/// holding the room's subscriptions (on Redis Cluster, the room's shard,
/// where the nodes' `SSUBSCRIBE` is) closes the receiving node's.
async fn output_buffer_cut(setup: Setup) {
    let (_prefix, nodes) = setup.nodes::<2>(|config| config).await;
    let sender = nodes[0].connect("r", "sender").await;
    sender.join("S").await;
    let mut receiver = nodes[1].connect("r", "receiver").await;
    receiver.join("R").await;
    // (The default is 32 MB, or 8 MB for 60 s.)
    setup
        .on_masters(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1024 0 0",
        ])
        .await;
    let big = "x".repeat(64 << 10);
    sender.broadcast(&json!({ "big": big })).await;
    // Redis has run the publish once a later round trip on the sender's
    // node came back (the room's: on its slot's shard, after the publish).
    let _ = nodes[0].rooms.get("r").unwrap().presence().await;
    setup
        .on_masters(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 33554432 8388608 60",
        ])
        .await;
    // The receiving node notices, subscribes again, and gets what is sent
    // after that; the big one was lost on the way.
    let mut attempt = 0;
    loop {
        attempt += 1;
        sender.broadcast(&json!({ "marker": attempt })).await;
        let got = tokio::time::timeout(Duration::from_millis(500), receiver.next()).await;
        match got {
            Ok((_, data)) if data.get("marker").is_some() => break,
            Ok((_, data)) => assert!(data.get("big").is_none(), "the big one came through"),
            Err(_) => assert!(attempt < 20, "delivery did not come back"),
        }
    }
    assert!(nodes[1].cluster.stats().disconnects >= 1);
}

on_each_topology!(
    publishes_past_the_queue_limit_are_dropped_and_counted,
    queue_bound
);

/// Every master stopped while a node publishes: its queue to Redis stays
/// within its limit, the rest is dropped and counted, local members get
/// everything.
async fn queue_bound(setup: Setup) {
    let prefix = unique_prefix();
    let limit = 64 << 10;
    let mut config = setup.fast(&prefix).with_queue_limit(limit);
    config.response_timeout = Duration::from_secs(2);
    let node = Node::start(config).await;
    let a = node.connect("r", "a").await;
    a.join("A").await;
    let mut b = node.connect("r", "b").await;
    b.join("B").await;
    let paused = setup.pause().await;
    let text = "y".repeat(1000);
    for seq in 0..1000 {
        a.broadcast(&json!({ "seq": seq, "text": text })).await;
        let stats = node.cluster.stats();
        assert!(stats.queued_bytes <= limit + 2048, "{stats:?}");
    }
    // Local members got every one.
    for seq in 0..1000 {
        assert_eq!(b.expect("chat").await["seq"], seq);
    }
    let stats = node.cluster.stats();
    assert!(
        stats.dropped_over_limit + stats.dropped_while_down >= 900,
        "{stats:?}"
    );
    setup.resume(&paused);
    tokio::time::timeout(Duration::from_secs(10), node.cluster.connected())
        .await
        .expect("back");
}

on_each_topology!(a_stalled_redis_does_not_make_live_nodes_dead, stall);

/// Every master stopped for three heartbeat TTLs, then going on.
async fn stall(setup: Setup) {
    let (_prefix, nodes) = setup
        .nodes::<2>(|mut config| {
            // The links outlast the stall: only the TTLs run out meanwhile.
            config.response_timeout = Duration::from_secs(10);
            config
        })
        .await;
    let mut a = nodes[0].connect("r", "a").await;
    a.join("A").await;
    let mut b = nodes[1].connect("r", "b").await;
    b.join("B").await;
    a.expect_new_peer("b").await;
    let paused = setup.pause().await;
    // Three times the heartbeat TTL: every node's heartbeat key expires.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    setup.resume(&paused);
    // Long enough for a node that sweeps too early to have done it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Nobody was announced gone: the first thing each hears after the
    // stall is the other's marker. (A Redis Cluster's masters, stopped
    // together, may take each other for failing for a moment once they go
    // on, and refuse commands meanwhile: a marker published then is lost,
    // so one is sent again until one arrives; nothing else may.)
    marker_arrives(&setup, &a, &mut b, 1).await;
    marker_arrives(&setup, &b, &mut a, 2).await;
    for node in &nodes {
        assert_eq!(node.cluster.stats().lost_members, 0);
    }
}

/// `from` broadcasts `marker` until `to` gets it: the first thing `to`
/// hears but `newPeer` must be it.
async fn marker_arrives(setup: &Setup, from: &Client, to: &mut Client, marker: u32) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        from.broadcast(&json!({ "marker": marker })).await;
        let got =
            tokio::time::timeout(Duration::from_millis(500), to.next_skipping("newPeer")).await;
        match got {
            Ok(got) => {
                assert_eq!(got, ("chat".to_owned(), json!({ "marker": marker })));
                return;
            }
            Err(_) => assert!(
                attempt < 20 && setup.kind() == Kind::Cluster,
                "marker {marker} did not arrive"
            ),
        }
    }
}

on_each_topology!(
    a_redis_that_forgot_the_scripts_gets_them_again,
    script_flush
);

/// `SCRIPT FLUSH` on every master.
async fn script_flush(setup: Setup) {
    let (_prefix, nodes) = setup.nodes::<2>(|config| config).await;
    let a = nodes[0].connect("r", "a").await;
    a.join("A").await;
    setup.on_masters(&["SCRIPT", "FLUSH"]).await;
    // The next script a node runs fails; the node makes its link anew,
    // loads them again, and carries on: joins list across nodes again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let b = nodes[1].connect("r", &format!("b{attempt}")).await;
        if b.join("B").await.contains(&"a".to_owned()) {
            break;
        }
        assert!(attempt < 50, "the nodes did not recover");
        // A join while a link is down lists its node's members only: the
        // next attempt once both are linked (on Redis Cluster the new link
        // takes longer than the joins).
        for node in &nodes {
            tokio::time::timeout(GUARD, node.cluster.connected())
                .await
                .expect("linked again");
        }
    }
    assert!(nodes[1].cluster.stats().disconnects + nodes[0].cluster.stats().disconnects >= 1);
}

/// On Redis Cluster the `redis` crate's cluster client reads every shard
/// without backpressure, so Redis's output buffer limit does not bound
/// what a node holds (on one server and Sentinel it does: see
/// `a_subscriber_redis_disconnects_for_its_output_buffer_is_made_anew`,
/// and nothing waits in the node). A flood on a room's channel: what waits
/// in the node stays within its queue limit (plus one message), and every
/// message is either handed over or counted as dropped. (The unit test
/// `a_flood_while_delivery_is_stalled_is_held_within_the_limit` holds the
/// delivery still for the same flood.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_read_from_redis_cluster_is_held_within_the_queue_limit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let setup = Setup::start(Kind::Cluster).await;
    let prefix = unique_prefix();
    let limit = 64 << 10;
    let node = Node::start(setup.fast(&prefix).with_queue_limit(limit)).await;
    let a = node.connect("r", "a").await;
    a.join("A").await;
    let channel = room_key(&prefix);
    let master = setup.master_of(&channel).await;
    support::topology::until("the node subscribes on the room's shard", || async {
        match support::topology::run_on(master, &["PUBSUB", "SHARDNUMSUB", &channel]).await {
            Ok(redis::Value::Array(reply)) => reply.get(1) == Some(&redis::Value::Int(1)),
            _ => false,
        }
    })
    .await;

    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Sampled on a thread of its own, so that it is not held up by the
    // node's tasks.
    let sampler = std::thread::spawn({
        let (peak, stop, cluster) = (peak.clone(), stop.clone(), node.cluster.clone());
        move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(cluster.stats().received_bytes, Ordering::Relaxed);
                samples += 1;
                std::thread::yield_now();
            }
            samples
        }
    });
    // 5,000 messages of 4 KiB (20 MB), in pipelines of 1,000, straight
    // to the shard (not the backend's own: each is counted invalid when
    // handed over). Less than Redis's own limit for a subscriber's output
    // (32 MB), so that Redis never closes it: what the node does not hand
    // over, it drops and counts.
    const PIPELINES: u64 = 5;
    const EACH: u64 = 1000;
    let payload = vec![b'z'; 4096];
    let client = redis::Client::open(format!("redis://127.0.0.1:{master}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    for _ in 0..PIPELINES {
        let mut pipe = redis::pipe();
        for _ in 0..EACH {
            pipe.cmd("SPUBLISH").arg(&channel).arg(&payload).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let sent = PIPELINES * EACH;
    support::topology::until("every message handed over or dropped", || async {
        let stats = node.cluster.stats();
        stats.invalid + stats.dropped_received >= sent || stats.disconnects > 0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let stats = node.cluster.stats();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "flood of {sent} × 4 KiB in {:?}: at most {peak} B waiting (limit {limit} B, \
         {samples} samples), {} handed over, {} dropped",
        started.elapsed(),
        stats.invalid,
        stats.dropped_received
    );
    assert_eq!(stats.disconnects, 0, "Redis closed the subscriber");
    assert_eq!(stats.invalid + stats.dropped_received, sent, "{stats:?}");
    assert!(peak <= limit + 4096 + 256, "{peak} B waiting");
    assert_eq!(stats.received_bytes, 0);
}
