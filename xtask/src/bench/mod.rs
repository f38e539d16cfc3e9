//! `cargo xtask bench`: protoo-rs side by side with protoo-server.
//!
//! Builds the load generator (`protoo-bench`, with the floor server) and the
//! `room` example in release mode, installs the Node anchor's packages when
//! they are missing, then for every scenario starts a fresh server (ours,
//! then the anchor: `tests/interop/anchor/room-server.js` on the real
//! protoo-server, then, in the scenarios it can serve (S1, S2, S3), the
//! floor: `crates/protoo-bench/src/bin/floor.rs`, a bare tokio-tungstenite
//! protoo server with no framework around it), runs
//! `protoo-bench` against it, and stops the server. The load generator reads
//! the server's CPU time and RSS from `/proc/PID` at the edges of its
//! measurement window and prints one `RESULT key=value ...` line, which this
//! module turns into a table (stdout) and into the generated part of
//! `BENCHMARKS.md` (between the `bench:begin` / `bench:end` markers; the
//! rest of the file is kept).
//!
//! S10 and S11 run on a cluster: a fresh `redis-server` per measured server
//! and two processes of that server on it (ours and the anchor both with
//! `--redis`); the load generator spreads the members over both and also
//! reads Redis' CPU time. S10 and S11 also run, ours only, over a fresh
//! Sentinel set-up (`s10-sentinel`, `s11-sentinel`: Redis CPU is the
//! master's) and a fresh Redis Cluster of three masters with a replica each
//! (`s10-cluster`, `s11-cluster`: Redis CPU per shard, each master's
//! `SPUBLISH` calls, and how 1,000 rooms' slots spread over the shards; see
//! `ha.rs`). The room example is built with the `redis`
//! feature for every scenario (without `--redis` it behaves exactly as the
//! build without the feature), so S10 and the one-process S3 it is compared
//! with run the same binary; the metrics build has it too (`metrics,redis`),
//! so the overhead comparison differs in the metrics feature alone.
//!
//! S12 (blips) runs our server as the metrics build with `--metrics` on a
//! port of its own, which the load generator reads for the bytes held for
//! the sessions away (`protoo_session_held_bytes`), and with
//! `--resume-window 15`, and the load generator expects every member cut
//! to be resumed from it (`--expect-resume`: one seen leaving is an error,
//! which fails the smoke); the anchor has no resume (nor metrics), so its
//! column shows what a blip costs without one.
//!
//! S13 (rolling drain) runs two nodes on one redis-server, as S10 and S11
//! do, ours with `--resume-window 15 --drain-period 5`; the load generator
//! puts a round-robin balancer of its own in front of them, and takes the
//! first node out of its rotation and stops it (SIGTERM, by its `--pid`);
//! here its exit status is read once the load generator is done. Against
//! ours the load generator expects every session of that node to resume on
//! the other (`--expect-resume`); the anchor closes its peers with 4000 on
//! SIGTERM, so its column shows what such a deployment costs without
//! sessions that move.
//!
//! Several processes per box (`s3-2rooms`, `s3-2procs`, `s3-2procs-w1`,
//! `s10-w1`; ours only): S3 with two rooms of 100, a sender each, on one
//! process and then on two processes without Redis (each serving its own
//! room), the two with tokio's default runtime each (a worker per core) and
//! with one worker each (`TOKIO_WORKER_THREADS=1`); and S10, one room across
//! the two over Redis, with one worker each. What sizing workers per
//! process costs (the README's deployment notes).
//!
//! S16 (production shape: 100,000 peers in rooms of 100, chat, keepalive,
//! churn) runs our server as it ships; the anchor runs at growing peer
//! counts, a fresh server each, until its p99 passes 50 ms (see `shape.rs`;
//! the smoke runs it once at the smoke's 2,000). Its load generator
//! connects from many loopback addresses, and every server and load
//! generator runs with the descriptor limit raised (as root, the hard one
//! too, to 262,144).
//!
//! ```text
//! cargo xtask bench [--smoke] [--duration SECS] [--only ours|anchor|floor]
//!                   [--scenarios s1,s2,s2-4k,s2-16k,s3,s3-4k,s3k,s4,s4-auth,s4e,s5,s5-auth,s6,s7,
//!                                s8,s9,s10,s11,s12,s13,s14,s15,s16,s3-2rooms,s3-2procs,s3-2procs-w1,
//!                                s10-w1,s10-sentinel,s11-sentinel,s10-cluster,s11-cluster]
//!                   [--write | --no-write]
//! ```
//!
//! `--smoke` (CI): tiny versions of S1, S2 at 16 KB, S3, S5, S6, S8, S9, S10,
//! S3 on two processes of one worker each, S11, S12, S13, S14, S15 and S16
//! (2,000 peers) against our server, against the floor where it serves the
//! scenario, and against the anchor too when `tests/interop/node_modules`
//! is installed (smoke never runs npm); dev-profile builds; fails on any
//! error; writes nothing. The Sentinel and Redis Cluster variants are not
//! in the smoke: a fresh topology per run costs about 10 s. Servers and the load generator run under
//! `ulimit -n <hard limit>`, the hard limit first raised to 262,144 where
//! it is lower and may be (root with CAP_SYS_RESOURCE).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod blips;
mod drain;
mod ha;
mod overhead;
mod process;
mod procs;
mod report;
mod rows;
mod scenarios;
mod shape;

