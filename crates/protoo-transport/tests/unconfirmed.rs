//! Frames kept until the remote confirms them (`retain_unconfirmed`,
//! `take_unconfirmed`) over real WebSockets on 127.0.0.1, with a
//! tokio-tungstenite client as the remote (it answers each ping when it
//! reads it, once it has read every frame before it), and over the memory
//! pair; and which ends count as a lost connection (`CloseReason::is_lost`).

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protoo_transport::ws::WsConfig;
use protoo_transport::{
    CloseReason, Frame, Inbound, Initiator, KEEPALIVE_TIMEOUT_REASON, REPLACED_REASON, Transport,
    TransportError, close_code, memory,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{closed, closed_skipping, listen, raw_pair, text};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frame `i` of a series `tag`, padded to about `pad` bytes.
fn frame(tag: &str, i: usize, pad: usize) -> Frame {
    Frame::from(format!("{tag}{i:04}{}", "x".repeat(pad)))
}

fn series(tag: &str, n: usize, pad: usize) -> Vec<Frame> {
    (0..n).map(|i| frame(tag, i, pad)).collect()
}

fn send_all(server: &Transport, frames: &[Frame]) {
    for frame in frames {
        server.send(frame.clone()).unwrap();
    }
}

/// The text frames the client reads until it has `n`, and the counts of
/// the confirmation pings among them (tungstenite queues each pong).
async fn read_texts(client: &mut Client, n: usize) -> (Vec<String>, Vec<u64>) {
    let mut texts = Vec::new();
    let mut pings = Vec::new();
    while texts.len() < n {
        match client.next().await {
            Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
            Some(Ok(Message::Ping(payload))) => pings.push(count(&payload)),
            other => panic!("unexpected {other:?}"),
        }
    }
    (texts, pings)
}

fn count(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload.try_into().expect("an 8-byte confirmation ping"))
}

/// Reads the next confirmation ping (skipping nothing else) and returns its
/// count; tungstenite queues the pong.
async fn next_ping(client: &mut Client) -> u64 {
    match client.next().await {
        Some(Ok(Message::Ping(payload))) => count(&payload),
        other => panic!("expected a confirmation ping, got {other:?}"),
    }
}

/// Writes the client's queued pong, then a text frame the server reads:
/// once the server has it, the server's task has handled the pong.
async fn answer_and_sync(server: &mut Transport, client: &mut Client) {
    client.flush().await.unwrap();
    client.send(Message::Text("sync".into())).await.unwrap();
    assert_eq!(text(server).await, "sync");
}

fn texts(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.as_str().to_owned()).collect()
}

/// A config without keepalive (no other ping in the way) and a confirmation
/// interval no test on real time reaches: only the first ping goes at once.
fn one_ping_config() -> WsConfig {
    WsConfig::default()
        .with_ping_interval(None)
        .with_confirm_interval(Duration::from_secs(3600))
}

/// Sends `frames`, lets the client read them and answer the confirmation
/// ping that follows them, and waits until the server handled the answer.
async fn send_and_confirm(server: &mut Transport, client: &mut Client, frames: &[Frame]) {
    send_all(server, frames);
    let (got, pings) = read_texts(client, frames.len()).await;
    assert_eq!(got, texts(frames));
    assert!(pings.is_empty(), "{pings:?}");
    // One ping after the batch, counting every kept frame written.
    assert_eq!(next_ping(client).await, frames.len() as u64);
    answer_and_sync(server, client).await;
}

/// Lets the connection task write what the socket takes of the `total`
/// bytes queued, until it blocks with most of them still queued.
async fn written_until_blocked(server: &Transport, total: usize) {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let queued = server.sink().queued_bytes();
    assert!(queued < total, "nothing was written");
    assert!(
        queued > total / 2,
        "the socket took {} bytes",
        total - queued
    );
}

// ----- (a) confirmed frames are not given back -----

#[tokio::test]
async fn frames_the_client_confirmed_are_not_given_back() {
    let (mut server, mut client) = raw_pair(one_ping_config()).await;
    server.sink().retain_unconfirmed();
    send_and_confirm(&mut server, &mut client, &series("a", 5, 100)).await;

    drop(client);
    let reason = closed(&mut server).await;
    assert!(reason.is_lost(), "{reason:?}");
    assert!(server.sink().take_unconfirmed().is_empty());
}

