//! S16 (production shape): its rows, and the Node anchor run at growing
//! peer counts until its p99 passes the target. The scenario itself is
//! `crates/protoo-bench/src/scenarios/shape.rs`; its settings are in
//! `scenarios.rs`.

use super::*;

/// The latency S16 holds a server to: send→receive p99, ms.
pub(super) const P99_MS: f64 = 50.0;

/// Server CPU S16 holds a server to, % of a core.
pub(super) const CPU_PCT: f64 = 50.0;

/// The peers S16 is run with (and held to: fewer where the descriptor
/// limits cannot be raised that far).
pub(super) const PEERS: f64 = 100_000.0;

/// Our server's keepalive interval (the room example's default, as
/// protoo-server's `keepaliveInterval`), seconds: our run's window starts
/// no earlier than that after the first connection, so that it sees the
/// pings. The anchor's steps do not wait (five steps of a minute each would
/// be too long): its window ends before its first keepalive ping.
pub(super) const OURS_KEEPALIVE: u64 = 60;

/// The anchor's peer counts, tried in order (each against a fresh
/// server) until one misses [`P99_MS`] or loses a peer.
pub(super) const ANCHOR_STEPS: [usize; 5] = [5_000, 10_000, 20_000, 50_000, 100_000];

/// The anchor's window at each step, seconds (ours: S16's own).
pub(super) const ANCHOR_WINDOW: &str = "10";

/// The note for the generated part of `BENCHMARKS.md`.
pub(super) const NOTE: &str = " S16 runs our server as it ships (every limit at its \
default, keepalive every 60 s, a 15 s resume window) and the anchor with its defaults \
(keepalive every 60 s too); our window starts no earlier than one keepalive interval after \
the first connection. The anchor runs at 5,000, 10,000, 20,000, 50,000 and 100,000 peers \
(a fresh server each, a 10 s window right after the warm-up, so before its first \
keepalive ping), stopping at the first count where its p99 passes 50 ms or a peer is lost: \
its column shows the largest count that passed (or the first step, when none did). Where \
the descriptor limits (the hard one cannot be raised without CAP_SYS_RESOURCE) do not \
allow 100,000 connections per process, each run has as many whole rooms as fit, and says \
so in the peers row.";

/// Whether a run kept p99 within [`P99_MS`] with every peer joined and
/// none lost.
pub(super) fn passed(p: &Parsed) -> bool {
    p.num("p99_us").is_some_and(|v| v <= P99_MS * 1000.0)
        && p.num("lost") == Some(0.0)
        && p.num("peers_ok").is_some()
        && p.num("peers_ok") == p.num("peers")
}

/// Adds `max_peers` (the peers of a run that [`passed`]) to a result.
pub(super) fn annotate(mut o: Outcome) -> Outcome {
    if let Ok(p) = &mut o.result
        && passed(p)
        && let Some(n) = p.get("peers").map(str::to_owned)
    {
        set(p, "max_peers", n);
    }
    o
}

fn set(p: &mut Parsed, key: &str, value: String) {
    p.line.push_str(&format!(" {key}={value}"));
    p.fields.insert(key.to_owned(), value);
}

/// `args` with `flag`'s value replaced (or the pair appended).
pub(super) fn with_arg(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) if i + 1 < out.len() => out[i + 1] = value.to_owned(),
        _ => out.extend([flag.to_owned(), value.to_owned()]),
    }
    out
}

