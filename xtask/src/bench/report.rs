//! The report: the table printed to stdout (rows from `rows.rs`) and the
//! generated part of `BENCHMARKS.md`.

use super::*;

// ---------------------------------------------------------------------------
// The table.

pub(super) fn cell(p: Option<&Parsed>, row: &Row) -> (String, Option<f64>) {
    let Some(p) = p else {
        return ("failed".into(), None);
    };
    match row.key {
        "@cpu" | "@procs-cpu" => {
            let s = p
                .num("srv_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            let c = p
                .num("cli_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            let x = p
                .num("other_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            // Several processes: each, and (a cluster) Redis apart.
            match p.get("node_cpu_pct") {
                Some(nodes) => {
                    let nodes: Vec<String> = nodes
                        .split('+')
                        .map(|v| v.parse::<f64>().map_or("?".into(), |v| format!("{v:.0}")))
                        .collect();
                    let nodes = nodes.join("+");
                    if row.key == "@procs-cpu" {
                        return (format!("{nodes} / {c} / {x}"), None);
                    }
                    let r = p
                        .num("redis_cpu_pct")
                        .map_or("?".into(), |v| format!("{v:.0}"));
                    (format!("{nodes} / {c} / {r} / {x}"), None)
                }
                None => (format!("{s} / {c} / {x}"), None),
            }
        }
        "@gen" => {
            let c = p
                .num("cli_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            let m = p
                .num("cli_rss_kb")
                .map_or("?".into(), |v| format!("{:.0}", v / 1024.0));
            (format!("{c} / {m}"), None)
        }
        "@stalled" => {
            let end = p.get("stalled_end").unwrap_or("?");
            let s = match (
                p.get("stalled_closed_ms"),
                p.get("stalled_closed_after_sent"),
            ) {
                (Some(ms), Some(n)) => format!("{end} at {ms} ms, after {n} sent"),
                _ if end == "open" => "still open".to_owned(),
                _ => end.to_owned(),
            };
            (s, None)
        }
        "@spublish" => {
            let calls = p
                .get("redis_shard_spublish")
                .unwrap_or("?")
                .replace('+', " / ");
            let owner = p.get("room_shard").unwrap_or("?");
            (format!("{calls} (shard {owner})"), None)
        }
        k if k.starts_with("@shards:") => {
            let field = &k["@shards:".len()..];
            let each: Vec<String> = p
                .get(field)
                .unwrap_or("?")
                .split('+')
                .map(|v| match v.parse::<f64>() {
                    Ok(v) if v.fract() == 0.0 => format!("{v:.0}"),
                    Ok(v) => format!("{v:.1}"),
                    Err(_) => v.to_owned(),
                })
                .collect();
            (each.join(" / "), None)
        }
        "@s9" => {
            let n = |k| p.num(k).map_or("?".into(), |v| format!("{v:.0}"));
            (
                format!("{} / {}", n("accepted_per_s"), n("refused_per_s")),
                None,
            )
        }
        k => match p.num(k) {
            Some(v) => {
                let v = v / row.scale;
                (format!("{v:.*}", row.decimals), Some(v))
            }
            None => ("–".into(), None),
        },
    }
}

/// A row shown as a ratio to another scenario ([`Row::of`]): `p`'s value
/// over `base`'s, for the same server.
pub(super) fn relative(
    p: Option<&Parsed>,
    base: Option<&Parsed>,
    base_name: &str,
    row: &Row,
) -> (String, Option<f64>) {
    let Some(p) = p else {
        return ("failed".into(), None);
    };
    let Some(base) = base else {
        return (format!("{base_name} not run"), None);
    };
    match (p.num(row.key), base.num(row.key)) {
        (Some(v), Some(b)) if b > 0.0 => {
            let v = v / b;
            (format!("{v:.*}×", row.decimals), Some(v))
        }
        _ => ("–".into(), None),
    }
}

/// A row shown as a difference from another scenario ([`Row::delta`]):
/// `p`'s value minus `base`'s, for the same server, in displayed units.
pub(super) fn difference(
    p: Option<&Parsed>,
    base: Option<&Parsed>,
    base_name: &str,
    row: &Row,
) -> (String, Option<f64>) {
    let Some(p) = p else {
        return ("failed".into(), None);
    };
    let Some(base) = base else {
        return (format!("{base_name} not run"), None);
    };
    match (p.num(row.key), base.num(row.key)) {
        (Some(v), Some(b)) => {
            let v = (v - b) / row.scale;
            (format!("{v:+.*}", row.decimals), Some(v))
        }
        _ => ("–".into(), None),
    }
}

/// A smoke run passes when it had no error, did some work and, where
/// delivery is measured, delivered everything.
pub(super) fn smoke_ok(r: &Parsed) -> bool {
    r.num("errors") == Some(0.0)
        && r.num("ops").is_some_and(|n| n > 0.0)
        && r.num("delivered_pct").is_none_or(|p| p >= 100.0)
}

/// The run of `server` in scenario `sc` the table shows: of several (the
/// scenarios held to the floor run ours and the floor more than once,
/// interleaved), the one with the median server CPU per operation (the
/// lower middle of an even count), all its figures from that one run.
pub(super) fn pick<'a>(results: &'a [Outcome], sc: &str, server: &str) -> Option<&'a Parsed> {
    let cpu = |p: &Parsed| p.num("srv_cpu_us_per_op").unwrap_or(f64::MAX);
    let mut runs: Vec<&Parsed> = results
        .iter()
        .filter(|o| o.scenario == sc && o.server == server)
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    runs.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    runs.get(runs.len().saturating_sub(1) / 2).copied()
}

/// The markdown table; `targets`: fill the Target and Met columns.
pub(super) fn table(
    scenarios: &[Scenario],
    servers: &[ServerKind],
    results: &[Outcome],
    targets: bool,
) -> String {
    let find = |sc: &str, server: &str| pick(results, sc, server);
    let has = |w: &str| servers.iter().any(|s| s.short() == w);
    let ratio = |o: Option<f64>, x: Option<f64>, row: &Row| match (o, x) {
        (Some(o), Some(x)) if x != 0.0 && row.better != Better::Neither => {
            format!("{:.2}×", o / x)
        }
        _ => String::new(),
    };
    let mut out = String::from(
        "| Scenario | Metric | protoo-rs | protoo-server | floor | ours / anchor | ours / floor \
         | Target | Met |\n\
         |---|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for sc in scenarios {
        let value = |server: &str, row: &Row| {
            let p = find(sc.key, server);
            match row.of {
                None => cell(p, row),
                Some((key, name)) if row.delta => difference(p, find(key, server), name, row),
                Some((key, name)) => relative(p, find(key, server), name, row),
            }
        };
        for (i, mut row) in rows(sc.key).into_iter().enumerate() {
            row.scenario = if i == 0 { sc.title } else { "" };
            let (o_txt, o) = if has("ours") {
                value("ours", &row)
            } else {
                ("–".into(), None)
            };
            let ours_only = sc.echo || sc.ours_only || sc.topology != Topology::Single;
            let (a_txt, a) = match (has("anchor"), ours_only) {
                (true, false) => value("anchor", &row),
                // The echo example's scenarios, the token scenarios and the
                // Sentinel and Redis Cluster variants have no Node
                // counterpart.
                (true, true) if i == 0 => ("not run".into(), None),
                (true, true) => (String::new(), None),
                (false, _) => ("–".into(), None),
            };
            let (f_txt, f) = match (has("floor"), sc.floor) {
                (true, true) => value("floor", &row),
                // Said once per scenario the floor does not speak.
                (true, false) if i == 0 => ("not served".into(), None),
                (true, false) => (String::new(), None),
                (false, _) => ("–".into(), None),
            };
            let vs_anchor = ratio(o, a, &row);
            let vs_floor = ratio(o, f, &row);
            let (target, met) = match if targets { row.target } else { Target::None } {
                Target::None => (String::new(), String::new()),
                Target::RatioAtLeast(t) => (
                    format!("≥ {t}× anchor"),
                    yes_no(o.zip(a).map(|(o, a)| a > 0.0 && o / a >= t)),
                ),
                Target::NotAboveAnchor => {
                    ("≤ anchor".into(), yes_no(o.zip(a).map(|(o, a)| o <= a)))
                }
                Target::AtMost(t) => (format!("≤ {t}"), yes_no(o.map(|o| o <= t))),
                Target::OfAtLeast(t) => (
                    format!("≥ {t}× {}", row.of.map_or("?", |(_, name)| name)),
                    yes_no(o.map(|o| o >= t)),
                ),
                Target::AtLeast(t) => (format!("≥ {t}"), yes_no(o.map(|o| o >= t))),
                Target::FloorRatioAtMost(t) => (
                    format!("≤ {t:.2}× floor"),
                    yes_no(o.zip(f).map(|(o, f)| f > 0.0 && o / f <= t)),
                ),
            };
            out.push_str(&format!(
                "| {} | {} | {o_txt} | {a_txt} | {f_txt} | {vs_anchor} | {vs_floor} | {target} \
                 | {met} |\n",
                row.scenario, row.metric
            ));
        }
    }
    out
}

pub(super) fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "**NO**".into(),
        None => "?".into(),
    }
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md

pub(super) const BEGIN: &str =
    "<!-- bench:begin (generated by `cargo xtask bench`; edit outside these markers) -->";
pub(super) const END: &str = "<!-- bench:end -->";

pub(super) fn write_benchmarks(
    path: &Path,
    root: &Path,
    opts: &Opts,
    table: &str,
    results: &[Outcome],
) -> Result<()> {
    let machine = machine(root);
    let mut block = String::new();
    block.push_str(BEGIN);
    block.push_str("\n\n## Latest run\n\n");
    block.push_str(&machine);
    block.push_str(&format!(
        "\nThroughput scenarios measure a {} s window after a warm-up; each scenario \
         runs against a freshly started server. The load generator and the server \
         share the machine's cores: the \"CPU in the window\" rows show how much \
         each used (100 = one core) and how much other processes took, so a run \
         where server and client together reach the core count is bounded by the \
         machine, not by one side alone, and one with much \"other\" CPU is noisy. \
         The anchor (Node) runs its JavaScript on one thread; ours uses every core. \
         Ratios are ours / anchor and ours / floor: above 1 is better for rates, \
         below 1 for latency, CPU and memory. The floor \
         (`crates/protoo-bench/src/bin/floor.rs`) is a bare tokio-tungstenite protoo \
         server with no framework around it (default 128 KiB buffers, one writer \
         task per connection, data forwarded as raw JSON): the least a server on \
         tokio-tungstenite costs for the same messages. It answers `echo` and \
         `broadcast` only, so it runs in S1, S2, S3 and S5 (\"not served\" elsewhere). \
         The scenarios held to the floor's CPU (S2, S3, S5) run ours and the floor \
         three times each, interleaved (ours, the anchor, the floor, then ours and \
         the floor twice more), and S5 with a token, whose target is its difference \
         from S5, runs ours three times: the table shows each one's run with the \
         median server CPU per operation, and the raw results below list every \
         run. {}{}{}{}{}\n\n",
        opts.duration,
        if results.iter().any(|o| o.scenario == "s1") && can_pin() {
            PIN_NOTE
        } else {
            ""
        },
        if results.iter().any(|o| CLUSTER.contains(&o.scenario)) {
            CLUSTER_NOTE
        } else {
            ""
        },
        if results
            .iter()
            .any(|o| Topology::of(o.scenario) != Topology::Single)
        {
            HA_NOTE
        } else {
            ""
        },
        if results.iter().any(|o| PROCS.contains(&o.scenario)) {
            PROCS_NOTE
        } else {
            ""
        },
        if results.iter().any(|o| o.scenario == "s16") {
            super::shape::NOTE
        } else {
            ""
        }
    ));
    block.push_str(table);
    block.push_str("\n<details><summary>Raw results (<code>protoo-bench</code> RESULT lines)</summary>\n\n```text\n");
    for o in results {
        match &o.result {
            Ok(p) => block.push_str(&format!("{} {}: {}\n", o.scenario, o.server, p.line)),
            Err(e) => block.push_str(&format!("{} {}: FAILED {e}\n", o.scenario, o.server)),
        }
    }
    block.push_str("```\n\n</details>\n\n");
    block.push_str(END);

    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ if old.trim().is_empty() => format!("{}{block}\n{}", HEADER, SCENARIOS),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

/// How S10 and S11 run, for the generated part of `BENCHMARKS.md`.
pub(super) const CLUSTER_NOTE: &str = " S10 and S11 run on a cluster: a fresh \
redis-server 7 (no persistence) for each measured server, and two processes of that server \
on it (ours: the room example with `--redis`; the anchor: `room-server.js --redis`, \
protoo-server 4.0.8 with the npm `redis` client, `tests/interop/anchor/cluster.js`); the \
load generator splits the members between the two, and reads Redis' CPU time from \
`/proc` over the window as it does the servers'. Their server CPU is both processes \
together; the CPU row shows each process, the client, Redis and the rest. S10's \
\"ours / S3\" compares its deliveries per second with S3 in a room of 100 on one process \
in the same run (the same binary: the room example is built with its `redis` feature \
for every scenario).";

/// How the Sentinel and Redis Cluster variants run.
pub(super) const HA_NOTE: &str = " The `-sentinel` and `-cluster` rows are S10 and S11 \
over a fresh Sentinel set-up (a master, a replica, three `redis-sentinel`; ours with \
`--redis-sentinel ... --redis-master protoo`; Redis CPU is the master's) and a fresh Redis \
Cluster (three masters with a replica each; ours with `--redis-cluster ...`; Redis CPU is \
the three masters', each apart, shards numbered by their first slot), ours only (the \
anchor speaks to one redis-server). On Redis Cluster the measured room lives on one shard: \
the SPUBLISH row counts each master's calls over the whole run (warm-up included) and the \
shard that owns the room's slot, and the 1,000-room rows count where the slots of rooms \
`room-0` … `room-999` fall (CRC16 of the hash tag `{bench:room:R}`, as protoo-redis names \
a room's keys and channel).";

pub(super) const HEADER: &str = "# Benchmarks\n\n\
protoo-rs (`examples/room/main.rs`) side by side with the Node original \
(`tests/interop/anchor/room-server.js` on protoo-server 4.0.8), same room \
contract, same load generator (`crates/protoo-bench`), same run. Reproduce \
with one command:\n\n```sh\ncargo xtask bench            # all scenarios, writes this file\n\
cargo xtask bench --smoke    # two-second check of the harness (CI)\n```\n\n";

pub(super) const SCENARIOS: &str = "\n## Scenarios\n\n\
The **floor** (`crates/protoo-bench/src/bin/floor.rs`) runs beside ours and the anchor in \
S1, S2, S3 and S5: a bare tokio-tungstenite protoo server (default 128 KiB buffers, one writer \
task per connection, data forwarded as raw JSON); `ours / floor` is what the framework \
costs above it. Targets: server CPU per message ≤ 1.10× the floor in S2 and S3 at every \
size, and server CPU per connection ≤ 1.2× the floor in S5.\n\n\
- **S1** request/response (`echo`), 1 client, 1 request in flight: latency.\n\
- **S2** request/response, 50 clients x 4 requests in flight (closed loop); also with \
the request's data padded to 4 KB and 16 KB (a mediasoup `join` carries \
rtpCapabilities of 5-20 KB).\n\
- **S3** one sender calls `broadcast` with `{t, s}` in its data; every other member \
of a room of 100 (and of 1000) receives `chat` with that data. The sender keeps at \
most about 16,384 deliveries outstanding (flow control on what receivers have got), \
so the rate is what the server carries without any queue growing past that. \
Deliveries per second, and send-to-receive latency, which therefore includes \
waiting behind up to that many deliveries (it is latency at saturation). Also \
with the data padded to 4 KB in the room of 100.\n\
- **S4** 10,000 peers (rooms of 100) connect and each is verified by one echo; \
server RSS per peer = (RSS after, settled 1 s - RSS before the first connection) / peers. \
The same against `examples/echo.rs`, the quickstart (a plain `tokio::spawn` per \
connection, one `Peer` each, no room): what the plainest application costs.\n\
- **S5** churn: connect, one echo, close (close handshake completed), 8 loops in parallel.\n\
- **S6** a member does the WebSocket handshake and never reads; 3 members read; a \
sender broadcasts 50,000 notifications of 1 KB (at most 64 not yet delivered to the \
readers). Server RSS growth (peak - before), what the readers got, and when the \
stalled member was closed (from the readers' `peerClosed`; its socket is read to the \
end afterwards). Both servers are started with `--max-queue 1048576` (protoo-server \
has no such limit and ignores it).\n\
- **S7** 15,000 peers connected at once; then all of them send an echo at the same \
moment and every one must be answered.\n\
- **S8** one peer sends 1,000 `ask` requests of 900 KB each (the padding outside the \
data the server sends back) and never answers the requests the server sends it; it \
reads everything. Server RSS growth (peak - before) by the end of the flood plus 2 s; \
answers by code. Our server runs without rate limits here (`--message-rate 0 \
--byte-rate 0`), so the incoming byte budget (4 MiB) alone bounds what it holds.\n\
- **S9** one sender in a room of 1000 sends `broadcast` requests as fast as it can \
(64 outstanding); the members count what they receive in the window. Our server runs \
with `--message-rate 200 --message-burst 400` (the room example's default): it may send \
at most 200 x 999 notifications a second. The anchor has no rate limit.\n\
- **S10** S3 across the two processes of a cluster on one Redis: a room of 100, 50 members \
on each process, the sender on the first. Deliveries per second (target: at least 0.8x S3 \
in one process in the same run, and 5x the anchor's cluster), send-to-receive latency (also \
for the members on the other process alone), Redis' CPU.\n\
- **S11** presence churn across the two processes: 8 loops of connect (to each process in \
turn), `join`, close, in one room where one member per process joined first and watches: \
every `join` answer must list both watchers, and each watcher must get `newPeer` and \
`peerClosed` for every session, once. Sessions per second, Redis' CPU per session.\n\
- **Several processes per box** (`s3-2rooms`, `s3-2procs`, `s3-2procs-w1`, `s10-w1`; ours \
only): S3 in two rooms of 100 (a sender each) on one process; on two processes without \
Redis, each serving its own room, with tokio's default runtime each (a worker per core) \
and with one worker each (`TOKIO_WORKER_THREADS=1`); and S10 with one worker per process. \
Server CPU per delivery of both processes together against S3 (or S10) in the same run, \
and each process's CPU.\n\
- **S12** blips: a room of 100 on one process; one member (the sender, connected \
directly) calls `broadcast` every 100 ms; the other 99 joined through a TCP proxy inside \
the load generator. After a 5 s steady phase the proxy cuts their connections one at a \
time, spread evenly over 10 s (`SO_LINGER` 0 on both of its sockets: a reset to the member \
and to the server, whatever was in flight through the proxy lost); each member notices \
the loss by its failed read and, as protoo-client does, connects again at once to the \
same URL (through the proxy), without joining again. Our server runs with \
`--resume-window 15` and is the build with the `metrics` feature, its `/metrics` read \
every 20 ms during the blips; the anchor has no resume: each member cut leaves (the \
others get `peerClosed`) and comes back as a new peer. Deliveries lost, of every \
broadcast to every member cut: those sent at or after the moment the member noticed the \
loss (target 0), those sent before (in flight at the cut), and those sent while it was \
away (cut to the new connection open); duplicates; members seen leaving (target 0); \
deliveries on the new connection sent before it opened (held while away); time from the cut to the \
new connection open; server CPU per member cut (the blip phase, until every member is \
back plus 1 s, less what the steady phase's rate would have used in that time, over 99); \
the bytes held for the members away at the peak (`protoo_session_held_bytes`).\n\
- **S13** rolling drain: two processes on one Redis, as S10, behind a round-robin TCP \
balancer inside the load generator (each new connection to the next node in its rotation); \
1,000 peers in 100 rooms of 10, connected one after the other so that each room has 5 \
members on each process, all joined; in each room one member in turn calls `broadcast` \
once a second (the rooms' turns spread over the second), and the others record what \
they get by sequence number. After a 5 s steady phase the load generator takes process A \
out of the balancer's rotation (no new connection goes to it, as a load balancer \
deregisters a node being deployed) and sends it SIGTERM. Each member, as protoo-client \
does, connects again at once through the balancer on a close other than 4000, without \
joining again; one closed with 4000 stays closed. Our server runs with `--resume-window \
15 --drain-period 5`: on SIGTERM it closes its connections with 1012 spread over 5 s, and \
each session moves to process B when its member comes back there (which sends it \
`resumed`); the process exits once every session moved or ended. The anchor closes its \
peers with 4000 and exits. Time from the SIGTERM until each member of A got `resumed` \
(p50, and the last), until A's process exited, and its exit status; chat deliveries lost \
(each chat must reach every other member of its room; target 0) and duplicated; chats \
lost with their sender (no answer, and no member got it); chats refused by A while it \
drained (`server shutting down`: the member sends it again once back, on B, as an app \
would retry); members of A seen leaving \
(`peerClosed`; target 0); process B's CPU from the SIGTERM until every member of A is \
back and A exited, over the 8 s after the SIGTERM, and in the steady phase. The chat goes on until 8 s after the \
SIGTERM for both servers (at least 1 s after the drain), so what is lost is counted over \
the same time.\n\
- **S14** join amplification: 16 peers join one room with the longest display name the \
server takes (1,000,000 bytes, halved until a `join` is accepted: protoo-server takes any), \
reading everything; one more peer's `join` and its answer (what one small request costs); \
then 50 peers that never read send 2 `join`s each, every one answered with the member \
list. Server RSS before, at its peak during the attack (3 s), and 3 s after the attackers \
dropped their connections (what the allocator gave back); bytes the server wrote during \
the attack (`/proc/PID/io` `wchar`). Both servers with their defaults.\n\
- **S15** fan-out in bytes: S9 with 64 KB broadcasts in a room of 500 (16 outstanding): \
the bytes the members receive per second against our server's fan-out budget \
(`--fan-out-rate 20000000`, the room example's default: 20 MB/s delivered on one \
sender's behalf). The anchor has no such budget.\n\
- **S16** production shape: 100,000 peers in 1,000 rooms of 100, every one joined (listed in \
its room's presence); in each room one member in turn calls `broadcast` once a second (the \
rooms spread over the second: about 100,000 deliveries a second in all); 1 % of the peers a \
second leave (close handshake: their room hears `peerClosed`) and are replaced by a new \
connection with a new peer id that joins the same room; every member keeps reading, so \
the server's pings are answered (and counted: the keepalive ones, and apart the \
confirmation pings with which our server, with the resume window it ships with, learns \
what a connection received). The clients connect from \
127.0.0.2 and up (one address per 10,000 peers, plus two: one address has about 28,000 \
ephemeral ports), 128 handshakes at a time, and the servers and the load generator run \
with the descriptor limit raised to 262,144 (where the hard limit cannot be raised, with \
as many whole rooms as it allows). The 30 s window starts 5 s after the fill and \
no earlier than one keepalive interval after the first connection. Server RSS at the \
window's end against before the first connection (per peer; target ≤ 2 KB), server CPU \
(target ≤ 50 % of a core), send→receive latency (target p99 ≤ 50 ms), pings and \
replacements per second, peers lost (a connection closed unasked, a replacement that \
failed to join, or a chat of its room sent after its `join` was answered and never \
received: target 0), and the load generator's own CPU and RSS. The anchor runs at 5,000 to 100,000 peers until its p99 passes 50 ms: the \
largest count that held, and ours / that.\n";

pub(super) fn machine(root: &Path) -> String {
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let date = out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut commit = out("git", &["rev-parse", "--short", "HEAD"]);
    if !out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str(" (with uncommitted changes)");
    }
    let rustc = out("rustc", &["--version"]);
    let node = out("node", &["--version"]);
    format!(
        "- Date: {date}; commit {commit}\n\
         - Machine: {cores} cores ({model}), Linux {}; the load generator and the server run on the same {cores} cores\n\
         - {rustc}; Node {node}\n",
        kernel.trim()
    )
}
