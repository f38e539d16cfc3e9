//! The room example's command line: its flags, their defaults, and the
//! server and peer settings they make.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use protoo_server::core::Rate;
use protoo_server::{PeerConfig, ServerConfig, WsConfig};

use crate::ops;

/// The room example server.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub(crate) listen: SocketAddr,
    /// Largest incoming message in bytes (default: the transport's, 1 MiB).
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Outbound queue limit per peer in bytes (default: 4 MiB).
    #[arg(long)]
    max_queue: Option<usize>,
    /// Keepalive ping interval in seconds (default: 60).
    #[arg(long)]
    ping_interval: Option<u64>,
    /// Incoming requests and notifications per second per peer; past it a
    /// request is answered 429 and a notification dropped. 0: no limit.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_RATE)]
    message_rate: u64,
    /// Burst of `--message-rate`, in messages (default: twice the rate).
    #[arg(long)]
    message_burst: Option<u64>,
    /// Incoming request and notification bytes per second per peer,
    /// handled as `--message-rate`. 0: no limit.
    #[arg(long, default_value_t = DEFAULT_BYTE_RATE)]
    byte_rate: u64,
    /// Burst of `--byte-rate`, in bytes (default: twice the rate).
    #[arg(long)]
    byte_burst: Option<u64>,
    /// Bytes per second the server may deliver on one peer's behalf (each
    /// broadcast it causes costs its frame length × the peers it reaches);
    /// past it the peer's broadcasts are dropped, its requests answered 429
    /// and its notifications dropped until it has paid back. 0: no limit.
    #[arg(long, default_value_t = DEFAULT_FAN_OUT_RATE)]
    fan_out_rate: u64,
    /// Burst of `--fan-out-rate`, in bytes (default: the rate).
    #[arg(long)]
    fan_out_burst: Option<u64>,
    /// Bytes at most of what one peer is listed with in its room (its
    /// presence, the encoded JSON every `join` answer carries); past it
    /// `join` fails.
    #[arg(long, default_value_t = protoo_server::core::DEFAULT_MAX_PRESENCE_BYTES)]
    max_presence_bytes: usize,
    /// Bytes of incoming frames a peer may make the server hold (queued
    /// events and unanswered requests); past it a request is answered 503
    /// and a notification dropped.
    #[arg(long, default_value_t = protoo_server::core::DEFAULT_INCOMING_BUDGET)]
    incoming_budget: usize,
    /// Invalid messages after which a peer is closed with 1008. 0: never.
    #[arg(long, default_value_t = DEFAULT_MAX_INVALID_MESSAGES)]
    max_invalid_messages: u32,
    /// Seconds a peer whose connection was lost (no close frame, an I/O
    /// error, a keepalive timeout, 1001/1006/1012) stays in its room,
    /// waiting for its client to reconnect and resume the session; what is
    /// sent to it meanwhile is held and delivered on resume. 0: no window
    /// (protoo's behaviour: the peer leaves at once).
    #[arg(long, default_value_t = DEFAULT_RESUME_WINDOW)]
    resume_window: u64,
    /// Seconds over which a graceful shutdown closes its peers (with 1012,
    /// spread with jitter), so that their clients resume on other nodes.
    #[arg(long, default_value_t = DEFAULT_DRAIN_PERIOD)]
    drain_period: u64,
    /// Serve `GET /metrics` and `GET /healthz` on this address (built with
    /// the `metrics` feature; see ops.rs).
    #[arg(long)]
    pub(crate) metrics: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) log_format: ops::LogFormat,
    /// Serve rooms together with every process on this Redis
    /// (`redis://HOST:PORT`; built with the `redis` feature; see
    /// cluster.rs).
    #[arg(long, group = "redis_topology")]
    pub(crate) redis: Option<String>,
    /// The same over a master watched by Redis Sentinel: the sentinels'
    /// addresses (`HOST:PORT[,HOST:PORT...]`), with `--redis-master`.
    #[arg(
        long,
        value_delimiter = ',',
        group = "redis_topology",
        requires = "redis_master"
    )]
    pub(crate) redis_sentinel: Option<Vec<String>>,
    /// The master's name in the sentinels' configuration.
    #[arg(long, requires = "redis_sentinel")]
    pub(crate) redis_master: Option<String>,
    /// The same over a Redis Cluster: some of its nodes' addresses
    /// (`HOST:PORT[,HOST:PORT...]`); the rest is discovered.
    #[arg(long, value_delimiter = ',', group = "redis_topology")]
    pub(crate) redis_cluster: Option<Vec<String>>,
    /// What the cluster's Redis keys and channels start with: processes
    /// with the same Redis and prefix form one cluster.
    #[arg(long, default_value = "protoo", requires = "redis_topology")]
    pub(crate) redis_prefix: String,
    /// Tokens: `--auth-secret`, `--auth-public-key` (see auth.rs).
    #[command(flatten)]
    pub(crate) auth: crate::auth::AuthArgs,
    /// `token`: print a token and exit (see auth.rs); none: run the server.
    #[command(subcommand)]
    pub(crate) command: Option<crate::auth::Command>,
}

