//! The `metrics` feature with a real Prometheus recorder installed in the
//! test process, scraped over HTTP: real WebSocket peers connect, exchange
//! messages and get closed, and the counters and gauges move by exactly what
//! they did; ten thousand distinct method names and peer ids leave the
//! number of series bounded.
//!
//! The clients are raw WebSocket clients (tokio-tungstenite), not protoo-rs
//! peers: a protoo-rs client in this process would count its own messages
//! into the same recorder. Tests run one at a time (`SERIAL`): the recorder
//! is process-wide.

#![cfg(feature = "metrics")]

mod common;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use protoo_server::transport::{Inbound, memory};
use protoo_server::{
    Frame, PeerConfig, PeerEvent, Rooms, ServerConfig, Transport, WebSocketServer,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::{RawWs, eventually, guard, handshake, raw_http, refused, upgrade_request};
use support::Fixture;

/// One test at a time: they share the process-wide recorder.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The recorder, installed once for the whole test binary (before any peer
/// is created: peers register their metrics when they are created).
fn recorder() -> &'static PrometheusHandle {
    static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
    RECORDER.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder")
    })
}

/// `GET /metrics` served on 127.0.0.1:0 by an axum router, as an
/// application would; scraped over HTTP.
struct Scraper {
    addr: SocketAddr,
}

impl Scraper {
    async fn start() -> Scraper {
        let handle = recorder().clone();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                protoo_server::core::metrics::flush();
                let text = handle.render();
                async move { text }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Scraper { addr }
    }

