//! Where the heap bytes of an idle peer go, above its transport: counted
//! exactly by a counting global allocator (`stats_alloc`) over a test
//! transport that drops what it is sent and hands the peer one request
//! (its own few bytes are measured alone and left out). Two shapes:
//!
//! - the echo example's peer: [`Peer::new`] and a loop task that answers
//!   each request with its data, after one `echo`;
//! - the room example's joined peer: admitted in a room of 100 with the
//!   room example's per-peer settings (incoming rate limits, a fan-out
//!   budget, a 15 s resume window), its [`Router`] loop in a task, after a
//!   `join` that listed it in the room's presence and told the others
//!   (`newPeer`).
//!
//! Each step is counted over all peers (1,000 in 10 rooms) while every
//! earlier step's peers are held, and divided by the peers: the table in
//! the crate documentation (`Memory per idle peer`) is this test's output.
//! The totals are bounded here so that the table cannot silently rot.
//!
//! ```text
//! cargo test -p protoo-core --release --test idle_bytes -- --nocapture
//! ```

use std::alloc::System;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use protoo_core::handler::{Responder, Router};
use protoo_core::{ErrorData, Joined, Payload, Peer, PeerConfig, PeerEvent, Rate, Room, Rooms};
use protoo_transport::{Bytes, Frame, FrameSink, FrameStream, Inbound, Transport, TransportError};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Peers per room, as in S4.
const ROOM: usize = 100;
/// Peers counted.
const PEERS: usize = 1_000;

/// Heap bytes and allocations held per peer after a step.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    bytes: isize,
    allocations: isize,
}

impl Held {
    fn of(region: &Region<'_, System>) -> Held {
        let change = region.change();
        let bytes = change.bytes_allocated as isize - change.bytes_deallocated as isize;
        let allocations = change.allocations as isize - change.deallocations as isize;
        Held {
            bytes: bytes / PEERS as isize,
            allocations: allocations / PEERS as isize,
        }
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} B in {} allocations", self.bytes, self.allocations)
    }
}

/// Lets every task run until none has anything left to do.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// What the test transports share: frames sent, and the gate that lets
/// their one request through.
#[derive(Debug)]
struct Wire {
    sent: AtomicUsize,
    open: AtomicBool,
    /// The readers waiting for the gate (room for every peer reserved
    /// beforehand, so that waiting allocates nothing).
    waiting: Mutex<Vec<Waker>>,
}

