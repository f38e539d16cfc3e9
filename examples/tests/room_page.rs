//! The room example's HTTP side, over raw HTTP/1.1 against the real
//! program: the page's files at `/` with their content types and security
//! headers, refusals that close the connection, and WebSocket upgrades on
//! the same port. (`tests/browser` drives the page itself in Chromium.)

use std::net::SocketAddr;

use protoo_server::{WsConfig, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

mod common;
use common::{guard, start_room};

/// Starts the room example on 127.0.0.1:0: the child (killed on drop) and
/// its address.
async fn start() -> (Child, SocketAddr) {
    let room = start_room("127.0.0.1:0", &[]).await;
    (room.child, room.addr)
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