// ----- (b) the in-flight tail and the queue are, in order, exactly -----

#[tokio::test]
async fn frames_after_the_last_confirmation_and_the_queue_are_given_back_in_order() {
    // A queue far larger than what the kernel's buffers take, so that
    // frames are still queued when the client dies.
    let config = one_ping_config().with_max_queued_bytes(64 << 20);
    let (mut server, mut client) = raw_pair(config).await;
    server.sink().retain_unconfirmed();
    send_and_confirm(&mut server, &mut client, &series("a", 5, 100)).await;

    // Written and read, but not confirmed (the next ping is an hour away).
    let read = series("b", 3, 100);
    send_all(&server, &read);
    let (got, pings) = read_texts(&mut client, read.len()).await;
    assert_eq!((got, pings), (texts(&read), vec![]));

    // 16 MiB the client never reads: some written into the kernel's
    // buffers, the rest still queued.
    let unread = series("c", 32, 512 * 1024);
    send_all(&server, &unread);
    let total = server.sink().queued_bytes();
    written_until_blocked(&server, total).await;

    drop(client);
    let reason = closed(&mut server).await;
    assert!(reason.is_lost(), "{reason:?}");
    let taken = server.sink().take_unconfirmed();
    let expected: Vec<Frame> = read.iter().chain(&unread).cloned().collect();
    assert_eq!(taken.len(), expected.len());
    assert!(
        taken == expected,
        "not exactly the unconfirmed frames, in order"
    );

    // Nothing more: the queue is empty and sends fail.
    assert_eq!(server.sink().queued_bytes(), 0);
    assert!(server.sink().take_unconfirmed().is_empty());
    assert!(matches!(
        server.send(frame("d", 0, 0)),
        Err(TransportError::Closed(_))
    ));
}

// ----- (c) a client that stops reading -----

#[tokio::test]
async fn frames_written_to_a_black_hole_are_given_back() {
    // Keepalive finds the client dead; the confirmation pings it never
    // answers are repeated meanwhile (paused time).
    let config = WsConfig::default().with_confirm_interval(Duration::from_secs(1));
    let (mut server, client) = raw_pair(config).await;
    tokio::time::pause();
    server.sink().retain_unconfirmed();
    // The client keeps its socket open and never reads: every frame goes
    // into the kernel's buffers (a few KiB).
    let frames = series("a", 20, 200);
    send_all(&server, &frames);
    while server.sink().queued_bytes() > 0 {
        tokio::task::yield_now().await;
    }
    let reason = closed(&mut server).await;
    assert_eq!(
        reason,
        CloseReason::new(None, KEEPALIVE_TIMEOUT_REASON, Initiator::Local)
    );
    assert!(reason.is_lost());
    assert!(server.sink().take_unconfirmed() == frames);
    drop(client);
}

// ----- (d) a takeover: taken from an open transport -----

