//! `protoo-bench`: the load generator behind `cargo xtask bench`.
//!
//! It is a protoo client written directly on tokio-tungstenite (raw protoo
//! JSON, subprotocol `protoo`), so it depends on none of the protoo-rs crates
//! and measures any server that implements the room contract of
//! `examples/room/main.rs`: ours, and the Node anchor on the real protoo-server.
//!
//! One invocation runs one scenario against one server and prints one line
//! `RESULT key=value ...` on stdout (the xtask reads it); a readable summary
//! and any errors go to stderr. With `--pid` the server's CPU time and
//! resident memory are read from `/proc` at the exact edges of the
//! measurement window.
//!
//! Scenarios (see `BENCHMARKS.md`):
//! - `s1`: request/response (`echo`), 1 client, 1 in flight.
//! - `s2`: request/response, 50 clients x 4 in flight; `--size` pads each
//!   request's data (4 KB, 16 KB: a mediasoup `join` carries 5-20 KB).
//! - `s3`: one sender `broadcast`s in a room of `--peers` (100, 1000); the
//!   others receive `chat`; deliveries per second and send-to-receive latency;
//!   `--size` pads each broadcast's data; `--rooms` (1) runs that many
//!   such rooms side by side, each with its own sender, each wholly on one
//!   node (room `r` on the `r % nodes`-th `--url`): several processes on
//!   one box, each serving its own rooms.
//! - `s4`: `--peers` (10,000) idle peers, each verified by one echo (and,
//!   with `--join`, listed in its room by a `join`); server RSS per peer.
//! - `s5`: churn: connect, one echo, close; 8 concurrent.
//! - `s6`: one member of a room stops reading while another broadcasts 50,000
//!   notifications of 1 KB: server memory growth, delivery to the readers,
//!   whether and when the stalled member is closed.
//! - `s7`: `--peers` (15,000) concurrent peers; then all of them send an echo
//!   at once and every one must be answered.
//! - `s8`: one peer sends `--messages` (1,000) `ask` requests of `--size`
//!   (900 KB) and never answers the server's requests: server RSS growth
//!   and peak, the answers by code.
//! - `s9`: one sender in a room of `--peers` (1,000) sends `broadcast` as
//!   fast as it can (`--in-flight` 64 outstanding): what the server sends
//!   per second against `--rate-limit` (200) × the members.
//! - `s12`: blips: a room of `--peers` (100); one sender `broadcast`s every
//!   `--interval-ms` (100); every other member is connected through a TCP
//!   proxy of the harness that cuts each connection once (a reset on both
//!   sides), the cuts spread over `--spread` (10 s), and each member
//!   connects again at once to the same URL: deliveries lost (after the
//!   loss was noticed, in all, while away), duplicates, `peerClosed` heard,
//!   time to resume, server CPU per resume (the blip phase against the
//!   steady `--duration` before it) and, with `--metrics-url`, the bytes the
//!   server held at the peak.
//! - `s13`: rolling drain: `--peers` (1,000) in `--rooms` (100) across
//!   two nodes (two `--url`s, both `--pid`s), every connection through a
//!   round-robin TCP balancer of the harness; in each room one member in
//!   turn `broadcast`s every `--interval-ms` (1,000). After the steady
//!   `--duration`, node A (the first) leaves the balancer's rotation and
//!   gets SIGTERM; its members reconnect at once through the balancer
//!   (not on a 4000 close): the time until each got `resumed` and until
//!   node A exited, deliveries lost and duplicated, `peerClosed` heard,
//!   node B's CPU during the drain.
//! - `s14`: join amplification: `--names` (16) peers listed with the
//!   longest display name the server takes (up to `--size`, 1,000,000),
//!   then `--attackers` (50) peers that never read send `--joins` (2)
//!   `join`s each: server RSS before, at its peak and after (`--settle`
//!   later), bytes written, one `join`'s answer against its request.
//! - `s15`: fan-out in bytes: S9 with `--size` (65,536) broadcasts in a
//!   room of `--peers` (500): bytes delivered per second against
//!   `--fan-out-rate` (20,000,000, the room example's default).
//! - `s16`: production shape: `--peers` (100,000) in rooms of
//!   `--room-size` (100), every one joined; in each room a chat every
//!   `--interval-ms` (pass 1000); `--churn` (1) % of the peers replaced per
//!   second; every member reading (answering keepalive pings). The window
//!   starts no earlier than `--keepalive` seconds after the first
//!   connection (the server's ping interval): server CPU and RSS per peer,
//!   send→receive latency, pings per second, peers lost, and this
//!   process' CPU and RSS. Clients connect from `--sources` loopback
//!   addresses (127.0.0.2 and up; 0: one per 10,000 peers plus two), and
//!   the descriptor limit is raised (as root, the hard one too).
//! - `s10`: S3 across the nodes of a cluster: one `--url` per node (two
//!   room processes on one Redis), the members split evenly between them,
//!   the sender on the first; cross-node latency apart; `--redis-pid` adds
//!   Redis' CPU time to the report (once per shard of a Redis Cluster:
//!   each shard's too).
//! - `s11`: presence churn across the nodes: connect (to each node in
//!   turn), `join`, close; 8 concurrent, in one room with one observing
//!   member per node that must see every session leave, once.
//!
//! Several `--url`s (and as many `--pid`s) make a run span the nodes of a
//! cluster: members are split between them in equal runs, in order
//! (member 0, the sender where there is one, on the first); server CPU and
//! RSS are summed over the nodes.

