//! A Rust peer joining a protoo server (ours or the Node original) as a
//! client: our WebSocket client transport plus a `Peer`, no room.
//!
//! ```sh
//! cargo run --example rust_peer -- --url ws://127.0.0.1:4443/?roomId=r&peerId=rust
//! ```
//!
//! It runs the script of the interop suite (`tests/interop/README.md`, "The
//! rust_peer contract") and prints one JSON line per event on stdout; logs go
//! to stderr.

use std::time::Duration;

use clap::Parser;
use protoo_server::{Peer, PeerConfig, PeerEvent, RequestError, WsConfig, ws};
use serde::Deserialize;
use serde_json::{Value, json};

/// The interop peer.
#[derive(Debug, Parser)]
struct Args {
    /// The server's URL, with the query it expects.
    #[arg(long)]
    url: String,
}

/// Gives up this long after connecting if the server never closes.
const GIVE_UP: Duration = Duration::from_secs(10);

fn print(line: Value) {
    println!("{line}");
}

#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let transport = match ws::connect(&args.url, &WsConfig::default()).await {
        Ok(transport) => transport,
        Err(error) => {
            print(json!({ "event": "error", "message": error.to_string() }));
            return std::process::ExitCode::FAILURE;
        }
    };
    let (peer, mut events) = match Peer::new("server", transport, (), PeerConfig::default()) {
        Ok(peer) => peer,
        Err(error) => {
            print(json!({ "event": "error", "message": error.to_string() }));
            return std::process::ExitCode::FAILURE;
        }
    };
    print(json!({ "event": "open" }));
    tokio::spawn(script(peer));

    let handle_events = async {
        while let Some(event) = events.next().await {
            match event {
                PeerEvent::Request(request) => {
                    print(
                        json!({ "event": "request", "method": request.method(), "data": request.payload() }),
                    );
                    match request.method() {
                        "add" => {
                            let sum = request
                                .data::<Add>()
                                .map(|add| json!({ "sum": add.a + add.b }));
                            request.respond(sum);
                        }
                        "deny" => request.reject(403, "denied"),
                        "boom" => request.respond::<(), _>(Err("BOOM!!!")),
                        _ => request.reject(404, "unknown method"),
                    }
                }
                PeerEvent::Notification(notification) => {
                    print(json!({
                        "event": "notification",
                        "method": notification.method(),
                        "data": notification.payload(),
                    }));
                }
                PeerEvent::Closed(reason) => {
                    print(
                        json!({ "event": "closed", "code": reason.code, "reason": reason.reason }),
                    );
                    return true;
                }
                // No resume window here.
                PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
            }
        }
        false
    };
    match tokio::time::timeout(GIVE_UP, handle_events).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        _ => {
            print(
                json!({ "event": "error", "message": "the server did not close the connection" }),
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// Requests and a notification, one after the other.
async fn script(peer: Peer) {
    for (method, data) in [
        ("hello", json!({ "foo": "bar" })),
        ("reject-me", json!({})),
        ("throw-me", json!({})),
    ] {
        respond_line(method, peer.request(method, &data).await);
    }
    if let Err(error) = peer.notify("note", &json!({ "n": 1 })) {
        tracing::warn!(error = %protoo_server::log::Remote(&error), "notification not sent");
    }
    respond_line("ready", peer.request("ready", &json!({})).await);
}

fn respond_line(method: &str, result: Result<protoo_server::Payload, RequestError>) {
    let line = match result {
        Ok(data) => json!({ "event": "response", "method": method, "ok": true, "data": data }),
        Err(RequestError::Rejected(error)) => {
            let raw = |text: Option<&str>| text.and_then(|t| serde_json::from_str::<Value>(t).ok());
            json!({
                "event": "response", "method": method, "ok": false,
                "errorCode": raw(error.raw_code()), "errorReason": raw(error.raw_reason()),
            })
        }
        Err(error) => {
            json!({ "event": "response", "method": method, "ok": false, "error": error.to_string() })
        }
    };
    print(line);
}
