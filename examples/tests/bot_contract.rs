//! The bot example's contract (the doc comment of `examples/bot.rs`)
//! against the real room example: the bot joins, answers `!ping`, survives
//! a restart of the room server on the same port, rejoins and answers
//! again, then leaves on `!leave` (4000, exit 0).
//!
//! `cargo test` builds the examples; `PROTOO_ROOM_BIN` and `PROTOO_BOT_BIN`
//! override their paths.

use std::process::Stdio;

use protoo_client::{Client, ClientConfig, ClientEvent, ClientEvents, ClientOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

mod common;
use common::{example, guard, start_room};

/// Starts the room example on `listen`; returns it and its address.
async fn room(listen: &str) -> (Child, String) {
    let room = start_room(listen, &[]).await;
    (room.child, room.addr.to_string())
}

async fn stop(mut child: Child) {
    let pid = child.id().expect("running");
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .await;
    let _ = child.wait().await;
}

async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    guard("a bot state line", lines.next_line())
        .await
        .unwrap()
        .expect("the bot exited")
}

/// Returns once the bot is listed in room `r`: it prints `open` before its
/// `join` reaches the room.
async fn bot_joined(addr: &str) {
    loop {
        let url = format!("ws://{addr}/?roomId=r&peerId=probe");
        let (probe, mut probe_events) =
            Client::connect(ClientOptions::new(url), ClientConfig::default());
        assert!(matches!(probe_events.next().await, Some(ClientEvent::Open)));
        let joined: Value = probe.request_as("join", &json!({})).await.unwrap();
        probe.close();
        if joined["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "bot")
        {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// A person in the room: joins, says `!ping`, waits for the bot's pong.
async fn ping(addr: &str, id: &str) -> (Client, ClientEvents) {
    let url = format!("ws://{addr}/?roomId=r&peerId={id}");
    let (client, mut events) = Client::connect(ClientOptions::new(url), ClientConfig::default());
    assert!(matches!(
        guard("open", events.next()).await,
        Some(ClientEvent::Open)
    ));
    let joined: Value = client
        .request_as("join", &json!({"displayName": id}))
        .await
        .unwrap();
    assert!(
        joined["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "bot"),
        "the bot is in the room: {joined}"
    );
    client.notify("chat", &json!({"text": "!ping"})).unwrap();
    guard("the pong", async {
        while let Some(event) = events.next().await {
            if let ClientEvent::Notification(n) = event {
                let data: Value = n.data().unwrap();
                if n.method() == "chat" && data == json!({"peerId": "bot", "text": "pong"}) {
                    return;
                }
            }
        }
        panic!("no pong");
    })
    .await;
    (client, events)
}

#[tokio::test]
async fn the_bot_rejoins_after_a_room_restart_and_leaves_on_request() {
    let (server, addr) = room("127.0.0.1:0").await;
    let mut bot = Command::new(example("bot", "PROTOO_BOT_BIN"))
        .args([
            "--url",
            &format!("ws://{addr}/?roomId=r&peerId=bot"),
            "--retries",
            "10",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bot");
    let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
    assert_eq!(line(&mut lines).await, "open");
    let (alice, _events) = guard("alice's pong", async {
        bot_joined(&addr).await;
        ping(&addr, "alice").await
    })
    .await;
    alice.close();

    // The room server dies: the bot reports the loss and retries.
    stop(server).await;
    assert_eq!(line(&mut lines).await, "disconnected");
    assert_eq!(line(&mut lines).await, "failed 1");
    // Back on the same port: the bot reconnects and joins again.
    let (server, again) = room(&addr).await;
    assert_eq!(again, addr);
    loop {
        let state = line(&mut lines).await;
        if state == "open" {
            break;
        }
        assert!(state.starts_with("failed "), "unexpected state {state}");
    }
    let (bob, mut events) = guard("bob's pong", async {
        bot_joined(&addr).await;
        ping(&addr, "bob").await
    })
    .await;

    // `!leave`: the bot asks to be kicked, is closed with 4000, exits 0.
    bob.notify("chat", &json!({"text": "!leave"})).unwrap();
    assert_eq!(line(&mut lines).await, "close");
    let status = guard("the bot's exit", bot.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    bob.close();
    while events.next().await.is_some() {}
    stop(server).await;
}

#[tokio::test]
async fn the_bot_gives_up_when_retries_run_out() {
    // A port nobody listens on: bind, note it, release it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut bot = Command::new(example("bot", "PROTOO_BOT_BIN"))
        .args([
            "--url",
            &format!("ws://{addr}/?roomId=r&peerId=bot"),
            "--retries",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bot");
    let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
    assert_eq!(line(&mut lines).await, "failed 1");
    assert_eq!(line(&mut lines).await, "failed 2");
    assert_eq!(line(&mut lines).await, "close");
    let status = guard("the bot's exit", bot.wait()).await.unwrap();
    assert_eq!(status.code(), Some(1));
}
