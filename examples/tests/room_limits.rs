//! The room example under a low file-descriptor limit (`prlimit
//! --nofile=64:64`, from util-linux): its connection cap is fitted to the
//! limit, said once on stderr, and connections past it are answered 503 at
//! once instead of waiting for a descriptor, with no flood of log lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use protoo_server::{WsConfig, ws};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

mod common;
use common::{guard, room_binary};

/// `prlimit` on the `PATH`, if there is one.
fn prlimit() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prlimit"))
        .find(|candidate| candidate.is_file())
}

#[tokio::test]
async fn past_the_descriptors_new_connections_get_503() {
    let Some(prlimit) = prlimit() else {
        eprintln!("prlimit (util-linux) not found: skipped");
        return;
    };
    let mut child = Command::new(prlimit)
        .arg("--nofile=64:64")
        .arg(room_binary())
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the room example under prlimit");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = guard("the room example prints its address", stdout.next_line())
        .await
        .expect("read the output")
        .expect("the room example exited without printing its address");
    let addr: SocketAddr = line
        .strip_prefix("listening on ws://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    // Peers until one is refused: the cap is below the limit.
    let mut held = Vec::new();
    loop {
        let url = format!("ws://{addr}/?roomId=r&peerId=p{}", held.len());
        match guard("a peer", ws::connect(&url, &WsConfig::default())).await {
            Ok(transport) => held.push(transport),
            Err(error) => {
                assert!(error.to_string().contains("503"), "{error}");
                break;
            }
        }
        assert!(held.len() < 64, "more peers than descriptors");
    }
    assert!(held.len() >= 16, "only {} peers", held.len());
    // Past the cap, every new connection is answered at once.
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        guard("the 503", tcp.read_to_end(&mut answer))
            .await
            .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 503 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    drop(held);
    child.kill().await.expect("kill");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("read stderr");
    let lines = stderr.lines().count();
    assert!(
        stderr.contains("max_connections does not fit"),
        "the lowered cap is said: {stderr}"
    );
    assert!(lines <= 5, "{lines} log lines: {stderr}");
}
