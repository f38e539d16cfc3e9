//! The application layer: targeted broadcast and its report, replacement as
//! the other peers see it, typed handlers and error conversion.

use futures_util::StreamExt;
use protoo_core::{
    DuplicatePolicy, ErrorData, IntoErrorData, Joined, Peer, PeerConfig, PeerEvent, PeerEvents,
    RequestError, Room, Rooms,
};
use protoo_testkit::HeldRoom;
use protoo_transport::{Initiator, REPLACED_REASON, Transport, memory};
use serde::Deserialize;

fn pair() -> (Transport, Transport) {
    memory::pair(memory::DEFAULT_QUEUE_LIMIT)
}

fn client(transport: Transport) -> (Peer, PeerEvents) {
    Peer::new("server", transport, (), PeerConfig::default()).unwrap()
}

async fn next_notification(events: &mut PeerEvents) -> (String, serde_json::Value) {
    match events.next().await {
        Some(PeerEvent::Notification(n)) => (n.method().to_owned(), n.payload().to_value()),
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test]
async fn broadcast_predicate_and_report() {
    let room: HeldRoom<u32> = HeldRoom::new("r").await;
    let mut clients = Vec::new();
    // The server sides' events are kept: a peer whose events are dropped
    // closes.
    let mut held = Vec::new();
    for (n, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let (server_side, client_side) = pair();
        held.push(
            room.create_peer(id, server_side, n as u32, PeerConfig::default())
                .await
                .unwrap(),
        );
        clients.push(client(client_side));
    }
    // A peer whose queue is already at its limit (a queue under its limit
    // takes one frame of any size) overflows.
    let (server_side, _client_side) = memory::pair(8);
    held.push(
        room.create_peer("tiny", server_side, 9, PeerConfig::default())
            .await
            .unwrap(),
    );
    room.peer("tiny").unwrap().notify("fill", &()).unwrap();
    // "d" is closed: skipped.
    room.peer("d").unwrap().close();

    let report = room
        .to_all()
        .except(["a"])
        .local()
        .filter(|peer| *peer.data() != 2)
        .notify("hello", &serde_json::json!({"x": 1}))
        .unwrap();
    // b delivered; a (id), c (predicate) skipped; tiny overflowed. d left.
    assert_eq!(
        (report.delivered, report.skipped, report.overflowed),
        (1, 2, 1)
    );
    let (method, data) = next_notification(&mut clients[1].1).await;
    assert_eq!(
        (method.as_str(), data),
        ("hello", serde_json::json!({"x": 1}))
    );
}

/// The others hear `peerClosed` for the old peer before anything the
/// newcomer's first request makes the server send.
#[tokio::test]
async fn replacement_order_as_the_others_see_it() {
    let rooms: Rooms = Rooms::new();
    let serve = |room: Room, peer: Peer, mut events: PeerEvents| {
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    PeerEvent::Request(request) => {
                        let _ = room
                            .to_all()
                            .except_peer(&peer)
                            .notify("newPeer", &serde_json::json!({"id": peer.id()}));
                        request.accept(&());
                    }
                    PeerEvent::Notification(_) => {}
                    PeerEvent::Closed(reason) => {
                        let _ = room
                            .to_all()
                            .except_peer(&peer)
                            .notify("peerClosed", &serde_json::json!({"id": peer.id()}));
                        return Some(reason);
                    }
                    PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
                }
            }
            None
        })
    };
    let (server_side, watcher_side) = pair();
    let Joined {
        room, peer, events, ..
    } = rooms
        .admit("r", "watcher")
        .policy(DuplicatePolicy::Replace)
        .join(server_side, ())
        .await
        .unwrap();
    serve(room, peer, events);
    let (_watcher, mut watcher_events) = client(watcher_side);

    let (server_side, old_side) = pair();
    let Joined {
        room, peer, events, ..
    } = rooms
        .admit("r", "p")
        .policy(DuplicatePolicy::Replace)
        .join(server_side, ())
        .await
        .unwrap();
    let old_loop = serve(room, peer, events);
    let (_old, mut old_events) = client(old_side);

    let (server_side, new_side) = pair();
    let Joined {
        room, peer, events, ..
    } = rooms
        .admit("r", "p")
        .policy(DuplicatePolicy::Replace)
        .join(server_side, ())
        .await
        .unwrap();
    // The newcomer's request is on its way before the old loop ran.
    let (newcomer, _new_events) = client(new_side);
    let join = tokio::spawn(async move { newcomer.request("join", &()).await });
    serve(room, peer, events);

    let reason = old_loop.await.unwrap().expect("closed");
    assert_eq!(reason.initiator, Initiator::Replaced);
    assert_eq!(
        (reason.code, reason.reason.as_str()),
        (Some(4000), REPLACED_REASON)
    );
    join.await.unwrap().unwrap();
    assert_eq!(next_notification(&mut watcher_events).await.0, "peerClosed");
    assert_eq!(next_notification(&mut watcher_events).await.0, "newPeer");
    // The old client sees 4000 with the replacement reason.
    let Some(PeerEvent::Closed(seen)) = old_events.next().await else {
        panic!("expected the close")
    };
    assert_eq!(
        (seen.code, seen.reason.as_str()),
        (Some(4000), REPLACED_REASON)
    );
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

