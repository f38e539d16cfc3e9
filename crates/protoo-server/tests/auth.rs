//! Tokens over real sockets: each refusal's status and body before the
//! upgrade (bound server and axum mount), ids taken from the token,
//! `allow` enforced, no takeover of a connected peer (by another subject
//! or without a token: the victim untouched and not told) next to the
//! legitimate replacement, a live peer closed when its token expires, and
//! no token in the logs.

#![cfg(feature = "auth")]

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use protoo_server::auth::JwtVerifier;
use protoo_server::{
    DuplicatePolicy, Initiator, PeerEvent, PeerEvents, RequestError, Rooms, ServerConfig,
    WebSocketServer,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

fn token_for(room: &str, peer: &str) -> String {
    token(json!({ "sub": peer, "room": room, "exp": now() + 600 }))
}

fn config() -> ServerConfig {
    ServerConfig::default().with_auth(JwtVerifier::hs256(SECRET).unwrap())
}

/// What the application saw: each admitted peer's (room, peer) and every
/// request or notification method, in order.
type Seen = mpsc::UnboundedReceiver<String>;

/// Serves `server`: admits every request into a `Replace` registry, answers
/// every request, reports what it sees.
fn serve(server: WebSocketServer) -> (Rooms, Seen) {
    let rooms: Rooms = Rooms::builder()
        .duplicate_policy(DuplicatePolicy::Replace)
        .build();
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = rooms.clone();
    server.serve(move |request| {
        let (rooms, tx) = (registry.clone(), tx.clone());
        async move {
            let Ok(joined) = request.admit(&rooms).join(()).await else {
                return;
            };
            let _ = tx.send(format!("joined {}/{}", joined.room.id(), joined.peer.id()));
            report(joined.events, tx).await;
        }
    });
    (rooms, rx)
}

async fn report(mut events: PeerEvents, tx: mpsc::UnboundedSender<String>) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) => {
                let _ = tx.send(format!("request {}", request.method()));
                request.accept(&json!({}));
            }
            PeerEvent::Notification(notification) => {
                let _ = tx.send(format!("notification {}", notification.method()));
            }
            PeerEvent::Closed(reason) => {
                let _ = tx.send(format!("closed {}", reason.reason));
            }
            PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
        }
    }
}

async fn next_seen(seen: &mut Seen) -> String {
    guard("what the application saw", seen.recv())
        .await
        .expect("the server ended")
}

async fn refusal(addr: SocketAddr, target: &str) -> (u16, String) {
    let refused = refused(addr, upgrade_request(addr, target, Some("protoo"), &[])).await;
    assert_eq!(
        refused.reason_header.as_deref(),
        Some(refused.body.as_str())
    );
    (refused.status, refused.body)
}

/// Every refusal, with its status and readable body, and never the token.
async fn check_refusals(addr: SocketAddr) {
    let alice = token_for("r", "alice");
    let expired = token(json!({ "sub": "alice", "room": "r", "exp": now() - 10 }));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "room": "r", "exp": now() + 600 }),
        &EncodingKey::from_secret(b"not the secret").unwrap(),
    )
    .unwrap();
    let cases = [
        ("/?roomId=r&peerId=alice".to_owned(), 401, "missing token"),
        (
            "/?roomId=r&peerId=alice&token=garbage".to_owned(),
            401,
            "malformed token",
        ),
        (
            format!("/?roomId=r&peerId=alice&token={forged}"),
            401,
            "invalid token signature",
        ),
        (
            format!("/?roomId=r&peerId=alice&token={expired}"),
            401,
            "token expired",
        ),
        (
            format!("/?roomId=other&peerId=alice&token={alice}"),
            403,
            "token is for another room",
        ),
        (
            format!("/?roomId=r&peerId=bob&token={alice}"),
            403,
            "token is for another peer id",
        ),
    ];
    for (target, status, body) in cases {
        let (got_status, got_body) = refusal(addr, &target).await;
        assert_eq!((got_status, got_body.as_str()), (status, body), "{target}");
        for secret in [&alice, &expired, &forged] {
            assert!(!got_body.contains(secret.as_str()));
        }
    }
}

#[tokio::test]
async fn refusals_before_the_upgrade_on_the_bound_server() {
    let (server, addr) = server(config()).await;
    let (_rooms, _seen) = serve(server);
    check_refusals(addr).await;
}

#[tokio::test]
async fn refusals_before_the_upgrade_on_the_axum_mount() {
    let (server, addr) = axum_app(config(), "/ws").await;
    let (_rooms, _seen) = serve(server);
    let check = |target: &str| target.replacen("/?", "/ws?", 1);
    let alice = token_for("r", "alice");
    let (status, body) = refusal(addr, &check("/?roomId=r&peerId=alice")).await;
    assert_eq!((status, body.as_str()), (401, "missing token"));
    let (status, body) = refusal(addr, &check(&format!("/?roomId=x&token={alice}"))).await;
    assert_eq!((status, body.as_str()), (403, "token is for another room"));
    let (_peer, _events) = client(addr, &format!("/ws?token={alice}")).await;
}

