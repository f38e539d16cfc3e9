//! Codec hot paths: decode and encode of a typical request, and the encode
//! behind a broadcast to 1000 peers (one encode, 1000 shared clones).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protoo_codec::{Bytes, Frame, Id, Message, encode};
use serde::Serialize;

/// A typical ~200-byte request, shaped like mediasoup-demo's traffic.
const REQUEST: &str = r#"{"request":true,"id":4187263,"method":"produce","data":{"transportId":"7d0e2f7a-9b1c-4c3e-8f5a-1e2d3c4b5a69","kind":"audio","rtpParameters":{"mid":"0","codecs":[{"mimeType":"audio/opus"}]},"appData":{}}}"#;

#[derive(Serialize)]
struct Chat<'a> {
    #[serde(rename = "peerId")]
    peer_id: &'a str,
    text: &'a str,
}

fn codec(c: &mut Criterion) {
    let frame = Bytes::from_static(REQUEST.as_bytes());
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));
    group.bench_function("decode_request_200B", |b| {
        b.iter(|| Message::decode(black_box(frame.clone())))
    });
    let Ok(Message::Request(request)) = Message::decode(frame.clone()) else {
        panic!("bench input decodes")
    };
    group.bench_function("encode_request_200B", |b| {
        b.iter(|| {
            encode::request(
                black_box(&request.id),
                black_box("produce"),
                black_box(&request.data),
            )
        })
    });
    group.bench_function("encode_response_forwarding_payload", |b| {
        b.iter(|| encode::success(black_box(&request.id), black_box(&request.data)))
    });
    group.finish();

    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(1000));
    let chat = Chat {
        peer_id: "alice",
        text: "hello everybody, this is a chat message of ordinary length",
    };
    group.bench_function("encode_once_queue_1000", |b| {
        let mut queues: Vec<Vec<Frame>> = (0..1000).map(|_| Vec::with_capacity(1)).collect();
        b.iter(|| {
            let frame = encode::notification("chat", black_box(&chat)).expect("encodes");
            for q in &mut queues {
                q.clear();
                q.push(frame.clone());
            }
        })
    });
    group.finish();
    let _ = Id::from(0u32);
}

criterion_group!(benches, codec);
criterion_main!(benches);
