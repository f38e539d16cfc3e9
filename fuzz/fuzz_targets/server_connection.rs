//! A server connection fed arbitrary bytes after a valid WebSocket
//! handshake: no panic, and the connection, its peer and every task end once
//! the client's bytes are consumed and it closes.
//!
//! Per input: a fresh tokio runtime (current thread, clock paused so that
//! keepalive and close timers cost no real time); an in-memory byte pipe
//! (`tokio::io::duplex`); the server reads a canned upgrade request from it
//! with `read_upgrade_request`, accepts, and admits the connection as a
//! peer into a room whose handler answers requests (`echo`, `broadcast`,
//! `ask`: a request back to the client, `close`) as an application would.
//! The client writes the input, then closes its side, and reads whatever
//! the server sends.
//!
//! The first input byte picks how the rest is sent: even, as raw bytes (the
//! fuzzer builds its own frames); odd, as WebSocket frames built from
//! `[flags+opcode][length][payload]` records (masked with a zero key), so
//! that the fuzzer reaches the protoo decoder and the handler easily.
//! `fuzz/seeds/server_connection` holds a few such inputs (requests, a
//! fragmented message, control frames, a close); start from them with
//!
//! ```sh
//! cd fuzz && mkdir -p corpus/server_connection && cp seeds/server_connection/* corpus/server_connection/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run server_connection -- -runs=2000000
//! ```
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use protoo_server::transport::ws::{self, WsConfig};
use protoo_server::{PeerConfig, PeerEvent, Rooms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPGRADE: &[u8] = b"GET /?roomId=r&peerId=p HTTP/1.1\r\nHost: fuzz\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: protoo\r\n\r\n";

/// The longest a connection may live after its client closed (virtual
/// time): the keepalive (60 s + 30 s) and close (5 s) timers, and a request
/// timeout (30 s), with room to spare.
const BOUND: Duration = Duration::from_secs(600);

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let input = client_bytes(data);
    runtime.block_on(async move {
        match tokio::time::timeout(BOUND, session(input)).await {
            Ok(()) => {}
            Err(_) => panic!("the server connection did not end"),
        }
        // Every task spawned for the connection has ended.
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(alive, 0, "tasks left behind");
    });
});

/// The bytes the client sends after the handshake.
fn client_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = rest;
    while let [head, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        // FIN, RSV and opcode from the input; mask bit set, zero key.
        out.push(*head);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        rest = next;
    }
    out
}

async fn session(input: Vec<u8>) {
    let (server_io, client_io) = tokio::io::duplex(16 * 1024);
    let config = WsConfig::default()
        .with_max_message_size(64 * 1024)
        .with_max_queued_bytes(256 * 1024);

    let (mut client_read, mut client_write) = tokio::io::split(client_io);
    let client = tokio::spawn(async move {
        let _ = client_write.write_all(UPGRADE).await;
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });

    let server = async {
        let request = ws::read_upgrade_request(server_io, &config).await.ok()?;
        let transport = ws::ServerTransport::builder(&config).accept(request).await.ok()?;
        let rooms: Rooms = Rooms::new();
        let config = PeerConfig::default().with_event_queue(8);
        let joined = rooms.admit("r", "p").config(config).join(transport, ()).await.ok()?;
        let (room, peer, mut events) = (joined.room, joined.peer, joined.events);
        let mut asks = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                PeerEvent::Request(request) => match request.method() {
                    "echo" => {
                        let data = request.payload().clone();
                        request.accept(&data);
                    }
                    "broadcast" => {
                        let sent = room.to_all().notify("chat", request.payload());
                        request.respond(sent.map(|report| report.delivered as u64));
                    }
                    "ask" => {
                        let peer = peer.clone();
                        asks.push(tokio::spawn(async move {
                            match peer.request("question", request.payload()).await {
                                Ok(data) => request.accept(&data),
                                Err(error) => request.reject(500, error.to_string()),
                            }
                        }));
                    }
                    "close" => {
                        request.accept(&());
                        peer.close();
                    }
                    _ => request.reject(404, "unknown method"),
                },
                PeerEvent::Notification(notification) => {
                    let _ = room
                        .to_all()
                        .except(["p"])
                        .notify(notification.method(), notification.payload());
                }
                PeerEvent::Closed(_) | PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
            }
        }
        for ask in asks {
            let _ = ask.await;
        }
        assert!(room.is_empty(), "the closed peer left its room");
        Some(())
    };
    let _ = server.await;
    let _ = client.await;
    let _ = reader.await;
}
