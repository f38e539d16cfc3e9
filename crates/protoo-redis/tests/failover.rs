//! The HA topologies under fire: a Sentinel master killed, a Redis Cluster
//! master killed, a room's slot moved to another shard, each during a
//! stream of numbered broadcasts from one node to another. What the crate
//! docs promise, checked: no node exits, local delivery goes on, the link
//! is back within 10 s of the new master, nothing is delivered twice or out
//! of order, and only broadcasts sent during the switch are lost (counted
//! and printed). Each test starts its own set-up.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::topology::{run_on, until};
use support::*;

/// A stream of numbered broadcasts from a member of node 0 to members of
/// nodes 1 and 2 of room `r` (a room on three nodes), and what they saw.
struct Stream {
    nodes: [Node; 3],
    /// The next number the sender sends.
    next: Arc<AtomicU64>,
    /// The highest number each receiver saw.
    seen: [Arc<AtomicU64>; 2],
    sender: tokio::task::JoinHandle<Client>,
    receivers: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    stop: Arc<tokio::sync::Notify>,
    local: tokio::task::JoinHandle<Vec<u64>>,
}

impl Stream {
    async fn start(redis: &RedisServer) -> Stream {
        let (_prefix, nodes) = cluster::<3>(redis).await;
        let sender = nodes[0].connect("r", "sender").await;
        sender.join("S").await;
        // A member on the sender's node: local delivery never waits on Redis.
        let mut local = nodes[0].connect("r", "local").await;
        local.join("L").await;
        let mut receivers = Vec::new();
        for (i, node) in nodes[1..].iter().enumerate() {
            let receiver = node.connect("r", &format!("receiver{i}")).await;
            receiver.join("R").await;
            local.expect_new_peer(&format!("receiver{i}")).await;
            receivers.push(receiver);
        }
        let next = Arc::new(AtomicU64::new(0));
        let seen = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let stop = Arc::new(tokio::sync::Notify::new());
        let sender = tokio::spawn({
            let next = next.clone();
            let stop = stop.clone();
            async move {
                loop {
                    let seq = next.load(Ordering::SeqCst);
                    sender.broadcast(&json!({ "seq": seq })).await;
                    next.store(seq + 1, Ordering::SeqCst);
                    // A steady pace (about 500/s), not a synchronisation.
                    tokio::select! {
                        () = stop.notified() => break,
                        () = tokio::time::sleep(Duration::from_millis(2)) => {}
                    }
                }
                sender.broadcast(&json!({ "end": true })).await;
                sender
            }
        });
        let collect = |mut client: Client, seen: Option<Arc<AtomicU64>>| async move {
            let mut got = Vec::new();
            loop {
                let (method, data) = client.next().await;
                if method != "chat" {
                    continue;
                }
                if data["end"] == true {
                    return got;
                }
                let seq = data["seq"].as_u64().unwrap();
                got.push(seq);
                if let Some(seen) = &seen {
                    seen.store(seq, Ordering::SeqCst);
                }
            }
        };
        let receivers = receivers
            .into_iter()
            .zip(&seen)
            .map(|(receiver, seen)| tokio::spawn(collect(receiver, Some(seen.clone()))))
            .collect();
        let local = tokio::spawn(collect(local, None));
        Stream {
            nodes,
            next,
            seen,
            sender,
            receivers,
            stop,
            local,
        }
    }

    /// Waits until every receiver saw number `seq`.
    async fn until_seen(&self, seq: u64) {
        until("the receivers see the stream", || async {
            self.seen
                .iter()
                .all(|seen| seen.load(Ordering::SeqCst) >= seq)
        })
        .await;
    }

    /// Waits until every node is linked again; the time it took.
    async fn until_linked(&self) -> Duration {
        let start = Instant::now();
        for node in &self.nodes {
            tokio::time::timeout(Duration::from_secs(10), node.cluster.connected())
                .await
                .expect("linked again within 10 s");
        }
        start.elapsed()
    }