#[tokio::test]
async fn taking_from_an_open_transport_stops_its_writes() {
    let config = one_ping_config().with_max_queued_bytes(64 << 20);
    let (mut server, mut client) = raw_pair(config).await;
    server.sink().retain_unconfirmed();
    send_and_confirm(&mut server, &mut client, &series("a", 3, 100)).await;

    // 16 MiB the client does not read yet.
    let unread = series("c", 32, 512 * 1024);
    send_all(&server, &unread);
    let total = server.sink().queued_bytes();
    written_until_blocked(&server, total).await;
    let taken = server.sink().take_unconfirmed();
    assert!(taken == unread, "every frame not confirmed, in order");
    assert_eq!(server.sink().queued_bytes(), 0);
    assert!(matches!(
        server.send(frame("d", 0, 0)),
        Err(TransportError::Closed(_))
    ));
    server
        .sink()
        .close(close_code::PROTOO_CLOSED, REPLACED_REASON);

    // The client gets what was written before the take (at most the
    // kernel's buffers and the frame being written), then the close.
    let mut received = Vec::new();
    let close = loop {
        match client.next().await {
            Some(Ok(Message::Text(t))) => received.push(t.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        close.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
        Some((close_code::PROTOO_CLOSED, REPLACED_REASON.to_owned()))
    );
    assert!(
        received.len() < unread.len(),
        "kept writing after the take: {} of {}",
        received.len(),
        unread.len()
    );
    assert_eq!(received, texts(&unread[..received.len()]));
    let reason = closed(&mut server).await;
    assert_eq!(
        reason,
        CloseReason::new(
            Some(close_code::PROTOO_CLOSED),
            REPLACED_REASON,
            Initiator::Local
        )
    );
}

// ----- (e) without retain_unconfirmed -----

#[tokio::test]
async fn without_retain_nothing_is_kept_and_no_confirmation_ping_is_sent() {
    let config = WsConfig::default()
        .with_ping_interval(None)
        .with_confirm_interval(Duration::from_millis(10));
    let (mut server, mut client) = raw_pair(config).await;
    tokio::time::pause();
    let frames = series("a", 10, 100);
    send_all(&server, &frames);
    let (got, pings) = read_texts(&mut client, frames.len()).await;
    assert_eq!((got, pings), (texts(&frames), vec![]));
    // Nothing else comes, however long we wait (auto-advanced time).
    let waited = tokio::time::timeout(Duration::from_secs(60), client.next()).await;
    assert!(waited.is_err(), "{waited:?}");

    drop(client);
    assert!(closed(&mut server).await.is_lost());
    assert!(server.sink().take_unconfirmed().is_empty());
}

#[tokio::test]
async fn without_retain_the_queued_frames_are_still_given_back() {
    let config = WsConfig::default().with_max_queued_bytes(64 << 20);
    let (server, _client) = raw_pair(config).await;
    let frames = series("c", 32, 512 * 1024);
    send_all(&server, &frames);
    let taken = server.sink().take_unconfirmed();
    // A suffix of what was sent: what the task had not taken yet.
    assert!(!taken.is_empty());
    assert!(taken[..] == frames[frames.len() - taken.len()..]);
    assert_eq!(server.sink().queued_bytes(), 0);
    assert!(matches!(
        server.send(frame("d", 0, 0)),
        Err(TransportError::Closed(_))
    ));
}

// ----- the confirmation interval (paused time) -----

/// A client that reads frames on a plain socket and answers only what the
/// test says (tungstenite answers every ping it reads).
struct RawClient(TcpStream);

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: protoo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(socket.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        RawClient(socket)
    }

    /// The next frame: its opcode and payload (the server's are unmasked).
    async fn next(&mut self) -> (u8, Vec<u8>) {
        let first = self.0.read_u8().await.unwrap();
        let len = match self.0.read_u8().await.unwrap() {
            126 => usize::from(self.0.read_u16().await.unwrap()),
            127 => self.0.read_u64().await.unwrap() as usize,
            len => usize::from(len),
        };
        let mut payload = vec![0; len];
        self.0.read_exact(&mut payload).await.unwrap();
        (first & 0x0F, payload)
    }

    /// Sends a masked control or data frame (a zero mask).
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.0.write_all(&frame).await.unwrap();
    }
}

const TEXT: u8 = 1;
const PING: u8 = 9;
const PONG: u8 = 10;

