//! The rows of the report's table: for each scenario, what is shown (which
//! field of the load generator's RESULT line, in which unit), which way is
//! better, and the target it is held to.

use super::*;

/// Whether a larger value is better, for the ratio's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Debug)]
pub(super) struct Row {
    pub(super) scenario: &'static str,
    pub(super) metric: &'static str,
    pub(super) key: &'static str,
    /// Value shown = field / scale.
    pub(super) scale: f64,
    pub(super) decimals: usize,
    pub(super) better: Better,
    pub(super) target: Target,
    /// Shown as the ratio of the field to the same field of this other
    /// scenario, for the same server in the same run (key, and its name in
    /// the table): S10 against the one-process S3.
    pub(super) of: Option<(&'static str, &'static str)>,
    /// With `of`: shown as the difference from that scenario's field (in
    /// displayed units), not the ratio: what tokens add (S4, S5 with auth).
    pub(super) delta: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    None,
    /// ours / anchor at least this.
    RatioAtLeast(f64),
    /// ours no higher than the anchor.
    NotAboveAnchor,
    /// ours (in displayed units) at most this.
    AtMost(f64),
    /// ours (in displayed units) at least this.
    AtLeast(f64),
    /// ours / floor at most this.
    FloorRatioAtMost(f64),
    /// ours, a ratio to another scenario (see [`Row::of`]), at least this.
    OfAtLeast(f64),
}

/// Server CPU per message, ours / floor, at most (S2 and S3 at every size).
pub(super) const FLOOR_CPU: f64 = 1.10;

/// Server CPU per connection in S5's churn (connect, upgrade, one `echo`,
/// close), ours / floor, at most.
pub(super) const FLOOR_CHURN_CPU: f64 = 1.2;

/// S10's deliveries per second across two nodes, at least this × S3's in
/// one process (room of 100, same run).
pub(super) const S10_OF_S3: f64 = 0.8;

/// An idle joined room peer's server RSS, KB, at most (S4, S16).
pub(super) const JOINED_PEER_KB: f64 = 2.0;

/// What an identity may add to an idle peer's memory, bytes (S4 with
/// tokens against S4).
pub(super) const AUTH_IDLE_BYTES: f64 = 200.0;

/// What verifying an HS256 token may add to a connection's server CPU, µs
/// (S5 with tokens against S5).
pub(super) const AUTH_HS256_US: f64 = 5.0;

/// The CPU row of the scenarios on a cluster (S10, S11).
pub(super) const CLUSTER_CPU: &str =
    "CPU in the window, % of a core: nodes 1+2 / client / Redis / other processes";

/// Where 1,000 rooms' slots fall on a Redis Cluster's three shards: within
/// this % of the mean on each.
pub(super) const ROOM_SPREAD_PCT: f64 = 25.0;

pub(super) fn rows(key: &str) -> Vec<Row> {
    if PROCS.contains(&key) {
        return super::procs::rows(key);
    }
    if let Some(base) = ["s10", "s11"]
        .into_iter()
        .find(|base| key.strip_prefix(base).is_some_and(|t| !t.is_empty()))
    {
        return ha_rows(base, Topology::of(key));
    }
    plain_rows(key)
}

