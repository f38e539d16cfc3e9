//! The limits before the upgrade on the axum path, over real sockets: a
//! head over `max_handshake_bytes` gets 431, an unfinished head is closed at
//! the header timeout, the connection cap answers 503; and a server under a
//! low descriptor limit answers 503 instead of leaving clients waiting.

#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use protoo_server::{ServerConfig, WsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{axum_app, guard, parse_response, raw_http};

/// An upgrade request whose head carries `pad` bytes in its query.
fn upgrade_with(pad: usize) -> Vec<u8> {
    format!(
        "GET /protoo?roomId=r&peerId={} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: protoo\r\n\r\n",
        "p".repeat(pad)
    )
    .into_bytes()
}

#[tokio::test]
async fn a_60_kb_head_gets_431_through_the_mount() {
    let (_server, addr) = axum_app(ServerConfig::default(), "/protoo").await;
    let answer = raw_http(addr, &upgrade_with(60 * 1024)).await;
    assert_eq!(answer.status, 431, "{answer:?}");
    assert_eq!(
        answer.header("x-websocket-reject-reason"),
        Some("request head larger than 16384 bytes")
    );
    // The server goes on serving.
    let answer = raw_http(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_head_within_the_limit_passes_and_one_byte_more_does_not() {
    let config =
        ServerConfig::default().with_ws(WsConfig::default().with_max_handshake_bytes(2048));
    let (_server, addr) = axum_app(config, "/protoo").await;
    let health = |pad: usize| {
        format!(
            "GET /health?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        )
    };
    let base = health(0).len();
    let fits = health(2048 - base);
    assert_eq!(fits.len(), 2048);
    assert_eq!(raw_http(addr, fits.as_bytes()).await.status, 200);
    let over = health(2049 - base);
    assert_eq!(raw_http(addr, over.as_bytes()).await.status, 431);
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_head_is_closed_at_the_header_timeout() {
    let timeout = Duration::from_secs(10);
    let config = ServerConfig::default().with_handshake_timeout(timeout);
    let (_server, addr) = axum_app(config, "/protoo").await;
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /protoo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tcp.read_to_end(&mut rest).await;
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed without an answer: {read:?} {rest:?}"
    );
    assert!(
        started.elapsed() >= timeout,
        "closed at {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_listener_caps_connections_with_503() {
    let config = ServerConfig::default().with_max_connections(2);
    let (_server, addr) = axum_app(config, "/protoo").await;
    // Two connections hold the places (an idle kept-alive one, and one
    // still sending its head).
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = guard("the first answer", first.read(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let third = raw_http(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(third.status, 503, "{third:?}");
    assert_eq!(
        third.header("x-websocket-reject-reason"),
        Some("too many connections")
    );
    // A place freed is taken again.
    drop(first);
    drop(second);
    let answer = guard("a place again", async {
        loop {
            let answer = raw_http(
                addr,
                b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if answer.status == 200 {
                return answer;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(answer.status, 200);
}

/// Set in the child process: the test binary re-run under `prlimit`, where
/// `fd_limit_child` serves.
const CHILD_VAR: &str = "PROTOO_FD_CHILD";

/// In the child: a bound server under a descriptor limit of 64, printing
/// its address, serving until killed.
#[tokio::test]
async fn fd_limit_child() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let server = protoo_server::WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    println!("addr {}", server.local_addr());
    println!("cap {}", server.config().max_connections);
    let handle = server.serve(|request| async move {
        let Ok(transport) = request.accept().await else {
            return;
        };
        let mut transport = transport;
        while !matches!(
            transport.recv().await,
            protoo_server::transport::Inbound::Closed(_)
        ) {}
    });
    handle.stopped().await;
}

#[tokio::test]
async fn under_a_low_descriptor_limit_new_connections_get_503() {
    let Ok(prlimit) = which("prlimit") else {
        eprintln!("prlimit (util-linux) not found: skipped");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(prlimit)
        .arg("--nofile=64:64")
        .arg(exe)
        .args([
            "--exact",
            "fd_limit_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, "1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr: Option<SocketAddr> = None;
    let mut cap: Option<usize> = None;
    while cap.is_none() {
        let line = guard("the child's address", lines.next_line())
            .await
            .unwrap()
            .expect("the child printed its address");
        // The test harness may print `test fd_limit_child ... ` first.
        if let Some((_, a)) = line.split_once("addr ") {
            addr = a.parse().ok();
        }
        if let Some((_, c)) = line.split_once("cap ") {
            cap = c.parse().ok();
        }
    }
    let (addr, cap) = (addr.unwrap(), cap.unwrap());
    assert!(cap < 64, "the cap fits the descriptor limit: {cap}");
    // Fill the cap with WebSocket peers, then more: every one past it is
    // answered 503, none waits.
    let mut held = Vec::new();
    for _ in 0..cap {
        let url = format!("ws://{addr}/");
        let transport = guard(
            "a peer under the cap",
            protoo_server::ws::connect(&url, &WsConfig::default()),
        )
        .await
        .expect("connect under the cap");
        held.push(transport);
    }
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&upgrade_with(1)).await.unwrap();
        let mut answer = Vec::new();
        guard("the 503", tcp.read_to_end(&mut answer))
            .await
            .unwrap();
        assert_eq!(parse_response(&answer).status, 503);
    }
    drop(held);
    child.kill().await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let accept_failures = stderr.matches("accept failed").count();
    assert!(accept_failures <= 1, "{stderr}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
