//! The stand-in's object graph and close cascade.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::memory::lock;
use super::*;

fn audio() -> Value {
    json!({ "codecs": [{ "mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000 }],
            "encodings": [{ "ssrc": 1111 }] })
}

async fn pair(router: &Arc<dyn Router>) -> (Arc<dyn Transport>, Arc<dyn Transport>) {
    let options = TransportOptions::default();
    let send = router
        .create_transport(TransportKind::WebRtc, options.clone())
        .await
        .unwrap();
    let recv = router
        .create_transport(TransportKind::WebRtc, options)
        .await
        .unwrap();
    (send, recv)
}

fn recorder(consumer: &Arc<dyn Consumer>) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    consumer.on_event(Arc::new(move |event| {
        lock(&log).push(format!("{event:?}"));
    }));
    seen
}

#[tokio::test]
async fn closing_a_producer_closes_its_consumers_once() {
    let worker = MemoryWorker::new();
    let router = worker.create_router().await.unwrap();
    let (send, recv) = pair(&router).await;
    let caps = router.rtp_capabilities();
    let producer = send
        .produce(MediaKind::Audio, audio(), json!({}))
        .await
        .unwrap();
    assert!(router.can_consume(producer.id(), &caps));
    assert!(!router.can_consume(producer.id(), &json!({ "codecs": [] })));
    let consumer = recv.consume(producer.id(), &caps, true).await.unwrap();
    assert_eq!(consumer.kind(), MediaKind::Audio);
    assert_eq!(consumer.consumer_type(), "simple");
    let seen = recorder(&consumer);
    producer.pause().await.unwrap();
    assert!(consumer.producer_paused());
    producer.resume().await.unwrap();
    producer.close();
    producer.close();
    recv.close();
    assert_eq!(
        *lock(&seen),
        ["ProducerPause", "ProducerResume", "ProducerClose"]
    );
    assert!(!router.can_consume(producer.id(), &caps));
    assert!(recv.consume(producer.id(), &caps, true).await.is_err());
}

#[tokio::test]
async fn closing_a_router_closes_everything_and_counts() {
    let worker = MemoryWorker::new();
    let router = worker.create_router().await.unwrap();
    let other = worker.create_router().await.unwrap();
    assert_eq!(worker.live_routers(), 2);
    let (send, recv) = pair(&router).await;
    let producer = send
        .produce(MediaKind::Audio, audio(), json!({ "peerId": "a" }))
        .await
        .unwrap();
    let consumer = recv
        .consume(producer.id(), &router.rtp_capabilities(), false)
        .await
        .unwrap();
    let seen = recorder(&consumer);
    router.close();
    router.close();
    assert!(router.closed());
    assert_eq!(worker.live_routers(), 1);
    assert_eq!(*lock(&seen), ["TransportClose"]);
    assert!(
        send.produce(MediaKind::Audio, audio(), json!({}))
            .await
            .is_err()
    );
    assert!(
        router
            .create_transport(TransportKind::Plain, TransportOptions::default())
            .await
            .is_err()
    );
    other.close();
    assert_eq!(worker.live_routers(), 0);
}

#[tokio::test]
async fn transports_have_plausible_parameters() {
    let worker = MemoryWorker::new();
    let router = worker.create_router().await.unwrap();
    let options = TransportOptions {
        force_tcp: true,
        sctp_streams: Some(json!({ "OS": 1024, "MIS": 1024 })),
        ..TransportOptions::default()
    };
    let webrtc = router
        .create_transport(TransportKind::WebRtc, options)
        .await
        .unwrap();
    assert_eq!(webrtc.ice_candidates().as_array().unwrap().len(), 1);
    assert_eq!(webrtc.sctp_parameters()["MIS"], 1024);
    assert!(webrtc.dtls_parameters()["fingerprints"][0]["value"].is_string());
    let before = webrtc.ice_parameters();
    assert_ne!(webrtc.restart_ice().await.unwrap(), before);
    assert!(webrtc.connect(json!({})).await.is_err());
    webrtc.connect(webrtc.dtls_parameters()).await.unwrap();
    assert!(webrtc.connect(webrtc.dtls_parameters()).await.is_err());
    let plain = router
        .create_transport(
            TransportKind::Plain,
            TransportOptions {
                comedia: true,
                ..TransportOptions::default()
            },
        )
        .await
        .unwrap();
    let (ip, port, rtcp) = plain.tuple();
    assert_eq!(ip, "127.0.0.1");
    assert_eq!(rtcp, Some(port + 1));
}
