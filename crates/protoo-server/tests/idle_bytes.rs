//! What an idle peer of the echo example (`examples/echo.rs`) holds in
//! heap bytes, the whole server side: its WebSocket connection, its peer,
//! its per-connection task (the example's loop) and the server's entry for
//! it, counted by a counting global allocator (`stats_alloc`) over 1,000
//! connections on 127.0.0.1 opened by blocking clients on another thread
//! (each sends one `echo` and reads the answer; they keep only their
//! sockets, in a vector sized beforehand). The transport's and the core's
//! parts are tabled in their crates' documentation; this is their sum with
//! what the server adds, bounded so that the figure cannot silently rot.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use protoo_server::{Peer, PeerConfig, PeerEvent, ServerConfig, WebSocketServer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Opens `n` connections, each answering one `echo` request; returns the
/// open sockets.
fn clients(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: protoo\r\n\r\n";
    let payload = br#"{"request":true,"id":1,"method":"echo","data":{"text":"hello"}}"#;
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    let mut sockets = Vec::with_capacity(n);
    let mut buf = [0u8; 1024];
    for _ in 0..n {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let got = socket.read(&mut buf).unwrap();
            assert!(got > 0);
            head.extend_from_slice(&buf[..got]);
        }
        socket.write_all(&frame).unwrap();
        // The response: a 2-byte header and a short JSON text.
        let mut header = [0u8; 2];
        socket.read_exact(&mut header).unwrap();
        let mut response = vec![0u8; usize::from(header[1] & 0x7f)];
        socket.read_exact(&mut response).unwrap();
        assert!(response.starts_with(br#"{"response":true"#));
        sockets.push(socket);
    }
    sockets
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_echo_example_peer_holds_at_most_2_600_heap_bytes() {
    const WARMUP: usize = 200;
    const N: usize = 1000;
    let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr();
    let peers = Arc::new(AtomicUsize::new(0));
    // The echo example's handler.
    let next_id = AtomicUsize::new(0);
    let _handle = server.serve({
        let peers = peers.clone();
        move |request| {
            let peer_id = format!("peer-{}", next_id.fetch_add(1, Ordering::Relaxed) + 1);
            let peers = peers.clone();
            async move {
                let Ok(transport) = request.accept().await else {
                    return;
                };
                let Ok((_peer, mut events)) =
                    Peer::new(peer_id, transport, (), PeerConfig::default())
                else {
                    return;
                };
                peers.fetch_add(1, Ordering::SeqCst);
                while let Some(event) = events.next().await {
                    if let PeerEvent::Request(request) = event {
                        let data = request.payload().clone();
                        request.accept(&data);
                    }
                }
            }
        }
    });
    let mut sockets = tokio::task::spawn_blocking(move || clients(addr, WARMUP))
        .await
        .unwrap();
    sockets.reserve(N);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }

    let region = Region::new(GLOBAL);
    let measured = tokio::task::spawn_blocking(move || clients(addr, N));
    // The clients' thread blocks until each answer: this task serves them.
    let opened = measured.await.unwrap();
    sockets.extend(opened);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let change = region.change();
    assert_eq!(peers.load(Ordering::SeqCst), WARMUP + N);
    let bytes = (change.bytes_allocated as isize - change.bytes_deallocated as isize) / N as isize;
    let allocations = (change.allocations as isize - change.deallocations as isize) / N as isize;
    println!(
        "idle echo example peer, whole server side: {bytes} heap bytes in {allocations} allocations"
    );
    // protoo-core's `Memory per idle peer`: 2,342 bytes in 12 allocations.
    assert!(
        allocations <= 12,
        "an idle echo peer holds {allocations} allocations"
    );
    assert!(bytes <= 2600, "an idle echo peer holds {bytes} heap bytes");
    drop(sockets);
}