enum AppError {
    NotFound,
    Forbidden,
    Conflict,
}

impl IntoErrorData for AppError {
    fn into_error_data(self) -> ErrorData {
        match self {
            AppError::NotFound => ErrorData::new(404, "not found"),
            AppError::Forbidden => ErrorData::new(403, "forbidden"),
            AppError::Conflict => ErrorData::new(409, "conflict"),
        }
    }
}

#[tokio::test]
async fn typed_handlers_answer_400_on_bad_data_and_convert_errors() {
    let (server_side, client_side) = pair();
    let (_peer, mut events) = Peer::new("s", server_side, (), PeerConfig::default()).unwrap();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let PeerEvent::Request(mut request) = event else {
                continue;
            };
            match request.method() {
                "add" => {
                    let sum = request
                        .data::<Add>()
                        .map(|add| add.a + add.b)
                        .map_err(IntoErrorData::into_error_data);
                    request.respond(sum);
                }
                "find" => {
                    let found = match request.data::<u16>() {
                        Err(error) => Err(error.into_error_data()),
                        Ok(404) => Err(AppError::NotFound.into_error_data()),
                        Ok(403) => Err(AppError::Forbidden.into_error_data()),
                        Ok(409) => Err(AppError::Conflict.into_error_data()),
                        Ok(_) => Ok("found"),
                    };
                    request.respond(found);
                }
                "echo" => {
                    let data = request.take_payload();
                    request.accept(&data);
                }
                _ => request.respond(Err::<(), _>("no such method")),
            }
        }
    });
    let (client, _events) = client(client_side);
    let sum: i64 = client
        .request_as("add", &serde_json::json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(sum, 5);
    let error = client
        .request("add", &serde_json::json!({"a": "two"}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(400));
    assert!(error.reason().unwrap().contains("invalid type"), "{error}");
    for code in [404, 403, 409] {
        let error = client.request("find", &code).await.unwrap_err();
        assert!(matches!(error, RequestError::Rejected(_)));
        assert_eq!(error.code(), Some(code));
    }
    let found: String = client.request_as("find", &1).await.unwrap();
    assert_eq!(found, "found");
    let echoed = client
        .request("echo", &serde_json::json!({"k": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(echoed.as_str(), r#"{"k":[1,2]}"#);
    assert_eq!(
        client.request("x", &()).await.unwrap_err().code(),
        Some(500)
    );
}

#[tokio::test]
async fn peer_events_is_a_stream() {
    let (server_side, client_side) = pair();
    let (_peer, events) = Peer::new("s", server_side, (), PeerConfig::default()).unwrap();
    let (client, _client_events) = client(client_side);
    client.notify("one", &()).unwrap();
    client.close();
    let methods: Vec<String> = events
        .map(|event| match event {
            PeerEvent::Notification(n) => n.method().to_owned(),
            PeerEvent::Request(r) => r.method().to_owned(),
            PeerEvent::Closed(_) => "closed".to_owned(),
            PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => "resume".to_owned(),
        })
        .collect()
        .await;
    assert_eq!(methods, ["one", "closed"]);
}
