//! Measures what an idle server-side WebSocket connection costs in resident
//! memory: each connection is opened by a plain blocking client on another
//! thread (so the clients cost the process almost nothing), answers one
//! echo (so both buffers have been used), then stays idle; once with a small
//! message, once with a 16 KB one (what a connection keeps of its largest
//! message). The RSS measurements are not timed tests: run them by hand,
//!
//! ```text
//! cargo test -p protoo-transport --release --test idle_memory -- --ignored --nocapture
//! ```
//!
//! `idle_connection_heap_bytes` runs always: it counts, with a counting
//! global allocator (`stats_alloc`), the heap bytes and allocations each
//! idle connection holds (the table of the `ws` module's documentation,
//! `Memory`), and bounds them.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use protoo_transport::ws::{self, WsConfig};
use protoo_transport::{Frame, Inbound, Transport};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Opens `n` connections, each sending one masked text frame (a request
/// whose data is padded to `pad` bytes) and reading the echo; returns the
/// open sockets.
fn clients(addr: SocketAddr, n: usize, pad: usize) -> Vec<std::net::TcpStream> {
    let request = "GET /?roomId=r&peerId=p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: protoo\r\n\r\n";
    let payload = format!(
        r#"{{"request":true,"id":1,"method":"echo","data":{{"text":"hello{}"}}}}"#,
        "x".repeat(pad)
    );
    let payload = payload.as_bytes();
    let mask = [9u8, 8, 7, 6];
    let mut frame = if payload.len() < 126 {
        vec![0x81, 0x80 | payload.len() as u8]
    } else {
        let mut head = vec![0x81, 0x80 | 126];
        head.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        head
    };
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
        // The echo: a 2- or 4-byte header and the payload.
        let header = if payload.len() < 126 { 2 } else { 4 };
        let mut echo = vec![0u8; header + payload.len()];
        socket.read_exact(&mut echo).unwrap();
        assert_eq!(&echo[header..], payload);
        sockets.push(socket);
    }
    sockets
}

async fn serve(listener: &tokio::net::TcpListener, n: usize, held: &mut Vec<Transport>) {
    let config = WsConfig::default();
    for _ in 0..n {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let request = ws::read_upgrade_request(socket, &config).await.unwrap();
        let mut transport = ws::ServerTransport::builder(&config)
            .accept(request)
            .await
            .unwrap();
        let Inbound::Text(text) = transport.recv().await else {
            panic!("closed")
        };
        transport
            .send(Frame::try_from_bytes(text).unwrap())
            .unwrap();
        held.push(transport);
    }
}

#[tokio::test]
#[ignore = "measurement, run by hand"]
async fn idle_connection_memory() {
    measure(0).await;
}

#[tokio::test]
#[ignore = "measurement, run by hand"]
async fn idle_connection_memory_after_a_16_kb_message() {
    measure(16 * 1024).await;
}

async fn measure(pad: usize) {
    const WARMUP: usize = 500;
    const N: usize = 4000;
    let (listener, addr) = common::listen().await;
    let mut held = Vec::with_capacity(WARMUP + N);

    let warmup = tokio::task::spawn_blocking(move || clients(addr, WARMUP, pad));
    serve(&listener, WARMUP, &mut held).await;
    let mut sockets = warmup.await.unwrap();
    tokio::task::yield_now().await;
    let before = rss_bytes();

    let measured = tokio::task::spawn_blocking(move || clients(addr, N, pad));
    serve(&listener, N, &mut held).await;
    sockets.extend(measured.await.unwrap());
    // Let every connection task finish writing its echo and go idle.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    println!(
        "{N} idle WebSocket connections (server side) after a {pad}-byte padded echo: RSS +{} KiB, {per:.0} bytes per connection",
        (after - before) / 1024
    );
    assert!(held.iter().all(|t| !t.is_closed()));
    drop(sockets);
}

/// Heap bytes and allocations one idle server-side connection holds: its
/// transport (held here as an application holds it), its task, its
/// socket's registration with tokio. The blocking clients keep only their
/// sockets (in a vector sized beforehand), so what is counted is the
/// server side's.
#[tokio::test(flavor = "current_thread")]
async fn idle_connection_heap_bytes() {
    const WARMUP: usize = 200;
    const N: usize = 1000;
    let (listener, addr) = common::listen().await;
    let mut held = Vec::with_capacity(WARMUP + N);
    let warmup = tokio::task::spawn_blocking(move || clients(addr, WARMUP, 0));
    serve(&listener, WARMUP, &mut held).await;
    let mut sockets = warmup.await.unwrap();
    sockets.reserve(N);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let region = Region::new(GLOBAL);
    let measured = tokio::task::spawn_blocking(move || clients(addr, N, 0));
    serve(&listener, N, &mut held).await;
    // Into the room reserved above; the clients' own vector is freed.
    sockets.extend(measured.await.unwrap());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let change = region.change();
    let bytes = (change.bytes_allocated as isize - change.bytes_deallocated as isize) / N as isize;
    let allocations = (change.allocations as isize - change.deallocations as isize) / N as isize;
    println!(
        "idle WebSocket connection (server side): {bytes} heap bytes in {allocations} allocations"
    );
    assert!(held.iter().all(|t| !t.is_closed()));
    // The table in `ws`'s documentation (`Memory`): 1,232 bytes in 6
    // allocations.
    assert!(
        allocations <= 6,
        "an idle connection holds {allocations} allocations"
    );
    assert!(bytes <= 1280, "an idle connection holds {bytes} heap bytes");
    drop(sockets);
}