use ha::*;
use process::*;
use procs::{ONE_WORKER, OWN_ROOMS, PROCS, PROCS_NOTE};
use report::*;
use rows::*;
use scenarios::*;

type Result<T = ()> = std::result::Result<T, String>;

/// Runs of ours and of the floor in a scenario held to the floor's CPU
/// (interleaved; the table shows each one's median).
const FLOOR_RUNS: usize = 3;

/// Whether a row of scenario `key` has a target relative to the floor.
fn held_to_the_floor(key: &str) -> bool {
    rows(key)
        .iter()
        .any(|row| matches!(row.target, Target::FloorRatioAtMost(_)))
}

/// Whether a row of scenario `key` has a target on its difference from a
/// scenario held to the floor (S5 with a token, against S5).
fn against_a_held_one(key: &str) -> bool {
    rows(key).iter().any(|row| {
        row.delta
            && !matches!(row.target, Target::None)
            && row.of.is_some_and(|(of, _)| held_to_the_floor(of))
    })
}

/// Entry point: `args` are those after `bench`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let root = super::root();
    let started = Instant::now();

    let node_ready = root.join("tests/interop/node_modules").is_dir();
    let want_anchor = opts.only.is_none_or(|w| w == Which::Anchor);
    let want_ours = opts.only.is_none_or(|w| w == Which::Ours);
    let want_floor = opts.only.is_none_or(|w| w == Which::Floor);
    let with_anchor = want_anchor && (node_ready || !opts.smoke);
    if want_anchor && !with_anchor {
        println!("bench: tests/interop/node_modules missing: smoke runs against protoo-rs only");
    }

    // The smoke checks the harness, not speed: the dev profile reuses what
    // `cargo test` already built. Real runs use release builds.
    let profile: &[&str] = if opts.smoke { &[] } else { &["--release"] };
    let profile_dir = if opts.smoke { "debug" } else { "release" };
    super::run(
        "build protoo-bench and the floor",
        super::cargo()
            .args(["build", "-p", "protoo-bench", "--bins"])
            .args(profile),
    )?;
    let scenarios = scenarios(&opts);
    // The metrics build only for the scenarios whose overhead is measured
    // and those that read our server's metrics.
    let measured = scenarios
        .iter()
        .any(|sc| overhead::MEASURED.contains(&sc.key) || sc.metrics);
    let metrics_bin = if want_ours && measured {
        Some(overhead::build_metrics_room(profile, profile_dir)?)
    } else {
        None
    };
    if want_ours {
        super::run(
            "build the room (with its redis feature) and echo examples",
            super::cargo()
                .args(["build", "-p", "protoo-examples", "--features", "redis"])
                .args(["--example", "room", "--example", "echo"])
                .args(profile),
        )?;
    }
    if with_anchor && !node_ready {
        super::run(
            "npm ci (tests/interop)",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root.join("tests/interop")),
        )?;
    }

    let target = super::target_dir();
    let bench_bin = target.join(profile_dir).join("protoo-bench");
    let floor_bin = target.join(profile_dir).join("floor");
    let room_bin = target.join(profile_dir).join("examples/room");
    let echo = [ServerKind::Echo {
        bin: target.join(profile_dir).join("examples/echo"),
    }];
    let logs = target.join("bench-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    let metered = match &metrics_bin {
        Some(bin) => {
            overhead::check_builds(&room_bin, bin)?;
            Some(ServerKind::OursMetrics { bin: bin.clone() })
        }
        None => None,
    };
    let observed = metrics_bin.map(|bin| ServerKind::OursObserved { bin });
    let mut servers = Vec::new();
    if want_ours {
        servers.push(ServerKind::Ours { bin: room_bin });
    }
    if with_anchor {
        servers.push(ServerKind::Anchor {
            dir: root.join("tests/interop"),
        });
    }
    if want_floor {
        servers.push(ServerKind::Floor { bin: floor_bin });
    }

    // The cluster scenarios' Redis binaries (not the floor's business);
    // redis-sentinel and redis-cli for the Sentinel and Cluster variants
    // (ours only).
    let redis_tools = if scenarios.iter().any(|sc| sc.redis) && (want_ours || with_anchor) {
        let ha = scenarios.iter().any(|sc| sc.topology != Topology::Single) && want_ours;
        Some(RedisTools {
            server: super::redis::ensure()?,
            ha: if ha {
                Some(super::redis_ha::ensure()?)
            } else {
                None
            },
        })
    } else {
        None
    };
    let mut results: Vec<Outcome> = Vec::new();
    for sc in &scenarios {
        let against: &[ServerKind] = match (sc.echo, want_ours) {
            (true, true) => &echo,
            (true, false) => &[],
            (false, _) => &servers,
        };
        // The metrics build right after the plain one (see `overhead`).
        let metered = metered
            .as_ref()
            .filter(|_| overhead::MEASURED.contains(&sc.key));
        let mut order: Vec<&ServerKind> = Vec::new();
        for server in against {
            if matches!(server, ServerKind::Floor { .. }) && !sc.floor {
                continue;
            }
            // The scenarios that read our metrics run the metrics build.
            let server = match (server, &observed) {
                (ServerKind::Ours { .. }, Some(observed)) if sc.metrics => observed,
                _ => server,
            };
            // The anchor speaks to one redis-server only, and has no tokens.
            let ours_only = sc.ours_only || sc.topology != Topology::Single;
            if ours_only && !matches!(server, ServerKind::Ours { .. }) {
                continue;
            }
            order.push(server);
            if matches!(server, ServerKind::Ours { .. })
                && let Some(metered) = metered
            {
                order.push(metered);
                // More pairs, interleaved: the overhead is read from the
                // medians, less at the mercy of a burst of other load.
                let pairs = if opts.smoke { 1 } else { overhead::PAIRS };
                for _ in 1..pairs {
                    order.push(server);
                    order.push(metered);
                }
            }
        }
        // The scenarios held to the floor's CPU run ours and the floor
        // again, interleaved: the table shows each one's median run (see
        // `report::pick`), less at the mercy of a burst of other load.
        // A scenario whose target is a difference from one of those (the
        // token's cost over S5) runs ours as often, so that the difference
        // is between medians.
        if !opts.smoke && (held_to_the_floor(sc.key) || against_a_held_one(sc.key)) {
            let ours = order
                .iter()
                .copied()
                .find(|s| matches!(s, ServerKind::Ours { .. }));
            let floor = order
                .iter()
                .copied()
                .find(|s| matches!(s, ServerKind::Floor { .. }));
            for _ in 1..FLOOR_RUNS {
                order.extend(ours);
                order.extend(floor);
            }
        }
        for server in order {
            println!("\n==> {} against {}", sc.title, server.name());
            let outcome = match (sc.key, server) {
                // S16: the anchor at growing peer counts (see `shape`).
                ("s16", ServerKind::Anchor { .. }) if !opts.smoke => {
                    shape::step_anchor(sc, server, &bench_bin, &logs, &opts)
                }
                ("s16", _) => shape::annotate(run_one(
                    sc,
                    server,
                    &bench_bin,
                    &logs,
                    redis_tools.as_ref(),
                    &opts,
                )),
                _ => run_one(sc, server, &bench_bin, &logs, redis_tools.as_ref(), &opts),
            };
            match &outcome.result {
                Ok(r) => {
                    println!("    {}", r.line);
                    if let Some(x) = r.num("other_cpu_pct").filter(|x| *x > 20.0) {
                        println!(
                            "    warning: other processes used {x:.0}% of a core during \
                             the window: this result is noisy"
                        );
                    }
                }
                Err(e) => println!("    FAILED: {e}"),
            }
            results.push(outcome);
        }
    }

    let table = table(&scenarios, &servers, &results, !opts.smoke);
    let overhead = overhead::table(&scenarios, &results);
    let table = if overhead.is_empty() {
        table
    } else {
        format!("{table}\n{overhead}")
    };
    println!("\n{table}");
    if opts.smoke {
        println!("bench: smoke (dev builds, tiny runs): the numbers say nothing about speed");
    }
    println!(
        "bench: {} runs in {:.0} s; server logs in {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        logs.display()
    );

    let failures: Vec<String> = results
        .iter()
        .filter_map(|o| match &o.result {
            Err(e) => Some(format!("{} / {}: {e}", o.scenario, o.server)),
            Ok(r) if opts.smoke && !smoke_ok(r) => {
                Some(format!("{} / {}: {}", o.scenario, o.server, r.line))
            }
            Ok(_) => None,
        })
        .collect();

    let complete = !opts.smoke && opts.only.is_none() && opts.scenarios.is_none();
    if opts.write.unwrap_or(complete) && !opts.smoke {
        let path = root.join("BENCHMARKS.md");
        write_benchmarks(&path, &root, &opts, &table, &results)?;
        println!("bench: wrote {}", path.display());
    } else if !opts.smoke {
        if opts.write == Some(false) {
            println!("bench: --no-write: BENCHMARKS.md not written");
        } else {
            println!("bench: partial run, BENCHMARKS.md not written (--write to force)");
        }
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Ours,
    Anchor,
    Floor,
}