    /// The scrape's text.
    async fn text(&self) -> String {
        let response = raw_http(
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(response.status, 200);
        response.body
    }

    /// Every sample of the scrape: `name{labels}` to value.
    async fn samples(&self) -> Samples {
        Samples(parse(&self.text().await))
    }
}

fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[derive(Debug)]
struct Samples(HashMap<String, f64>);

impl Samples {
    /// The value of a series (0 when it does not exist yet).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// How much `series` moved since `before`.
    fn delta(&self, before: &Samples, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

/// A raw WebSocket client speaking protoo by hand.
struct Client {
    ws: RawWs,
    /// Bytes of the text messages sent and received.
    sent: usize,
    received: usize,
}

impl Client {
    async fn connect(addr: SocketAddr, room: &str, peer: &str) -> Client {
        let request = upgrade_request(addr, &Fixture::target(room, peer), Some("protoo"), &[]);
        let (ws, _) = guard("handshake", handshake(addr, request))
            .await
            .unwrap_or_else(|refused| panic!("refused: {refused:?}"));
        Client {
            ws,
            sent: 0,
            received: 0,
        }
    }

    async fn send(&mut self, message: Value) {
        let text = message.to_string();
        self.sent += text.len();
        guard("send", self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    async fn request(&mut self, id: u32, method: &str, data: Value) {
        self.send(json!({"request": true, "id": id, "method": method, "data": data}))
            .await;
    }

    /// The next protoo message.
    async fn next(&mut self) -> Value {
        loop {
            match guard("next message", self.ws.next()).await {
                Some(Ok(Message::Text(text))) => {
                    self.received += text.len();
                    return serde_json::from_str(&text).expect("JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads until the response to request `id`.
    async fn response(&mut self, id: u32) -> Value {
        let message = self.next().await;
        assert_eq!(message["response"], true, "{message}");
        assert_eq!(message["id"], id, "{message}");
        message
    }

    async fn close(&mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        guard("close", self.ws.close(Some(frame)))
            .await
            .expect("close");
    }

    /// Reads until the end of the connection (the close handshake
    /// complete): the code of the server's close frame.
    async fn closed(&mut self) -> u16 {
        let mut code = None;
        loop {
            match guard("the close", self.ws.next()).await {
                Some(Ok(Message::Close(frame))) => {
                    code = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                }
                Some(Ok(Message::Text(text))) => self.received += text.len(),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return code.expect("the server's close frame"),
            }
        }
    }
}

const CONNECTIONS: &str = "protoo_connections";
const PEERS: &str = "protoo_peers";
const ROOMS: &str = "protoo_rooms";

fn kind(name: &str, kind: &str) -> String {
    format!("{name}{{kind=\"{kind}\"}}")
}

fn outcome(name: &str, outcome: &str) -> String {
    format!("{name}{{outcome=\"{outcome}\"}}")
}

fn closed(code: &str, initiator: &str) -> String {
    format!("protoo_peers_closed_total{{code=\"{code}\",initiator=\"{initiator}\"}}")
}

#[tokio::test]
async fn counters_and_gauges_follow_real_peers() {
    let _serial = SERIAL.lock().await;
    recorder();
    let scraper = Scraper::start().await;
    let mut fixture = Fixture::start(ServerConfig::default(), PeerConfig::default()).await;
    let before = scraper.samples().await;

    // Rejected upgrades, by status.
    let no_protoo = upgrade_request(fixture.addr, &Fixture::target("m", "x"), None, &[]);
    assert_eq!(refused(fixture.addr, no_protoo).await.status, 403);
    let no_peer = upgrade_request(fixture.addr, "/?roomId=m", Some("protoo"), &[]);
    assert_eq!(refused(fixture.addr, no_peer).await.status, 400);

    let mut a = Client::connect(fixture.addr, "m", "a").await;
    let mut b = Client::connect(fixture.addr, "m", "b").await;
    let mut c = Client::connect(fixture.addr, "m", "c").await;
    eventually("three peers admitted", || {
        fixture.rooms.get("m").is_some_and(|room| room.len() == 3)
    })
    .await;
    let now = scraper.samples().await;
    assert_eq!(now.delta(&before, CONNECTIONS), 3.0);
    assert_eq!(now.delta(&before, PEERS), 3.0);
    assert_eq!(now.delta(&before, ROOMS), 1.0);
    let rejected = |status| format!("protoo_upgrades_rejected_total{{status=\"{status}\"}}");
    assert_eq!(now.delta(&before, &rejected("403")), 1.0);
    assert_eq!(now.delta(&before, &rejected("400")), 1.0);

    // Two echoes, an unknown method, a broadcast, a relayed notification.
    for id in 1..=2 {
        a.request(id, "echo", json!({"n": id})).await;
        assert_eq!(a.response(id).await["ok"], true);
    }
    a.request(3, "nope", json!({})).await;
    assert_eq!(a.response(3).await["errorCode"], 404);
    a.request(4, "broadcast", json!({"text": "hi"})).await;
    assert_eq!(a.response(4).await["ok"], true);
    a.send(json!({"notification": true, "method": "relay", "data": {"text": "yo"}}))
        .await;
    for other in [&mut b, &mut c] {
        for _ in 0..2 {
            assert_eq!(other.next().await["method"], "chat");
        }
    }
    // The server asks `a`, which answers: a request the server sent.
    a.request(5, "ask", json!({"method": "q", "data": {}}))
        .await;
    let asked = a.next().await;
    assert_eq!(asked["method"], "q");
    let id = asked["id"].as_u64().expect("an id");
    a.send(json!({"response": true, "id": id, "ok": true, "data": {"fine": true}}))
        .await;
    assert_eq!(a.response(5).await["ok"], true);

    let now = scraper.samples().await;
    let received = "protoo_messages_received_total";
    let sent = "protoo_messages_sent_total";
    assert_eq!(now.delta(&before, &kind(received, "request")), 5.0);
    assert_eq!(now.delta(&before, &kind(received, "notification")), 1.0);
    assert_eq!(now.delta(&before, &kind(received, "response")), 1.0);
    assert_eq!(now.delta(&before, &kind(sent, "response")), 5.0);
    assert_eq!(now.delta(&before, &kind(sent, "notification")), 4.0);
    assert_eq!(now.delta(&before, &kind(sent, "request")), 1.0);
    assert_eq!(now.delta(&before, &kind(sent, "other")), 0.0);
    let answered = "protoo_requests_answered_total";
    assert_eq!(now.delta(&before, &outcome(answered, "ok")), 4.0);
    assert_eq!(now.delta(&before, &outcome(answered, "rejected_4xx")), 1.0);
    assert_eq!(
        now.delta(&before, &outcome("protoo_requests_sent_total", "ok")),
        1.0
    );
    assert_eq!(
        now.delta(&before, "protoo_request_duration_seconds_count"),
        1.0
    );
    let bytes_in = (a.sent + b.sent + c.sent) as f64;
    let bytes_out = (a.received + b.received + c.received) as f64;
    assert_eq!(now.delta(&before, "protoo_received_bytes_total"), bytes_in);
    assert_eq!(now.delta(&before, "protoo_sent_bytes_total"), bytes_out);

    // The server closes `c` (4000); `b` closes with 1000.
    fixture.server_peer("m", "c").expect("c").close();
    assert_eq!(c.closed().await, 4000);
    b.close(1000).await;
    assert_eq!(b.closed().await, 1000);
    let mut others = Vec::new();
    fixture.wait_closed("c", &mut others).await;
    if !others.iter().any(|(id, _)| id == "b") {
        fixture.wait_closed("b", &mut others).await;
    }
    let now = scraper.samples().await;
    assert_eq!(now.delta(&before, &closed("4000", "local")), 1.0);
    assert_eq!(now.delta(&before, &closed("1000", "remote")), 1.0);
    assert_eq!(now.delta(&before, PEERS), 1.0);
    assert_eq!(now.delta(&before, ROOMS), 1.0);
    // A connection's task ends after its close handshake: the server's
    // count (dropped after the gauge's) says when.
    eventually("two connections ended", || {
        fixture.handle.connections() == 1
    })
    .await;
    let now = scraper.samples().await;
    assert_eq!(now.delta(&before, CONNECTIONS), 1.0);

    // The last peer leaves with a code of the application's: `other`.
    a.close(4321).await;
    assert_eq!(a.closed().await, 4321);
    fixture.wait_closed("a", &mut others).await;
    eventually("no connection left", || fixture.handle.connections() == 0).await;
    let now = scraper.samples().await;
    assert_eq!(now.delta(&before, &closed("other", "remote")), 1.0);
    assert_eq!(now.delta(&before, PEERS), 0.0);
    assert_eq!(now.delta(&before, ROOMS), 0.0);
    assert_eq!(now.delta(&before, CONNECTIONS), 0.0);
}

/// The protoo series of a scrape.
fn protoo_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.starts_with("protoo_"))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

#[tokio::test]
async fn ten_thousand_names_and_ids_keep_the_series_bounded() {
    let _serial = SERIAL.lock().await;
    recorder();
    let scraper = Scraper::start().await;

    // 10,000 peers with distinct ids in distinct rooms, each sending a
    // request and a notification with distinct methods, an invalid frame
    // and a response nobody asked for, answered with an error code of its
    // own and closed by the remote with a close code and reason of its own.
    let rooms: Rooms = Rooms::new();
    let mut remotes: Vec<Transport> = Vec::new();
    for n in 0..10_000u32 {
        let (local, remote) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
        let mut events = rooms
            .admit(format!("room-{n}"), format!("peer-{n}"))
            .join(local, ())
            .await
            .expect("join")
            .events;
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    PeerEvent::Request(request) => {
                        let code = 100 + (n % 900) as u16;
                        request.reject(code, format!("reason-{n}"));
                    }
                    PeerEvent::Notification(_) | PeerEvent::Closed(_) => {}
                    PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {}
                }
            }
        });
        let frames = [
            format!(r#"{{"request":true,"id":{n},"method":"method-{n}","data":{{}}}}"#),
            format!(r#"{{"notification":true,"method":"note-{n}","data":{{}}}}"#),
            format!("not json {n}"),
            format!(r#"{{"response":true,"id":{},"ok":true}}"#, n + 1_000_000),
        ];
        for frame in frames {
            remote.send(Frame::from(frame)).expect("send");
        }
        remotes.push(remote);
    }
    for (n, remote) in remotes.iter_mut().enumerate() {
        let Inbound::Text(_) = guard("the answer", remote.recv()).await else {
            panic!("peer-{n} closed before answering")
        };
        remote.close_with(3000 + (n % 2000) as u16, &format!("bye-{n}"));
    }
    eventually("every room closed", || rooms.is_empty()).await;

    // Over real WebSockets: upgrades rejected with statuses of the
    // application's choosing.
    let mut server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("bind");
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let status = request
                .query_param("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(400);
            request.reject(status, "no");
        }
    });
    for status in 400..600u16 {
        let request = upgrade_request(addr, &format!("/?status={status}"), Some("protoo"), &[]);
        assert_eq!(refused(addr, request).await.status, status);
    }

    let text = scraper.text().await;
    let series = protoo_series(&text);
    for remote_string in ["peer-", "room-", "method-", "note-", "reason-", "bye-"] {
        assert!(
            !text.contains(remote_string),
            "a label carries a remote's string ({remote_string}):\n{text}"
        );
    }
    let closes: Vec<_> = series
        .iter()
        .filter(|s| s.starts_with("protoo_peers_closed_total"))
        .collect();
    assert!(
        closes.contains(&&closed("other", "remote").as_str()),
        "{closes:?}"
    );
    let statuses = series
        .iter()
        .filter(|s| s.starts_with("protoo_upgrades_rejected_total"))
        .count();
    // The known statuses plus 4xx and 5xx.
    assert!(statuses <= 11, "{statuses} status series");
    // Every metric with every label value it can have: far fewer than the
    // 10,000 names and ids sent.
    assert!(
        series.len() <= 150,
        "{} protoo series:\n{}",
        series.len(),
        series.join("\n")
    );
    println!(
        "{} protoo series after 10,000 distinct names and ids",
        series.len()
    );
}