mod balancer;
mod client;
mod hist;
mod procfs;
mod proxy;
mod scenarios;
mod scrape;

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::client::Target;
use crate::hist::Hist;
use crate::procfs::{Procs, Window};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "protoo-bench",
    about = "protoo load generator (one scenario, one server)"
)]
struct Args {
    /// Server URL, `ws://HOST:PORT/`; once per node of a cluster.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server process id: CPU time and RSS are read from /proc/PID; once
    /// per node of a cluster, in the order of `--url`.
    #[arg(long)]
    pid: Vec<u32>,
    /// The cluster's redis-server process id: its CPU time is read from
    /// /proc/PID over the window. Once per shard of a Redis Cluster (its
    /// masters): the total is reported, and each shard's apart.
    #[arg(long)]
    redis_pid: Vec<u32>,
    /// Measurement window of the throughput scenarios (s1, s2, s3, s5, s9,
    /// s10, s11) and s12's steady phase, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up before the window, seconds (default: a fifth of --duration, at most 1).
    #[arg(long)]
    warmup: Option<f64>,
    /// Clients (s1: 1, s2: 50) or concurrent churn workers (s5, s11: 8).
    #[arg(long)]
    clients: Option<usize>,
    /// Requests in flight per client (s1: 1, s2: 4, s9: 64).
    #[arg(long)]
    in_flight: Option<usize>,
    /// Peers: room size for s3, s10, s12 (100) and s9 (1,000), connected peers for s4 (10,000) and s7 (15,000).
    #[arg(long)]
    peers: Option<usize>,
    /// s3/s6: broadcasts not yet delivered to every receiver, at most
    /// (default: about 16,384 deliveries' worth for s3, 64 for s6).
    #[arg(long)]
    window: Option<u64>,
    /// s6: notifications to broadcast (50,000); s8: asks to send (1,000).
    #[arg(long)]
    messages: Option<u64>,
    /// Size in bytes of each request's data in s1/s2 (echo; default: just
    /// the timestamp, about 20), of each broadcast's data in s3 (about 30)
    /// and s6 (1,024); s8: of each ask frame (921,600). The data is padded
    /// to about this size.
    #[arg(long)]
    size: Option<usize>,
    /// s9: the server's incoming rate limit, messages per second per peer,
    /// that the result is compared with (200, the room example's default).
    #[arg(long, default_value_t = 200)]
    rate_limit: u64,
    /// s15: the server's fan-out budget, bytes per second delivered on one
    /// sender's behalf, that the result is compared with (the room
    /// example's default).
    #[arg(long, default_value_t = 20_000_000)]
    fan_out_rate: u64,
    /// s14: peers listed with long names (16).
    #[arg(long, default_value_t = 16)]
    names: usize,
    /// s14: attackers that send joins and never read (50).
    #[arg(long, default_value_t = 50)]
    attackers: usize,
    /// s14: joins each attacker sends (2).
    #[arg(long, default_value_t = 2)]
    joins: u64,
    /// s14: seconds the attack lasts (at least).
    #[arg(long, default_value_t = 3.0)]
    attack: f64,
    /// s14: seconds after the attackers left until the memory left is read;
    /// s13: seconds the chat goes on after the SIGTERM (at least a second
    /// after the drain).
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// s12: milliseconds between two broadcasts (100); s13: between two
    /// chats of a room (pass 1000); s16: the same.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// s12: seconds over which the members' connections are cut, evenly
    /// spread (10).
    #[arg(long, default_value_t = 10.0)]
    spread: f64,
    /// s12: seconds a member whose connection was cut waits before it
    /// connects again (0: at once).
    #[arg(long, default_value_t = 0.0)]
    away: f64,
    /// s12: the server resumes sessions: a member cut that the others see
    /// leaving (`peerClosed`) is an error; s13: the server moves sessions
    /// between nodes: a member of the drained node not resumed on the
    /// other, or seen leaving, is an error.
    #[arg(long)]
    expect_resume: bool,
    /// s12: the server's Prometheus endpoint, `http://HOST:PORT/metrics`
    /// (the room example's `--metrics`): the bytes it holds for sessions
    /// away are read there.
    #[arg(long)]
    metrics_url: Option<String>,
    /// s13: rooms the members are split into (100); s3: rooms of `--peers`
    /// each, with a sender of its own, room `r` wholly on node `r % nodes`
    /// (1: one room, split over the nodes as in s10).
    #[arg(long)]
    rooms: Option<usize>,
    /// s16: peers per room (100).
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// s16: peers replaced per second, % of the peers (1).
    #[arg(long, default_value_t = 1.0)]
    churn: f64,
    /// s16: the window starts no earlier than this many seconds after the
    /// first connection: the server's keepalive interval, so that the
    /// window sees its pings (0: right after the warm-up).
    #[arg(long, default_value_t = 0.0)]
    keepalive: f64,
    /// s16: loopback source addresses the clients connect from (127.0.0.2
    /// and up; 0: one per 10,000 peers, plus two).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// s6: members that keep reading (3).
    #[arg(long)]
    readers: Option<usize>,
    /// s4/s7: each peer also `join`s its room after its echo (listed in
    /// the room's presence; the others hear `newPeer`), as a real client
    /// does; without it the peers are admitted in their rooms, not listed.
    #[arg(long)]
    join: bool,
    /// s4/s7/s16: connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Worker threads of the client runtime (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Present an HS256 token signed with this secret on every connection
    /// (`token` query parameter; `sub` the peer id, `room` the room id),
    /// minted here per connection, as an application backend would: for a
    /// server that verifies tokens (the room example's `--auth-secret`).
    #[arg(long)]
    auth_secret: Option<String>,
    /// Upper bound of any wait in a scenario, seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    S8,
    S9,
    S10,
    S11,
    S12,
    S13,
    S14,
    S15,
    S16,
}

