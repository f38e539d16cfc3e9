//! Heap allocations per message on the server side of protoo-core, counted
//! exactly by a counting global allocator (`stats_alloc`), over the
//! in-memory transport so that no socket or WebSocket code is counted.
//!
//! ```sh
//! cargo bench -p protoo-core --bench allocations
//! ```
//!
//! Each figure is the average over many messages of the allocations made
//! while the message is handled:
//! - **request + response**: a client sends an `echo` request (a frame
//!   encoded once beforehand); the server's peer decodes it, hands it to
//!   its loop as an event, the loop answers with the received data, and
//!   the response is queued; the client receives it. The client's own send
//!   and receive are measured alone and subtracted.
//! - **notification received**: the same for a notification the loop reads
//!   and drops.
//! - **request + response through the router**: the same `echo`, answered
//!   by a [`Router`](protoo_core::handler::Router) handler
//!   (`async fn(Payload) -> Result<Payload, Infallible>`).
//! - **notify**: the server sends one notification to one peer.
//! - **broadcast to 100**: one `room.to_all().notify(..)` to a room of 100 peers.

use std::alloc::System;

use protoo_codec::{Id, encode};
use std::convert::Infallible;

use protoo_core::handler::Router;
use protoo_core::{Payload, Peer, PeerConfig, PeerEvent, Rooms};
use protoo_transport::{Inbound, Transport, memory};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Messages per measurement.
const ROUNDS: usize = 2_000;

/// Allocations per round while `$round` (a block, awaiting inside the
/// caller's async context) runs `ROUNDS` times, after a warm-up that lets
/// queues and buffers reach their steady size.
macro_rules! per_round {
    ($round:block) => {{
        for _ in 0..100 $round
        let region = Region::new(GLOBAL);
        for _ in 0..ROUNDS $round
        region.change().allocations as f64 / ROUNDS as f64
    }};
}

async fn recv_text(transport: &mut Transport) {
    match transport.recv().await {
        Inbound::Text(_) => {}
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A server-side peer whose loop answers `echo` with the received data and
/// reads notifications; returns the client's raw transport.
fn echo_server() -> Transport {
    let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let (_peer, mut events) =
        Peer::new("alice", server_side, (), PeerConfig::default()).expect("a valid peer");
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                PeerEvent::Request(mut request) => {
                    let data = request.take_payload();
                    request.accept(&data);
                }
                PeerEvent::Notification(_) => {}
                PeerEvent::Closed(_) => break,
                PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
            }
        }
    });
    client_side
}

/// [`echo_server`] through the handler layer.
async fn router_echo_server() -> Transport {
    async fn echo(data: Payload) -> Result<Payload, Infallible> {
        Ok(data)
    }
    let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let rooms: Rooms = Rooms::new();
    let joined = rooms
        .admit("r", "alice")
        .join(server_side, ())
        .await
        .expect("a valid peer");
    let router = Router::new().request("echo", echo);
    tokio::spawn(async move { router.run(joined).await });
    client_side
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let data = json!({"text": "hello", "n": 42});
        let request = encode::request(&Id::from(7u32), "echo", &data).expect("encodable");
        let notification = encode::notification("chat", &data).expect("encodable");

        // The client's own cost: a raw pair, one frame each way.
        let (a, mut b) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
        let client_alone = per_round!({
            let _ = a.send(request.clone());
            recv_text(&mut b).await;
        });

        let mut client = echo_server();
        let round_trip = per_round!({
            let _ = client.send(request.clone());
            recv_text(&mut client).await;
        });

        let mut client = router_echo_server().await;
        let routed = per_round!({
            let _ = client.send(request.clone());
            recv_text(&mut client).await;
        });

        // Notifications: the loop reads them; a request after a batch tells
        // when the loop is through (its cost, one round trip, subtracted).
        let mut client = echo_server();
        const BATCH: usize = 100;
        let batch = per_round!({
            for _ in 0..BATCH {
                let _ = client.send(notification.clone());
            }
            let _ = client.send(request.clone());
            recv_text(&mut client).await;
        });
        let notification_in = (batch - round_trip) / BATCH as f64;

        // The server sends: notify to one peer, broadcast to 100.
        let rooms: Rooms = Rooms::new();
        let mut clients = Vec::new();
        let mut room = None;
        for i in 0..100 {
            let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
            let joined = rooms
                .admit("r", format!("p{i}"))
                .join(server_side, ())
                .await
                .expect("admitted");
            room = Some(joined.room);
            clients.push((client_side, joined.events));
        }
        let room = room.expect("a room");
        let one = room.peer("p0").expect("p0");
        let notify = {
            let region = Region::new(GLOBAL);
            for _ in 0..ROUNDS {
                let _ = one.notify("chat", &data);
            }
            region.change().allocations as f64 / ROUNDS as f64
        };
        for _ in 0..ROUNDS {
            recv_text(&mut clients[0].0).await;
        }
        const BROADCASTS: usize = 200;
        let broadcast = {
            let mut total = 0;
            for _ in 0..BROADCASTS {
                let region = Region::new(GLOBAL);
                let _ = room.to_all().notify("chat", &data);
                total += region.change().allocations;
                for (client, _) in clients.iter_mut() {
                    recv_text(client).await;
                }
            }
            total as f64 / BROADCASTS as f64
        };

        println!("| message (server side) | allocations per message |");
        println!("| --- | --- |");
        println!(
            "| request received + response sent (`echo`) | {:.1} |",
            round_trip - client_alone
        );
        println!(
            "| request received + response sent (`echo`), through the router | {:.1} |",
            routed - client_alone
        );
        println!("| notification received | {notification_in:.1} |");
        println!("| `Peer::notify` to one peer | {notify:.1} |");
        println!("| `room.to_all().notify` to 100 peers | {broadcast:.1} |");
        println!(
            "\n(client's own send + receive over the memory pair, subtracted above: {client_alone:.1})"
        );
    });
}
