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
//! ```text
//! cargo xtask bench [--smoke] [--duration SECS] [--only ours|anchor|floor]
//!                   [--scenarios s1,s2,s2-4k,s2-16k,s3,s3-4k,s3k,s4,s4e,s5,s6,s7,s8,s9]
//!                   [--write | --no-write]
//! ```
//!
//! `--smoke` (CI): tiny versions of S1, S2 at 16 KB, S3, S5, S6, S8 and S9 against our
//! server, against the floor where it serves the scenario, and against the
//! anchor too when `tests/interop/node_modules` is installed (smoke never
//! runs npm); dev-profile builds; fails on any error; writes nothing.
//! Servers and the load generator run under `ulimit -n <hard limit>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod overhead;
mod process;
mod report;
mod scenarios;

use process::*;
use report::*;
use scenarios::*;

type Result<T = ()> = std::result::Result<T, String>;

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
    let metrics_bin = if want_ours {
        Some(overhead::build_metrics_room(profile, profile_dir)?)
    } else {
        None
    };
    if want_ours {
        super::run(
            "build the room and echo examples",
            super::cargo()
                .args(["build", "-p", "protoo-examples", "--example", "room"])
                .args(["--example", "echo"])
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

    let metered = match metrics_bin {
        Some(bin) => {
            overhead::check_builds(&room_bin, &bin)?;
            Some(ServerKind::OursMetrics { bin })
        }
        None => None,
    };
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

    let scenarios = scenarios(&opts);
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
        for server in order {
            println!("\n==> {} against {}", sc.title, server.name());
            let outcome = run_one(sc, server, &bench_bin, &logs, &opts);
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
                                [--scenarios s1,s2,s2-4k,s2-16k,s3,s3-4k,s3k,s4,s4e,s5,s6,s7,s8,s9] \
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

    fn args(s: &str) -> Vec<String> {
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
        assert!(Opts::parse(&args("--scenarios s10")).is_err());
        assert!(Opts::parse(&args("--duration")).is_err());
    }

    /// A load generator's RESULT line, parsed.
    fn parsed(line: &str) -> Parsed {
        Parsed {
            line: line.to_owned(),
            fields: line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
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
        let o = Opts::parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        let sc: Vec<_> = scenarios(&o)
            .into_iter()
            .filter(|s| s.key == "s2")
            .collect();
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
        let o = Opts::parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        let sc: Vec<_> = scenarios(&o)
            .into_iter()
            .filter(|s| s.key == "s2-16k" || s.key == "s4")
            .collect();
        assert!(sc.iter().any(|s| s.key == "s2-16k" && s.floor));
        assert!(sc.iter().any(|s| s.key == "s4" && !s.floor));
        let servers = [
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            ServerKind::Floor {
                bin: PathBuf::new(),
            },
        ];
        let t = table(&sc, &servers, &results, true);
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
}