impl Wire {
    fn new() -> Arc<Wire> {
        Arc::new(Wire {
            sent: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            waiting: Mutex::new(Vec::with_capacity(2 * PEERS)),
        })
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for waker in self.waiting.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}

/// Drops what it is sent (counted in the wire).
#[derive(Debug)]
struct NullSink(Arc<Wire>);

impl FrameSink for NullSink {
    fn send(&self, _frame: Frame) -> Result<(), TransportError> {
        self.0.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&self, _code: u16, _reason: &str) {}
    fn is_closed(&self) -> bool {
        false
    }
    fn queued_bytes(&self) -> usize {
        0
    }
}

/// Yields its one request once the wire's gate opens, then waits forever.
#[derive(Debug)]
struct OneRequest {
    wire: Arc<Wire>,
    request: Option<Bytes>,
}

impl FrameStream for OneRequest {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        if self.wire.open.load(Ordering::SeqCst) {
            if let Some(request) = self.request.take() {
                return Poll::Ready(Inbound::Text(request));
            }
        } else {
            self.wire.waiting.lock().unwrap().push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The echo example's request.
const ECHO: &str = r#"{"request":true,"id":1,"method":"echo","data":{"text":"hello"}}"#;
/// The room example's `join`, with a display name as long as S4's.
const JOIN: &str = r#"{"request":true,"id":1,"method":"join","data":{"displayName":"p1234"}}"#;

/// `count` test transports whose one request is `request` (static: the
/// request frame allocates nothing).
fn transports(wire: &Arc<Wire>, count: usize, request: &'static str) -> Vec<Transport> {
    (0..count)
        .map(|_| {
            Transport::new(
                NullSink(wire.clone()),
                OneRequest {
                    wire: wire.clone(),
                    request: Some(Bytes::from_static(request.as_bytes())),
                },
            )
        })
        .collect()
}

/// The room example's per-peer settings (`examples/room/flags.rs`
/// defaults) with a resume window of `window` (the example's default is
/// 15 s; `cargo xtask bench` runs S4 with none).
fn room_config(window: Duration) -> PeerConfig {
    PeerConfig::default()
        .with_message_rate(Rate::per_second(200).with_burst(400))
        .with_byte_rate(Rate::per_second(2 << 20).with_burst(4 << 20))
        .with_fan_out_rate(Rate::per_second(20_000_000).with_burst(20_000_000))
        .with_max_invalid_messages(100)
        .with_resume_window(window)
}

/// The room example's `join`, as far as what it keeps: lists the peer and
/// tells the others.
async fn join(
    peer: Peer,
    room: Room,
    responder: Responder,
    data: Payload,
) -> Result<(), ErrorData> {
    let name = data
        .deserialize::<serde_json::Value>()
        .ok()
        .and_then(|v| {
            v.get("displayName")
                .and_then(|n| n.as_str().map(str::to_owned))
        })
        .unwrap_or_default();
    room.exclusive(|_| {
        room.set_presence(peer.id(), &json!({ "displayName": name }))
            .map_err(|_| ErrorData::new(500, "presence"))?;
        room.to_all()
            .from(&peer)
            .notify("newPeer", &json!({ "id": peer.id(), "displayName": name }))
            .map_err(|_| ErrorData::new(500, "encode"))?;
        responder.accept(&json!({ "peers": [] }));
        Ok(())
    })
}

async fn echo(payload: Payload) -> Result<Payload, Infallible> {
    Ok(payload)
}

/// The test transports alone, per peer (left out of the steps below).
async fn transport_only() -> Held {
    let wire = Wire::new();
    let region = Region::new(GLOBAL);
    let held = transports(&wire, PEERS, ECHO);
    let cost = Held::of(&region);
    drop(held);
    cost
}

/// The echo example's peer: (peer and its reader task, the loop task).
async fn echo_peer() -> (Held, Held) {
    let wire = Wire::new();
    let mut servers = transports(&wire, PEERS, ECHO).into_iter();
    let mut held = Vec::with_capacity(PEERS);
    let mut loops = Vec::with_capacity(PEERS);
    let region = Region::new(GLOBAL);
    for (n, transport) in servers.by_ref().enumerate() {
        held.push(Peer::new(format!("peer-{n}"), transport, (), PeerConfig::default()).unwrap());
    }
    settle().await;
    let peer = Held::of(&region);
    let region = Region::new(GLOBAL);
    for (peer, mut events) in held.drain(..) {
        loops.push(tokio::spawn(async move {
            let _peer = peer;
            while let Some(event) = events.next().await {
                if let PeerEvent::Request(request) = event {
                    let data = request.payload().clone();
                    request.accept(&data);
                }
            }
        }));
    }
    settle().await;
    wire.open();
    settle().await;
    assert_eq!(
        wire.sent.load(Ordering::SeqCst),
        PEERS,
        "every echo answered"
    );
    let task = Held::of(&region);
    for task in &loops {
        task.abort();
    }
    settle().await;
    drop((loops, servers));
    (peer, task)
}

/// The room example's joined peer: (admitted, its router task, joined).
async fn room_peer(window: Duration) -> (Held, Held, Held) {
    let rooms: Rooms = Rooms::builder().peer_config(room_config(window)).build();
    let router = Router::new().request("join", join).request("echo", echo);
    let wire = Wire::new();
    let mut servers = transports(&wire, PEERS, JOIN).into_iter();
    let mut joined = Vec::with_capacity(PEERS);
    let mut tasks = Vec::with_capacity(PEERS);
    let region = Region::new(GLOBAL);
    for (n, transport) in servers.by_ref().enumerate() {
        let room = format!("room-{}", n / ROOM);
        let peer = format!("peer-{n}");
        joined.push(rooms.admit(room, peer).join(transport, ()).await.unwrap());
    }
    settle().await;
    let admitted = Held::of(&region);
    let region = Region::new(GLOBAL);
    for joined in joined.drain(..) {
        let router = router.clone();
        let joined: Joined = joined;
        tasks.push(tokio::spawn(async move { router.run(joined).await }));
    }
    settle().await;
    let task = Held::of(&region);
    let region = Region::new(GLOBAL);
    wire.open();
    settle().await;
    let sent = wire.sent.load(Ordering::SeqCst);
    // Each peer's answer, and `newPeer` to the peers of its room.
    assert!(sent >= PEERS, "every join answered ({sent} frames sent)");
    let listed = Held::of(&region);
    for task in &tasks {
        task.abort();
    }
    settle().await;
    drop((tasks, servers, rooms));
    (admitted, task, listed)
}

#[tokio::test(flavor = "current_thread")]
async fn idle_peer_bytes() {
    // Once first: what the first peers of a process allocate once (lazy
    // statics, the tasks' slabs) is not a peer's.
    let _ = echo_peer().await;
    let _ = room_peer(Duration::ZERO).await;
    let transport = transport_only().await;
    let (peer, task) = echo_peer().await;
    let (admitted, room_task, listed) = room_peer(Duration::ZERO).await;
    let (with_session, _, _) = room_peer(Duration::from_secs(15)).await;
    println!("test transport (left out): {transport}");
    println!("echo example: Peer::new (state, handle, reader task) {peer}; loop task {task}");
    println!(
        "room example: admitted (state, handle, reader task, rate limits, room entry) \
         {admitted}; router task {room_task}; listed (presence) {listed}; \
         with a 15 s resume window, admitted {with_session}"
    );
    let echo_total = peer.bytes + task.bytes;
    let room_total = admitted.bytes + room_task.bytes + listed.bytes;
    println!(
        "above the transport: echo peer {echo_total} B, joined room peer {room_total} B \
         ({} B with a resume window)",
        room_total - admitted.bytes + with_session.bytes
    );
    // The table in the crate documentation (`Memory per idle peer`):
    // 1,064 and 1,521 bytes.
    assert!(echo_total <= 1100, "an echo peer holds {echo_total} B");
    assert!(
        room_total <= 1600,
        "a joined room peer holds {room_total} B"
    );
}