    /// Stops the stream once the receiver saw 100 more than `from`;
    /// checks the promises (nothing numbered below `since` lost either);
    /// returns (sent, lost).
    async fn finish(self, since: u64, from: u64, what: &str) -> (u64, u64) {
        // Everything sent after the link is back arrives.
        let after = from.max(self.next.load(Ordering::SeqCst));
        self.until_seen(after + 100).await;
        self.stop.notify_one();
        let _sender = self.sender.await.unwrap();
        let sent = self.next.load(Ordering::SeqCst);
        let local = self.local.await.unwrap();
        assert_eq!(
            local,
            (0..sent).collect::<Vec<_>>(),
            "{what}: local delivery lost nothing"
        );
        let dropped = self.nodes[0].cluster.stats().dropped_while_down;
        let mut lost = 0;
        for (i, receiver) in self.receivers.into_iter().enumerate() {
            let got = receiver.await.unwrap();
            assert!(
                got.windows(2).all(|pair| pair[0] < pair[1]),
                "{what}: nothing twice, nothing out of order"
            );
            let missing: Vec<u64> = (0..sent)
                .filter(|seq| got.binary_search(seq).is_err())
                .collect();
            assert!(
                missing.iter().all(|&seq| seq < after),
                "{what}: lost after the link was back: {missing:?}"
            );
            assert!(
                missing.iter().all(|&seq| seq >= since),
                "{what}: lost before the switch: {missing:?}"
            );
            println!(
                "{what}, receiver on node {}: sent {sent}, delivered {}, lost {} \
                 (numbers {:?}..={:?}); counted as dropped while down on the sender's node: {dropped}",
                i + 1,
                got.len(),
                missing.len(),
                missing.first(),
                missing.last()
            );
            lost = lost.max(missing.len() as u64);
            // What was lost was counted on the sender's node (dropped while
            // its link was down), but for what a receiving node missed while
            // it reconnected later than the sender: one reconnection wait
            // (at most 1 s, 500 broadcasts at this pace).
            assert!(
                (missing.len() as u64) <= dropped + 600,
                "{what}: lost {} but {dropped} counted",
                missing.len()
            );
        }
        (sent, lost)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_only_what_was_sent_during_the_switch() {
    let mut set = SentinelSet::start().await;
    let redis = RedisServer::of(set.topology());
    let stream = Stream::start(&redis).await;
    stream.until_seen(100).await;

    let old = set.kill_master().await;
    set.switched_from(old).await;
    // From the switch (`+switch-master`), both nodes are back within 10 s.
    let took = stream.until_linked().await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (_sent, lost) = stream.finish(0, 0, "Sentinel failover").await;
    // The switch takes the sentinels about 2 s (down after 1 s, then the
    // vote): at 500/s, at most what was sent meanwhile, plus the reconnect.
    assert!(lost < 10_000, "lost {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_demoted_by_sentinel_is_left_for_the_new_one() {
    // A failover the sentinels are asked for: the old master lives on as a
    // replica, and answers writes with READONLY.
    let set = SentinelSet::start().await;
    let redis = RedisServer::of(set.topology());
    let stream = Stream::start(&redis).await;
    stream.until_seen(100).await;

    let old = set.master_port().await;
    let sentinel = set.sentinels[0].1;
    run_on(sentinel, &["SENTINEL", "FAILOVER", &set.master])
        .await
        .expect("a failover starts");
    set.switched_from(old).await;
    // Every node writes to the new master again: a member joining on one
    // node is listed on another.
    let late = stream.nodes[2].connect("r", "late").await;
    late.join("L").await;
    until("the nodes register on the new master", || async {
        let newcomer = stream.nodes[1].connect("r", "probe").await;
        let listed = newcomer.join("P").await;
        newcomer.peer.close();
        listed.contains(&"late".to_owned())
    })
    .await;
    let took = stream.until_linked().await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Each node's link is to the new master (the health check says which).
    let new = format!("127.0.0.1:{}", set.master_port().await);
    for node in &stream.nodes {
        until("the link names the new master", || async {
            node.cluster
                .shards()
                .iter()
                .all(|shard| shard.address == new)
        })
        .await;
    }
    let (_sent, lost) = stream
        .finish(0, 0, "Sentinel failover, old master demoted")
        .await;
    assert!(lost < 10_000, "lost {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_failover_loses_only_what_was_sent_during_the_switch() {
    let mut set = ClusterSet::start().await;
    let redis = RedisServer::of(set.topology());
    let stream = Stream::start(&redis).await;
    stream.until_seen(100).await;
    // The health of the link lists the three masters.
    until("the node probes the three shards", || async {
        let shards = stream.nodes[0].cluster.shards();
        shards.len() == 3 && shards.iter().all(|shard| shard.connected)
    })
    .await;

    // The shard of the room's slot loses its master.
    let slot = room_slot(&set, &stream).await;
    let owner = set.owner_of(slot).await;
    set.kill(owner).await;
    until("the replica is promoted", || async {
        set.owner_of(slot).await != owner
    })
    .await;
    let took = stream.until_linked().await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (_sent, lost) = stream.finish(0, 0, "Cluster failover").await;
    assert!(lost < 10_000, "lost {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_slot_moves_to_another_shard_keeps_its_stream() {
    let set = ClusterSet::start().await;
    let redis = RedisServer::of(set.topology());
    let stream = Stream::start(&redis).await;
    stream.until_seen(100).await;

    let slot = room_slot(&set, &stream).await;
    // The room's broadcasts cross its slot's shard only.
    let owner = set.owner_of(slot).await;
    for port in set.live_ports() {
        let calls = set.spublish_calls(port).await;
        assert_eq!(calls > 0, port == owner, "SPUBLISH on {port}: {calls}");
    }
    let to = set.other_master(slot).await;
    // Only what is published while the slot moves may be lost: from the
    // move's start until every node subscribed on the new shard.
    let since = stream.next.load(Ordering::SeqCst);
    set.migrate(slot, to).await;
    // The three nodes follow the slot: their subscriptions move to the
    // new shard (Redis ended them on the old one).
    let channel = stream.nodes[0].cluster.config().prefix.clone();
    let channel = format!("{{{channel}:room:r}}");
    until("the nodes subscribe on the new shard", || async {
        match run_on(to, &["PUBSUB", "SHARDNUMSUB", &channel]).await {
            Ok(redis::Value::Array(reply)) => reply.get(1) == Some(&redis::Value::Int(3)),
            _ => false,
        }
    })
    .await;
    let from = stream.next.load(Ordering::SeqCst);
    let (_sent, lost) = stream.finish(since, from, "slot migration").await;
    // The library does not count these (the publish reached the new shard;
    // no node was subscribed there yet): the test does.
    println!(
        "slot migration: {lost} lost of the {} published while the slot moved",
        from - since
    );
    assert!(lost < 1_000 && lost <= from - since, "lost {lost}");
}

/// The slot of room `r`'s keys.
async fn room_slot(set: &ClusterSet, stream: &Stream) -> u16 {
    let prefix = &stream.nodes[0].cluster.config().prefix;
    let port = set.nodes[0].1;
    match run_on(
        port,
        &["CLUSTER", "KEYSLOT", &format!("{{{prefix}:room:r}}")],
    )
    .await
    {
        Ok(redis::Value::Int(slot)) => u16::try_from(slot).unwrap(),
        other => panic!("CLUSTER KEYSLOT: {other:?}"),
    }
}
