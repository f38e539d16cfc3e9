//! Binary messages: dropped and refused by default (protoo is text only),
//! delivered and sent in order, counted against the queue limit, with
//! `WsConfig::binary_messages` (for non-protoo endpoints).

mod common;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use protoo_transport::ws::WsConfig;
use protoo_transport::{Frame, Inbound, TransportError, close_code, memory};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn binary_is_dropped_and_refused_by_default() {
    let (mut server, mut client) = raw_pair(WsConfig::default()).await;
    client.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    client.send(Message::text("after")).await.unwrap();
    assert_eq!(server.recv().await, Inbound::Text(Bytes::from("after")));

    match server.send_binary(Bytes::from_static(b"\x00\x01")) {
        Err(TransportError::BinaryNotSent { data, .. }) => assert_eq!(&data[..], b"\x00\x01"),
        other => panic!("expected BinaryNotSent, got {other:?}"),
    }
    assert!(!server.is_closed());

    // Other transports refuse binary messages too (the default method).
    let (memory, _other) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    assert!(matches!(
        memory.send_binary(Bytes::from_static(b"x")),
        Err(TransportError::BinaryNotSent { .. })
    ));
}

#[tokio::test]
async fn binary_messages_when_enabled_keep_their_order_with_text() {
    let config = WsConfig::default().with_binary_messages(true);
    let (mut server, mut client) = raw_pair(config).await;

    let payload: Vec<u8> = (0..=255).collect();
    client.send(Message::binary(payload.clone())).await.unwrap();
    client.send(Message::text("text")).await.unwrap();
    client.send(Message::binary(Vec::new())).await.unwrap();
    assert_eq!(
        server.recv().await,
        Inbound::Binary(Bytes::from(payload.clone()))
    );
    assert_eq!(server.recv().await, Inbound::Text(Bytes::from("text")));
    assert_eq!(server.recv().await, Inbound::Binary(Bytes::new()));

    server.send(Frame::from_static("one")).unwrap();
    server.send_binary(Bytes::from(payload.clone())).unwrap();
    server.send(Frame::from_static("three")).unwrap();
    let mut received = Vec::new();
    while received.len() < 3 {
        match client.next().await.unwrap().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            message => received.push(message),
        }
    }
    assert_eq!(
        received,
        vec![
            Message::text("one"),
            Message::binary(payload),
            Message::text("three")
        ]
    );
}

#[tokio::test]
async fn binary_messages_count_against_the_queue_limit() {
    let config = WsConfig::default()
        .with_binary_messages(true)
        .with_max_queued_bytes(4096);
    let (mut server, _client) = raw_pair(config).await;
    // The first is taken (a queue under its limit takes one message of any
    // size); the server does not let the writer run before the next, which
    // finds the queue over its limit: refused, and the transport is closed
    // as a slow consumer.
    server.send_binary(Bytes::from(vec![0u8; 8192])).unwrap();
    match server.send_binary(Bytes::from(vec![0u8; 8192])) {
        Err(TransportError::BinaryNotSent { data, .. }) => assert_eq!(data.len(), 8192),
        other => panic!("expected BinaryNotSent, got {other:?}"),
    }
    assert!(server.is_closed());
    let reason = closed_skipping(&mut server).await;
    assert_eq!(reason.code, Some(close_code::POLICY_VIOLATION));
    assert!(matches!(
        server.send_binary(Bytes::from_static(b"late")),
        Err(TransportError::BinaryNotSent { .. })
    ));
}