/// S10 or S11 (`base`) over Sentinel or Redis Cluster: ours only, so no
/// anchor targets; on Redis Cluster, what each shard carried too (see
/// `ha.rs`).
fn ha_rows(base: &str, topology: Topology) -> Vec<Row> {
    let mut rows = plain_rows(base);
    for row in &mut rows {
        if !matches!(row.target, Target::AtLeast(_)) {
            row.target = Target::None;
        }
    }
    if topology != Topology::Cluster {
        return rows;
    }
    let shards = |metric, key| Row {
        scenario: "",
        metric,
        key,
        scale: 1.0,
        decimals: 0,
        better: Better::Neither,
        target: Target::None,
        of: None,
        delta: false,
    };
    let cpu = if base == "s10" {
        shards(
            "Redis CPU per broadcast, shards 1 / 2 / 3 (µs)",
            "@shards:redis_shard_cpu_us_per_broadcast",
        )
    } else {
        shards(
            "Redis CPU per session, shards 1 / 2 / 3 (µs)",
            "@shards:redis_shard_cpu_us_per_op",
        )
    };
    let mut added = vec![
        cpu,
        shards(
            "Redis CPU, shards 1 / 2 / 3 (% of a core)",
            "@shards:redis_shard_cpu_pct",
        ),
        shards(
            "SPUBLISH calls, shards 1 / 2 / 3 (the room's shard)",
            "@spublish",
        ),
    ];
    // S11 also publishes to the nodes' own channels (see `ha.rs`).
    if base == "s10" {
        added.push(Row {
            target: Target::AtMost(0.0),
            better: Better::Lower,
            ..shards(
                "SPUBLISH calls on shards the room is not on",
                "foreign_spublish",
            )
        });
    }
    let at = rows.len() - 1;
    rows.splice(
        at..at,
        added.into_iter().chain([
            shards(
                "1,000 rooms' slots on shards 1 / 2 / 3",
                "@shards:rooms_per_shard",
            ),
            Row {
                target: Target::AtMost(ROOM_SPREAD_PCT),
                better: Better::Lower,
                decimals: 1,
                ..shards(
                    "largest deviation from the mean, 1,000 rooms (%)",
                    "rooms_spread_pct",
                )
            },
        ]),
    );
    rows
}

