//! The scenarios: what each one measures and the load generator's
//! arguments for it, full size or as a smoke; which of them run on a
//! cluster of two server processes over Redis (S10, S11), and on which
//! Redis topology (one server, Sentinel, Redis Cluster); which read our
//! server's metrics (S12); which drain a node (S13); which run several
//! processes per box, each serving its own rooms, and with how many
//! workers each (`PROCS`).

use super::*;

/// Per-peer outbound queue limit given to both servers in S6 (the anchor
/// has no such setting and ignores it).
pub(super) const S6_QUEUE: u64 = 1024 * 1024;

/// Per-peer outbound queue limit of our server in S3: above what the load
/// generator's flow control lets one reader fall behind (16,384 deliveries:
/// 64 MiB at 4 KB), as the floor's (its `MAX_QUEUE`), so that S3 measures
/// delivering, not the slow-reader policy (S6's subject). With the default
/// 4 MiB, a reader the load generator served last was closed with 1008 once
/// our server outpaced the load generator at 4 KB (the run then stalls).
pub(super) const S3_QUEUE: u64 = 80 * 1024 * 1024;

pub(super) const ALL: [&str; 31] = [
    "s1",
    "s2",
    "s2-4k",
    "s2-16k",
    "s3",
    "s3-4k",
    "s3k",
    "s4",
    "s4-auth",
    "s4e",
    "s5",
    "s5-auth",
    "s6",
    "s7",
    "s8",
    "s9",
    "s10",
    "s11",
    "s12",
    "s13",
    "s14",
    "s15",
    "s16",
    "s3-2rooms",
    "s3-2procs",
    "s3-2procs-w1",
    "s10-w1",
    "s10-sentinel",
    "s11-sentinel",
    "s10-cluster",
    "s11-cluster",
];

/// The fan-out budget S15 gives our server (the room example's default,
/// passed explicitly), bytes per second delivered on one sender's behalf.
pub(super) const S15_FAN_OUT_RATE: u64 = 20_000_000;
/// The scenarios with tokens: S4 and S5 with our server verifying an HS256
/// token on every connection (`--auth-secret`), the load generator minting
/// one per connection with the same secret; ours only (the anchor has no
/// such layer), compared with S4 and S5 of the same run.
pub(super) const AUTH: [&str; 2] = ["s4-auth", "s5-auth"];

/// The secret of [`AUTH`]'s tokens.
const AUTH_SECRET: &str = "protoo-bench-secret";

/// The scenarios on a cluster: [`CLUSTER_NODES`] server processes (ours
/// with `--redis`, or the anchor with `--redis`) on a redis-server of their
/// own; the `-sentinel` and `-cluster` ones (ours only: the anchor speaks
/// to one server) on a fresh Sentinel set-up or Redis Cluster
/// (`redis_ha.rs`) instead.
pub(super) const CLUSTER: [&str; 8] = [
    "s10",
    "s11",
    "s13",
    "s10-w1",
    "s10-sentinel",
    "s11-sentinel",
    "s10-cluster",
    "s11-cluster",
];

/// The Redis a cluster scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Topology {
    /// One redis-server (and the one-process scenarios, which use none).
    Single,
    /// A master, a replica and three sentinels.
    Sentinel,
    /// Three masters with a replica each.
    Cluster,
}

impl Topology {
    /// The topology of scenario `key` (by its suffix).
    pub(super) fn of(key: &str) -> Topology {
        if key.ends_with("-sentinel") {
            Topology::Sentinel
        } else if key.ends_with("-cluster") {
            Topology::Cluster
        } else {
            Topology::Single
        }
    }
}

/// Server processes of a cluster scenario.
pub(super) const CLUSTER_NODES: usize = 2;

/// The scenarios the floor serves (it answers `echo` and `broadcast` only;
/// S5's churn is connections that each make one `echo`).
pub(super) const FLOOR: [&str; 8] = ["s1", "s2", "s2-4k", "s2-16k", "s3", "s3-4k", "s3k", "s5"];

/// The resume window S12 gives our server (`--resume-window`), seconds:
/// longer than any blip of the scenario, shorter than its run.
pub(super) const S12_RESUME_WINDOW: u64 = 15;