/// Settings shared by every scenario.
#[derive(Debug)]
pub(crate) struct Run {
    /// The server (the first node of a cluster).
    pub(crate) target: Target,
    /// Every node, `target` first.
    pub(crate) targets: Vec<Target>,
    /// The (first) server's process id, for /proc.
    pub(crate) pid: Option<u32>,
    /// Every process measured in the window: the nodes and Redis.
    pub(crate) procs: Procs,
    /// Measurement window.
    pub(crate) duration: Duration,
    /// Warm-up before the window.
    pub(crate) warmup: Duration,
    /// Bound of any wait.
    pub(crate) timeout: Duration,
    /// Concurrent connection attempts when connecting many peers.
    pub(crate) connect_concurrency: usize,
}

impl Run {
    /// The node member `i` of `total` connects to: the members are split
    /// into equal runs, one per node, in order (member 0 on the first).
    pub(crate) fn node_of(&self, i: usize, total: usize) -> usize {
        (i * self.targets.len() / total.max(1)).min(self.targets.len() - 1)
    }
}

/// Errors of a task: counted, and the first few kept.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    count: u64,
    samples: Vec<String>,
}

impl Errors {
    const KEEP: usize = 5;

    /// Counts one error.
    pub(crate) fn push(&mut self, e: impl Into<String>) {
        self.count += 1;
        if self.samples.len() < Self::KEEP {
            self.samples.push(e.into());
        }
    }

