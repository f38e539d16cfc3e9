//! A bot that joins a room and stays there: the `protoo-client` crate's
//! reconnect in a program.
//!
//! ```sh
//! cargo run --release --example bot -- --url 'ws://127.0.0.1:4443/?roomId=r&peerId=bot' [--retries N]
//! ```
//!
//! The contract (tests run against it):
//! - on every open it sends `join {displayName: "bot"}`;
//! - on a notification `chat` whose `data.text` is `!ping` it sends the
//!   request `chat {text: "pong"}`; on `!leave` it sends the request `kick`
//!   (the room server then closes it with 4000);
//! - it answers a server request `ping` with `{pong: true}` and rejects any
//!   other server request with 404;
//! - stdout carries only its state changes, one a line: `open`,
//!   `disconnected`, `failed N` (N the attempt number, 1 for the first
//!   attempt of each round), `close`; logs go to stderr;
//! - `--retries N`: up to N retries after the first attempt of a round,
//!   waiting 1, 2, 4, 8, 8... s (default N = 10); after `disconnected` the
//!   first attempt is immediate;
//! - it exits 0 after a 4000 close; when the retries are exhausted it
//!   prints `close` and exits 1.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use protoo_client::{Client, ClientConfig, ClientEvent, ClientOptions, RetryConfig};
use serde::Deserialize;
use serde_json::json;

/// The bot's command line.
#[derive(Debug, Parser)]
struct Args {
    /// The room server's URL, with roomId and peerId.
    #[arg(long)]
    url: String,
    /// Retries after the first attempt of a round.
    #[arg(long, default_value_t = 10)]
    retries: u32,
}

#[derive(Deserialize)]
struct Chat {
    text: String,
}

fn state(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let config =
        ClientConfig::default().with_retry(RetryConfig::default().with_retries(args.retries));
    let (client, mut events) = Client::connect(ClientOptions::new(args.url), config);
    while let Some(event) = events.next().await {
        match event {
            ClientEvent::Open => {
                state("open");
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(error) = client.request("join", &json!({"displayName": "bot"})).await
                    {
                        tracing::warn!(error = %protoo_server::log::Remote(&error), "join failed");
                    }
                });
            }
            ClientEvent::Disconnected => state("disconnected"),
            ClientEvent::Failed(attempt) => state(&format!("failed {attempt}")),
            ClientEvent::Close(reason) => {
                state("close");
                let kicked = reason.is_some_and(|reason| reason.code == Some(4000));
                return if kicked {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            ClientEvent::Request(request) => match request.method() {
                "ping" => request.accept(&json!({"pong": true})),
                _ => request.reject(404, "unknown method"),
            },
            ClientEvent::Notification(notification) => {
                if notification.method() != "chat" {
                    continue;
                }
                let Ok(chat) = notification.data::<Chat>() else {
                    continue;
                };
                let method = match chat.text.as_str() {
                    "!ping" => "chat",
                    "!leave" => "kick",
                    _ => continue,
                };
                let client = client.clone();
                tokio::spawn(async move {
                    let data = if method == "chat" {
                        json!({"text": "pong"})
                    } else {
                        json!({})
                    };
                    if let Err(error) = client.request(method, &data).await {
                        tracing::warn!(method, error = %protoo_server::log::Remote(&error), "request failed");
                    }
                });
            }
            _ => {}
        }
    }
    ExitCode::FAILURE
}
