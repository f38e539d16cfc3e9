//! Room data: the async setup runs once per room under concurrent first
//! joiners, its failure reaches every waiter, the data is dropped after the
//! room's peers, and an empty room can be kept for a grace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protoo_core::{CoreError, ErrorData, Joined, PeerEvent, RoomSetup, Rooms};
use protoo_transport::{Transport, memory};
use tokio::sync::Semaphore;

fn pair() -> (Transport, Transport) {
    memory::pair(memory::DEFAULT_QUEUE_LIMIT)
}

/// Room data that records its drop in a shared log.
struct Router {
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        let entry = format!("router {} closed", self.name);
        self.log.lock().unwrap().push(entry);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_once_under_100_concurrent_first_joiners() {
    let calls = Arc::new(AtomicUsize::new(0));
    // The setup waits until every joiner is waiting for it.
    let gate = Arc::new(Semaphore::new(0));
    let rooms: Rooms<(), String> = Rooms::builder().setup({
        let (calls, gate) = (calls.clone(), gate.clone());
        move |RoomSetup { room_id, .. }: RoomSetup| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                Ok::<_, ErrorData>(format!("router of {room_id}"))
            }
        }
    });
    let mut joins = Vec::new();
    let mut clients = Vec::new();
    for n in 0..100 {
        let (server_side, client_side) = pair();
        clients.push(client_side);
        let rooms = rooms.clone();
        joins.push(tokio::spawn(async move {
            rooms
                .admit("r", format!("p{n}"))
                .join(server_side, ())
                .await
        }));
    }
    // While the setup runs there is no room yet.
    assert!(rooms.get("r").is_none());
    gate.add_permits(1);
    let mut held = Vec::new();
    for join in joins {
        let Joined {
            room, peer, events, ..
        } = join.await.unwrap().expect("joined");
        assert_eq!(room.data(), "router of r");
        held.push((room, peer, events));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the setup ran once");
    let room = rooms.get("r").expect("the room");
    assert_eq!(room.len(), 100);
    assert!(held.iter().all(|(r, _, _)| r == &room));
}