/// S13's drain period of our server (`--drain-period`), seconds: the room
/// example's default (passed explicitly); a second in the smoke.
pub(super) const S13_DRAIN_PERIOD: u64 = 5;

/// The incoming rate limit S9 gives our server (the room example's
/// default, passed explicitly), messages per second per peer, and its burst.
pub(super) const S9_RATE: u64 = 200;
pub(super) const S9_BURST: u64 = 2 * S9_RATE;

/// Our server's flags in every scenario but S9: the room example's
/// incoming rate limits are on by default (200 messages/s per peer), which
/// would throttle the throughput scenarios' senders (thousands of requests
/// per second on one connection); they measure the server, not its limits.
/// S8 thus measures the incoming byte budget alone. The fan-out budget
/// (20 MB/s delivered on one sender's behalf by default) would cap the
/// broadcast scenarios the same way: S15 measures it.
const NO_RATE_LIMITS: [&str; 6] = [
    "--message-rate",
    "0",
    "--byte-rate",
    "0",
    "--fan-out-rate",
    "0",
];

/// One scenario as run: its key, title and the load generator's arguments.
#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) key: &'static str,
    pub(super) title: &'static str,
    pub(super) args: Vec<String>,
    /// Extra server arguments (both servers).
    pub(super) server_args: Vec<String>,
    /// Extra arguments of our server only (flags the anchor does not have).
    pub(super) ours_args: Vec<String>,
    /// Extra arguments of the load generator against our server only (what
    /// it may expect of ours alone).
    pub(super) ours_bench_args: Vec<String>,
    /// Pin the server to CPU 0 and the load generator to CPU 1 (S1: see
    /// `PIN_NOTE`).
    pub(super) pin: bool,
    /// Run against the echo example (only), not the room servers.
    pub(super) echo: bool,
    /// Run against the floor too (see [`FLOOR`]).
    pub(super) floor: bool,
    /// Server processes: 1, or [`CLUSTER_NODES`] (see [`CLUSTER`] and
    /// [`OWN_ROOMS`]).
    pub(super) nodes: usize,
    /// The processes share a Redis (see [`CLUSTER`]); else each serves its
    /// own rooms.
    pub(super) redis: bool,
    /// `TOKIO_WORKER_THREADS` of our server processes; `None`: tokio's
    /// default, a worker per core.
    pub(super) workers: Option<usize>,
    /// The Redis of a cluster scenario.
    pub(super) topology: Topology,
    /// Run against our server only (see [`AUTH`]).
    pub(super) ours_only: bool,
    /// Our server is the build with the `metrics` feature, serving
    /// `/metrics` on a port of its own that the load generator reads
    /// (`--metrics-url`); reported in our column (S12: the bytes held).
    pub(super) metrics: bool,
}

/// Why S1 is pinned.
pub(super) const PIN_NOTE: &str = "S1 runs with the server pinned to CPU 0 and the load generator \
to CPU 1 (`taskset`): with one request in flight, the round trip on this kind of \
virtual machine depends mostly on whether the two processes happen to share a vCPU \
(about 20-30 µs) or not (60-100 µs), which unpinned is a coin toss between runs.";

