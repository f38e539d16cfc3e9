//! `floor`: the benchmark's floor, not an application.
//!
//! A bare protoo server written directly on tokio-tungstenite, with nothing
//! of protoo-rs around it, so that `cargo xtask bench` can show what our
//! server costs above the least a tokio-tungstenite protoo server must do
//! for the same messages (the `ours / floor` column). It speaks only the part
//! of the room contract (`examples/room/main.rs`) that scenarios S1, S2, S3
//! and S5 (connect, one `echo`, close: the cost of a connection's life) of
//! `protoo-bench` use:
//!
//! | request | answer |
//! | --- | --- |
//! | `echo` | the request's data, unchanged |
//! | `broadcast` | `{}`; every other member of the room gets `chat` with the request's data unchanged |
//! | anything else | 404 |
//!
//! When a peer leaves, the others get `peerClosed {peerId}`. Clients connect
//! to `ws://HOST:PORT/?roomId=R&peerId=P` with subprotocol `protoo`.
//!
//! What it does per connection, and nothing more:
//! - tokio-tungstenite with its default buffers (128 KiB read buffer,
//!   128 KiB write buffer), incoming messages limited to 1 MiB like ours;
//! - the connection's task reads and parses each request with serde_json,
//!   the data as a [`RawValue`] so that it is forwarded as received, never
//!   re-encoded;
//! - one writer task per connection, fed by an unbounded mpsc of
//!   pre-encoded frames ([`Utf8Bytes`], so a broadcast encodes its `chat`
//!   once and every member's queue holds the same bytes); it writes every
//!   frame already queued and then flushes once. The bytes queued per
//!   connection are counted: past [`MAX_QUEUE`] the connection is closed,
//!   so no remote can make it hold more.
//!
//! ```sh
//! cargo run --release -p protoo-bench --bin floor -- --listen 127.0.0.1:4443
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Bytes of frames queued for one connection and not yet handed to
/// tungstenite, at most; past it the connection is closed. Larger than
/// anything S3's flow control lets the load generator leave undelivered to
/// one member (at 4 KB, 16,384 deliveries are 64 MiB, and a reader that the
/// load generator's threads serve last can be that far behind): the floor
/// measures the cost of delivering, not a policy for slow readers, so it
/// never closes a reader the harness still waits for.
const MAX_QUEUE: usize = 80 << 20;

/// Largest incoming message (ours: 1 MiB by default too).
const MAX_MESSAGE: usize = 1 << 20;

/// How long a closing connection's writer may take to send what is queued.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long the upgrade may take (ours: 10 s by default too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "floor",
    about = "the benchmark's floor: a bare tokio-tungstenite protoo server (echo, broadcast)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4443")]
    listen: SocketAddr,
    /// tungstenite's read buffer per connection, bytes (default: its own,
    /// 128 KiB). To see what the buffer sizes alone cost; the benchmark
    /// runs the default.
    #[arg(long)]
    read_buffer: Option<usize>,
    /// tungstenite's write buffer per connection, bytes (default: its own,
    /// 128 KiB).
    #[arg(long)]
    write_buffer: Option<usize>,
}

/// One connection's outgoing queue, as the others see it.
#[derive(Debug, Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Utf8Bytes>,
    /// Bytes in `tx` not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    /// Woken when the queue went over [`MAX_QUEUE`]: the connection closes.
    overflow: Arc<Notify>,
}

impl Outbox {
    /// Queues `frame` (a clone of the same bytes for every receiver).
    fn push(&self, frame: &Utf8Bytes) {
        let n = frame.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUE {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.overflow.notify_one();
            return;
        }
        // A closed queue: the connection is going away, nothing to do.
        let _ = self.tx.send(frame.clone());
    }
}

/// A member of a room.
#[derive(Debug)]
struct Member {
    conn: u64,
    out: Outbox,
}

/// The members of one room.
type Room = Mutex<Vec<Member>>;

/// Every room by id; a room is removed with its last member.
#[derive(Debug, Default)]
struct Rooms {
    map: Mutex<HashMap<String, Arc<Room>>>,
    next_conn: AtomicU64,
}

impl Rooms {
    fn join(&self, room_id: &str, out: Outbox) -> (Arc<Room>, u64) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let room = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(room_id.to_owned()).or_default())
        };
        room.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Member { conn, out });
        (room, conn)
    }

    fn leave(&self, room_id: &str, room: &Room, conn: u64) {
        let empty = {
            let mut members = room.lock().unwrap_or_else(PoisonError::into_inner);
            members.retain(|m| m.conn != conn);
            members.is_empty()
        };
        if empty {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let still_empty = map
                .get(room_id)
                .is_some_and(|r| r.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
            if still_empty {
                map.remove(room_id);
            }
        }
    }
}

/// Queues `frame` for every member of `room` but `except`.
fn broadcast(room: &Room, except: u64, frame: &Utf8Bytes) {
    let members = room.lock().unwrap_or_else(PoisonError::into_inner);
    for m in members.iter().filter(|m| m.conn != except) {
        m.out.push(frame);
    }
}