#[tokio::test]
async fn a_failing_setup_fails_every_waiter_and_the_next_join_runs_it_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let rooms: Rooms<(), u32> = Rooms::builder().setup({
        let (calls, gate) = (calls.clone(), gate.clone());
        move |RoomSetup {
                  room_id: _room_id, ..
              }: RoomSetup| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                if call == 0 {
                    Err(ErrorData::new(403, "no router for you"))
                } else {
                    Ok(7)
                }
            }
        }
    });
    let mut joins = Vec::new();
    let mut clients = Vec::new();
    for n in 0..10 {
        let (server_side, client_side) = pair();
        clients.push(client_side);
        let rooms = rooms.clone();
        joins.push(tokio::spawn(async move {
            rooms
                .admit("r", format!("p{n}"))
                .join(server_side, ())
                .await
        }));
    }
    tokio::task::yield_now().await;
    gate.add_permits(1);
    for join in joins {
        match join.await.unwrap() {
            Err(CoreError::RoomSetup(error)) => {
                assert_eq!(error.code(), Some(403));
                assert_eq!(error.reason().as_deref(), Some("no router for you"));
            }
            other => panic!("expected the setup's error, got {:?}", other.map(|_| ())),
        }
    }
    // Every refused transport was closed.
    for client in &mut clients {
        assert!(matches!(
            client.recv().await,
            protoo_transport::Inbound::Closed(_)
        ));
    }
    assert!(rooms.is_empty());
    // The next admission runs the setup anew.
    gate.add_permits(1);
    let (server_side, _client_side) = pair();
    let Joined {
        room,
        peer: _peer,
        events: _events,
        ..
    } = rooms
        .admit("r", "late")
        .join(server_side, ())
        .await
        .unwrap();
    assert_eq!(*room.data(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_setup_that_panics_fails_with_500() {
    let rooms: Rooms<(), u32> =
        Rooms::builder().setup(|RoomSetup { room_id, .. }: RoomSetup| async move {
            if room_id == "boom" {
                panic!("setup panicked on purpose");
            }
            Ok::<_, ErrorData>(1)
        });
    let (server_side, _client_side) = pair();
    match rooms.admit("boom", "p").join(server_side, ()).await {
        Err(CoreError::RoomSetup(error)) => assert_eq!(error.code(), Some(500)),
        other => panic!("expected a 500, got {:?}", other.map(|_| ())),
    }
    assert!(rooms.is_empty());
    let (server_side, _client_side) = pair();
    assert!(rooms.admit("fine", "p").join(server_side, ()).await.is_ok());
}

#[tokio::test]
async fn room_data_is_dropped_after_the_last_peer() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let rooms: Rooms<(), Router> = Rooms::builder().setup({
        let log = log.clone();
        move |RoomSetup { room_id, .. }: RoomSetup| {
            let log = log.clone();
            async move { Ok::<_, ErrorData>(Router { name: room_id, log }) }
        }
    });
    let mut loops = Vec::new();
    let mut clients = Vec::new();
    for id in ["alice", "bob"] {
        let (server_side, client_side) = pair();
        clients.push(client_side);
        let Joined {
            room,
            peer,
            mut events,
            ..
        } = rooms.admit("r", id).join(server_side, ()).await.unwrap();
        let log = log.clone();
        // The application's per-peer loop holds the room until its peer's
        // events end.
        loops.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let PeerEvent::Closed(_) = event {
                    log.lock().unwrap().push(format!("{} closed", peer.id()));
                }
            }
            drop(room);
        }));
    }
    let room = rooms.get("r").unwrap();
    for client in &clients {
        client.close();
    }
    room.closed().await;
    drop(room);
    for handler in loops {
        handler.await.unwrap();
    }
    assert!(rooms.is_empty());
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        log[2], "router r closed",
        "the router closes after the peers: {log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_room_is_kept_for_its_grace() {
    let calls = Arc::new(AtomicUsize::new(0));
    let rooms: Rooms<(), usize> = Rooms::builder()
        .empty_room_grace(Duration::from_secs(10))
        .setup({
            let calls = calls.clone();
            move |RoomSetup {
                      room_id: _room_id, ..
                  }: RoomSetup| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, ErrorData>(call) }
            }
        });
    let (server_side, client_side) = pair();
    let Joined {
        room,
        peer,
        events: _events,
        ..
    } = rooms
        .admit("r", "alice")
        .join(server_side, ())
        .await
        .unwrap();
    peer.close();
    drop(client_side);
    // Empty, and still there within the grace.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(room.is_empty() && !room.is_closed());
    assert_eq!(rooms.get("r").as_ref(), Some(&room));
    // A peer that comes back finds the same room and data.
    let (server_side, client_side) = pair();
    let Joined {
        room: again,
        peer,
        events: _events,
        ..
    } = rooms
        .admit("r", "alice")
        .join(server_side, ())
        .await
        .unwrap();
    assert_eq!(again, room);
    assert_eq!(*again.data(), 0);
    // It leaves again: the first emptiness's timer does not cut the second
    // grace short.
    tokio::time::sleep(Duration::from_secs(5)).await;
    peer.close();
    drop(client_side);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!room.is_closed(), "removed before its second grace ended");
    tokio::time::sleep(Duration::from_secs(5)).await;
    room.closed().await;
    assert!(rooms.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_joiner_that_gives_up_during_the_setup_leaves_nothing_behind() {
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let rooms: Rooms<(), ()> = Rooms::builder().setup({
        let (gate, done) = (gate.clone(), done.clone());
        move |RoomSetup {
                  room_id: _room_id, ..
              }: RoomSetup| {
            let (gate, done) = (gate.clone(), done.clone());
            async move {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                done.notify_one();
                Ok::<_, ErrorData>(())
            }
        }
    });
    let (server_side, _client_side) = pair();
    let waiting = tokio::time::timeout(
        Duration::from_millis(1),
        rooms.admit("r", "p").join(server_side, ()),
    );
    assert!(waiting.await.is_err(), "the setup is held");
    gate.add_permits(1);
    done.notified().await;
    // The setup completed with nobody waiting (its task went on from the
    // notification to its completion without yielding): the room is
    // removed at once.
    assert!(rooms.is_empty());
    // An admission dropped unused gives its place back too.
    let (server_side, _client_side) = pair();
    let (connection, held, _release) = protoo_testkit::HeldConnection::new(server_side);
    let waiting = tokio::spawn({
        let rooms = rooms.clone();
        async move { rooms.admit("r", "p").join(connection, ()).await }
    });
    held.await.unwrap();
    let room = rooms.get("r").unwrap();
    assert_eq!(rooms.len(), 1);
    waiting.abort();
    room.closed().await;
    assert!(rooms.is_empty());
}