pub(super) fn scenarios(o: &Opts) -> Vec<Scenario> {
    let d = o.duration.to_string();
    let sc = |key, title, args: &[&str]| Scenario {
        key,
        title,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        server_args: Vec::new(),
        ours_args: NO_RATE_LIMITS.iter().map(|s| (*s).to_owned()).collect(),
        ours_bench_args: Vec::new(),
        pin: false,
        echo: false,
        floor: false,
        nodes: 1,
        redis: false,
        workers: None,
        topology: Topology::Single,
        ours_only: false,
        metrics: false,
    };
    let mut list = if o.smoke {
        vec![
            sc(
                "s1",
                "S1 echo, 1 client x 1 in flight",
                &["--scenario", "s1", "--duration", "0.3", "--warmup", "0.1"],
            ),
            sc(
                "s2-16k",
                "S2 echo of 16 KB, 2 clients x 4 in flight",
                &[
                    "--scenario",
                    "s2",
                    "--clients",
                    "2",
                    "--size",
                    "16384",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s3",
                "S3 broadcast, room of 10",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "10",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s5",
                "S5 churn, 2 concurrent",
                &[
                    "--scenario",
                    "s5",
                    "--clients",
                    "2",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s5-auth",
                "S5 churn with tokens, 2 concurrent",
                &[
                    "--scenario",
                    "s5",
                    "--clients",
                    "2",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s6",
                "S6 stalled member, 300 x 1 KB",
                &["--scenario", "s6", "--messages", "300", "--size", "1024"],
            ),
            sc(
                "s8",
                "S8 ask flood, 20 x 900 KB",
                &["--scenario", "s8", "--messages", "20", "--size", "921600"],
            ),
            sc(
                "s9",
                "S9 rate limit, room of 20",
                &[
                    "--scenario",
                    "s9",
                    "--peers",
                    "20",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s14",
                "S14 join amplification, 4 names x 100 KB, 5 attackers",
                &[
                    "--scenario",
                    "s14",
                    "--names",
                    "4",
                    "--size",
                    "100000",
                    "--attackers",
                    "5",
                    "--attack",
                    "0.3",
                    "--settle",
                    "0.2",
                ],
            ),
            sc(
                "s15",
                "S15 fan-out in bytes, 16 KB, room of 10",
                &[
                    "--scenario",
                    "s15",
                    "--peers",
                    "10",
                    "--size",
                    "16384",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s10",
                "S10 broadcast across 2 nodes, room of 10",
                &[
                    "--scenario",
                    "s10",
                    "--peers",
                    "10",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s3-2procs-w1",
                "S3 on 2 processes with 1 worker each, a room of 10 on each",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "10",
                    "--rooms",
                    "2",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s11",
                "S11 presence churn across 2 nodes, 2 concurrent",
                &[
                    "--scenario",
                    "s11",
                    "--clients",
                    "2",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s12",
                "S12 blips, room of 10, cuts over 1 s",
                &[
                    "--scenario",
                    "s12",
                    "--peers",
                    "10",
                    "--interval-ms",
                    "50",
                    "--spread",
                    "1",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s13",
                "S13 rolling drain, 2 rooms of 10 across 2 nodes",
                &[
                    "--scenario",
                    "s13",
                    "--peers",
                    "20",
                    "--rooms",
                    "2",
                    "--interval-ms",
                    "200",
                    "--settle",
                    "2",
                    "--duration",
                    "0.3",
                    "--warmup",
                    "0.1",
                ],
            ),
            sc(
                "s16",
                "S16 production shape, 2,000 peers in 20 rooms of 100",
                &[
                    "--scenario",
                    "s16",
                    "--peers",
                    "2000",
                    "--room-size",
                    "100",
                    "--interval-ms",
                    "1000",
                    "--churn",
                    "1",
                    "--duration",
                    "2",
                    "--warmup",
                    "1",
                ],
            ),
        ]
    } else {
        vec![
            sc(
                "s1",
                "S1 echo, 1 client x 1 in flight",
                &["--scenario", "s1", "--duration", &d],
            ),
            sc(
                "s2",
                "S2 echo, 50 clients x 4 in flight",
                &["--scenario", "s2", "--duration", &d],
            ),
            sc(
                "s2-4k",
                "S2 echo of 4 KB, 50 clients x 4 in flight",
                &["--scenario", "s2", "--size", "4096", "--duration", &d],
            ),
            sc(
                "s2-16k",
                "S2 echo of 16 KB, 50 clients x 4 in flight",
                &["--scenario", "s2", "--size", "16384", "--duration", &d],
            ),
            sc(
                "s3",
                "S3 broadcast, room of 100",
                &["--scenario", "s3", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s3-4k",
                "S3 broadcast of 4 KB, room of 100",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "100",
                    "--size",
                    "4096",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s3k",
                "S3 broadcast, room of 1000",
                &["--scenario", "s3", "--peers", "1000", "--duration", &d],
            ),
            sc(
                "s4",
                "S4 10,000 idle peers, joined (listed in their rooms' presence)",
                &["--scenario", "s4", "--peers", "10000", "--join"],
            ),
            sc(
                "s4-auth",
                "S4 10,000 idle joined peers, each with a verified identity (HS256 token)",
                &["--scenario", "s4", "--peers", "10000", "--join"],
            ),
            sc(
                "s4e",
                "S4 10,000 idle peers, echo example",
                &["--scenario", "s4", "--peers", "10000"],
            ),
            sc(
                "s5",
                "S5 churn: connect, echo, close; 8 concurrent",
                &["--scenario", "s5", "--clients", "8", "--duration", &d],
            ),
            sc(
                "s5-auth",
                "S5 churn with an HS256 token verified per connection; 8 concurrent",
                &["--scenario", "s5", "--clients", "8", "--duration", &d],
            ),
            sc(
                "s6",
                "S6 stalled member, 50,000 x 1 KB broadcast",
                &["--scenario", "s6", "--messages", "50000", "--size", "1024"],
            ),
            sc(
                "s7",
                "S7 15,000 concurrent peers",
                &["--scenario", "s7", "--peers", "15000"],
            ),
            sc(
                "s8",
                "S8 ask flood, 1,000 x 900 KB, never answered",
                &["--scenario", "s8", "--messages", "1000", "--size", "921600"],
            ),
            sc(
                "s9",
                "S9 rate limit 200/s, room of 1000",
                &["--scenario", "s9", "--peers", "1000", "--duration", &d],
            ),
            sc(
                "s12",
                "S12 blips: room of 100, a broadcast every 100 ms, 99 connections cut over 10 s",
                &[
                    "--scenario",
                    "s12",
                    "--peers",
                    "100",
                    "--interval-ms",
                    "100",
                    "--spread",
                    "10",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s13",
                "S13 rolling drain: 1,000 peers in 100 rooms across 2 nodes behind a \
                 balancer, a chat per room per second; one node drained",
                &[
                    "--scenario",
                    "s13",
                    "--peers",
                    "1000",
                    "--rooms",
                    "100",
                    "--interval-ms",
                    "1000",
                    "--settle",
                    "8",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s14",
                "S14 join amplification: 16 names of up to 1 MB, 50 non-reading joiners",
                &["--scenario", "s14"],
            ),
            sc(
                "s15",
                "S15 fan-out in bytes: 64 KB broadcasts, room of 500",
                &[
                    "--scenario",
                    "s15",
                    "--peers",
                    "500",
                    "--size",
                    "65536",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s16",
                "S16 production shape: 100,000 peers in 1,000 rooms of 100, a chat per room \
                 per second, keepalive at the server's default, 1 % of the peers replaced per second",
                &[
                    "--scenario",
                    "s16",
                    "--peers",
                    "100000",
                    "--room-size",
                    "100",
                    "--interval-ms",
                    "1000",
                    "--churn",
                    "1",
                    "--duration",
                    "30",
                    "--warmup",
                    "5",
                    "--connect-concurrency",
                    "128",
                ],
            ),
            sc(
                "s10",
                "S10 broadcast across 2 nodes, room of 100 (50 + 50)",
                &["--scenario", "s10", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s11",
                "S11 presence churn across 2 nodes: connect, join, close; 8 concurrent",
                &["--scenario", "s11", "--clients", "8", "--duration", &d],
            ),
            sc(
                "s3-2rooms",
                "S3 on 1 process, 2 rooms of 100 (a sender each)",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "100",
                    "--rooms",
                    "2",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s3-2procs",
                "S3 on 2 processes, default runtime (a worker per core) each, a room of 100 on each",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "100",
                    "--rooms",
                    "2",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s3-2procs-w1",
                "S3 on 2 processes, 1 worker each (TOKIO_WORKER_THREADS=1), a room of 100 on each",
                &[
                    "--scenario",
                    "s3",
                    "--peers",
                    "100",
                    "--rooms",
                    "2",
                    "--duration",
                    &d,
                ],
            ),
            sc(
                "s10-w1",
                "S10 with 1 worker per process (TOKIO_WORKER_THREADS=1), room of 100 (50 + 50)",
                &["--scenario", "s10", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s10-sentinel",
                "S10 over Redis Sentinel (master, replica, 3 sentinels), room of 100",
                &["--scenario", "s10", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s11-sentinel",
                "S11 over Redis Sentinel: connect, join, close; 8 concurrent",
                &["--scenario", "s11", "--clients", "8", "--duration", &d],
            ),
            sc(
                "s10-cluster",
                "S10 over Redis Cluster (3 masters, 3 replicas), room of 100",
                &["--scenario", "s10", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s11-cluster",
                "S11 over Redis Cluster: connect, join, close; 8 concurrent",
                &["--scenario", "s11", "--clients", "8", "--duration", &d],
            ),
        ]
    };
    for s in &mut list {
        if s.key == "s6" {
            s.server_args = vec!["--max-queue".into(), S6_QUEUE.to_string()];
        }
        if s.key.starts_with("s3") {
            s.ours_args
                .extend(["--max-queue".to_owned(), S3_QUEUE.to_string()]);
        }
        if s.key == "s9" {
            s.ours_args = vec![
                "--message-rate".into(),
                S9_RATE.to_string(),
                "--message-burst".into(),
                S9_BURST.to_string(),
            ];
            s.args
                .extend(["--rate-limit".to_owned(), S9_RATE.to_string()]);
        }
        // S14 and S15 measure the room example as it ships: every limit at
        // its default (the fan-out budget passed explicitly).
        if s.key == "s14" {
            s.ours_args = Vec::new();
        }
        // S12: the room example as it ships, with a resume window.
        if s.key == "s12" {
            s.ours_args = vec!["--resume-window".into(), S12_RESUME_WINDOW.to_string()];
            s.ours_bench_args = vec!["--expect-resume".into()];
            s.metrics = true;
        }
        // S13: the room example as it ships, with a resume window and a
        // drain period.
        if s.key == "s13" {
            let drain = if o.smoke { 1 } else { S13_DRAIN_PERIOD };
            s.ours_args = vec![
                "--resume-window".into(),
                S12_RESUME_WINDOW.to_string(),
                "--drain-period".into(),
                drain.to_string(),
            ];
            s.ours_bench_args = vec!["--expect-resume".into()];
        }
        // S16: the room example as it ships, with its keepalive (a ping
        // every second in the smoke, to see the clients answer).
        if s.key == "s16" {
            s.ours_args = Vec::new();
            if o.smoke {
                s.server_args = vec!["--ping-interval".into(), "1".into()];
            } else {
                s.ours_bench_args = vec![
                    "--keepalive".to_owned(),
                    super::shape::OURS_KEEPALIVE.to_string(),
                ];
            }
        }
        if s.key == "s15" {
            s.ours_args = vec!["--fan-out-rate".into(), S15_FAN_OUT_RATE.to_string()];
            s.args
                .extend(["--fan-out-rate".to_owned(), S15_FAN_OUT_RATE.to_string()]);
        }
        // Every other scenario measures protoo's semantics, as the anchor
        // has them (and as the figures before sessions did): no resume
        // window, a connection that drops is a peer that leaves.
        if !matches!(s.key, "s12" | "s13" | "s14" | "s15" | "s16") {
            s.ours_args
                .extend(["--resume-window".to_owned(), "0".to_owned()]);
        }
        s.pin = s.key == "s1" && can_pin();
        s.echo = s.key == "s4e";
        if AUTH.contains(&s.key) {
            let auth = ["--auth-secret".to_owned(), AUTH_SECRET.to_owned()];
            s.ours_args.extend(auth.clone());
            s.args.extend(auth);
            s.ours_only = true;
        }
        s.floor = FLOOR.contains(&s.key);
        if CLUSTER.contains(&s.key) {
            s.nodes = CLUSTER_NODES;
            s.redis = true;
        }
        if OWN_ROOMS.contains(&s.key) {
            s.nodes = CLUSTER_NODES;
        }
        if PROCS.contains(&s.key) {
            s.ours_only = true;
        }
        if s.key.ends_with("-w1") {
            s.workers = Some(ONE_WORKER);
        }
        s.topology = Topology::of(s.key);
    }
    if let Some(only) = &o.scenarios {
        list.retain(|s| only.iter().any(|k| k == s.key));
    }
    list
}