/// With paused time, an idle test jumps to the next timer while the
/// server may not have read what the client just wrote: the steps where
/// the server must read first run on real time, with an interval it cannot
/// reach meanwhile.
#[tokio::test]
async fn confirmation_pings_go_once_per_interval_until_answered_and_not_when_idle() {
    let interval = Duration::from_secs(5);
    let (listener, addr) = listen().await;
    let config = WsConfig::default()
        .with_ping_interval(None)
        .with_confirm_interval(interval);
    let accept = tokio::spawn({
        let config = config.clone();
        async move { common::accept_one(&listener, &config).await }
    });
    let mut client = RawClient::connect(addr).await;
    let mut server = accept.await.unwrap();
    tokio::time::pause();
    server.sink().retain_unconfirmed();
    let start = Instant::now();
    // The first kept frame is followed by a ping at once.
    server.send(frame("a", 0, 10)).unwrap();
    assert_eq!(client.next().await.0, TEXT);
    let (opcode, payload) = client.next().await;
    assert_eq!((opcode, count(&payload)), (PING, 1));
    assert!(start.elapsed() < Duration::from_millis(100));
    // The next frame's waits for the interval, and counts both.
    server.send(frame("a", 1, 10)).unwrap();
    assert_eq!(client.next().await.0, TEXT);
    for n in 1..=2 {
        // Unanswered (a remote may answer only the latest of two pings):
        // asked again one interval later.
        let (opcode, payload) = client.next().await;
        assert_eq!((opcode, count(&payload)), (PING, 2));
        let at = start.elapsed();
        assert!(
            at >= interval * n && at < interval * n + Duration::from_millis(100),
            "{at:?}"
        );
    }
    // A pong with a count larger than what was written, or not 8 bytes,
    // confirms nothing; the right one confirms both frames.
    tokio::time::resume();
    client.send(PONG, &7u64.to_be_bytes()).await;
    client.send(PONG, b"hello").await;
    client.send(PONG, &2u64.to_be_bytes()).await;
    client.send(TEXT, b"sync").await;
    assert_eq!(text(&mut server).await, "sync");
    // Everything confirmed: an idle connection sends no ping.
    tokio::time::pause();
    let waited = tokio::time::timeout(Duration::from_secs(600), client.next()).await;
    assert!(waited.is_err(), "{waited:?}");
    server.close();
    assert!(server.sink().take_unconfirmed().is_empty());
}

// ----- is_lost, over real sockets -----

async fn remote_close(code: u16) -> CloseReason {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })))
        .await
        .unwrap();
    closed(&mut server).await
}

#[tokio::test]
async fn lost_connections_are_told_from_closes() {
    // A reset or an EOF without a close frame.
    let (mut server, client) = raw_pair(WsConfig::default()).await;
    drop(client);
    assert!(closed(&mut server).await.is_lost());
    // A browser tab closed without protoo.close(), or a restarting proxy.
    assert!(remote_close(close_code::GOING_AWAY).await.is_lost());
    assert!(remote_close(close_code::SERVICE_RESTART).await.is_lost());
    // protoo-client's close(), and an application's code: decisions.
    assert!(!remote_close(close_code::NORMAL).await.is_lost());
    assert!(!remote_close(4000).await.is_lost());
    // A local close.
    let (mut server, _client) = raw_pair(WsConfig::default()).await;
    server.close();
    assert!(!closed(&mut server).await.is_lost());
}

#[test]
fn is_lost_cases() {
    let lost = |code, reason: &str, initiator| CloseReason::new(code, reason, initiator).is_lost();
    assert!(lost(None, "connection lost", Initiator::Remote));
    assert!(lost(None, "anything", Initiator::Remote));
    assert!(lost(Some(1001), "", Initiator::Remote));
    assert!(lost(Some(1006), "", Initiator::Remote));
    assert!(lost(Some(1012), "", Initiator::Remote));
    assert!(lost(None, KEEPALIVE_TIMEOUT_REASON, Initiator::Local));
    assert!(!lost(Some(1000), "", Initiator::Remote));
    assert!(!lost(Some(1005), "", Initiator::Remote));
    assert!(!lost(Some(1008), "", Initiator::Remote));
    assert!(!lost(Some(4000), "", Initiator::Remote));
    assert!(!lost(None, "connection task ended", Initiator::Local));
    assert!(!lost(Some(1001), "", Initiator::Local));
    assert!(!lost(
        Some(1008),
        "outbound queue limit exceeded",
        Initiator::Local
    ));
    assert!(!lost(Some(4000), REPLACED_REASON, Initiator::Replaced));
    assert!(!lost(None, "", Initiator::Replaced));
}

// ----- the memory pair -----

