//! Admission into rooms over real WebSockets on 127.0.0.1: a room's async
//! setup runs once for many first connections and its failure rejects each
//! of them with the status the application chose; a peer is in its room
//! before its client sees the WebSocket open, on the bound server and on
//! the axum mount.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use protoo_server::{
    Context, CoreError, DuplicatePolicy, ErrorData, Joined, PeerConfig, PeerEvent, PeerEvents,
    RoomSetup, Rooms, ServerAdmit, ServerConfig, ServerError, WebSocketServer,
};
use serde_json::json;
use tokio::sync::Semaphore;

/// Admits every connection request into `rooms` (room and peer from the
/// query), holding each admitted peer's events until its close.
fn admit_all<R: Send + Sync + 'static>(mut server: WebSocketServer, rooms: Rooms<(), R>) {
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let rooms = rooms.clone();
            tokio::spawn(async move {
                if let Ok(joined) = request.admit(&rooms).join(()).await {
                    drain(joined.events).await;
                }
            });
        }
    });
}

async fn drain(mut events: PeerEvents) {
    while let Some(event) = events.next().await {
        if let PeerEvent::Request(request) = event {
            request.accept(&json!({}));
        }
    }
}

/// A setup held until `gate` gets a permit, counting its calls; fails with
/// `fail` when given.
fn gated_rooms(
    calls: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
    fail: Option<(u16, &'static str)>,
) -> Rooms<(), String> {
    let (calls, gate) = (calls.clone(), gate.clone());
    Rooms::builder()
        .duplicate_policy(DuplicatePolicy::Replace)
        .setup(move |RoomSetup { room_id, .. }: RoomSetup| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                match fail {
                    Some((code, reason)) => Err(ErrorData::new(code, reason)),
                    None => Ok(format!("router of {room_id}")),
                }
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_setup_for_100_concurrent_first_connections() {
    let (server, addr) = server(ServerConfig::default()).await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
    let rooms = gated_rooms(&calls, &gate, None);
    admit_all(server, rooms.clone());
    let clients: Vec<_> = (0..100)
        .map(|n| {
            tokio::spawn(async move { client(addr, &format!("/?roomId=r&peerId=p{n}")).await })
        })
        .collect();
    // Every connection is waiting on the one setup (none is open yet).
    eventually("the setup started", || calls.load(Ordering::SeqCst) == 1).await;
    assert!(rooms.get("r").is_none());
    gate.add_permits(1);
    let mut peers = Vec::new();
    for client in clients {
        peers.push(client.await.unwrap());
    }
    let room = rooms.get("r").expect("the room");
    // Each client saw its open after its peer was admitted: all 100 are in.
    assert_eq!(room.len(), 100);
    assert_eq!(room.data(), "router of r");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the setup ran once");
}

#[tokio::test]
async fn a_failing_setup_rejects_every_waiting_connection_with_its_status() {
    let (server, addr) = server(ServerConfig::default()).await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
    let rooms = gated_rooms(&calls, &gate, Some((403, "room is locked")));
    admit_all(server, rooms.clone());
    let refusals: Vec<_> = (0..10)
        .map(|n| {
            let request = upgrade_request(
                addr,
                &format!("/?roomId=r&peerId=p{n}"),
                Some("protoo"),
                &[],
            );
            tokio::spawn(refused(addr, request))
        })
        .collect();
    eventually("the setup started", || calls.load(Ordering::SeqCst) == 1).await;
    gate.add_permits(1);
    for refusal in refusals {
        let refusal = refusal.await.unwrap();
        assert_eq!(refusal.status, 403);
        assert_eq!(refusal.reason_header.as_deref(), Some("room is locked"));
    }
    assert!(rooms.is_empty());
}

/// Clients open one after another; right after each open, the server
/// broadcasts to the room. Each client is in the room when it sees its
/// open, so it gets every broadcast sent from then on.
async fn in_the_room_before_the_open(addr: SocketAddr, target: &str, rooms: &Rooms) {
    const PEERS: usize = 20;
    let mut clients = Vec::new();
    for n in 0..PEERS {
        let client = client(addr, &format!("{target}?roomId=r&peerId=p{n}")).await;
        // Server-side accounting the moment the client saw its open.
        let room = rooms.get("r").expect("the room");
        assert_eq!(
            room.len(),
            n + 1,
            "peer {n} not in its room when its client opened"
        );
        let report = room.to_all().notify("opened", &json!({ "n": n })).unwrap();
        assert_eq!(report.delivered, n + 1);
        clients.push(client);
    }
    for (n, (_peer, events)) in clients.iter_mut().enumerate() {
        for expected in n..PEERS {
            let notification = expect_notification(events).await;
            assert_eq!(notification.method(), "opened");
            assert_eq!(notification.payload().to_value(), json!({ "n": expected }));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_in_its_room_before_its_client_sees_the_open() {
    let (server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms = Rooms::with_defaults(PeerConfig::default(), DuplicatePolicy::Replace);
    admit_all(server, rooms.clone());
    in_the_room_before_the_open(addr, "/", &rooms).await;
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_axum_mount_too() {
    let (server, addr) = axum_app(ServerConfig::default(), "/").await;
    let rooms: Rooms = Rooms::with_defaults(PeerConfig::default(), DuplicatePolicy::Replace);
    admit_all(server, rooms.clone());
    in_the_room_before_the_open(addr, "/", &rooms).await;
}

/// Admits the next connection request with `admit`'s overrides, handing
/// back what the admission gave.
async fn admit_next<R, F>(
    server: &mut WebSocketServer,
    rooms: &Rooms<(), R>,
    overrides: F,
) -> tokio::task::JoinHandle<Result<Joined<(), R>, ServerError>>
where
    R: Send + Sync + 'static,
    F: for<'a> FnOnce(ServerAdmit<'a, (), R>) -> ServerAdmit<'a, (), R> + Send + 'static,
{
    let request = next_request(server).await;
    let rooms = rooms.clone();
    tokio::spawn(async move { overrides(request.admit(&rooms)).join(()).await })
}

#[tokio::test]
async fn a_missing_or_empty_id_is_rejected_with_400_before_the_upgrade() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms = Rooms::new();
    for (target, missing) in [
        ("/?peerId=p", "roomId"),
        ("/?roomId=&peerId=p", "roomId"),
        ("/?roomId=r", "peerId"),
        ("/?roomId=r&peerId=", "peerId"),
        ("/", "roomId"),
    ] {
        let request = upgrade_request(addr, target, Some("protoo"), &[]);
        let refusal = tokio::spawn(refused(addr, request));
        let admitted = admit_next(&mut server, &rooms, |admit| admit).await;
        match admitted.await.unwrap() {
            Err(ServerError::MissingId(name)) => assert_eq!(name, missing, "{target}"),
            other => panic!("{target}: expected MissingId, got {:?}", other.map(|_| ())),
        }
        let refusal = refusal.await.unwrap();
        assert_eq!(refusal.status, 400, "{target}");
        let reason = format!("missing or empty {missing}");
        assert_eq!(refusal.reason_header.as_deref(), Some(reason.as_str()));
    }
    // An empty override is no id either.
    let request = upgrade_request(addr, "/?roomId=r&peerId=p", Some("protoo"), &[]);
    let refusal = tokio::spawn(refused(addr, request));
    let admitted = admit_next(&mut server, &rooms, |admit| admit.peer("")).await;
    assert!(matches!(
        admitted.await.unwrap(),
        Err(ServerError::MissingId("peerId"))
    ));
    assert_eq!(refusal.await.unwrap().status, 400);
    assert!(rooms.is_empty(), "no room made for a rejected connection");
}

/// Ids over the registry's limit (256 bytes by default) are refused with
/// 400 before the upgrade; ids at the limit are admitted.
#[tokio::test]
async fn an_id_over_the_limit_is_rejected_with_400_before_the_upgrade() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms = Rooms::new();
    let long = "x".repeat(protoo_server::core::DEFAULT_MAX_ID_BYTES + 1);
    for (target, what) in [
        (format!("/?roomId={long}&peerId=p"), "room id"),
        (format!("/?roomId=r&peerId={long}"), "peer id"),
    ] {
        let request = upgrade_request(addr, &target, Some("protoo"), &[]);
        let refusal = tokio::spawn(refused(addr, request));
        let admitted = admit_next(&mut server, &rooms, |admit| admit).await;
        match admitted.await.unwrap() {
            Err(ServerError::Core(CoreError::IdTooLong { what: refused, max })) => {
                assert_eq!((refused, max), (what, 256));
            }
            other => panic!("{what}: expected IdTooLong, got {:?}", other.map(|_| ())),
        }
        let refusal = refusal.await.unwrap();
        assert_eq!(refusal.status, 400, "{what}");
        let reason = format!("{what} is longer than 256 bytes");
        assert_eq!(refusal.reason_header.as_deref(), Some(reason.as_str()));
    }
    assert!(rooms.is_empty(), "no room made for a rejected connection");
    let longest = "y".repeat(256);
    let target = format!("/?roomId={longest}&peerId={longest}");
    let (client, admitted) = tokio::join!(
        client(addr, &target),
        admit_next(&mut server, &rooms, |admit| admit),
    );
    let joined = admitted
        .await
        .unwrap()
        .expect("ids at the limit are admitted");
    assert_eq!((joined.room.id(), joined.peer.id()), (&*longest, &*longest));
    drop(client);
}

#[tokio::test]
async fn room_and_peer_overrides_replace_the_query() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms = Rooms::new();
    // No ids in the query at all: the application names them.
    let opened = tokio::spawn(async move { client(addr, "/lobby/alice").await });
    let admitted = admit_next(&mut server, &rooms, |admit| {
        admit.room("lobby").peer("alice")
    })
    .await;
    let joined = admitted.await.unwrap().expect("admitted");
    let _client = opened.await.unwrap();
    assert_eq!((joined.room.id(), joined.peer.id()), ("lobby", "alice"));
    assert!(
        rooms
            .get("lobby")
            .is_some_and(|room| room.has_peer("alice"))
    );

    // Overrides win over the query.
    let opened = tokio::spawn(async move { client(addr, "/?roomId=x&peerId=y").await });
    let admitted = admit_next(&mut server, &rooms, |admit| {
        admit
            .room("lobby")
            .peer("bob")
            .policy(DuplicatePolicy::Refuse)
            .config(PeerConfig::default())
    })
    .await;
    let joined = admitted.await.unwrap().expect("admitted");
    let _client = opened.await.unwrap();
    assert_eq!((joined.room.id(), joined.peer.id()), ("lobby", "bob"));
    assert!(rooms.get("x").is_none());
}

#[tokio::test]
async fn the_setup_sees_the_query_or_the_given_context() {
    let (mut server, addr) = server(ServerConfig::default()).await;
    let rooms: Rooms<(), String> = Rooms::builder().setup(|setup: RoomSetup| async move {
        let params: Vec<String> = setup
            .context
            .params()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Ok::<_, ErrorData>(params.join("&"))
    });
    // By default, the query's parameters, percent-decoded.
    let target = "/?roomId=r1&peerId=p&consumerReplicas=2&name=a%20b";
    let opened = tokio::spawn(async move { client(addr, target).await });
    let joined = admit_next(&mut server, &rooms, |admit| admit)
        .await
        .await
        .unwrap()
        .expect("admitted");
    let _client = opened.await.unwrap();
    assert_eq!(
        joined.room.data(),
        "roomId=r1&peerId=p&consumerReplicas=2&name=a b"
    );

    // A context given by the application replaces it.
    let opened = tokio::spawn(async move { client(addr, "/?roomId=r2&peerId=p&x=1").await });
    let joined = admit_next(&mut server, &rooms, |admit| {
        admit.context(Context::new().with_param("claims", "alice"))
    })
    .await
    .await
    .unwrap()
    .expect("admitted");
    let _client = opened.await.unwrap();
    assert_eq!(joined.room.data(), "claims=alice");
}

#[tokio::test(start_paused = true)]
async fn a_setup_that_outlasts_the_handshake_timeout_is_rejected_with_503() {
    let (mut server, addr) =
        server(ServerConfig::default().with_handshake_timeout(std::time::Duration::from_secs(5)))
            .await;
    let gate = Arc::new(Semaphore::new(0));
    let rooms: Rooms<(), ()> = Rooms::builder().setup({
        let gate = gate.clone();
        move |_: RoomSetup| {
            let gate = gate.clone();
            async move {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|_| ErrorData::new(500, "gate"))?;
                Ok::<_, ErrorData>(())
            }
        }
    });
    let request = upgrade_request(addr, "/?roomId=r&peerId=p", Some("protoo"), &[]);
    let refusal = tokio::spawn(refused(addr, request));
    let admitted = admit_next(&mut server, &rooms, |admit| admit).await;
    assert!(matches!(
        admitted.await.unwrap(),
        Err(ServerError::HandshakeTimeout)
    ));
    // The admission and the server's own wait for a decision share the
    // handshake deadline: whichever answers, the client gets 503.
    assert_eq!(refusal.await.unwrap().status, 503);
}
