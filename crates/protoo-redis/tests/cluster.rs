//! Rooms across nodes over a real redis-server: several `Rooms`, each
//! with its own `RedisCluster` (a node), in one test process. Tests that
//! restart, pause or reconfigure Redis start a redis-server of their own;
//! the others share the run's (`PROTOO_REDIS_URL`) when there is one.

mod support;

use protoo_core::cluster::{Admission, ClusterBackend};
use protoo_core::transport::memory;
use protoo_core::{CoreError, Peer, PeerConfig, PeerEvent};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_lists_the_peers_of_every_node_and_new_peer_reaches_them() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
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
    // (A newcomer may hear of a peer it got in its join list: the room
    // answers `join` before it tells the others, as mediasoup-demo does.)
    assert_eq!(alice.expect_new_peer("carol").await["displayName"], "Carol");
    assert_eq!(bob.expect_new_peer("carol").await["displayName"], "Carol");
    // Another room is another list.
    let dave = nodes[1].connect("other", "dave").await;
    assert!(dave.join("Dave").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_to_every_shard_is_reported() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<1>(&redis).await;
    support::topology::until("every shard answers", || async {
        let shards = nodes[0].cluster.shards();
        !shards.is_empty() && shards.iter().all(|shard| shard.connected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_other_member_once_in_order() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
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

/// A broadcast's target (ids left out, listed peers only) chooses the same
/// peers on every node; a local broadcast with a filter stays on its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_target_chooses_the_same_peers_on_every_node() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<2>(&redis).await;
    // Listed (joined): sender, a (node 0); b, c (node 1). Not listed:
    // quiet0 (node 0), quiet1 (node 1).
    let sender = nodes[0].connect("r", "sender").await;
    sender.join("S").await;
    let mut a = nodes[0].connect("r", "a").await;
    a.join("A").await;
    let mut b = nodes[1].connect("r", "b").await;
    b.join("B").await;
    let mut c = nodes[1].connect("r", "c").await;
    c.join("C").await;
    let mut quiet0 = nodes[0].connect("r", "quiet0").await;
    let mut quiet1 = nodes[1].connect("r", "quiet1").await;
    a.expect_new_peers(&["b", "c"]).await;
    b.expect_new_peer("c").await;

    // Every listed peer but the sender and c: a here, b on the other node.
    let answer = sender
        .request(
            "target",
            &json!({ "except": ["sender", "c"], "listed": true, "data": { "n": 1 } }),
        )
        .await;
    assert_eq!(answer, Ok(json!({ "delivered": 1 })), "a, on this node");
    // This node's peers but a, through a filter: quiet0 only (the sender
    // left out by id), nobody on the other node.
    let answer = sender
        .request(
            "target",
            &json!({ "except": ["sender"], "filterOut": "a", "data": { "n": 2 } }),
        )
        .await;
    assert_eq!(answer, Ok(json!({ "delivered": 1 })), "quiet0");
    // Then everybody but the sender, as a marker: what each got before it
    // is what the targeted broadcasts gave it.
    sender.broadcast(&json!({ "marker": true })).await;
    for (client, expected) in [
        (&mut a, vec![json!({ "n": 1 })]),
        (&mut b, vec![json!({ "n": 1 })]),
        (&mut c, vec![]),
        (&mut quiet0, vec![json!({ "n": 2 })]),
        (&mut quiet1, vec![]),
    ] {
        let mut got = Vec::new();
        loop {
            let data = client.expect("chat").await;
            if data == json!({ "marker": true }) {
                break;
            }
            got.push(data);
        }
        assert_eq!(got, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_reaches_every_node_and_join_no_longer_lists_it() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
    let mut alice = nodes[0].connect("r", "alice").await;
    alice.join("A").await;
    let mut bob = nodes[1].connect("r", "bob").await;
    bob.join("B").await;
    let carol = nodes[2].connect("r", "carol").await;
    carol.join("C").await;
    alice.expect_new_peers(&["bob", "carol"]).await;
    bob.expect_new_peer("carol").await;

    // carol closes: the others hear it, and a join anywhere no longer
    // lists her once they did.
    carol.peer.close();
    assert_eq!(alice.expect("peerClosed").await, json!({"peerId": "carol"}));
    assert_eq!(bob.expect("peerClosed").await, json!({"peerId": "carol"}));
    let dave = nodes[0].connect("r", "dave").await;
    assert_eq!(dave.join("D").await, ["alice", "bob"]);

    // bob is kicked: `{}`, then 4000; the others hear it.
    assert_eq!(bob.request("kick", &json!({})).await, Ok(json!({})));
    assert_eq!(bob.closed().await, Some(4000));
    assert_eq!(alice.expect("peerClosed").await, json!({"peerId": "bob"}));
    let eve = nodes[2].connect("r", "eve").await;
    assert_eq!(eve.join("E").await, ["alice", "dave"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_peer_id_on_another_node_replaces_the_old_peer() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
    let mut watcher = nodes[2].connect("r", "watcher").await;
    watcher.join("W").await;
    let mut old = nodes[0].connect("r", "alice").await;
    old.join("A1").await;
    assert_eq!(watcher.expect("newPeer").await["id"], "alice");

    let mut new = nodes[1].connect("r", "alice").await;
    // The old connection is closed with 4000.
    assert_eq!(old.closed().await, Some(4000));
    // The newcomer's join does not list its old incarnation.
    assert_eq!(new.join("A2").await, ["watcher"]);
    // The others hear peerClosed for the old one before the newcomer's
    // newPeer.
    assert_eq!(
        watcher.next().await,
        ("peerClosed".to_owned(), json!({"peerId": "alice"}))
    );
    assert_eq!(
        watcher.next().await,
        (
            "newPeer".to_owned(),
            json!({"id": "alice", "displayName": "A2"})
        )
    );
    // The newcomer heard nothing about itself: the next thing it gets is
    // the marker.
    watcher.broadcast(&json!({ "marker": 1 })).await;
    assert_eq!(
        new.next().await,
        ("chat".to_owned(), json!({ "marker": 1 }))
    );
    // Redis holds the newcomer only.
    let listed: Vec<String> = nodes[0]
        .rooms
        .get("r")
        .map(|room| room.peers().iter().map(|p| p.id().to_owned()).collect())
        .unwrap_or_default();
    assert!(
        listed.is_empty(),
        "the old node has no alice any more: {listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_members_are_announced_gone_once() {
    let redis = RedisServer::shared().await;
    let (prefix, nodes) = cluster::<3>(&redis).await;
    let mut watchers = Vec::new();
    for (i, node) in nodes[1..].iter().enumerate() {
        let watcher = node.connect("r", &format!("watcher{i}")).await;
        watcher.join("W").await;
        watchers.push(watcher);
    }
    let doomed = [
        nodes[0].connect("r", "x").await,
        nodes[0].connect("r", "y").await,
    ];
    for client in &doomed {
        client.join("D").await;
    }
    for watcher in &mut watchers {
        // (In either order: each joiner's handler answers, then tells.)
        watcher.expect_new_peers(&["x", "y"]).await;
    }
    // Node 0 dies without a word (its clients stay, as a killed process's
    // sockets would have gone: nothing tells anyone).
    nodes[0].cluster.abort();
    for watcher in &mut watchers {
        let mut gone = Vec::new();
        while gone.len() < 2 {
            let (method, data) = watcher.next().await;
            if method == "peerClosed" {
                gone.push(data["peerId"].as_str().unwrap().to_owned());
            }
        }
        gone.sort();
        assert_eq!(gone, ["x", "y"]);
    }
    // Exactly once: after a marker broadcast, nothing more came before it.
    watchers[0].broadcast(&json!({ "marker": 2 })).await;
    assert_eq!(
        watchers[1].next().await,
        ("chat".to_owned(), json!({ "marker": 2 }))
    );
    let newcomer = nodes[2].connect("r", "z").await;
    assert_eq!(newcomer.join("Z").await, ["watcher0", "watcher1"]);
    // The dead node's keys are gone (its heartbeat expired, the rest swept).
    let mut conn = redis.connection().await;
    let node_id = nodes[0].cluster.node_id().to_owned();
    let keys = keys_of(&mut conn, &prefix).await;
    assert!(
        keys.iter().all(|entry| !entry.contains(&node_id)),
        "keys of the dead node left: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_mentions_a_room_once_its_last_peer_left() {
    let redis = RedisServer::shared().await;
    let (prefix, nodes) = cluster::<3>(&redis).await;
    let a = nodes[0].connect("room-x", "a").await;
    a.join("A").await;
    let mut b = nodes[1].connect("room-x", "b").await;
    b.join("B").await;
    let mut conn = redis.connection().await;
    assert!(
        keys_of(&mut conn, &prefix)
            .await
            .iter()
            .any(|k| k.contains("room-x"))
    );
    a.peer.close();
    b.expect("peerClosed").await;
    b.peer.close();
    b.peer.closed().await;
    // The removal is queued before the close reaches the client; one more
    // round trip on node 1's link (a presence read) orders after it.
    let (probe, _hold) = nodes[1].rooms.admit("probe", "").hold().await.unwrap();
    let _ = probe.presence().await;
    let (probe, _hold) = nodes[0].rooms.admit("probe", "").hold().await.unwrap();
    let _ = probe.presence().await;
    let keys = keys_of(&mut conn, &prefix).await;
    assert!(keys.iter().all(|k| !k.contains("room-x")), "{keys:?}");
    // A node that leaves in good order takes its keys with it.
    nodes[2].cluster.shutdown().await;
    let node_id = nodes[2].cluster.node_id().to_owned();
    let keys = keys_of(&mut conn, &prefix).await;
    assert!(keys.iter().all(|k| !k.contains(&node_id)), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_peer_by_id_reach_its_node() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
    let asker = nodes[0].connect("r", "asker").await;
    asker.join("A").await;
    let mut target = nodes[1].connect("r", "target").await;
    target.join("T").await;
    let answered = tokio::spawn({
        let peer = asker.peer.clone();
        async move {
            peer.request("notifyPeer", &json!({"peerId": "target"}))
                .await
        }
    });
    assert_eq!(target.expect("hello").await, json!({"from": "server"}));
    assert!(answered.await.unwrap().is_ok());
    // A request is answered back (the client answers `{"hi": true}`).
    let answered = tokio::spawn({
        let peer = asker.peer.clone();
        async move {
            peer.request("requestPeer", &json!({"peerId": "target"}))
                .await
        }
    });
    let target_events = tokio::spawn(async move {
        // Answers the server's request on its own; returns on the close.
        let event = target.next_event().await;
        (target, event)
    });
    let response = answered.await.unwrap().unwrap();
    assert_eq!(response.to_value(), json!({"response": {"hi": true}}));
    // Nobody has `ghost`.
    assert_eq!(
        asker
            .request("notifyPeer", &json!({"peerId": "ghost"}))
            .await,
        Err("peer closed".to_owned())
    );
    // Closing by id closes it where it is.
    assert_eq!(
        asker
            .request("closePeer", &json!({"peerId": "target"}))
            .await,
        Ok(json!({"closed": true}))
    );
    let (_target, event) = target_events.await.unwrap();
    assert_eq!(event, Event::Closed(Some(4000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_refuse_a_peer_id_present_on_another_node_is_refused() {
    let redis = RedisServer::shared().await;
    let prefix = unique_prefix();
    let policy = protoo_core::DuplicatePolicy::Refuse;
    let nodes = [
        Node::start_with(redis.fast(&prefix), policy).await,
        Node::start_with(redis.fast(&prefix), policy).await,
    ];
    let mut first = nodes[0].connect("r", "alice").await;
    first.join("A").await;
    let mut second = nodes[1].connect("r", "alice").await;
    assert_eq!(second.closed().await, Some(4000));
    // The first one is still there, and listed.
    let bob = nodes[1].connect("r", "bob").await;
    assert_eq!(bob.join("B").await, ["alice"]);
    assert_eq!(first.expect_new_peer("bob").await["displayName"], "B");
}

/// A verified identity of `subject` in room `r`, valid for an hour.
fn identity(subject: &str) -> protoo_core::Identity {
    let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    protoo_core::Identity::new(subject, "r", expires)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_takeover_of_a_peer_id_of_another_identity_on_another_node() {
    let redis = RedisServer::shared().await;
    let (_prefix, nodes) = cluster::<3>(&redis).await;
    let mut watcher = nodes[2]
        .connect_as("r", "watcher", Some(identity("watcher")))
        .await;
    watcher.join("W").await;
    let mut victim = nodes[0]
        .connect_as("r", "alice", Some(identity("alice")))
        .await;
    victim.join("A").await;
    assert_eq!(watcher.expect_new_peer("alice").await["displayName"], "A");

    // Another identity with alice's peer id on another node: refused before
    // it is admitted (a server answers 403 before the upgrade).
    let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let refused = nodes[1]
        .rooms
        .admit("r", "alice")
        .identity(identity("mallory"))
        .join(server_side, ())
        .await
        .map(|_| ());
    assert!(
        matches!(refused, Err(CoreError::IdentityMismatch(ref id)) if id == "alice"),
        "{refused:?}"
    );
    let (_peer, mut events) = Peer::new("server", client_side, (), PeerConfig::default()).unwrap();
    assert!(matches!(events.next().await, Some(PeerEvent::Closed(_))));
    // Past that check (another identity, or none, registering in between):
    // the registration refuses it, and its node closes it (4000) before
    // it reads anything.
    for newcomer in [Some(identity("mallory")), None] {
        let admission = nodes[1]
            .cluster
            .member_added("r", "alice", true, newcomer.as_ref(), false)
            .await;
        assert!(matches!(admission, Admission::Refused), "{admission:?}");
        nodes[1].cluster.member_removed("r", "alice");
    }

    // The victim is untouched and was told nothing: the next thing it gets
    // is the watcher's marker, and the watcher heard no peerClosed (the
    // next thing it gets is the victim's marker).
    watcher.broadcast(&json!({ "marker": 1 })).await;
    assert_eq!(
        victim.next().await,
        ("chat".to_owned(), json!({ "marker": 1 }))
    );
    victim.broadcast(&json!({ "marker": 2 })).await;
    assert_eq!(
        watcher.next().await,
        ("chat".to_owned(), json!({ "marker": 2 }))
    );
    // It is still listed, and reached by id from the other nodes.
    let bob = nodes[1].connect_as("r", "bob", Some(identity("bob"))).await;
    assert_eq!(bob.join("B").await, ["alice", "watcher"]);
    assert_eq!(victim.expect_new_peer("bob").await["displayName"], "B");
    assert_eq!(
        bob.request("notifyPeer", &json!({ "peerId": "alice" }))
            .await,
        Ok(json!({}))
    );
    assert_eq!(
        victim.next().await,
        ("hello".to_owned(), json!({ "from": "server" }))
    );

    // The same identity on another node replaces it, as before.
    let mut again = nodes[1]
        .connect_as("r", "alice", Some(identity("alice")))
        .await;
    assert_eq!(victim.closed().await, Some(4000));
    assert_eq!(again.join("A2").await, ["bob", "watcher"]);
    assert_eq!(
        watcher.next_skipping("newPeer").await,
        ("peerClosed".to_owned(), json!({"peerId": "alice"}))
    );
    watcher.broadcast(&json!({ "marker": 3 })).await;
    assert_eq!(
        again.next().await,
        ("chat".to_owned(), json!({ "marker": 3 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_keeps_to_one_slot_on_a_redis_cluster() {
    // A Redis in cluster mode refuses a script that touches an undeclared
    // key or keys of two slots, and any multi-key command across slots:
    // the whole life of a room runs on it as on a single server.
    let redis = RedisServer::start_one_shard_cluster().await;
    let (prefix, nodes) = cluster::<3>(&redis).await;
    let mut alice = nodes[0].connect("r", "alice").await;
    assert!(alice.join("A").await.is_empty());
    let mut bob = nodes[1].connect("r", "bob").await;
    assert_eq!(bob.join("B").await, ["alice"]);
    alice.expect_new_peer("bob").await;
    bob.broadcast(&json!({ "seq": 1 })).await;
    assert_eq!(alice.expect("chat").await, json!({ "seq": 1 }));
    // Replacement across nodes, and a message to a peer by id.
    let mut bob2 = nodes[2].connect("r", "bob").await;
    assert_eq!(bob.closed().await, Some(4000));
    assert_eq!(bob2.join("B2").await, ["alice"]);
    assert_eq!(
        alice.request("notifyPeer", &json!({"peerId": "bob"})).await,
        Ok(json!({}))
    );
    assert_eq!(bob2.expect("hello").await, json!({"from": "server"}));
    // A killed node is swept; its member announced gone.
    let doomed = nodes[1].connect("r", "doomed").await;
    doomed.join("D").await;
    alice.expect_new_peer("doomed").await;
    nodes[1].cluster.abort();
    loop {
        let data = alice.expect("peerClosed").await;
        if data["peerId"] == "doomed" {
            break;
        }
    }
    // The sweep ends (its lock goes) just after the announcement.
    for attempt in 0.. {
        let swept: u64 = [&nodes[0], &nodes[2]]
            .iter()
            .map(|node| node.cluster.stats().swept_nodes)
            .sum();
        if swept > 0 {
            break;
        }
        assert!(attempt < 200, "the sweep did not end");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A node leaving in good order takes its keys along; no command failed.
    nodes[2].cluster.shutdown().await;
    alice.expect("peerClosed").await;
    let mut conn = redis.connection().await;
    let keys = keys_of(&mut conn, &prefix).await;
    for node in &nodes[1..] {
        let id = node.cluster.node_id();
        assert!(keys.iter().all(|k| !k.contains(id)), "{keys:?}");
    }
    for node in &nodes {
        assert_eq!(node.cluster.stats().disconnects, 0, "no script was refused");
    }
}
