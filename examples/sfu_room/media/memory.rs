//! The stand-in's worker, routers and transports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::{Value, json};

use super::tracks::{MemoryConsumer, MemoryProducer};
use super::{
    BoxFuture, Consumer, ConsumerEvent, MediaError, MediaKind, MediaResult, Producer, Router,
    Transport, TransportKind, TransportOptions, Worker,
};

/// A poisoned lock's data is still consistent here (no update spans a
/// panic point), so a panic elsewhere does not stop the media.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `value` after a trip through the scheduler, as an IPC answer would come.
pub(super) fn later<'a, T: Send + 'a>(make: impl FnOnce() -> T + Send + 'a) -> BoxFuture<'a, T> {
    Box::pin(async move {
        tokio::task::yield_now().await;
        make()
    })
}

/// Ids and ports of one worker.
#[derive(Debug, Default)]
struct Counters {
    ids: AtomicU64,
    live_routers: AtomicUsize,
}

impl Counters {
    /// A fresh id shaped like mediasoup's (a UUID).
    fn id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
    }

    fn number(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The in-memory stand-in for a mediasoup worker.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryWorker {
    counters: Arc<Counters>,
}

impl MemoryWorker {
    /// A worker with no routers.
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl Worker for MemoryWorker {
    fn create_router(&self) -> BoxFuture<'_, MediaResult<Arc<dyn Router>>> {
        later(move || {
            self.counters.live_routers.fetch_add(1, Ordering::SeqCst);
            let router: Arc<dyn Router> = Arc::new(MemoryRouter {
                id: self.counters.id(),
                counters: self.counters.clone(),
                closed: AtomicBool::new(false),
                state: Arc::new(Mutex::new(RouterState::default())),
            });
            Ok(router)
        })
    }

    fn live_routers(&self) -> usize {
        self.counters.live_routers.load(Ordering::SeqCst)
    }
}

/// What a router's transports share: its producers by id, for `consume`.
#[derive(Default)]
pub(super) struct RouterState {
    transports: Vec<Arc<MemoryTransport>>,
    pub(super) producers: HashMap<String, Arc<MemoryProducer>>,
}

struct MemoryRouter {
    id: String,
    counters: Arc<Counters>,
    closed: AtomicBool,
    state: Arc<Mutex<RouterState>>,
}

/// The router's codecs: Opus and VP8.
fn codecs() -> Value {
    json!([
        { "kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
          "preferredPayloadType": 100, "parameters": {},
          "rtcpFeedback": [{ "type": "nack" }, { "type": "transport-cc" }] },
        { "kind": "video", "mimeType": "video/VP8", "clockRate": 90000,
          "preferredPayloadType": 101, "parameters": {},
          "rtcpFeedback": [{ "type": "nack" }, { "type": "nack", "parameter": "pli" },
                           { "type": "ccm", "parameter": "fir" }, { "type": "goog-remb" },
                           { "type": "transport-cc" }] }
    ])
}

/// Whether `rtp_capabilities` lists a codec of `producer`'s.
pub(super) fn supports(rtp_capabilities: &Value, producer: &MemoryProducer) -> bool {
    let wanted = producer.rtp_parameters["codecs"][0]["mimeType"].as_str();
    let kind = serde_json::to_value(producer.kind).unwrap_or_default();
    rtp_capabilities["codecs"].as_array().is_some_and(|codecs| {
        codecs.iter().any(|codec| match wanted {
            Some(mime) => codec["mimeType"]
                .as_str()
                .is_some_and(|have| have.eq_ignore_ascii_case(mime)),
            None => codec["kind"] == kind,
        })
    })
}

impl Router for MemoryRouter {
    fn id(&self) -> &str {
        &self.id
    }

    fn rtp_capabilities(&self) -> Value {
        json!({
            "codecs": codecs(),
            "headerExtensions": [
                { "kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid",
                  "preferredId": 1, "preferredEncrypt": false, "direction": "sendrecv" },
                { "kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid",
                  "preferredId": 1, "preferredEncrypt": false, "direction": "sendrecv" }
            ]
        })
    }

    fn can_consume(&self, producer_id: &str, rtp_capabilities: &Value) -> bool {
        let state = lock(&self.state);
        state
            .producers
            .get(producer_id)
            .is_some_and(|producer| supports(rtp_capabilities, producer))
    }

    fn create_transport(
        &self,
        kind: TransportKind,
        options: TransportOptions,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Transport>>> {
        later(move || {
            if self.closed() {
                return Err(MediaError("router closed".into()));
            }
            let transport = Arc::new(MemoryTransport {
                id: self.counters.id(),
                kind,
                options,
                port: 40000 + (self.counters.number() % 20000) as u16,
                ice_ufrag: Mutex::new(self.counters.id()),
                counters: self.counters.clone(),
                router: Arc::downgrade(&self.state),
                closed: AtomicBool::new(false),
                connected: AtomicBool::new(false),
                objects: Mutex::new(Objects::default()),
            });
            lock(&self.state).transports.push(transport.clone());
            let transport: Arc<dyn Transport> = transport;
            Ok(transport)
        })
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let transports = std::mem::take(&mut lock(&self.state).transports);
        // Every consumer hears of its transport first, as in mediasoup,
        // where a router's end is its transports' end.
        for transport in &transports {
            transport.close_consumers();
        }
        for transport in transports {
            transport.close();
        }
        self.counters.live_routers.fetch_sub(1, Ordering::SeqCst);
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A transport's producers and consumers, for its close.
#[derive(Default)]
struct Objects {
    producers: Vec<Arc<MemoryProducer>>,
    consumers: Vec<Arc<MemoryConsumer>>,
}

struct MemoryTransport {
    id: String,
    kind: TransportKind,
    options: TransportOptions,
    port: u16,
    ice_ufrag: Mutex<String>,
    counters: Arc<Counters>,
    router: Weak<Mutex<RouterState>>,
    closed: AtomicBool,
    connected: AtomicBool,
    objects: Mutex<Objects>,
}

impl MemoryTransport {
    fn close_consumers(&self) {
        let consumers = std::mem::take(&mut lock(&self.objects).consumers);
        for consumer in consumers {
            consumer.close_because(ConsumerEvent::TransportClose);
        }
    }

    fn open(&self) -> MediaResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(MediaError(format!("transport {} closed", self.id)))
        } else {
            Ok(())
        }
    }
}

impl Transport for MemoryTransport {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn options(&self) -> &TransportOptions {
        &self.options
    }

    fn ice_parameters(&self) -> Value {
        let ufrag = lock(&self.ice_ufrag).clone();
        json!({ "usernameFragment": ufrag, "password": format!("{ufrag}-pwd"), "iceLite": true })
    }

    fn ice_candidates(&self) -> Value {
        let protocols: &[&str] = if self.options.force_tcp {
            &["tcp"]
        } else {
            &["udp", "tcp"]
        };
        protocols
            .iter()
            .map(|protocol| {
                json!({ "foundation": format!("{protocol}candidate"), "priority": 1076302079,
                        "address": "127.0.0.1", "ip": "127.0.0.1", "protocol": protocol,
                        "port": self.port, "type": "host", "tcpType": "passive" })
            })
            .collect()
    }

    fn dtls_parameters(&self) -> Value {
        let digest: Vec<String> = self
            .id
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .take(32)
            .map(|byte| format!("{byte:02X}"))
            .collect();
        json!({ "role": "auto",
                "fingerprints": [{ "algorithm": "sha-256", "value": digest.join(":") }] })
    }

    fn sctp_parameters(&self) -> Value {
        match &self.options.sctp_streams {
            Some(streams) => json!({ "port": 5000, "OS": streams["OS"], "MIS": streams["MIS"],
                                     "maxMessageSize": 262144 }),
            None => Value::Null,
        }
    }

    fn tuple(&self) -> (String, u16, Option<u16>) {
        let rtcp = (!self.options.rtcp_mux).then_some(self.port + 1);
        ("127.0.0.1".into(), self.port, rtcp)
    }

    fn connect(&self, dtls_parameters: Value) -> BoxFuture<'_, MediaResult<()>> {
        later(move || {
            self.open()?;
            if self.kind == TransportKind::WebRtc && !dtls_parameters["fingerprints"].is_array() {
                return Err(MediaError("missing dtlsParameters.fingerprints".into()));
            }
            if self.connected.swap(true, Ordering::SeqCst) {
                return Err(MediaError("connect() already called".into()));
            }
            Ok(())
        })
    }

    fn restart_ice(&self) -> BoxFuture<'_, MediaResult<Value>> {
        later(move || {
            self.open()?;
            *lock(&self.ice_ufrag) = self.counters.id();
            Ok(self.ice_parameters())
        })
    }

    fn produce(
        &self,
        kind: MediaKind,
        rtp_parameters: Value,
        app_data: Value,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Producer>>> {
        later(move || {
            self.open()?;
            if !rtp_parameters["codecs"].is_array() {
                return Err(MediaError("missing rtpParameters.codecs".into()));
            }
            let router = self
                .router
                .upgrade()
                .ok_or(MediaError("router closed".into()))?;
            let producer = Arc::new(MemoryProducer {
                id: self.counters.id(),
                kind,
                rtp_parameters,
                app_data,
                router: Arc::downgrade(&router),
                paused: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                consumers: Mutex::new(Vec::new()),
            });
            lock(&router)
                .producers
                .insert(producer.id.clone(), producer.clone());
            lock(&self.objects).producers.push(producer.clone());
            let producer: Arc<dyn Producer> = producer;
            Ok(producer)
        })
    }

    fn consume(
        &self,
        producer_id: &str,
        rtp_capabilities: &Value,
        paused: bool,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Consumer>>> {
        let producer_id = producer_id.to_owned();
        let rtp_capabilities = rtp_capabilities.clone();
        later(move || {
            self.open()?;
            let router = self
                .router
                .upgrade()
                .ok_or(MediaError("router closed".into()))?;
            let producer = lock(&router).producers.get(&producer_id).cloned();
            let producer = producer
                .filter(|producer| supports(&rtp_capabilities, producer))
                .ok_or_else(|| MediaError(format!("cannot consume producer {producer_id}")))?;
            let encodings = producer.rtp_parameters["encodings"]
                .as_array()
                .map_or(1, Vec::len);
            let ssrc = 100_000_000 + self.counters.number();
            let consumer = Arc::new(MemoryConsumer {
                id: self.counters.id(),
                kind: producer.kind,
                rtp_parameters: json!({
                    "mid": self.counters.number().to_string(),
                    "codecs": producer.rtp_parameters["codecs"].clone(),
                    "headerExtensions": [],
                    "encodings": [{ "ssrc": ssrc }],
                    "rtcp": { "cname": format!("{}-cname", producer.id), "reducedSize": true }
                }),
                simulcast: encodings > 1,
                producer: Arc::downgrade(&producer),
                paused: AtomicBool::new(paused),
                closed: AtomicBool::new(false),
                handlers: Mutex::new(Vec::new()),
            });
            lock(&producer.consumers).push(consumer.clone());
            lock(&self.objects).consumers.push(consumer.clone());
            if producer.closed.load(Ordering::SeqCst) {
                // Closed meanwhile: the consumer goes with it.
                consumer.close_because(ConsumerEvent::ProducerClose);
            }
            let consumer: Arc<dyn Consumer> = consumer;
            Ok(consumer)
        })
    }

    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>> {
        later(move || {
            Ok(json!([{ "type": match self.kind {
                            TransportKind::WebRtc => "webrtc-transport",
                            TransportKind::Plain => "plain-rtp-transport" },
                        "transportId": self.id, "bytesReceived": 0, "bytesSent": 0,
                        "producing": self.options.producing, "consuming": self.options.consuming,
                        "comedia": self.options.comedia,
                        "dtlsState": if self.connected.load(Ordering::SeqCst) { "connected" } else { "new" } }]))
        })
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.close_consumers();
        let producers = std::mem::take(&mut lock(&self.objects).producers);
        for producer in producers {
            producer.close();
        }
    }
}