/// Default of `--message-rate`: far above what a signaling client sends
/// (mediasoup-demo's send a few messages a second, a burst of a few dozen
/// when joining), low enough that one sender in a room of 1,000 makes the
/// server send at most 200 × 999 notifications a second (400 × 999 in a
/// burst), well within what it can write.
const DEFAULT_MESSAGE_RATE: u64 = 200;

/// Default of `--byte-rate`: 2 MiB/s, bursts of 4 MiB: a client may send a
/// few messages of the largest size (1 MiB) at once, and no more than that
/// on average.
const DEFAULT_BYTE_RATE: u64 = 2 << 20;

/// Default of `--fan-out-rate`: 20 MB/s delivered on one sender's behalf,
/// bursts of as much. One sender in a room of 500 (499 recipients) then
/// makes the server write at most 20 MB/s on average, and over any `t`
/// seconds at most `20 MB × (t + 1)` plus one broadcast: under 50 MB/s of
/// egress over a few seconds even with 64 KB messages (32 MB a
/// broadcast). Ordinary chat (a few hundred bytes × 499) fits 200 messages
/// a second, the `--message-rate`.
const DEFAULT_FAN_OUT_RATE: u64 = 20_000_000;

/// Default of `--resume-window`: covers protoo-client's first reconnection
/// attempts after a drop (at once, then after 1, 2, 4 and 8 s).
const DEFAULT_RESUME_WINDOW: u64 = 15;

/// Default of `--drain-period`.
const DEFAULT_DRAIN_PERIOD: u64 = 5;

/// Default of `--max-invalid-messages`: a client that sends this many
/// frames that are not protoo messages is broken or hostile.
const DEFAULT_MAX_INVALID_MESSAGES: u32 = 100;

impl Args {
    /// Refuses a flag whose feature this build lacks.
    pub(crate) fn check_features(&self) -> Result<(), String> {
        let redis = cfg!(feature = "redis");
        for (flag, feature, given, built) in [
            ("redis", "redis", self.redis.is_some(), redis),
            (
                "redis-sentinel",
                "redis",
                self.redis_sentinel.is_some(),
                redis,
            ),
            (
                "redis-cluster",
                "redis",
                self.redis_cluster.is_some(),
                redis,
            ),
            (
                "metrics",
                "metrics",
                self.metrics.is_some(),
                cfg!(feature = "metrics"),
            ),
        ] {
            if given && !built {
                let needs = "needs the room example built with `--features";
                return Err(format!("--{flag} {needs} {feature}`"));
            }
        }
        Ok(())
    }

    /// The server's settings: the transport's limits from the flags.
    pub(crate) fn server_config(&self) -> ServerConfig {
        let mut ws = WsConfig::default();
        if let Some(size) = self.max_message_size {
            ws = ws.with_max_message_size(size).with_max_frame_size(size);
        }
        if let Some(bytes) = self.max_queue {
            ws = ws.with_max_queued_bytes(bytes);
        }
        if let Some(secs) = self.ping_interval {
            ws = ws.with_ping_interval(Some(Duration::from_secs(secs)));
        }
        ServerConfig::default()
            .with_ws(ws)
            .with_drain_period(self.drain_period())
    }

    /// `--resume-window`.
    pub(crate) fn resume_window_duration(&self) -> Duration {
        Duration::from_secs(self.resume_window)
    }

    /// `--drain-period`: how long a graceful shutdown spreads the closing
    /// of its peers over.
    pub(crate) fn drain_period(&self) -> Duration {
        Duration::from_secs(self.drain_period)
    }

    /// The per-peer settings: the incoming limits, the fan-out budget (a
    /// broadcast is charged when aimed with `room.to_all().from(&peer)`)
    /// and the resume window from the flags.
    pub(crate) fn peer_config(&self) -> PeerConfig {
        let rate = |per_second: u64, burst: Option<u64>| {
            (per_second > 0).then(|| {
                Rate::per_second(per_second)
                    .with_burst(burst.unwrap_or(per_second.saturating_mul(2)))
            })
        };
        let mut config = PeerConfig::default().with_incoming_budget(self.incoming_budget);
        config.message_rate = rate(self.message_rate, self.message_burst);
        config.byte_rate = rate(self.byte_rate, self.byte_burst);
        config.fan_out_rate = (self.fan_out_rate > 0).then(|| {
            Rate::per_second(self.fan_out_rate)
                .with_burst(self.fan_out_burst.unwrap_or(self.fan_out_rate))
        });
        config.max_presence_bytes = self.max_presence_bytes;
        config.max_invalid_messages =
            (self.max_invalid_messages > 0).then_some(self.max_invalid_messages);
        // Zero is no window (`with_resume_window` says so too).
        config.with_resume_window(Duration::from_secs(self.resume_window))
    }
}