#[tokio::test]
async fn the_ids_come_from_the_token_and_a_cookie_works_too() {
    let (server, addr) = server(config()).await;
    let (rooms, mut seen) = serve(server);
    let (_alice, _events) = client(addr, &format!("/?token={}", token_for("r", "alice"))).await;
    assert_eq!(next_seen(&mut seen).await, "joined r/alice");
    let identity = rooms.get("r").unwrap().peer("alice").unwrap().identity();
    assert_eq!(identity.unwrap().subject(), "alice");

    let cookie = format!("protoo_token={}", token_for("r", "bob"));
    let request = upgrade_request(addr, "/", Some("protoo"), &[("cookie", &cookie)]);
    let accepted = guard("cookie handshake", handshake(addr, request)).await;
    assert!(accepted.is_ok());
    assert_eq!(next_seen(&mut seen).await, "joined r/bob");
}

#[tokio::test]
async fn methods_outside_allow_are_refused_by_the_server() {
    let (server, addr) = server(config()).await;
    let (_rooms, mut seen) = serve(server);
    let limited = token(json!({
        "sub": "alice", "room": "r", "exp": now() + 600, "allow": ["chat"],
    }));
    let (client, _events) = client(addr, &format!("/?token={limited}")).await;
    assert_eq!(next_seen(&mut seen).await, "joined r/alice");
    client.notify("kick", &json!({})).unwrap();
    match client.request("kick", &json!({})).await {
        Err(RequestError::Rejected(error)) => {
            assert_eq!(error.code(), Some(403));
            assert_eq!(error.reason().as_deref(), Some("method not allowed"));
        }
        other => panic!("expected 403, got {other:?}"),
    }
    client.request("chat", &json!({})).await.unwrap();
    // The application saw the allowed request only.
    assert_eq!(next_seen(&mut seen).await, "request chat");
}

#[tokio::test]
async fn no_takeover_and_the_same_identity_still_replaces() {
    let (server, addr) = server(config()).await;
    let (rooms, mut seen) = serve(server);
    let alice = token_for("r", "alice");
    let (victim, mut victim_events) = client(addr, &format!("/?token={alice}")).await;
    assert_eq!(next_seen(&mut seen).await, "joined r/alice");
    let victim_server_side = rooms.get("r").unwrap().peer("alice").unwrap();

    // Another subject's token with the victim's peer id.
    let mallory = token_for("r", "mallory");
    let (status, _) = refusal(addr, &format!("/?roomId=r&peerId=alice&token={mallory}")).await;
    assert_eq!(status, 403);
    // No token at all.
    let (status, _) = refusal(addr, "/?roomId=r&peerId=alice").await;
    assert_eq!(status, 401);

    // The victim is untouched and was not told anything: the next thing it
    // hears is what it asks for.
    assert!(!victim_server_side.is_closed() && !victim.is_closed());
    victim.request("ping", &json!({})).await.unwrap();
    assert_eq!(next_seen(&mut seen).await, "request ping");
    assert!(
        tokio::time::timeout(std::time::Duration::ZERO, victim_events.next())
            .await
            .is_err(),
        "the victim heard something"
    );

    // The same identity (its reconnect) replaces it.
    let (_again, _again_events) = client(addr, &format!("/?token={alice}")).await;
    let closed = expect_closed(&mut victim_events).await;
    assert_eq!(closed.code, Some(4000));
    assert!(matches!(closed.initiator, Initiator::Remote));
    let mut last = [next_seen(&mut seen).await, next_seen(&mut seen).await];
    last.sort();
    assert_eq!(
        last,
        ["closed replaced by a new connection", "joined r/alice"]
    );
}

#[tokio::test]
async fn a_live_peer_is_closed_when_its_token_expires() {
    let (server, addr) = server(config()).await;
    let (_rooms, mut seen) = serve(server);
    // Expires at the next whole second but one: at most 2 s from now.
    let short = token(json!({ "sub": "alice", "room": "r", "exp": now() + 2 }));
    let (_client, mut events) = client(addr, &format!("/?token={short}")).await;
    assert_eq!(next_seen(&mut seen).await, "joined r/alice");
    let closed = expect_closed(&mut events).await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (Some(4000), "token expired")
    );
    assert_eq!(next_seen(&mut seen).await, "closed token expired");
}

#[tokio::test]
async fn a_token_never_reaches_the_logs() {
    use protoo_testkit::logs::{Format, capture};
    let (_guard, logs) = capture(Format::Text, tracing::Level::TRACE);
    let (server, addr) = server(config()).await;
    let (_rooms, mut seen) = serve(server);
    let alice = token_for("r", "alice");
    let expired = token(json!({ "sub": "bob", "room": "r", "exp": now() - 10 }));
    let (client, _events) = client(addr, &format!("/?roomId=r&peerId=alice&token={alice}")).await;
    assert_eq!(next_seen(&mut seen).await, "joined r/alice");
    client.request("chat", &json!({})).await.unwrap();
    let _ = refusal(addr, &format!("/?roomId=r&peerId=bob&token={expired}")).await;
    let _ = refusal(addr, &format!("/?roomId=r&peerId=alice&token={alice}x")).await;
    let text = logs.text();
    assert!(
        text.contains("connection refused"),
        "nothing logged: {text}"
    );
    for secret in [&alice, &expired] {
        // Nor any of its three parts (the signature alone is a secret).
        for part in secret.split('.') {
            assert!(!text.contains(part), "a token part was logged:\n{text}");
        }
    }
}
