//! A plain WebSocket echo endpoint on protoo-rs's WebSocket transport, for
//! the Autobahn|Testsuite conformance cases (`cargo xtask ci` runs them with
//! `kosoku`; see `tests/autobahn/`).
//!
//! ```sh
//! cargo run --example autobahn_echo -- 127.0.0.1:9001
//! ```
//!
//! It prints `listening on ws://ADDR/` once ready. Unlike a protoo server it
//! accepts any WebSocket client (no `protoo` subprotocol required: the
//! Autobahn client offers none) and echoes every message, text and binary
//! (the transport's opt-in [`WsConfig::binary_messages`]). Its limits are
//! raised above Autobahn's largest cases (the 9.* cases send messages of up
//! to 16 MiB): 64 MiB messages, frames and outbound queue. Everything else
//! is the transport as a protoo server runs it: the same connection task,
//! close handshake, UTF-8 checks and protocol checks.

use std::time::Duration;

use protoo_server::transport::ws::{self, WsConfig};
use protoo_server::transport::{Frame, Inbound, Transport};
use tokio::net::TcpListener;

/// Messages, frames and the outbound queue: above Autobahn's 16 MiB cases.
const LIMIT: usize = 64 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let config = WsConfig::default()
        .with_binary_messages(true)
        .with_max_message_size(LIMIT)
        .with_max_frame_size(LIMIT)
        .with_max_queued_bytes(LIMIT)
        .with_handshake_timeout(Duration::from_secs(10));
    let listener = TcpListener::bind(addr).await?;
    println!("listening on ws://{}/", listener.local_addr()?);

    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let config = config.clone();
        tokio::spawn(async move {
            let handshake = async {
                let request = ws::read_upgrade_request(socket, &config).await?;
                ws::ServerTransport::builder(&config).accept(request).await
            };
            match tokio::time::timeout(config.handshake_timeout, handshake).await {
                Ok(Ok(transport)) => echo(transport).await,
                Ok(Err(error)) => eprintln!("handshake failed: {error}"),
                Err(_) => eprintln!("handshake timed out"),
            }
        });
    }
}

/// Sends every message back as it came, until the connection ends.
async fn echo(mut transport: Transport) {
    loop {
        let sent = match transport.recv().await {
            // Incoming text is valid UTF-8 (the transport checks it).
            Inbound::Text(text) => match Frame::try_from_bytes(text) {
                Ok(frame) => transport.send(frame).map_err(|e| e.to_string()),
                Err(_) => Err("invalid UTF-8".to_owned()),
            },
            Inbound::Binary(data) => transport.send_binary(data).map_err(|e| e.to_string()),
            Inbound::Closed(_) => return,
        };
        if let Err(error) = sent {
            // Sending fails quietly once the connection is closing.
            if !transport.is_closed() {
                eprintln!("echo failed: {error}");
            }
            return;
        }
    }
}
