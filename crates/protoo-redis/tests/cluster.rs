//! Rooms across nodes over a real redis-server: several `Rooms`, each
//! with its own `RedisCluster` (a node), in one test process.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_lists_the_peers_of_every_node_and_new_peer_reaches_them() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let nodes = [
        Node::start(fast(&redis.url(), &prefix)).await,
        Node::start(fast(&redis.url(), &prefix)).await,
        Node::start(fast(&redis.url(), &prefix)).await,
    ];
    let mut alice = nodes[0].connect("r", "alice").await;
    assert!(alice.join("Alice").await.is_empty());
    let mut bob = nodes[1].connect("r", "bob").await;
    assert_eq!(bob.join("Bob").await, ["alice"]);
    assert_eq!(
        alice.expect("newPeer").await,
        json!({"id": "bob", "displayName": "Bob"})
    );
    let carol = nodes[2].connect("r", "carol").await;
    assert_eq!(carol.join("Carol").await, ["alice", "bob"]);
    assert_eq!(alice.expect("newPeer").await["id"], "carol");
    assert_eq!(bob.expect("newPeer").await["id"], "carol");
    // Another room is another list.
    let dave = nodes[1].connect("other", "dave").await;
    assert!(dave.join("Dave").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_other_member_once_in_order() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let nodes = [
        Node::start(fast(&redis.url(), &prefix)).await,
        Node::start(fast(&redis.url(), &prefix)).await,
        Node::start(fast(&redis.url(), &prefix)).await,
    ];
    let sender = nodes[0].connect("r", "sender").await;
    sender.join("S").await;
    let mut receivers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let receiver = node.connect("r", &format!("receiver{i}")).await;
        receiver.join("R").await;
        receivers.push(receiver);
    }
    const COUNT: u64 = 500;
    for seq in 0..COUNT {
        sender.broadcast(&json!({ "seq": seq })).await;
    }
    sender.broadcast(&json!({ "end": true })).await;
    for receiver in &mut receivers {
        let mut seen = Vec::new();
        loop {
            let (method, data) = receiver.next().await;
            if method != "chat" {
                continue;
            }
            if data["end"] == true {
                break;
            }
            seen.push(data["seq"].as_u64().unwrap());
        }
        assert_eq!(seen, (0..COUNT).collect::<Vec<_>>(), "each once, in order");
    }
}
