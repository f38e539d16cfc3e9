//! The media layer of the SFU example: what the signalling asks of a
//! mediasoup worker, as traits, and an in-memory stand-in behind them.
//!
//! The traits follow mediasoup's object model (worker → router → transports
//! → producers and consumers) and its close cascade: closing a router
//! closes its transports, closing a transport closes its producers and
//! consumers, and closing a producer closes the consumers of it (each
//! consumer reports why through its events, as mediasoup's `transportclose`
//! and `producerclose`). Every operation that is an IPC round trip to the
//! C++ worker in mediasoup is async here too.
//!
//! The stand-in ([`MemoryWorker`]) moves no media: it hands out ids and
//! plausible parameters (ICE, DTLS, RTP), keeps the object graph with its
//! close cascade, and yields to the scheduler in every async operation, so
//! the signalling meets the interleavings a real worker would cause. A
//! binding to mediasoup (e.g. the `mediasoup` crate) would implement the
//! same traits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An operation of the worker.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a media operation fails with.
#[derive(Debug)]
pub(crate) struct MediaError(pub(crate) String);

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MediaError {}

/// The result of a media operation.
pub(crate) type MediaResult<T> = Result<T, MediaError>;

/// `audio` or `video`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

/// A WebRTC transport (ICE + DTLS) or a plain RTP one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// ICE + DTLS, what browsers use.
    WebRtc,
    /// Plain RTP (e.g. ffmpeg or GStreamer broadcasters).
    Plain,
}

/// How to create a transport.
#[derive(Clone, Debug, Default)]
pub(crate) struct TransportOptions {
    /// TCP candidates only (WebRTC).
    pub(crate) force_tcp: bool,
    /// SCTP (data channels) with this many streams (WebRTC).
    pub(crate) sctp_streams: Option<Value>,
    /// RTCP on the RTP port (plain).
    pub(crate) rtcp_mux: bool,
    /// Learn the remote address from the first packet (plain).
    pub(crate) comedia: bool,
    /// Whether the client sends on it.
    pub(crate) producing: bool,
    /// Whether the client receives on it.
    pub(crate) consuming: bool,
}

/// Why a consumer reports, as mediasoup's consumer events.
#[derive(Clone, Debug)]
pub(crate) enum ConsumerEvent {
    /// Its transport closed (and so did the consumer).
    TransportClose,
    /// Its producer closed (and so did the consumer).
    ProducerClose,
    /// Its producer paused.
    ProducerPause,
    /// Its producer resumed.
    ProducerResume,
    /// A new score.
    Score(Value),
    /// The spatial and temporal layers sent changed (`None`: none).
    LayersChange(Option<Value>),
}

/// A consumer's event handler.
pub(crate) type ConsumerHandler = Arc<dyn Fn(ConsumerEvent) + Send + Sync>;

/// A process that makes routers (mediasoup's `Worker`).
pub(crate) trait Worker: Send + Sync {
    /// A new router.
    fn create_router(&self) -> BoxFuture<'_, MediaResult<Arc<dyn Router>>>;
    /// How many routers are open.
    fn live_routers(&self) -> usize;
}

/// One room's media hub.
pub(crate) trait Router: Send + Sync {
    /// The router's id.
    fn id(&self) -> &str;
    /// The codecs and header extensions the router supports.
    fn rtp_capabilities(&self) -> Value;
    /// Whether an endpoint with `rtp_capabilities` can consume the producer.
    fn can_consume(&self, producer_id: &str, rtp_capabilities: &Value) -> bool;
    /// A new transport.
    fn create_transport(
        &self,
        kind: TransportKind,
        options: TransportOptions,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Transport>>>;
    /// Closes the router and everything in it.
    fn close(&self);
    /// Whether it is closed.
    fn closed(&self) -> bool;
}

/// A transport of one endpoint.
pub(crate) trait Transport: Send + Sync {
    /// The transport's id.
    fn id(&self) -> &str;
    /// WebRTC or plain.
    fn kind(&self) -> TransportKind;
    /// The options it was created with.
    fn options(&self) -> &TransportOptions;
    /// ICE parameters (WebRTC).
    fn ice_parameters(&self) -> Value;
    /// ICE candidates (WebRTC).
    fn ice_candidates(&self) -> Value;
    /// DTLS parameters (WebRTC).
    fn dtls_parameters(&self) -> Value;
    /// SCTP parameters (`null` without SCTP).
    fn sctp_parameters(&self) -> Value;
    /// The local address and port, and the RTCP port without RTCP mux (plain).
    fn tuple(&self) -> (String, u16, Option<u16>);
    /// Gives the remote DTLS parameters (WebRTC).
    fn connect(&self, dtls_parameters: Value) -> BoxFuture<'_, MediaResult<()>>;
    /// New ICE parameters.
    fn restart_ice(&self) -> BoxFuture<'_, MediaResult<Value>>;
    /// Receives a track.
    fn produce(
        &self,
        kind: MediaKind,
        rtp_parameters: Value,
        app_data: Value,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Producer>>>;
    /// Sends a producer's track to this transport's endpoint.
    fn consume(
        &self,
        producer_id: &str,
        rtp_capabilities: &Value,
        paused: bool,
    ) -> BoxFuture<'_, MediaResult<Arc<dyn Consumer>>>;
    /// Statistics.
    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>>;
    /// Closes it, its producers and its consumers.
    fn close(&self);
}

/// A track received from an endpoint.
pub(crate) trait Producer: Send + Sync {
    /// The producer's id.
    fn id(&self) -> &str;
    /// Audio or video.
    fn kind(&self) -> MediaKind;
    /// The application's data given to `produce`.
    fn app_data(&self) -> Value;
    /// Pauses it (its consumers hear `ProducerPause`).
    fn pause(&self) -> BoxFuture<'_, MediaResult<()>>;
    /// Resumes it.
    fn resume(&self) -> BoxFuture<'_, MediaResult<()>>;
    /// Statistics.
    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>>;
    /// Closes it and its consumers.
    fn close(&self);
}

/// A track sent to an endpoint.
pub(crate) trait Consumer: Send + Sync {
    /// The consumer's id.
    fn id(&self) -> &str;
    /// Audio or video.
    fn kind(&self) -> MediaKind;
    /// The RTP parameters the endpoint receives with.
    fn rtp_parameters(&self) -> Value;
    /// `simple` or `simulcast`.
    fn consumer_type(&self) -> &'static str;
    /// Whether its producer is paused.
    fn producer_paused(&self) -> bool;
    /// The current score.
    fn score(&self) -> Value;
    /// Registers an event handler.
    fn on_event(&self, handler: ConsumerHandler);
    /// Pauses it.
    fn pause(&self) -> BoxFuture<'_, MediaResult<()>>;
    /// Resumes it.
    fn resume(&self) -> BoxFuture<'_, MediaResult<()>>;
    /// Sets the preferred simulcast / SVC layers.
    fn set_preferred_layers(
        &self,
        spatial: u8,
        temporal: Option<u8>,
    ) -> BoxFuture<'_, MediaResult<()>>;
    /// Sets the priority of its bitrate.
    fn set_priority(&self, priority: u8) -> BoxFuture<'_, MediaResult<()>>;
    /// Asks its producer's endpoint for a key frame.
    fn request_key_frame(&self) -> BoxFuture<'_, MediaResult<()>>;
    /// Statistics.
    fn stats(&self) -> BoxFuture<'_, MediaResult<Value>>;
}

mod memory;
#[cfg(test)]
mod tests;
mod tracks;

pub(crate) use memory::MemoryWorker;
