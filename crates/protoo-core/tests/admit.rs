//! The one admission path: `Rooms::admit` and its overrides, the context the
//! room's setup sees, `RoomHold` (members that are not protoo peers) and the
//! `on_close` hook on every close path.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use protoo_core::{
    Context, CoreError, DuplicatePolicy, ErrorData, Joined, PeerConfig, RequestError, Room,
    RoomSetup, Rooms,
};
use tokio::sync::Semaphore;

/// A registry counting its rooms' closes, by room id.
fn counting_rooms(builder: protoo_core::RoomsBuilder) -> (Rooms, Arc<Mutex<Vec<String>>>) {
    let closed = Arc::new(Mutex::new(Vec::new()));
    let log = closed.clone();
    let rooms = builder
        .on_close(move |room: &Room| log.lock().unwrap().push(room.id().to_owned()))
        .build();
    (rooms, closed)
}

fn closes(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn join_uses_the_registry_defaults_and_the_overrides_win() {
    let rooms: Rooms<&str> = Rooms::builder()
        .duplicate_policy(DuplicatePolicy::Refuse)
        .build();
    let (a, _raw_a) = pair();
    let Joined {
        room,
        peer: old,
        events: _old_events,
        ..
    } = rooms.admit("r", "p").join(a, "old").await.unwrap();
    assert_eq!((room.id(), old.id(), *old.data()), ("r", "p", "old"));

    // The registry's policy: refused, the transport closed.
    let (b, mut raw_b) = pair();
    let refused = rooms.admit("r", "p").join(b, "refused").await;
    assert!(matches!(refused, Err(CoreError::DuplicateId(ref id)) if id == "p"));
    assert_eq!(recv_close(&mut raw_b).await.code, Some(4000));

    // The admission's own policy.
    let (c, _raw_c) = pair();
    let Joined {
        peer: new,
        events: _new_events,
        ..
    } = rooms
        .admit("r", "p")
        .policy(DuplicatePolicy::Replace)
        .join(c, "new")
        .await
        .unwrap();
    old.closed().await;
    assert_eq!(*room.peer("p").unwrap().data(), "new");
    assert!(!new.is_closed());
}

#[tokio::test(start_paused = true)]
async fn the_admissions_config_replaces_the_registrys() {
    let rooms: Rooms = Rooms::builder()
        .peer_config(PeerConfig::default().with_request_timeout(Duration::from_secs(3600)))
        .build();
    let (a, _raw_a) = pair();
    let joined = rooms
        .admit("r", "p")
        .config(PeerConfig::default().with_request_timeout(Duration::from_secs(1)))
        .join(a, ())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let unanswered = joined.peer.request("ask", &()).await;
    assert!(matches!(unanswered, Err(RequestError::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn an_empty_peer_id_is_refused_before_any_room_is_made() {
    let rooms: Rooms = Rooms::builder().setup(|_: RoomSetup| async { Ok::<_, ErrorData>(()) });
    let (a, mut raw) = pair();
    let refused = rooms.admit("r", "").join(a, ()).await;
    assert!(matches!(refused, Err(CoreError::EmptyId)));
    assert_eq!(recv_close(&mut raw).await.code, Some(4000));
    assert!(rooms.is_empty());
}

#[tokio::test]
async fn the_setup_sees_the_context_of_the_admission_that_started_it() {
    struct Claims(&'static str);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let rooms: Rooms<(), String> = Rooms::builder().setup({
        let (seen, gate) = (seen.clone(), gate.clone());
        move |setup: RoomSetup| {
            let replicas = setup.context.param("consumerReplicas").map(str::to_owned);
            let user = setup.context.get::<Claims>().map(|claims| claims.0);
            seen.lock()
                .unwrap()
                .push((setup.room_id.clone(), replicas.clone(), user));
            let gate = gate.clone();
            async move {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                Ok::<_, ErrorData>(format!(
                    "{} x{}",
                    setup.room_id,
                    replicas.unwrap_or_default()
                ))
            }
        }
    });
    let mut first_context = Context::new().with_param("consumerReplicas", "2");
    first_context.insert(Claims("alice"));
    let (a, _raw_a) = pair();
    let first = tokio::spawn({
        let rooms = rooms.clone();
        async move {
            rooms
                .admit("r", "alice")
                .context(first_context)
                .join(a, ())
                .await
        }
    });
    // The first admission has started the setup: the second waits for it.
    while seen.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let (b, _raw_b) = pair();
    let second = tokio::spawn({
        let rooms = rooms.clone();
        async move {
            rooms
                .admit("r", "bob")
                .context(Context::new().with_param("consumerReplicas", "9"))
                .join(b, ())
                .await
        }
    });
    tokio::task::yield_now().await;
    gate.add_permits(1);
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert!(Room::ptr_eq(&first.room, &second.room));
    assert_eq!(first.room.data(), "r x2");
    assert_eq!(
        *seen.lock().unwrap(),
        [("r".to_owned(), Some("2".to_owned()), Some("alice"))]
    );
}

#[tokio::test]
async fn a_setup_failure_carries_its_status_and_closes_the_transport() {
    let rooms: Rooms<(), ()> = Rooms::builder().setup(|setup: RoomSetup| async move {
        match setup.context.param("token") {
            Some("good") => Ok(()),
            _ => Err(ErrorData::new(401, "bad token")),
        }
    });
    let (a, mut raw) = pair();
    match rooms.admit("r", "p").join(a, ()).await {
        Err(CoreError::RoomSetup(error)) => {
            assert_eq!(
                (error.code(), error.reason().as_deref()),
                (Some(401), Some("bad token"))
            )
        }
        other => panic!("expected the setup's error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(recv_close(&mut raw).await.code, Some(4000));
    assert!(rooms.is_empty());
    // The next admission runs the setup anew, with its own context.
    let (b, _raw_b) = pair();
    let joined = rooms
        .admit("r", "p")
        .context(Context::new().with_param("token", "good"))
        .join(b, ())
        .await;
    assert!(joined.is_ok());
}

#[tokio::test]
async fn a_hold_keeps_an_empty_room_and_its_drop_removes_it() {
    let (rooms, closed) = counting_rooms(Rooms::builder());
    let (room, hold) = rooms.admit("r", "").hold().await.unwrap();
    assert_eq!(hold.room_id(), "r");
    assert!(format!("{hold:?}").contains("\"r\""));
    assert!(room.is_empty() && !room.is_closed());
    assert_eq!(rooms.get("r"), Some(room.clone()));

    // A second hold on the same room: the first one's drop keeps it.
    let (same, second) = rooms.admit("r", "ignored").hold().await.unwrap();
    assert!(Room::ptr_eq(&room, &same));
    drop(hold);
    assert_eq!(rooms.get("r"), Some(room.clone()));
    assert!(closes(&closed).is_empty());

    drop(second);
    room.closed().await;
    assert!(rooms.is_empty() && room.is_closed());
    assert_eq!(closes(&closed), ["r"]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_hold_leaves_the_room_to_its_grace() {
    let (rooms, closed) =
        counting_rooms(Rooms::builder().empty_room_grace(Duration::from_secs(10)));
    let (room, hold) = rooms.admit("r", "").hold().await.unwrap();
    drop(hold);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rooms.get("r"), Some(room.clone()));
    room.closed().await;
    assert!(rooms.is_empty());
    assert_eq!(closes(&closed), ["r"]);
}

#[tokio::test]
async fn a_rest_broadcaster_keeps_the_room_while_peers_come_and_go() {
    let (rooms, closed) = counting_rooms(Rooms::builder());
    // The broadcaster (a REST client) creates the room.
    let (room, broadcaster) = rooms.admit("r", "").hold().await.unwrap();
    for round in 0..2 {
        let (a, _raw_a) = pair();
        let (b, _raw_b) = pair();
        let alice = rooms.admit("r", "alice").join(a, ()).await.unwrap();
        let bob = rooms.admit("r", "bob").join(b, ()).await.unwrap();
        assert!(Room::ptr_eq(&alice.room, &room) && Room::ptr_eq(&bob.room, &room));
        assert_eq!(room.len(), 2, "round {round}");
        alice.peer.close();
        bob.peer.close();
        alice.peer.closed().await;
        bob.peer.closed().await;
        // Every peer gone: the room stays for its broadcaster.
        assert!(room.is_empty() && !room.is_closed());
        assert_eq!(rooms.get("r"), Some(room.clone()));
        assert!(closes(&closed).is_empty());
    }
    // The broadcaster leaves: the room closes, its hook runs once.
    drop(broadcaster);
    room.closed().await;
    assert!(rooms.is_empty());
    assert_eq!(closes(&closed), ["r"]);
}

#[tokio::test]
async fn on_close_runs_once_when_the_last_peer_leaves() {
    let (rooms, closed) = counting_rooms(Rooms::builder());
    let (a, _raw_a) = pair();
    let joined = rooms.admit("r", "alice").join(a, ()).await.unwrap();
    assert!(closes(&closed).is_empty());
    joined.peer.close();
    joined.room.closed().await;
    joined.room.close(); // already closed: no second run
    assert_eq!(closes(&closed), ["r"]);
}

#[tokio::test]
async fn on_close_runs_once_on_room_close_with_its_data() {
    let closed = Arc::new(Mutex::new(Vec::new()));
    let rooms: Rooms<(), String> = Rooms::builder()
        .on_close({
            let closed = closed.clone();
            move |room: &Room<(), String>| {
                // The peers are closed by then; the data is still there.
                assert!(room.is_empty());
                closed.lock().unwrap().push(room.data().clone());
            }
        })
        .setup(|setup: RoomSetup| async move {
            Ok::<_, ErrorData>(format!("router of {}", setup.room_id))
        });
    let (a, _raw_a) = pair();
    let joined = rooms.admit("r", "alice").join(a, ()).await.unwrap();
    joined.room.close();
    joined.room.close();
    assert!(joined.peer.is_closed());
    joined.peer.closed().await;
    assert_eq!(*closed.lock().unwrap(), ["router of r"]);
}

#[tokio::test]
async fn on_close_runs_once_per_room_on_close_all_and_remove() {
    let (rooms, closed) = counting_rooms(Rooms::builder());
    let mut kept = Vec::new();
    for room_id in ["a", "b", "c"] {
        let (t, raw) = pair();
        kept.push((rooms.admit(room_id, "p").join(t, ()).await.unwrap(), raw));
    }
    let (_held, hold) = rooms.admit("d", "").hold().await.unwrap();
    let removed = rooms.remove("a").unwrap();
    assert!(removed.is_closed());
    assert_eq!(closes(&closed), ["a"]);

    rooms.close_all();
    let mut ids = closes(&closed);
    ids.sort();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    // The peers leaving and the hold dropping afterwards run nothing more.
    for (joined, _) in &kept {
        joined.peer.closed().await;
    }
    drop(hold);
    assert_eq!(closes(&closed).len(), 4);
    assert!(rooms.is_empty());
}

#[tokio::test]
async fn every_close_path_runs_on_close_exactly_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let rooms: Rooms = Rooms::builder()
        .on_close({
            let calls = calls.clone();
            move |_room: &Room| {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    // Closed while a peer, a hold and a waiting admission hold it, then
    // each of them lets go.
    let (t, _raw) = pair();
    let joined = rooms.admit("r", "p").join(t, ()).await.unwrap();
    let (_room, hold) = rooms.admit("r", "").hold().await.unwrap();
    let (t, _raw_q) = pair();
    let (connection, held, release) = HeldConnection::new(t);
    let waiting = tokio::spawn({
        let rooms = rooms.clone();
        async move { rooms.admit("r", "q").join(connection, ()).await }
    });
    held.await.unwrap();
    joined.room.close();
    joined.peer.closed().await;
    drop(hold);
    release.release();
    assert!(matches!(waiting.await.unwrap(), Err(CoreError::RoomClosed)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A room or peer id over the registry's limit is refused before any room
/// is made, the transport closed; the limit can be set on the builder.
#[tokio::test]
async fn ids_over_the_limit_are_refused() {
    let rooms: Rooms = Rooms::new();
    assert_eq!(rooms.max_id_bytes(), protoo_core::DEFAULT_MAX_ID_BYTES);
    let long = "x".repeat(protoo_core::DEFAULT_MAX_ID_BYTES + 1);
    let (server_side, _client) = pair();
    let refused = rooms.admit("r", long.as_str()).join(server_side, ()).await;
    assert!(matches!(
        refused,
        Err(CoreError::IdTooLong {
            what: "peer id",
            max: 256
        })
    ));
    let (server_side, _client) = pair();
    let refused = rooms.admit(long.as_str(), "p").join(server_side, ()).await;
    assert!(matches!(
        refused,
        Err(CoreError::IdTooLong {
            what: "room id",
            ..
        })
    ));
    assert!(matches!(
        rooms.admit(long.as_str(), "").hold().await,
        Err(CoreError::IdTooLong {
            what: "room id",
            ..
        })
    ));
    assert!(rooms.is_empty());

    let small: Rooms = Rooms::builder().max_id_bytes(4).build();
    let (server_side, _client) = pair();
    assert!(
        small
            .admit("room", "peer")
            .join(server_side, ())
            .await
            .is_ok()
    );
    let (server_side, _client) = pair();
    let refused = small.admit("room", "peers").join(server_side, ()).await;
    assert!(matches!(
        refused,
        Err(CoreError::IdTooLong {
            what: "peer id",
            max: 4
        })
    ));
}
