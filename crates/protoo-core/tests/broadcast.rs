//! A broadcast's target at the cluster seam: what the backend is handed
//! (the whole `Target`, nothing for a local broadcast), and the same target
//! applied to this node's peers when another node sends it.

mod common;

use std::future::ready;
use std::sync::{Arc, Mutex};

use common::*;
use protoo_core::cluster::{
    Admission, ClusterBackend, ClusterFuture, LocalNode, PeerMessage, PeerReply,
};
use protoo_core::{Frame, Payload, Presence, RequestError, Room, Rooms, Target, Transport};
use serde_json::json;

/// A backend that records the broadcasts it is handed.
#[derive(Clone, Default)]
struct Recording {
    node: Arc<Mutex<Option<LocalNode>>>,
    broadcasts: Arc<Mutex<Vec<(String, String, Target)>>>,
}

impl Recording {
    fn take(&self) -> Vec<(String, String, Target)> {
        std::mem::take(&mut *self.broadcasts.lock().unwrap())
    }

    fn node(&self) -> LocalNode {
        self.node.lock().unwrap().clone().expect("attached")
    }
}

impl ClusterBackend for Recording {
    fn attach(&self, node: LocalNode) {
        *self.node.lock().unwrap() = Some(node);
    }

    fn member_added(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: Option<&protoo_core::Identity>,
        _: bool,
    ) -> ClusterFuture<Admission> {
        Box::pin(ready(Admission::Admitted))
    }

    fn presence_set(&self, _: &str, _: &str, _: &Payload) {}

    fn member_removed(&self, _: &str, _: &str) {}

    fn broadcast(&self, room_id: &str, frame: &Frame, target: &Target) {
        self.broadcasts.lock().unwrap().push((
            room_id.to_owned(),
            frame.as_str().to_owned(),
            target.clone(),
        ));
    }

    fn presence(&self, _: &str) -> ClusterFuture<Option<Vec<Presence>>> {
        Box::pin(ready(None))
    }

    fn to_peer(&self, _: &str, _: &str, _: PeerMessage) -> ClusterFuture<PeerReply> {
        Box::pin(ready(Err(RequestError::PeerClosed)))
    }
}

/// A room "r" of a clustered registry with the peers a, b (listed) and c
/// (not listed); their remote ends, in that order.
async fn room_of_three(backend: &Recording) -> (Rooms, Room, Vec<Transport>) {
    let rooms: Rooms = Rooms::builder().cluster(backend.clone()).build();
    let mut remotes = Vec::new();
    let mut kept = Vec::new();
    for id in ["a", "b", "c"] {
        let (server_side, client_side) = pair();
        kept.push(
            rooms
                .admit("r", id)
                .join(server_side, ())
                .await
                .expect("admitted"),
        );
        remotes.push(client_side);
    }
    let room = rooms.get("r").expect("the room");
    room.set_presence("a", &json!({})).unwrap();
    room.set_presence("b", &json!({})).unwrap();
    // The peers stay open with their handles kept by the room; their events
    // are detached so that nobody needs to read them.
    for joined in kept {
        joined.events.detach();
    }
    (rooms, room, remotes)
}

#[tokio::test]
async fn the_backend_is_handed_the_whole_target() {
    let backend = Recording::default();
    let (_rooms, room, mut remotes) = room_of_three(&backend).await;

    let report = room
        .to_all()
        .except(["a"])
        .listed()
        .notify("n", &json!({"x": 1}))
        .unwrap();
    assert_eq!((report.delivered, report.skipped), (1, 2), "b only");
    assert_eq!(recv_json(&mut remotes[1]).await["method"], "n");

    let mut expected = Target::default();
    expected.except = vec!["a".into()];
    expected.listed = true;
    assert_eq!(
        backend.take(),
        [(
            "r".to_owned(),
            r#"{"notification":true,"method":"n","data":{"x":1}}"#.to_owned(),
            expected
        )]
    );

    // A peer left out by its handle is its id in the target.
    let a = room.peer("a").unwrap();
    room.to_all().except_peer(&a).notify("m", &()).unwrap();
    let handed = backend.take();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].2.except, vec![Arc::<str>::from("a")]);
    assert!(!handed[0].2.listed && !handed[0].2.local);
}

