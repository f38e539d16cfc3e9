//! What a remote can make the log say (issue 24, findings 2 and 7): its
//! identifiers are escaped and cut in every format, and the warnings it
//! triggers are limited per client address, across its reconnections, with
//! summary lines for the rest. Own test binary: the warning budgets are
//! the process's.

use std::net::SocketAddr;
use std::time::Duration;

use protoo_core::transport::log::{GLOBAL_BURST, MAX_FIELD_BYTES, PERIOD, SOURCE_BURST};
use protoo_core::transport::{Frame, Transport, memory};
use protoo_core::{Peer, PeerConfig, PeerEvent, PeerEvents};
use protoo_testkit::logs::{Format, capture};
use tracing::Level;

/// A server-side peer `id` whose client is at `addr` (`None`: unknown), and
/// the client's end of the transport.
fn connect(id: &str, addr: Option<SocketAddr>) -> (Peer, PeerEvents, Transport) {
    let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    let server_side = match addr {
        Some(addr) => server_side.with_remote_addr(addr),
        None => server_side,
    };
    let (peer, events) = Peer::new(id, server_side, (), PeerConfig::default()).expect("peer");
    (peer, events, client_side)
}

/// Sends `invalid` frames that are not protoo messages, then a notification,
/// and waits for the notification: the invalid ones were handled (and
/// logged) before it.
async fn send_invalid(client: &Transport, events: &mut PeerEvents, invalid: usize) {
    for _ in 0..invalid {
        client.send(Frame::from_static("null")).expect("send");
    }
    client
        .send(Frame::from_static(
            r#"{"notification":true,"method":"sync","data":{}}"#,
        ))
        .expect("send");
    match events.next().await {
        Some(PeerEvent::Notification(n)) => assert_eq!(n.method(), "sync"),
        other => panic!("expected the notification, got {other:?}"),
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

#[tokio::test]
async fn a_peer_id_with_control_characters_makes_one_escaped_json_line() {
    let (_logs_guard, logs) = capture(Format::Json, Level::WARN);
    let id = "mallory\n2026-12-07T00:00:00Z  WARN forged: admin logged in\u{1b}[2J\0";
    let (_peer, mut events, client) = connect(id, Some(addr("192.0.2.10", 1)));
    send_invalid(&client, &mut events, 1).await;
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(line["level"], "WARN");
    assert_eq!(
        line["fields"]["peer_id"],
        r"mallory\n2026-12-07T00:00:00Z  WARN forged: admin logged in\u{1b}[2J\0"
    );
    assert!(!logs.text().contains('\u{1b}'));
}

#[tokio::test]
async fn an_id_over_the_cap_is_cut_with_a_marker() {
    let (_logs_guard, logs) = capture(Format::Text, Level::WARN);
    let id = "p".repeat(10_000);
    let (_peer, mut events, client) = connect(&id, Some(addr("192.0.2.11", 1)));
    send_invalid(&client, &mut events, 1).await;
    let lines = logs.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let shown = format!(
        "peer_id={}...[{} more bytes]",
        "p".repeat(MAX_FIELD_BYTES),
        10_000 - MAX_FIELD_BYTES
    );
    assert!(lines[0].contains(&shown), "{}", lines[0]);
    assert!(lines[0].len() < 2 * MAX_FIELD_BYTES + 200, "{}", lines[0]);
}

/// Finding 7: one client reconnecting at once after each connection,
/// sending invalid frames on each, for ten minutes. Before, each connection
/// had a budget of its own (5 WARN lines, then a summary at its close); now
/// the address has one, whatever the number of connections.
#[tokio::test(start_paused = true)]
async fn a_reconnecting_flooder_gets_a_bounded_number_of_warnings_per_minute() {
    const MINUTES: usize = 10;
    const CONNECTIONS_PER_SECOND: usize = 4;
    const INVALID_PER_CONNECTION: usize = 8;
    let (_logs_guard, logs) = capture(Format::Text, Level::WARN);
    let mut port = 1024;
    let mut per_minute = Vec::new();
    for _ in 0..MINUTES {
        let before = logs.lines().len();
        for _ in 0..PERIOD.as_secs() {
            for _ in 0..CONNECTIONS_PER_SECOND {
                port += 1;
                let (peer, mut events, client) =
                    connect("flooder", Some(addr("198.51.100.7", port)));
                send_invalid(&client, &mut events, INVALID_PER_CONNECTION).await;
                peer.close();
                while events.next().await.is_some() {}
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        per_minute.push(logs.lines().len() - before);
    }
    let sent = MINUTES * 60 * CONNECTIONS_PER_SECOND * INVALID_PER_CONNECTION;
    let lines = logs.lines();
    eprintln!(
        "{sent} invalid frames on {} connections in {MINUTES} minutes: {} WARN lines, per minute {per_minute:?}",
        MINUTES * 60 * CONNECTIONS_PER_SECOND,
        lines.len()
    );
    // The source's burst, its summary and the global summary, at most.
    let bound = SOURCE_BURST as usize + 2;
    assert!(
        per_minute.iter().all(|&n| n <= bound),
        "{per_minute:?}: {lines:#?}"
    );
    assert!(lines.len() <= MINUTES * bound);
    // Every minute after the first says how many were held back.
    let summaries = logs.matching("held_back=");
    assert!(summaries.len() >= MINUTES - 1, "{lines:#?}");
    // None of them are lost: the held back and the logged add up to what
    // was sent, but for the last period's, not yet summed up.
    let held_back: usize = summaries
        .iter()
        .map(|line| {
            let n = line.split("held_back=").nth(1).expect("a count");
            n.split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .expect("a number")
        })
        .sum();
    let warned = lines.len() - summaries.len();
    assert!(held_back + warned <= sent);
    let last_period = PERIOD.as_secs() as usize * CONNECTIONS_PER_SECOND * INVALID_PER_CONNECTION;
    assert!(held_back + warned >= sent - last_period);
}

/// Without an address, a peer's warnings are its own (in-process
/// transports): 5, then a summary at its close.
#[tokio::test]
async fn without_an_address_each_connection_has_its_budget() {
    let (_logs_guard, logs) = capture(Format::Text, Level::WARN);
    for round in 0..3 {
        let (peer, mut events, client) = connect("local", None);
        send_invalid(&client, &mut events, 8).await;
        peer.close();
        while events.next().await.is_some() {}
        let lines = logs.lines();
        assert_eq!(
            lines.len(),
            (round + 1) * (SOURCE_BURST as usize + 1),
            "{lines:#?}"
        );
        assert!(lines.last().unwrap().contains("held_back=3"), "{lines:#?}");
    }
    const { assert!(3 * (SOURCE_BURST + 1) < GLOBAL_BURST) };
}