#[tokio::test]
async fn memory_frames_not_read_are_given_back_after_a_cut() {
    let (server, mut client, cable) = memory::pair_with_cable(memory::DEFAULT_QUEUE_LIMIT);
    server.sink().retain_unconfirmed();
    let frames = series("a", 5, 10);
    send_all(&server, &frames);
    assert_eq!(text(&mut client).await, frames[0].as_str());
    assert_eq!(text(&mut client).await, frames[1].as_str());
    client.send(frame("up", 0, 0)).unwrap();
    cable.cut();
    assert!(cable.is_cut());
    // Both sides: lost at once, without reading the rest.
    let lost = CloseReason::new(None, memory::CONNECTION_LOST_REASON, Initiator::Remote);
    assert_eq!(closed(&mut client).await, lost);
    let mut server = server;
    assert_eq!(closed(&mut server).await, lost);
    assert!(lost.is_lost());
    assert!(server.is_closed() && client.is_closed());
    assert!(server.sink().take_unconfirmed() == frames[2..]);
    assert_eq!(server.sink().queued_bytes(), 0);
    // The client did not retain: its unread frame is gone.
    assert!(client.sink().take_unconfirmed().is_empty());
    // Cutting again, or closing, changes nothing.
    cable.cut();
    server.close();
    assert_eq!(closed(&mut server).await, lost);
}

#[tokio::test]
async fn memory_take_from_an_open_pair_then_close() {
    let (server, mut client) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    server.sink().retain_unconfirmed();
    let frames = series("a", 4, 10);
    send_all(&server, &frames);
    assert_eq!(text(&mut client).await, frames[0].as_str());
    assert!(server.sink().take_unconfirmed() == frames[1..]);
    assert!(matches!(
        server.send(frame("b", 0, 0)),
        Err(TransportError::Closed(_))
    ));
    server.close_with(close_code::PROTOO_CLOSED, REPLACED_REASON);
    assert_eq!(
        closed(&mut client).await,
        CloseReason::new(
            Some(close_code::PROTOO_CLOSED),
            REPLACED_REASON,
            Initiator::Remote
        )
    );
}

#[tokio::test]
async fn memory_frames_unread_when_the_remote_closes_are_kept() {
    let (server, mut client) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    server.sink().retain_unconfirmed();
    let frames = series("a", 3, 10);
    send_all(&server, &frames);
    client.close_with(1000, "bye");
    assert_eq!(
        closed(&mut client).await,
        CloseReason::new(Some(1000), "bye", Initiator::Local)
    );
    assert!(server.sink().take_unconfirmed() == frames);
}

#[tokio::test]
async fn memory_cut_without_retain_drops_and_reports_lost() {
    let (mut a, mut b, cable) = memory::pair_with_cable(memory::DEFAULT_QUEUE_LIMIT);
    a.send(frame("a", 0, 0)).unwrap();
    b.send(frame("b", 0, 0)).unwrap();
    cable.cut();
    for side in [&mut a, &mut b] {
        match side.recv().await {
            Inbound::Closed(reason) => assert!(reason.is_lost(), "{reason:?}"),
            other => panic!("{other:?}"),
        }
        assert!(side.sink().take_unconfirmed().is_empty());
    }
    // A cut after a close is nothing.
    let (a, mut b, cable) = memory::pair_with_cable(memory::DEFAULT_QUEUE_LIMIT);
    a.close_with(4000, "bye");
    cable.cut();
    assert!(!cable.is_cut());
    assert_eq!(
        closed(&mut b).await,
        CloseReason::new(Some(4000), "bye", Initiator::Remote)
    );
}

// ----- a close handshake confirms what was written before it -----

#[tokio::test]
async fn the_reply_to_our_close_confirms_every_frame_written_before_it() {
    let (mut server, mut client) = raw_pair(one_ping_config()).await;
    server.sink().retain_unconfirmed();
    let frames = series("d", 20, 100);
    send_all(&server, &frames);
    // A drain's close: the client reads every frame, then the close, and
    // answers it.
    server
        .sink()
        .close(close_code::SERVICE_RESTART, "service restart");
    let mut got = Vec::new();
    loop {
        match client.next().await {
            Some(Ok(Message::Text(t))) => got.push(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, texts(&frames));
    // The stream reports the close at once; the reply confirms: once the
    // server dropped the socket (the client reads its end), it was read.
    let reason = closed_skipping(&mut server).await;
    let _ = client.close(None).await;
    while let Some(Ok(_)) = client.next().await {}
    assert_eq!(reason.code, Some(close_code::SERVICE_RESTART));
    assert!(reason.is_lost(), "{reason:?}");
    assert!(server.sink().take_unconfirmed().is_empty());
}