#[tokio::test]
async fn a_local_broadcast_never_reaches_the_backend() {
    let backend = Recording::default();
    let (_rooms, room, mut remotes) = room_of_three(&backend).await;

    // With a filter: this node's peers the filter keeps.
    let report = room
        .to_all()
        .local()
        .filter(|peer| peer.id() != "b")
        .notify("only-here", &json!({}))
        .unwrap();
    assert_eq!((report.delivered, report.skipped), (2, 1), "a and c");
    assert_eq!(recv_json(&mut remotes[0]).await["method"], "only-here");
    assert_eq!(recv_json(&mut remotes[2]).await["method"], "only-here");
    // Without one.
    let report = room.to_all().listed().local().notify("too", &()).unwrap();
    assert_eq!(report.delivered, 2, "a and b");
    assert!(backend.take().is_empty(), "nothing for the other nodes");
}

#[tokio::test]
async fn a_target_from_another_node_chooses_the_same_peers_here() {
    let backend = Recording::default();
    let (_rooms, _room, mut remotes) = room_of_three(&backend).await;
    let frame =
        Frame::from(r#"{"notification":true,"method":"from-elsewhere","data":{}}"#.to_owned());

    let mut target = Target::default();
    target.except = vec!["a".into(), "nobody".into()];
    assert_eq!(backend.node().deliver("r", &frame, &target), 2, "b and c");
    target.listed = true;
    assert_eq!(backend.node().deliver("r", &frame, &target), 1, "b");
    assert_eq!(backend.node().deliver("other", &frame, &target), 0);
    for (i, count) in [(1, 2), (2, 1)] {
        for _ in 0..count {
            assert_eq!(recv_json(&mut remotes[i]).await["method"], "from-elsewhere");
        }
    }
    assert!(backend.take().is_empty(), "delivered here, not sent on");
}

#[test]
fn a_target_chooses_by_id_and_presence() {
    let mut target = Target::default();
    assert!(target.chooses("a", false));
    target.except = vec!["a".into()];
    assert!(!target.chooses("a", true));
    assert!(target.chooses("b", false));
    target.listed = true;
    assert!(!target.chooses("b", false));
    assert!(target.chooses("b", true));
}

/// A broadcast on a sender's behalf goes to the backend with the sender
/// left out; the sender is charged for this node's recipients only, and
/// while it owes fan-out bytes nothing reaches the backend either.
#[tokio::test(start_paused = true)]
async fn a_sender_over_its_fan_out_budget_sends_nothing_to_other_nodes() {
    use protoo_core::{PeerConfig, Rate};

    let backend = Recording::default();
    let rooms: Rooms = Rooms::builder().cluster(backend.clone()).build();
    let mut kept = Vec::new();
    for id in ["a", "b"] {
        let (server_side, client_side) = pair();
        let joined = rooms
            .admit("r", id)
            .config(PeerConfig::default().with_fan_out_rate(Rate::per_second(100)))
            .join(server_side, ())
            .await
            .expect("admitted");
        kept.push((joined, client_side));
    }
    let room = rooms.get("r").expect("the room");
    let a = room.peer("a").unwrap();
    // 67 bytes × one local recipient (b): within 100.
    let text = "x".repeat(20);
    let report = room.to_all().from(&a).notify("chat", &text).unwrap();
    assert_eq!((report.delivered, report.rate_limited), (1, false));
    let handed = backend.take();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].2.except, vec![Arc::<str>::from("a")]);
    // The second puts it in debt; the third is refused, here and elsewhere.
    let report = room.to_all().from(&a).notify("chat", &text).unwrap();
    assert!(!report.rate_limited);
    assert_eq!(backend.take().len(), 1);
    let report = room.to_all().from(&a).notify("chat", &text).unwrap();
    assert!(report.rate_limited);
    assert!(backend.take().is_empty());
    assert_eq!(a.refused_messages(), 1);
}
