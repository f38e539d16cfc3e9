//! The room example's HTTP side, over raw HTTP/1.1 against the real
//! program: the page's files at `/` with their content types and security
//! headers, refusals that close the connection, and WebSocket upgrades on
//! the same port. (`tests/browser` drives the page itself in Chromium.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use protoo_server::{WsConfig, ws};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The longest any single step may take: a failure guard only.
const GUARD: Duration = Duration::from_secs(15);

async fn guard<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn room_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROTOO_ROOM_BIN") {
        return path.into();
    }
    // target/<profile>/deps/room_page-HASH -> target/<profile>/examples/room
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps");
    profile_dir
        .join("examples")
        .join(format!("room{}", std::env::consts::EXE_SUFFIX))
}

/// Starts the room example on 127.0.0.1:0: the child (killed on drop) and
/// its address.
async fn start() -> (Child, SocketAddr) {
    let mut child = Command::new(room_binary())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the room example");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = guard("the address line", lines.next_line())
        .await
        .unwrap()
        .expect("the room example printed nothing");
    let addr = line
        .strip_prefix("listening on ws://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr)
}

/// One request on a fresh connection; the whole answer (the server closes
/// after it: `Connection: close`, or a refusal).
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    guard("the answer", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8(answer).expect("a UTF-8 answer")
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn the_page_and_its_files_with_content_types_and_a_strict_csp() {
    let (_child, addr) = start().await;
    for (path, content_type, contains) in [
        ("/", "text/html; charset=utf-8", "id=\"chat-input\""),
        (
            "/?roomId=r&peerId=p",
            "text/html; charset=utf-8",
            "id=\"peers\"",
        ),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "protooClient.Peer",
        ),
        ("/app.css", "text/css; charset=utf-8", "#messages"),
        (
            "/protoo-client.js",
            "text/javascript; charset=utf-8",
            "protoo-client@4.0.8",
        ),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let answer = http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{path}: {answer:.80}");
        assert_eq!(
            header(&answer, "content-type"),
            Some(content_type),
            "{path}"
        );
        let csp = header(&answer, "content-security-policy").expect("a CSP");
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe") && !csp.contains('*'), "{csp}");
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
        assert!(answer.contains(contains), "{path} lacks {contains:?}");
    }
}

#[tokio::test]
async fn refusals_close_the_connection_and_upgrades_share_the_port() {
    let (_child, addr) = start().await;
    // Not a page file and no upgrade: the WebSocket refusal, then EOF
    // although the client asked for keep-alive.
    let answer = http(addr, "GET /elsewhere HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(header(&answer, "connection"), Some("close"));
    let answer = http(
        addr,
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    // `/` with upgrade headers is the WebSocket endpoint.
    let url = format!("ws://{addr}/?roomId=r&peerId=p");
    let transport = guard("connect", ws::connect(&url, &WsConfig::default()))
        .await
        .expect("a WebSocket at /");
    transport.close();
}