    /// Adds the errors of `other`.
    pub(crate) fn absorb(&mut self, other: Errors) {
        self.count += other.count;
        let room = Self::KEEP.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

/// The `RESULT` line: ordered `key=value` pairs.
#[derive(Debug, Default)]
pub(crate) struct Report {
    fields: Vec<(&'static str, String)>,
    errors: Errors,
}

impl Report {
    /// Sets `key` (later values of the same key replace earlier ones).
    pub(crate) fn set(&mut self, key: &'static str, value: impl Display) {
        let value: String = value
            .to_string()
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '=' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Sets a float with `decimals` digits.
    pub(crate) fn setf(&mut self, key: &'static str, value: f64, decimals: usize) {
        self.set(key, format!("{value:.decimals$}"));
    }

    /// Records an error (the first few are printed; all are counted).
    pub(crate) fn error(&mut self, e: impl Into<String>) {
        self.errors.push(e);
    }

    /// Records the errors of a task.
    pub(crate) fn errors(&mut self, es: Errors) {
        self.errors.absorb(es);
    }

    /// Throughput and server/client CPU over a measurement window of `ops`
    /// operations (`unit`: what one operation is).
    pub(crate) fn window(&mut self, w: &Window, ops: u64, unit: &'static str) {
        self.set("unit", unit);
        self.set("ops", ops);
        self.setf("secs", w.secs, 3);
        self.setf("rate", ops as f64 / w.secs.max(1e-9), 1);
        let pct = |us: u64| us as f64 / 1e4 / w.secs.max(1e-9);
        if let Some(cpu) = w.server_cpu_us {
            self.setf("srv_cpu_ms", cpu as f64 / 1e3, 1);
            self.setf("srv_cpu_pct", pct(cpu), 1);
            if ops > 0 {
                self.setf("srv_cpu_us_per_op", cpu as f64 / ops as f64, 3);
            }
        }
        if !w.node_cpu_us.is_empty() {
            let nodes: Vec<String> = w
                .node_cpu_us
                .iter()
                .map(|&us| format!("{:.1}", pct(us)))
                .collect();
            self.set("node_cpu_pct", nodes.join("+"));
        }
        if let Some(cpu) = w.redis_cpu_us {
            self.setf("redis_cpu_ms", cpu as f64 / 1e3, 1);
            self.setf("redis_cpu_pct", pct(cpu), 1);
            if ops > 0 {
                self.setf("redis_cpu_us_per_op", cpu as f64 / ops as f64, 3);
            }
        }
        if !w.redis_shard_cpu_us.is_empty() {
            let each = |f: &dyn Fn(u64) -> String| {
                w.redis_shard_cpu_us
                    .iter()
                    .map(|&us| f(us))
                    .collect::<Vec<_>>()
                    .join("+")
            };
            self.set("redis_shard_cpu_pct", each(&|us| format!("{:.1}", pct(us))));
            if ops > 0 {
                self.set(
                    "redis_shard_cpu_us_per_op",
                    each(&|us| format!("{:.3}", us as f64 / ops as f64)),
                );
            }
        }
        if let Some(cpu) = w.client_cpu_us {
            self.setf("cli_cpu_pct", cpu as f64 / 1e4 / w.secs.max(1e-9), 1);
        }
        if let Some(cpu) = w.other_cpu_us {
            self.setf("other_cpu_pct", cpu as f64 / 1e4 / w.secs.max(1e-9), 1);
        }
        if let Some(rss) = w.server_rss_kb {
            self.set("srv_rss_kb", rss);
        }
    }

    /// Latency quantiles (`prefix` `""` or e.g. `"round_"`).
    pub(crate) fn latency(&mut self, h: &Hist) {
        self.setf("p50_us", h.quantile(0.50) as f64 / 1e3, 1);
        self.setf("p99_us", h.quantile(0.99) as f64 / 1e3, 1);
        self.setf("max_us", h.quantile(1.0) as f64 / 1e3, 1);
        self.set("samples", h.count());
    }

    fn finish(mut self) -> (String, Errors) {
        let errors = std::mem::take(&mut self.errors);
        self.set("errors", errors.count);
        let line = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        (line, errors)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Err(e)) = args.auth_secret.as_deref().map(client::set_auth_secret) {
        eprintln!("protoo-bench: {e}");
        return ExitCode::from(2);
    }
    let targets = match args
        .url
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("protoo-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.pid.is_empty() && args.pid.len() != targets.len() {
        eprintln!(
            "protoo-bench: {} --url but {} --pid: give one --pid per --url, or none",
            targets.len(),
            args.pid.len()
        );
        return ExitCode::from(2);
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("protoo-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let duration = Duration::from_secs_f64(args.duration.clamp(0.1, 3600.0));
    let warmup = args
        .warmup
        .map(|w| Duration::from_secs_f64(w.clamp(0.0, 600.0)))
        .unwrap_or_else(|| (duration / 5).min(Duration::from_secs(1)));
    let run = Run {
        target: targets[0].clone(),
        pid: args.pid.first().copied(),
        procs: Procs {
            servers: args.pid.clone(),
            redis: args.redis_pid.clone(),
        },
        targets,
        duration,
        warmup,
        timeout: Duration::from_secs_f64(args.timeout.clamp(1.0, 3600.0)),
        connect_concurrency: args.connect_concurrency.max(1),
    };
    let mut report = Report::default();
    report.set("scenario", format!("{:?}", args.scenario));
    if run.targets.len() > 1 {
        report.set("nodes", run.targets.len());
    }
    let outcome = runtime.block_on(async {
        use scenarios::{amplify, blips, broadcast, churn, drain, flood, idle, rr, shape};
        match args.scenario {
            Scenario::S1 => {
                rr::run(
                    &run,
                    args.clients.unwrap_or(1),
                    args.in_flight.unwrap_or(1),
                    args.size.unwrap_or(0),
                    &mut report,
                )
                .await
            }
            Scenario::S2 => {
                rr::run(
                    &run,
                    args.clients.unwrap_or(50),
                    args.in_flight.unwrap_or(4),
                    args.size.unwrap_or(0),
                    &mut report,
                )
                .await
            }
            Scenario::S3 | Scenario::S10 => {
                let peers = args.peers.unwrap_or(100).max(2);
                let receivers = (peers - 1) as u64;
                let window = args.window.unwrap_or_else(|| 16_384u64.div_ceil(receivers));
                let opts = broadcast::Opts {
                    receivers: peers - 1,
                    stalled: false,
                    count: None,
                    size: args.size.unwrap_or(0),
                    window,
                    rooms: args.rooms.unwrap_or(1).max(1),
                };
                broadcast::run(&run, &opts, &mut report).await
            }
            Scenario::S6 => {
                let opts = broadcast::Opts {
                    receivers: args.readers.unwrap_or(3).max(1),
                    stalled: true,
                    count: Some(args.messages.unwrap_or(50_000).max(1)),
                    size: args.size.unwrap_or(1024),
                    window: args.window.unwrap_or(64),
                    rooms: 1,
                };
                broadcast::run(&run, &opts, &mut report).await
            }
            Scenario::S4 => {
                let idle = idle::Idle {
                    round: false,
                    join: args.join,
                };
                idle::run(&run, args.peers.unwrap_or(10_000).max(1), idle, &mut report).await
            }
            Scenario::S7 => {
                let idle = idle::Idle {
                    round: true,
                    join: args.join,
                };
                idle::run(&run, args.peers.unwrap_or(15_000).max(1), idle, &mut report).await
            }
            Scenario::S5 => {
                churn::run(
                    &run,
                    args.clients.unwrap_or(8).max(1),
                    churn::Cycle::Echo,
                    &mut report,
                )
                .await
            }
            Scenario::S11 => {
                churn::run(
                    &run,
                    args.clients.unwrap_or(8).max(1),
                    churn::Cycle::Join,
                    &mut report,
                )
                .await
            }
            Scenario::S8 => {
                flood::ask_flood(
                    &run,
                    args.messages.unwrap_or(1000).max(1),
                    args.size.unwrap_or(900 * 1024),
                    &mut report,
                )
                .await
            }
            Scenario::S9 => {
                let opts = flood::Flood {
                    peers: args.peers.unwrap_or(1000).max(2),
                    in_flight: args.in_flight.unwrap_or(64).max(1),
                    rate_limit: args.rate_limit.max(1),
                    size: None,
                    fan_out_rate: None,
                };
                flood::rate_flood(&run, &opts, &mut report).await
            }
            Scenario::S15 => {
                let opts = flood::Flood {
                    peers: args.peers.unwrap_or(500).max(2),
                    in_flight: args.in_flight.unwrap_or(16).max(1),
                    rate_limit: args.rate_limit.max(1),
                    size: Some(args.size.unwrap_or(65_536)),
                    fan_out_rate: Some(args.fan_out_rate.max(1)),
                };
                flood::rate_flood(&run, &opts, &mut report).await
            }
            Scenario::S12 => {
                let metrics = match args.metrics_url.as_deref().map(scrape::Endpoint::parse) {
                    Some(Ok(m)) => Some(m),
                    Some(Err(e)) => return Err(e),
                    None => None,
                };
                let opts = blips::Opts {
                    peers: args.peers.unwrap_or(100).max(2),
                    interval: Duration::from_millis(args.interval_ms.clamp(1, 60_000)),
                    spread: Duration::from_secs_f64(args.spread.clamp(0.0, 3600.0)),
                    away: Duration::from_secs_f64(args.away.clamp(0.0, 600.0)),
                    settle: Duration::from_secs(1),
                    metrics,
                    expect_resume: args.expect_resume,
                };
                blips::run(&run, &opts, &mut report).await
            }
            Scenario::S13 => {
                let opts = drain::Opts {
                    peers: args.peers.unwrap_or(1000).max(2),
                    rooms: args.rooms.unwrap_or(100).max(1),
                    interval: Duration::from_millis(args.interval_ms.clamp(1, 60_000)),
                    settle: Duration::from_secs_f64(args.settle.clamp(0.0, 600.0)),
                    expect_resume: args.expect_resume,
                };
                drain::run(&run, &opts, &mut report).await
            }
            Scenario::S16 => {
                let peers = args.peers.unwrap_or(100_000).max(2);
                let opts = shape::Opts {
                    peers,
                    rooms: (peers / args.room_size.max(2)).max(1),
                    interval: Duration::from_millis(args.interval_ms.clamp(1, 60_000)),
                    churn_pct: args.churn.clamp(0.0, 100.0),
                    keepalive: Duration::from_secs_f64(args.keepalive.clamp(0.0, 3600.0)),
                    sources: args.sources,
                };
                shape::run(&run, &opts, &mut report).await
            }
            Scenario::S14 => {
                let opts = amplify::Opts {
                    names: args.names.max(1),
                    size: args.size.unwrap_or(1_000_000),
                    attackers: args.attackers,
                    joins: args.joins.max(1),
                    attack: Duration::from_secs_f64(args.attack.clamp(0.1, 600.0)),
                    settle: Duration::from_secs_f64(args.settle.clamp(0.0, 600.0)),
                };
                amplify::run(&run, &opts, &mut report).await
            }
        }
    });
    // Connections still open are dropped here without waiting for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = outcome {
        eprintln!("protoo-bench: {:?}: {e}", args.scenario);
        report.error(e);
        let (line, _) = report.finish();
        println!("RESULT {line} failed=1");
        return ExitCode::FAILURE;
    }
    let (line, errors) = report.finish();
    for e in &errors.samples {
        eprintln!("protoo-bench: error: {e}");
    }
    if errors.count > errors.samples.len() as u64 {
        eprintln!("protoo-bench: ... {} errors in all", errors.count);
    }
    println!("RESULT {line}");
    ExitCode::SUCCESS
}
