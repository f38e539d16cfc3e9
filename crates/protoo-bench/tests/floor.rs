//! The floor server speaks the part of the room contract the benchmarks
//! use: `echo`, `broadcast` → `chat` to the others, 404 for anything else,
//! `peerClosed` when a member leaves, and refuses an upgrade without
//! `roomId`, `peerId` or subprotocol `protoo`. Runs the real binary on
//! 127.0.0.1:0 and stops it by pid.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The floor process; killed and reaped when dropped.
struct Floor {
    child: Child,
    url: String,
}

impl Floor {
    fn start() -> Floor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_floor"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start floor");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Floor { child, url }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str, query: &str, protoo: bool) -> Result<Ws, String> {
    let mut request = format!("{url}{query}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if protoo {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("protoo"));
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"protoo"[..])
    );
    Ok(ws)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(Utf8Bytes::from(v.to_string())))
        .await
        .expect("send");
}

async fn next(ws: &mut Ws) -> Value {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<Value>(&t).expect("JSON");
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a message within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_speaks_echo_broadcast_and_peer_closed() {
    let floor = Floor::start();
    let url = floor.url.clone();

    let mut a = connect(&url, "?roomId=r&peerId=a", true).await.expect("a");
    let mut b = connect(&url, "?roomId=r&peerId=b", true).await.expect("b");
    let mut other_room = connect(&url, "?roomId=s&peerId=c", true).await.expect("c");

    // echo: the data back unchanged, byte for byte.
    let raw = r#"{"request":true,"id":1,"method":"echo","data":{"t":5, "p":"é\u00e9"}}"#;
    a.send(Message::Text(Utf8Bytes::from_static(raw)))
        .await
        .expect("send");
    let Some(Ok(Message::Text(t))) = a.next().await else {
        panic!("no echo response");
    };
    assert_eq!(
        t.as_str(),
        r#"{"response":true,"id":1,"ok":true,"data":{"t":5, "p":"é\u00e9"}}"#
    );

    // broadcast: {} to the sender, chat with the data to the others of the room only.
    send(
        &mut b,
        json!({"request": true, "id": 7, "method": "broadcast", "data": {"s": 1}}),
    )
    .await;
    assert_eq!(
        next(&mut b).await,
        json!({"response": true, "id": 7, "ok": true, "data": {}})
    );
    assert_eq!(
        next(&mut a).await,
        json!({"notification": true, "method": "chat", "data": {"s": 1}})
    );

    // Anything else: 404.
    send(
        &mut a,
        json!({"request": true, "id": 2, "method": "join", "data": {}}),
    )
    .await;
    let r = next(&mut a).await;
    assert_eq!((r["id"].clone(), r["ok"].clone()), (json!(2), json!(false)));
    assert_eq!(r["errorCode"], 404);

    // A member leaves: the others of its room get peerClosed.
    b.close(None).await.expect("close b");
    assert_eq!(
        next(&mut a).await,
        json!({"notification": true, "method": "peerClosed", "data": {"peerId": "b"}})
    );

    // The member of the other room got nothing but its own echo.
    send(
        &mut other_room,
        json!({"request": true, "id": 3, "method": "echo", "data": {"x": 1}}),
    )
    .await;
    assert_eq!(next(&mut other_room).await["data"], json!({"x": 1}));

    // Refused upgrades.
    assert!(connect(&url, "?peerId=x", true).await.is_err());
    assert!(connect(&url, "?roomId=r", true).await.is_err());
    assert!(connect(&url, "?roomId=r&peerId=x", false).await.is_err());
    drop(floor);
}