#[derive(Debug)]
struct Opts {
    smoke: bool,
    duration: f64,
    only: Option<Which>,
    scenarios: Option<Vec<String>>,
    write: Option<bool>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts {
            smoke: false,
            duration: 5.0,
            only: None,
            scenarios: None,
            write: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name {
                "--smoke" => o.smoke = true,
                "--write" => o.write = Some(true),
                "--no-write" => o.write = Some(false),
                "--duration" => {
                    let v = value()?;
                    o.duration = v
                        .parse::<f64>()
                        .ok()
                        .filter(|d| (0.1..=600.0).contains(d))
                        .ok_or_else(|| format!("--duration: expected seconds, got {v}"))?;
                }
                "--only" => {
                    o.only = Some(match value()?.as_str() {
                        "ours" => Which::Ours,
                        "anchor" => Which::Anchor,
                        "floor" => Which::Floor,
                        v => {
                            return Err(format!("--only: expected ours, anchor or floor, got {v}"));
                        }
                    });
                }
                "--scenarios" => {
                    let v = value()?;
                    let list: Vec<String> = v.split(',').map(|s| s.trim().to_lowercase()).collect();
                    for s in &list {
                        if !ALL.contains(&s.as_str()) {
                            return Err(format!(
                                "--scenarios: unknown {s} (known: {})",
                                ALL.join(",")
                            ));
                        }
                    }
                    o.scenarios = Some(list);
                }
                "-h" | "--help" => {
                    return Err("usage: cargo xtask bench [--smoke] [--duration SECS] \
                                [--only ours|anchor|floor] \
                                [--scenarios s1,s2,...,s4-auth,s5-auth,...,s10,s11,s12,s13,s14,s15,s16,\
                                s3-2rooms,s3-2procs,s3-2procs-w1,s10-w1,s10-sentinel,s11-sentinel,s10-cluster,s11-cluster] \
                                [--write|--no-write]"
                        .into());
                }
                _ => return Err(format!("bench: unknown argument {a}")),
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Command-line words, for `Opts::parse` (shared with the scenario
    /// modules' tests).
    pub(in crate::bench) fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options() {
        let o = Opts::parse(&args("--smoke --only ours --duration=2 --scenarios s1,S3k"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(o.smoke);
        assert_eq!(o.only, Some(Which::Ours));
        assert!((o.duration - 2.0).abs() < 1e-9);
        assert_eq!(o.scenarios, Some(vec!["s1".to_owned(), "s3k".to_owned()]));
        assert!(Opts::parse(&args("--bogus")).is_err());
        assert!(Opts::parse(&args("--scenarios s10,s11")).is_ok());
        assert!(Opts::parse(&args("--scenarios s12")).is_ok());
        assert!(Opts::parse(&args("--scenarios s99")).is_err());
        assert!(Opts::parse(&args("--duration")).is_err());
    }

    /// Our server and the floor, as a run against both lists them.
    fn ours_and_floor() -> [ServerKind; 2] {
        [
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            ServerKind::Floor {
                bin: PathBuf::new(),
            },
        ]
    }

    /// The scenarios of a default run with these keys.
    fn only(keys: &[&str]) -> Vec<Scenario> {
        let o = Opts::parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        scenarios(&o)
            .into_iter()
            .filter(|s| keys.contains(&s.key))
            .collect()
    }

    /// A load generator's RESULT line, parsed.
    pub(in crate::bench) fn parsed(line: &str) -> Parsed {
        Parsed {
            line: line.to_owned(),
            fields: line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// Asserts that the table of `sc` and `results`, for `ours` beside the
    /// anchor, has each of `rows`; the table.
    pub(in crate::bench) fn assert_rows(
        sc: &[Scenario],
        ours: ServerKind,
        results: &[Outcome],
        rows: &[&str],
    ) -> String {
        let servers = [
            ours,
            ServerKind::Anchor {
                dir: PathBuf::new(),
            },
        ];
        let t = table(sc, &servers, results, true);
        for row in rows {
            assert!(t.contains(row), "{row}\nnot in\n{t}");
        }
        t
    }

    #[test]
    fn table_marks_targets() {
        let results = vec![
            Outcome {
                scenario: "s2",
                server: "ours",
                result: Ok(parsed("rate=300 p50_us=10")),
            },
            Outcome {
                scenario: "s2",
                server: "anchor",
                result: Ok(parsed("rate=100 p50_us=20")),
            },
        ];
        let sc = only(&["s2"]);
        let servers = [
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            ServerKind::Anchor {
                dir: PathBuf::new(),
            },
        ];
        let t = table(&sc, &servers, &results, true);
        assert!(
            t.contains("| requests/s | 300 | 100 | – | 3.00× |  | ≥ 3× anchor | yes |"),
            "{t}"
        );
    }

    /// Ours and the floor run three times in a scenario held to the floor:
    /// the table shows each one's median run, whole, and the ratio of the
    /// two medians.
    #[test]
    fn the_table_shows_the_median_of_repeated_runs() {
        assert!(held_to_the_floor("s2") && held_to_the_floor("s3k") && held_to_the_floor("s5"));
        assert!(!held_to_the_floor("s1") && !held_to_the_floor("s4"));
        assert!(against_a_held_one("s5-auth") && !against_a_held_one("s4-auth"));
        let run = |server, cpu: f64, rate: u32| Outcome {
            scenario: "s2-16k",
            server,
            result: Ok(parsed(&format!("rate={rate} srv_cpu_us_per_op={cpu}"))),
        };
        let results = vec![
            run("ours", 12.0, 100),
            run("floor", 10.0, 200),
            run("ours", 9.0, 300),
            run("floor", 11.0, 400),
            run("ours", 10.5, 500),
            run("floor", 9.5, 600),
        ];
        let median = |server| pick(&results, "s2-16k", server).and_then(|p| p.num("rate"));
        assert_eq!(
            (median("ours"), median("floor")),
            (Some(500.0), Some(200.0))
        );
        // Of two, the lower; of none, none.
        assert_eq!(
            pick(&results[..4], "s2-16k", "ours").and_then(|p| p.num("rate")),
            Some(300.0)
        );
        assert!(pick(&results, "s2", "ours").is_none());
        let sc = only(&["s2-16k"]);
        let t = table(&sc, &ours_and_floor(), &results, true);
        assert!(
            t.contains(
                "| server CPU per request (µs) | 10.50 | – | 10.00 |  | 1.05× | ≤ 1.10× floor | yes |"
            ),
            "{t}"
        );
    }

    #[test]
    fn table_compares_with_the_floor() {
        let results = vec![
            Outcome {
                scenario: "s2-16k",
                server: "ours",
                result: Ok(parsed("rate=300 srv_cpu_us_per_op=11.5")),
            },
            Outcome {
                scenario: "s2-16k",
                server: "floor",
                result: Ok(parsed("rate=330 srv_cpu_us_per_op=10")),
            },
            Outcome {
                scenario: "s4",
                server: "ours",
                result: Ok(parsed("rss_per_peer_bytes=4000")),
            },
        ];
        let sc = only(&["s2-16k", "s4"]);
        assert!(sc.iter().any(|s| s.key == "s2-16k" && s.floor));
        assert!(sc.iter().any(|s| s.key == "s4" && !s.floor));
        let t = table(&sc, &ours_and_floor(), &results, true);
        // 11.5 / 10 = 1.15 > 1.10; no anchor target at 16 KB.
        assert!(
            t.contains(
                "| server CPU per request (µs) | 11.50 | – | 10.00 |  | 1.15× | ≤ 1.10× floor | **NO** |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| requests/s | 300 | – | 330 |  | 0.91× |  |  |"),
            "{t}"
        );
        assert!(t.contains("| 4.0 | – | not served |"), "{t}");
    }

    #[test]
    fn churn_is_held_to_the_floor() {
        let results = vec![
            Outcome {
                scenario: "s5",
                server: "ours",
                result: Ok(parsed("rate=20000 srv_cpu_us_per_op=55")),
            },
            Outcome {
                scenario: "s5",
                server: "floor",
                result: Ok(parsed("rate=21000 srv_cpu_us_per_op=50")),
            },
        ];
        let o = Opts::parse(&args("--scenarios s5,s5-auth")).unwrap_or_else(|e| panic!("{e}"));
        let sc = scenarios(&o);
        assert!(sc.iter().any(|s| s.key == "s5" && s.floor));
        assert!(sc.iter().any(|s| s.key == "s5-auth" && !s.floor));
        let t = table(&sc, &ours_and_floor(), &results, true);
        // 55 / 50 = 1.10 ≤ 1.2.
        assert!(
            t.contains(
                "| server CPU per connection (µs) | 55.00 | – | 50.00 |  | 1.10× | ≤ 1.20× floor | yes |"
            ),
            "{t}"
        );
    }

    #[test]
    fn redis_cluster_rows_show_each_shard() {
        let results = vec![Outcome {
            scenario: "s10-cluster",
            server: "ours",
            result: Ok(parsed(
                "rate=500000 redis_cpu_us_per_broadcast=12.5 \
                 redis_shard_cpu_us_per_broadcast=0.100+0.200+12.200 \
                 redis_shard_cpu_pct=0.1+0.2+30.5 redis_shard_spublish=0+0+4000 room_shard=3 \
                 foreign_spublish=0 rooms_per_shard=330+340+330 rooms_spread_pct=2.0 \
                 delivered_pct=100.00",
            )),
        }];
        let o = Opts::parse(&args("--scenarios s10-cluster,s11-sentinel"))
            .unwrap_or_else(|e| panic!("{e}"));
        let sc = scenarios(&o);
        assert_eq!(
            sc.iter()
                .map(|s| (s.key, s.nodes, s.topology))
                .collect::<Vec<_>>(),
            [
                ("s11-sentinel", 2, Topology::Sentinel),
                ("s10-cluster", 2, Topology::Cluster)
            ]
        );
        let t = assert_rows(
            &sc,
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            &results,
            &[
                "| deliveries/s | 500000 | not run | – |  |  |  |  |",
                "| Redis CPU per broadcast, shards 1 / 2 / 3 (µs) | 0.1 / 0.2 / 12.2 |",
                "| SPUBLISH calls, shards 1 / 2 / 3 (the room's shard) | 0 / 0 / 4000 (shard 3) |",
                "| SPUBLISH calls on shards the room is not on | 0 |  | – |  |  | ≤ 0 | yes |",
                "| 1,000 rooms' slots on shards 1 / 2 / 3 | 330 / 340 / 330 |",
                "| largest deviation from the mean, 1,000 rooms (%) | 2.0 |  | – |  |  | ≤ 25 | yes |",
            ],
        );
        // Sentinel: no shard rows, no anchor targets.
        assert!(!t.contains("≥ 5× anchor"), "{t}");
        assert_eq!(t.matches("shards 1 / 2 / 3").count(), 4, "{t}");
    }

    #[test]
    fn cluster_rows_compare_with_s3_and_render() {
        let ok = |scenario, server, line: &str| Outcome {
            scenario,
            server,
            result: Ok(parsed(line)),
        };
        let results = vec![
            ok("s3", "ours", "rate=1000000 p50_us=9000"),
            ok("s3", "anchor", "rate=80000"),
            ok(
                "s10",
                "ours",
                "rate=900000 remote_p50_us=12000 redis_cpu_pct=31.5 srv_cpu_pct=150 \
                 node_cpu_pct=90.4+59.6 cli_cpu_pct=40 other_cpu_pct=2 delivered_pct=100.00",
            ),
            ok("s10", "anchor", "rate=120000 redis_cpu_pct=2"),
            ok(
                "s11",
                "ours",
                "rate=3000 redis_cpu_us_per_op=80 observed_pct=100.00",
            ),
            ok("s11", "anchor", "rate=1000 observed_pct=100.00"),
        ];
        let o = Opts::parse(&args("--scenarios s3,s10,s11")).unwrap_or_else(|e| panic!("{e}"));
        let sc = scenarios(&o);
        assert_eq!(
            sc.iter().map(|s| (s.key, s.nodes)).collect::<Vec<_>>(),
            [("s3", 1), ("s10", 2), ("s11", 2)]
        );
        let servers = [
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            ServerKind::Anchor {
                dir: PathBuf::new(),
            },
            ServerKind::Floor {
                bin: PathBuf::new(),
            },
        ];
        let t = table(&sc, &servers, &results, true);
        for row in [
            "| S10 broadcast across 2 nodes, room of 100 (50 + 50) | deliveries/s | 900000 | 120000 \
             | not served | 7.50× |  | ≥ 5× anchor | yes |",
            "| deliveries/s, ours / S3 (one process, same run) | 0.90× | 1.50× |  |  |  | ≥ 0.8× S3 \
             | yes |",
            "| cross-node send→receive p50 (µs) | 12000 | – |  |  |  |  |  |",
            "| Redis CPU (% of a core) | 32 | 2 |  | 15.75× |  |  |  |",
            "| 90+60 / 40 / 32 / 2 | ? / ? / ? |",
            "| sessions/s (connect, join, close) | 3000 | 1000 | not served | 3.00× |",
            "| sessions seen arriving and leaving on every node (%) | 100.00 | 100.00 |  | 1.00× \
             |  | ≥ 100 | yes |",
        ] {
            assert!(t.contains(row), "{row}\nnot in\n{t}");
        }
        // Without S3 in the run, the ratio says so and the target is open.
        let alone: Vec<_> = results.into_iter().filter(|o| o.scenario != "s3").collect();
        let t = table(&sc[1..], &servers, &alone, true);
        assert!(
            t.contains("| S3 not run | S3 not run |  |  |  | ≥ 0.8× S3 | ? |"),
            "{t}"
        );

        // The generated part of BENCHMARKS.md says how the cluster runs.
        let path = std::env::temp_dir().join(format!("bench-render-{}.md", std::process::id()));
        std::fs::write(&path, format!("# B\n\n{BEGIN}\nold\n{END}\n\ntail\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let written = write_benchmarks(&path, &super::super::root(), &o, &t, &alone)
            .and_then(|()| std::fs::read_to_string(&path).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&path);
        let md = written.unwrap_or_else(|e| panic!("{e}"));
        assert!(md.starts_with("# B\n\n") && md.ends_with(&format!("{END}\n\ntail\n")));
        assert!(!md.contains("\nold\n"));
        assert!(
            md.contains(CLUSTER_NOTE) && md.contains("s10 ours: rate=900000"),
            "{md}"
        );
    }
}