/// The parts of an incoming protoo message the floor reads.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(default)]
    request: bool,
    id: Option<u64>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on ws://{}/", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let mut config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    if let Some(n) = args.read_buffer {
        config = config.read_buffer_size(n);
    }
    if let Some(n) = args.write_buffer {
        config = config.write_buffer_size(n);
    }
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors and the like: retry soon, without spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(connection(tcp, Arc::clone(&rooms), config));
    }
}

/// One connection: handshake, join, read loop; its writer in a task of its own.
async fn connection(tcp: TcpStream, rooms: Arc<Rooms>, config: WebSocketConfig) {
    let _ = tcp.set_nodelay(true);
    let mut ids: Option<(String, String)> = None;
    // The callback's type is tungstenite's (`ErrorResponse` is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let query = req.uri().query().unwrap_or_default();
        let mut room_id = None;
        let mut peer_id = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "roomId" => room_id = Some(v.into_owned()),
                "peerId" => peer_id = Some(v.into_owned()),
                _ => {}
            }
        }
        let protoo = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "protoo");
        match (room_id, peer_id) {
            (Some(r), Some(p)) if protoo && !r.is_empty() && !p.is_empty() => {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static("protoo"));
                ids = Some((r, p));
                Ok(resp)
            }
            _ => {
                let mut e = ErrorResponse::new(Some(
                    "missing roomId, peerId or subprotocol protoo".to_owned(),
                ));
                *e.status_mut() = StatusCode::BAD_REQUEST;
                Err(e)
            }
        }
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config));
    let Ok(Ok(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        return;
    };
    let Some((room_id, peer_id)) = ids else {
        return;
    };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Outbox {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        overflow: Arc::new(Notify::new()),
    };
    let mut writer = tokio::spawn(write_loop(sink, rx, Arc::clone(&out.queued)));
    let (room, conn) = rooms.join(&room_id, out.clone());
    let overflow = Arc::clone(&out.overflow);
    let writer_done = tokio::select! {
        () = read_loop(stream, &room, conn, &out) => false,
        _ = &mut writer => true,
        () = overflow.notified() => {
            writer.abort();
            true
        }
    };
    rooms.leave(&room_id, &room, conn);
    let mut closed = String::with_capacity(64 + peer_id.len());
    closed.push_str(r#"{"notification":true,"method":"peerClosed","data":{"peerId":"#);
    closed.push_str(&serde_json::to_string(&peer_id).unwrap_or_else(|_| "\"\"".to_owned()));
    closed.push_str("}}");
    broadcast(&room, conn, &Utf8Bytes::from(closed));
    // The room holds no clone of `out` any more: dropping this one ends the
    // writer once it has sent what is queued (and the close handshake).
    drop(out);
    if !writer_done
        && tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// Reads until the connection ends, answering each request.
async fn read_loop(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    room: &Room,
    conn: u64,
    out: &Outbox,
) {
    while let Some(item) = stream.next().await {
        match item {
            Ok(Message::Text(text)) => handle(&text, room, conn, out),
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Answers one message; anything that is not a protoo request is ignored.
fn handle(text: &str, room: &Room, conn: u64, out: &Outbox) {
    let Ok(msg) = serde_json::from_str::<Incoming<'_>>(text) else {
        return;
    };
    let (true, Some(id), Some(method)) = (msg.request, msg.id, msg.method) else {
        return;
    };
    let data = msg.data.map_or("{}", RawValue::get);
    let mut resp = String::with_capacity(64 + data.len());
    match &*method {
        "echo" => {
            let _ = write!(
                resp,
                r#"{{"response":true,"id":{id},"ok":true,"data":{data}}}"#
            );
        }
        "broadcast" => {
            let mut chat = String::with_capacity(48 + data.len());
            let _ = write!(
                chat,
                r#"{{"notification":true,"method":"chat","data":{data}}}"#
            );
            broadcast(room, conn, &Utf8Bytes::from(chat));
            let _ = write!(
                resp,
                r#"{{"response":true,"id":{id},"ok":true,"data":{{}}}}"#
            );
        }
        _ => {
            let _ = write!(
                resp,
                r#"{{"response":true,"id":{id},"ok":false,"errorCode":404,"errorReason":"unknown method"}}"#
            );
        }
    }
    out.push(&Utf8Bytes::from(resp));
}

/// Writes every queued frame, then flushes once; ends when every sender is
/// gone (after a close handshake) or the socket fails.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::UnboundedReceiver<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(frame) = rx.recv().await {
        // Counted out as soon as tungstenite has it: its write buffer
        // (128 KiB plus a frame) is the rest of what the connection holds.
        queued.fetch_sub(frame.len(), Ordering::Relaxed);
        if sink.feed(Message::Text(frame)).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            queued.fetch_sub(frame.len(), Ordering::Relaxed);
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
