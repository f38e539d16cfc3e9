//! The cluster when Redis fails: restarted, stalled, closing a subscriber
//! that fell behind, or too slow for what a node publishes. Each test
//! starts a redis-server of its own, since it restarts, pauses or
//! reconfigures it.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_local_delivery_and_recovers_the_cluster() {
    let mut redis = RedisServer::start().await;
    let (_prefix, nodes) = cluster::<2>(&redis).await;
    let a1 = nodes[0].connect("r", "a1").await;
    a1.join("A1").await;
    let mut a2 = nodes[0].connect("r", "a2").await;
    a2.join("A2").await;
    let mut b = nodes[1].connect("r", "b").await;
    assert_eq!(b.join("B").await, ["a1", "a2"]);

    redis.kill().await;
    // During the outage, members of one node keep talking.
    a1.broadcast(&json!({ "during": 1 })).await;
    assert_eq!(a2.expect("chat").await, json!({ "during": 1 }));
    // Nobody exits; a join answers with the node's own members.
    let a3 = nodes[0].connect("r", "a3").await;
    assert_eq!(a3.join("A3").await, ["a1", "a2"]);

    redis.restart().await;
    let back = std::time::Instant::now();
    for node in &nodes {
        tokio::time::timeout(std::time::Duration::from_secs(10), node.cluster.connected())
            .await
            .expect("the node is back within 10 s");
    }
    // Cross-node delivery works again, and every member is listed again
    // (this Redis came back empty: the nodes registered them anew).
    a1.broadcast(&json!({ "after": 1 })).await;
    assert_eq!(b.expect("chat").await, json!({ "after": 1 }));
    assert!(back.elapsed() < std::time::Duration::from_secs(10));
    let c = nodes[1].connect("r", "c").await;
    assert_eq!(c.join("C").await, ["a1", "a2", "a3", "b"]);
    for node in &nodes {
        let stats = node.cluster.stats();
        assert!(stats.disconnects >= 1 && stats.resyncs >= 2, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_redis_disconnects_for_its_output_buffer_is_made_anew() {
    let redis = RedisServer::start().await;
    let (_prefix, nodes) = cluster::<2>(&redis).await;
    let sender = nodes[0].connect("r", "sender").await;
    sender.join("S").await;
    let mut receiver = nodes[1].connect("r", "receiver").await;
    receiver.join("R").await;
    // A pub/sub client whose output passes 1 KiB is closed by Redis (the
    // default is 32 MB, or 8 MB for 60 s).
    redis
        .run(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1024 0 0",
        ])
        .await;
    let big = "x".repeat(64 << 10);
    sender.broadcast(&json!({ "big": big })).await;
    // Redis has run the publish once a later round trip on the sender's
    // node came back.
    let _ = nodes[0].rooms.get("r").unwrap().presence().await;
    redis
        .run(&[
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
        let got =
            tokio::time::timeout(std::time::Duration::from_millis(500), receiver.next()).await;
        match got {
            Ok((_, data)) if data.get("marker").is_some() => break,
            Ok((_, data)) => assert!(data.get("big").is_none(), "the big one came through"),
            Err(_) => assert!(attempt < 20, "delivery did not come back"),
        }
    }
    assert!(nodes[1].cluster.stats().disconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_past_the_queue_limit_are_dropped_and_counted() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let limit = 64 << 10;
    let mut config = fast(&redis.url(), &prefix).with_queue_limit(limit);
    config.response_timeout = std::time::Duration::from_secs(2);
    let node = Node::start(config).await;
    let a = node.connect("r", "a").await;
    a.join("A").await;
    let mut b = node.connect("r", "b").await;
    b.join("B").await;
    redis.pause();
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
    redis.resume();
    tokio::time::timeout(std::time::Duration::from_secs(10), node.cluster.connected())
        .await
        .expect("back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_does_not_make_live_nodes_dead() {
    let redis = RedisServer::start().await;
    let (_prefix, nodes) = cluster_with::<2>(&redis, |mut config| {
        // The links outlast the stall: only the TTLs run out meanwhile.
        config.response_timeout = std::time::Duration::from_secs(10);
        config
    })
    .await;
    let mut a = nodes[0].connect("r", "a").await;
    a.join("A").await;
    let mut b = nodes[1].connect("r", "b").await;
    b.join("B").await;
    a.expect_new_peer("b").await;
    redis.pause();
    // Three times the heartbeat TTL: every node's heartbeat key expires.
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    redis.resume();
    // Long enough for a node that sweeps too early to have done it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Nobody was announced gone: the first thing each hears after the
    // stall is the other's marker.
    a.broadcast(&json!({ "marker": 1 })).await;
    assert_eq!(
        b.next_skipping("newPeer").await,
        ("chat".to_owned(), json!({ "marker": 1 }))
    );
    b.broadcast(&json!({ "marker": 2 })).await;
    assert_eq!(
        a.next_skipping("newPeer").await,
        ("chat".to_owned(), json!({ "marker": 2 }))
    );
    for node in &nodes {
        assert_eq!(node.cluster.stats().lost_members, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_forgot_the_scripts_gets_them_again() {
    let redis = RedisServer::start().await;
    let (_prefix, nodes) = cluster::<2>(&redis).await;
    let a = nodes[0].connect("r", "a").await;
    a.join("A").await;
    redis.run(&["SCRIPT", "FLUSH"]).await;
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
    }
    assert!(nodes[1].cluster.stats().disconnects + nodes[0].cluster.stats().disconnects >= 1);
}