fn plain_rows(key: &str) -> Vec<Row> {
    use Better::{Higher, Lower, Neither};
    let r = |metric, key, scale, decimals, better, target| Row {
        scenario: "",
        metric,
        key,
        scale,
        decimals,
        better,
        target,
        of: None,
        delta: false,
    };
    let cpu = |unit| r(unit, "srv_cpu_us_per_op", 1.0, 2, Lower, Target::None);
    // A latency in whole µs, lower is better, no target.
    let latency = |metric, key| r(metric, key, 1.0, 0, Lower, Target::None);
    let floor_cpu = |unit| {
        r(
            unit,
            "srv_cpu_us_per_op",
            1.0,
            2,
            Lower,
            Target::FloorRatioAtMost(FLOOR_CPU),
        )
    };
    // The anchor targets were set for the small messages only.
    let vs_anchor = |t| if key.contains('-') { Target::None } else { t };
    let load = r(
        "CPU in the window, % of a core: server / client / other processes",
        "@cpu",
        1.0,
        0,
        Neither,
        Target::None,
    );
    match key {
        "s1" => vec![
            r(
                "latency p50 (µs)",
                "p50_us",
                1.0,
                1,
                Lower,
                Target::NotAboveAnchor,
            ),
            r("latency p99 (µs)", "p99_us", 1.0, 1, Lower, Target::None),
            r("requests/s", "rate", 1.0, 0, Higher, Target::None),
            cpu("server CPU per request (µs)"),
            load,
        ],
        "s2" | "s2-4k" | "s2-16k" => vec![
            r(
                "requests/s",
                "rate",
                1.0,
                0,
                Higher,
                vs_anchor(Target::RatioAtLeast(3.0)),
            ),
            r("latency p50 (µs)", "p50_us", 1.0, 1, Lower, Target::None),
            r("latency p99 (µs)", "p99_us", 1.0, 1, Lower, Target::None),
            floor_cpu("server CPU per request (µs)"),
            r(
                "server RSS (MB)",
                "srv_rss_kb",
                1024.0,
                1,
                Lower,
                Target::None,
            ),
            load,
        ],
        "s3" | "s3k" | "s3-4k" => vec![
            r(
                "deliveries/s",
                "rate",
                1.0,
                0,
                Higher,
                vs_anchor(Target::RatioAtLeast(5.0)),
            ),
            latency("send→receive p50 (µs)", "p50_us"),
            latency("send→receive p99 (µs)", "p99_us"),
            floor_cpu("server CPU per delivery (µs)"),
            r(
                "delivered to every receiver (%)",
                "delivered_pct",
                1.0,
                2,
                Higher,
                Target::AtLeast(100.0),
            ),
            load,
        ],
        "s4-auth" => {
            let mut rows = rows("s4");
            let mut added = r(
                "idle bytes per peer added by an identity (B), vs S4 (same run)",
                "rss_per_peer_bytes",
                1.0,
                0,
                Lower,
                Target::AtMost(AUTH_IDLE_BYTES),
            );
            added.of = Some(("s4", "S4"));
            added.delta = true;
            rows.insert(1, added);
            rows
        }
        "s5-auth" => {
            let mut rows = rows("s5");
            // Ours only: no anchor or floor to hold it to.
            for row in &mut rows {
                row.target = Target::None;
            }
            let mut added = r(
                "server CPU per connection added by HS256 verification (µs), vs S5 (same run)",
                "srv_cpu_us_per_op",
                1.0,
                2,
                Lower,
                Target::AtMost(AUTH_HS256_US),
            );
            added.of = Some(("s5", "S5"));
            added.delta = true;
            rows.insert(1, added);
            rows
        }
        "s4" | "s4e" => vec![
            r(
                "server RSS per idle peer (KB)",
                "rss_per_peer_bytes",
                1000.0,
                1,
                Lower,
                // A joined room peer's target (issue 25); the echo
                // example's stays the earlier 4 KB.
                Target::AtMost(if key == "s4" { JOINED_PEER_KB } else { 4.0 }),
            ),
            r(
                "peers connected and echoed",
                "peers_ok",
                1.0,
                0,
                Higher,
                Target::None,
            ),
            r(
                "connections/s while filling",
                "rate",
                1.0,
                0,
                Higher,
                Target::None,
            ),
            cpu("server CPU per connection (µs)"),
        ],
        "s5" => vec![
            r(
                "connections/s (connect, echo, close)",
                "rate",
                1.0,
                0,
                Higher,
                Target::RatioAtLeast(3.0),
            ),
            latency("cycle p50 (µs)", "p50_us"),
            latency("cycle p99 (µs)", "p99_us"),
            r(
                "server CPU per connection (µs)",
                "srv_cpu_us_per_op",
                1.0,
                2,
                Lower,
                Target::FloorRatioAtMost(FLOOR_CHURN_CPU),
            ),
            load,
        ],
        "s6" => vec![
            r(
                "server RSS growth, peak (MB)",
                "srv_rss_growth_kb",
                1024.0,
                1,
                Lower,
                Target::AtMost(2.0 * S6_QUEUE as f64 / 1048576.0),
            ),
            r(
                "delivered to every reader (%)",
                "delivered_pct",
                1.0,
                2,
                Higher,
                Target::AtLeast(100.0),
            ),
            r(
                "stalled member: notifications received",
                "stalled_received",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "stalled member: end",
                "@stalled",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "deliveries/s to readers",
                "rate",
                1.0,
                0,
                Higher,
                Target::None,
            ),
        ],
        "s7" => vec![
            r(
                "peers connected and echoed",
                "peers_ok",
                1.0,
                0,
                Higher,
                Target::AtLeast(15000.0),
            ),
            r(
                "simultaneous echoes answered",
                "round_ok",
                1.0,
                0,
                Higher,
                Target::AtLeast(15000.0),
            ),
            latency("all-peer echo round (ms)", "round_ms"),
            r(
                "server RSS per peer (KB)",
                "rss_per_peer_bytes",
                1000.0,
                1,
                Lower,
                Target::None,
            ),
        ],
        "s8" => vec![
            r(
                "server RSS growth, peak (MB)",
                "srv_rss_growth_kb",
                1024.0,
                1,
                Lower,
                Target::AtMost(32.0),
            ),
            r(
                "server RSS, peak (MB)",
                "srv_rss_peak_kb",
                1024.0,
                1,
                Lower,
                Target::None,
            ),
            r(
                "asks answered at once (503 over budget)",
                "answered_503",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "asks held, waiting for the server's request",
                "unanswered",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r("asks sent/s", "rate", 1.0, 0, Higher, Target::None),
        ],
        "s9" => vec![
            r(
                "deliveries/s to the members",
                "rate",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "limit × members (deliveries/s)",
                "limit_deliveries_per_s",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "sent / (limit × members)",
                "of_limit",
                1.0,
                3,
                Neither,
                Target::AtMost(1.01),
            ),
            r(
                "bytes/s to the members (frame text)",
                "recv_bytes_per_s",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "limit × members (bytes/s)",
                "limit_bytes_per_s",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "broadcasts carried out / refused (per s)",
                "@s9",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            load,
        ],
        "s10" => {
            let mut vs_s3 = r(
                "deliveries/s, ours / S3 (one process, same run)",
                "rate",
                1.0,
                2,
                Neither,
                Target::OfAtLeast(S10_OF_S3),
            );
            vs_s3.of = Some(("s3", "S3"));
            vec![
                r(
                    "deliveries/s",
                    "rate",
                    1.0,
                    0,
                    Higher,
                    Target::RatioAtLeast(5.0),
                ),
                vs_s3,
                latency("send→receive p50 (µs)", "p50_us"),
                latency("send→receive p99 (µs)", "p99_us"),
                latency("cross-node send→receive p50 (µs)", "remote_p50_us"),
                latency("cross-node send→receive p99 (µs)", "remote_p99_us"),
                cpu("server CPU per delivery, both nodes (µs)"),
                latency("Redis CPU (% of a core)", "redis_cpu_pct"),
                r(
                    "Redis CPU per broadcast (µs)",
                    "redis_cpu_us_per_broadcast",
                    1.0,
                    2,
                    Lower,
                    Target::None,
                ),
                r(
                    "delivered to every receiver (%)",
                    "delivered_pct",
                    1.0,
                    2,
                    Higher,
                    Target::AtLeast(100.0),
                ),
                r(CLUSTER_CPU, "@cpu", 1.0, 0, Neither, Target::None),
            ]
        }
        "s11" => vec![
            r(
                "sessions/s (connect, join, close)",
                "rate",
                1.0,
                0,
                Higher,
                Target::None,
            ),
            latency("session p50 (µs)", "p50_us"),
            latency("session p99 (µs)", "p99_us"),
            latency("join round trip p50 (µs)", "join_p50_us"),
            latency("join round trip p99 (µs)", "join_p99_us"),
            cpu("server CPU per session, both nodes (µs)"),
            r(
                "Redis CPU per session (µs)",
                "redis_cpu_us_per_op",
                1.0,
                1,
                Lower,
                Target::None,
            ),
            latency("Redis CPU (% of a core)", "redis_cpu_pct"),
            r(
                "sessions seen arriving and leaving on every node (%)",
                "observed_pct",
                1.0,
                2,
                Higher,
                Target::AtLeast(100.0),
            ),
            r(CLUSTER_CPU, "@cpu", 1.0, 0, Neither, Target::None),
        ],
        "s12" => super::blips::rows(),
        "s13" => super::drain::rows(),
        "s16" => super::shape::rows(),
        "s14" => vec![
            r(
                "display name taken (bytes)",
                "name_bytes",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            r(
                "one join's answer (bytes)",
                "join_answer_bytes",
                1.0,
                0,
                Lower,
                Target::None,
            ),
            r(
                "server RSS, peak during the attack (MB)",
                "srv_rss_peak_kb",
                1024.0,
                1,
                Lower,
                Target::None,
            ),
            r(
                "server RSS after the attack (MB)",
                "srv_rss_after_kb",
                1024.0,
                1,
                Lower,
                Target::None,
            ),
            r(
                "server RSS before (MB)",
                "srv_rss_before_kb",
                1024.0,
                1,
                Lower,
                Target::None,
            ),
            r(
                "bytes written during the attack (MB)",
                "out_mb",
                1.0,
                1,
                Lower,
                Target::None,
            ),
            load,
        ],
        "s15" => vec![
            r(
                "MB/s to the members (frame text)",
                "recv_mb_per_s",
                1.0,
                1,
                Neither,
                Target::None,
            ),
            r(
                "sent / fan-out budget",
                "of_fan_out_rate",
                1.0,
                3,
                Neither,
                Target::AtMost(1.1),
            ),
            r(
                "broadcasts carried out / refused (per s)",
                "@s9",
                1.0,
                0,
                Neither,
                Target::None,
            ),
            load,
        ],
        _ => Vec::new(),
    }
}