/// The anchor at each of [`ANCHOR_STEPS`] up to S16's peer count, until
/// one fails: the result of the largest that passed (or of the first step
/// when none did), with `max_peers` (0: none passed) and `anchor_steps`.
pub(super) fn step_anchor(
    sc: &Scenario,
    kind: &ServerKind,
    bench: &Path,
    logs: &Path,
    opts: &Opts,
) -> Outcome {
    let peers: usize = sc
        .args
        .iter()
        .position(|a| a == "--peers")
        .and_then(|i| sc.args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut best: Option<Parsed> = None;
    let mut first: Option<Result<Parsed>> = None;
    let mut steps = Vec::new();
    for n in ANCHOR_STEPS.into_iter().filter(|n| *n <= peers) {
        let args = with_arg(&sc.args, "--peers", &n.to_string());
        let step = Scenario {
            args: with_arg(&args, "--duration", ANCHOR_WINDOW),
            ..sc.clone()
        };
        println!("    {n} peers");
        let outcome = run_one(&step, kind, bench, logs, None, opts);
        match outcome.result {
            Ok(p) if passed(&p) => {
                steps.push(format!("{n}:ok"));
                println!("    {}", p.line);
                // Capped by the descriptor limits: the larger steps would
                // run the same count again.
                let capped = p.get("peers_wanted").is_some();
                best = Some(p);
                if capped {
                    break;
                }
            }
            Ok(p) => {
                let v = |k| p.get(k).unwrap_or("?").to_owned();
                steps.push(format!("{n}:p99_us={},lost={}", v("p99_us"), v("lost")));
                println!("    {}", p.line);
                first.get_or_insert(Ok(p));
                break;
            }
            Err(e) => {
                steps.push(format!("{n}:failed"));
                println!("    FAILED: {e}");
                first.get_or_insert(Err(e));
                break;
            }
        }
    }
    let max = best
        .as_ref()
        .and_then(|p| p.get("peers").map(str::to_owned))
        .unwrap_or_else(|| "0".to_owned());
    let mut result = match best {
        Some(p) => Ok(p),
        None => first.unwrap_or_else(|| Err("no anchor step at or below S16's peers".into())),
    };
    if let Ok(p) = &mut result {
        set(p, "max_peers", max);
        set(p, "anchor_steps", steps.join(","));
    }
    Outcome {
        scenario: sc.key,
        server: kind.short(),
        result,
    }
}

/// S16's rows.
pub(super) fn rows() -> Vec<Row> {
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
    vec![
        r(
            "peers joined (listed in their room)",
            "peers_ok",
            1.0,
            0,
            Higher,
            Target::AtLeast(PEERS),
        ),
        r(
            "largest peer count with p99 ≤ 50 ms and none lost (anchor: stepped)",
            "max_peers",
            1.0,
            0,
            Higher,
            Target::None,
        ),
        r(
            "server RSS per peer, above the base before connecting (KB)",
            "rss_per_peer_bytes",
            1000.0,
            2,
            Lower,
            // Above the base before the first connection, as S4's.
            Target::AtMost(super::rows::JOINED_PEER_KB),
        ),
        r(
            "server RSS at the window's end (MB)",
            "srv_rss_kb",
            1024.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "server RSS before connecting (MB)",
            "srv_rss_before_kb",
            1024.0,
            1,
            Neither,
            Target::None,
        ),
        r(
            "server CPU (% of a core)",
            "srv_cpu_pct",
            1.0,
            1,
            Lower,
            Target::AtMost(CPU_PCT),
        ),
        r(
            "server CPU per delivery (µs)",
            "srv_cpu_us_per_op",
            1.0,
            2,
            Lower,
            Target::None,
        ),
        r("chat deliveries/s", "rate", 1.0, 0, Neither, Target::None),
        r(
            "send→receive p50 (ms)",
            "p50_us",
            1000.0,
            2,
            Lower,
            Target::None,
        ),
        r(
            "send→receive p99 (ms)",
            "p99_us",
            1000.0,
            2,
            Lower,
            Target::AtMost(P99_MS),
        ),
        r(
            "send→receive max (ms)",
            "max_us",
            1000.0,
            1,
            Lower,
            Target::None,
        ),
        r(
            "keepalive pings/s seen by the clients",
            "pings_per_s",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "confirmation pings/s seen by the clients (ours, sessions that resume: one with \
             a notification after a pause, 25-100 ms apart under a stream)",
            "confirm_pings_per_s",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "peers replaced/s (close, connect, join)",
            "replaced_per_s",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "replacement connect + join p99 (ms)",
            "rejoin_p99_us",
            1000.0,
            1,
            Lower,
            Target::None,
        ),
        r(
            "peers lost (closed unasked, not joined, missed a chat)",
            "lost",
            1.0,
            0,
            Lower,
            Target::AtMost(0.0),
        ),
        r(
            "load generator: CPU (% of a core) / RSS (MB)",
            "@gen",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "CPU in the window, % of a core: server / client / other processes",
            "@cpu",
            1.0,
            0,
            Neither,
            Target::None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::tests::{args, assert_rows, parsed};

    #[test]
    fn shape_runs_as_shipped_with_each_servers_keepalive() {
        let full =
            scenarios(&Opts::parse(&args("--scenarios s16")).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(full.len(), 1);
        let s = &full[0];
        assert!(s.ours_args.is_empty(), "{:?}", s.ours_args);
        assert_eq!(s.ours_bench_args, ["--keepalive", "60"]);
        assert!(s.args.windows(2).any(|w| w == ["--peers", "100000"]));
        let smoke = scenarios(
            &Opts::parse(&args("--smoke --scenarios s16")).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(smoke.len(), 1);
        assert!(smoke[0].args.windows(2).any(|w| w == ["--peers", "2000"]));
        assert_eq!(smoke[0].server_args, ["--ping-interval", "1"]);

        let stepped = with_arg(&s.args, "--peers", "5000");
        assert!(stepped.windows(2).any(|w| w == ["--peers", "5000"]));
        assert_eq!(stepped.len(), s.args.len());
        assert_eq!(with_arg(&[], "--duration", "10"), ["--duration", "10"]);
    }

    #[test]
    fn shape_rows_hold_ours_to_the_targets() {
        let ours = annotate(Outcome {
            scenario: "s16",
            server: "ours",
            result: Ok(parsed(
                "ops=3000000 rate=100000 peers=100000 peers_ok=100000 rss_per_peer_bytes=3500 \
                 srv_rss_kb=350000 srv_cpu_pct=80.5 p50_us=1200 p99_us=9000 max_us=40000 \
                 pings_per_s=900 replaced_per_s=1000 lost=0 cli_cpu_pct=70 cli_rss_kb=512000 \
                 other_cpu_pct=3 errors=0",
            )),
        });
        let anchor = Outcome {
            scenario: "s16",
            server: "anchor",
            result: Ok(parsed(
                "ops=200000 rate=20000 peers=20000 peers_ok=20000 p99_us=30000 lost=0 \
                 max_peers=20000 anchor_steps=5000:ok,10000:ok,20000:ok,50000:p99_us=90000,lost=0 \
                 errors=0",
            )),
        };
        assert!(ours.result.as_ref().is_ok_and(smoke_ok));
        let sc =
            scenarios(&Opts::parse(&args("--scenarios s16")).unwrap_or_else(|e| panic!("{e}")));
        assert_rows(
            &sc,
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            &[ours, anchor],
            &[
                "| largest peer count with p99 ≤ 50 ms and none lost (anchor: stepped) | 100000 \
                 | 20000 | – | 5.00× |",
                "| server RSS per peer, above the base before connecting (KB) | 3.50 | – | – |  \
                 |  | ≤ 2 | **NO** |",
                "| server CPU (% of a core) | 80.5 | – | – |  |  | ≤ 50 | **NO** |",
                "| peers joined (listed in their room) | 100000 | 20000 | – | 5.00× |  | ≥ 100000 \
                 | yes |",
                "| send→receive p99 (ms) | 9.00 | 30.00 | – | 0.30× |  | ≤ 50 | yes |",
                "| peers lost (closed unasked, not joined, missed a chat) | 0 | 0 | – |  |  | ≤ 0 \
                 | yes |",
                "| load generator: CPU (% of a core) / RSS (MB) | 70 / 500 | ? / ? |",
            ],
        );
        // A run over the latency target gets no `max_peers`.
        let slow = annotate(Outcome {
            scenario: "s16",
            server: "ours",
            result: Ok(parsed("peers=100000 peers_ok=100000 p99_us=60000 lost=0")),
        });
        assert!(slow.result.is_ok_and(|p| p.get("max_peers").is_none()));
    }
}
