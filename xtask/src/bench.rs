//! `cargo xtask bench`: protoo-rs side by side with protoo-server.
//!
//! Builds the load generator (`protoo-bench`) and the `room` example in
//! release mode, installs the Node anchor's packages when they are missing,
//! then for every scenario starts a fresh server (ours, then the anchor:
//! `tests/interop/anchor/room-server.js` on the real protoo-server), runs
//! `protoo-bench` against it, and stops the server. The load generator reads
//! the server's CPU time and RSS from `/proc/PID` at the edges of its
//! measurement window and prints one `RESULT key=value ...` line, which this
//! module turns into a table (stdout) and into the generated part of
//! `BENCHMARKS.md` (between the `bench:begin` / `bench:end` markers; the
//! rest of the file is kept).
//!
//! ```text
//! cargo xtask bench [--smoke] [--duration SECS] [--only ours|anchor]
//!                   [--scenarios s1,s2,s3,s3k,s4,s5,s6,s7] [--write | --no-write]
//! ```
//!
//! `--smoke` (CI): tiny versions of S1, S3, S5 and S6 against our server, and
//! against the anchor too when `tests/interop/node_modules` is installed
//! (smoke never runs npm); dev-profile builds; fails on any error; writes
//! nothing.
//! Servers and the load generator run under `ulimit -n <hard limit>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

/// Per-peer outbound queue limit given to both servers in S6 (the anchor
/// has no such setting and ignores it).
const S6_QUEUE: u64 = 1024 * 1024;

/// Entry point: `args` are those after `bench`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let root = root();
    let started = Instant::now();

    let node_ready = root.join("tests/interop/node_modules").is_dir();
    let want_anchor = opts.only != Some(Which::Ours);
    let want_ours = opts.only != Some(Which::Anchor);
    let with_anchor = want_anchor && (node_ready || !opts.smoke);
    if want_anchor && !with_anchor {
        println!("bench: tests/interop/node_modules missing: smoke runs against protoo-rs only");
    }

    // The smoke checks the harness, not speed: the dev profile reuses what
    // `cargo test` already built. Real runs use release builds.
    let profile: &[&str] = if opts.smoke { &[] } else { &["--release"] };
    let profile_dir = if opts.smoke { "debug" } else { "release" };
    step(
        "build protoo-bench",
        cargo(&root)
            .args(["build", "-p", "protoo-bench"])
            .args(profile),
    )?;
    if want_ours {
        step(
            "build the room example",
            cargo(&root)
                .args(["build", "-p", "protoo-examples", "--example", "room"])
                .args(profile),
        )?;
    }
    if with_anchor && !node_ready {
        step(
            "npm ci (tests/interop)",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root.join("tests/interop")),
        )?;
    }

    let target = target_dir(&root);
    let bench_bin = target.join(profile_dir).join("protoo-bench");
    let room_bin = target.join(profile_dir).join("examples/room");
    let logs = target.join("bench-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    let mut servers = Vec::new();
    if want_ours {
        servers.push(ServerKind::Ours { bin: room_bin });
    }
    if with_anchor {
        servers.push(ServerKind::Anchor {
            dir: root.join("tests/interop"),
        });
    }

    let scenarios = scenarios(&opts);
    let mut results: Vec<Outcome> = Vec::new();
    for sc in &scenarios {
        for server in &servers {
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
                        v => return Err(format!("--only: expected ours or anchor, got {v}")),
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
                                [--only ours|anchor] [--scenarios s1,s2,s3,s3k,s4,s5,s6,s7] \
                                [--write|--no-write]"
                        .into());
                }
                _ => return Err(format!("bench: unknown argument {a}")),
            }
        }
        Ok(o)
    }
}

const ALL: [&str; 8] = ["s1", "s2", "s3", "s3k", "s4", "s5", "s6", "s7"];

/// One scenario as run: its key, title and the load generator's arguments.
#[derive(Debug)]
struct Scenario {
    key: &'static str,
    title: &'static str,
    args: Vec<String>,
    /// Extra server arguments (both servers).
    server_args: Vec<String>,
    /// Pin the server to CPU 0 and the load generator to CPU 1 (S1: see
    /// `PIN_NOTE`).
    pin: bool,
}

/// Why S1 is pinned.
const PIN_NOTE: &str = "S1 runs with the server pinned to CPU 0 and the load generator \
to CPU 1 (`taskset`): with one request in flight, the round trip on this kind of \
virtual machine depends mostly on whether the two processes happen to share a vCPU \
(about 20-30 µs) or not (60-100 µs), which unpinned is a coin toss between runs.";

fn scenarios(o: &Opts) -> Vec<Scenario> {
    let d = o.duration.to_string();
    let sc = |key, title, args: &[&str]| Scenario {
        key,
        title,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        server_args: Vec::new(),
        pin: false,
    };
    let mut list = if o.smoke {
        vec![
            sc(
                "s1",
                "S1 echo, 1 client x 1 in flight",
                &["--scenario", "s1", "--duration", "0.3", "--warmup", "0.1"],
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
                "s6",
                "S6 stalled member, 300 x 1 KB",
                &["--scenario", "s6", "--messages", "300", "--size", "1024"],
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
                "s3",
                "S3 broadcast, room of 100",
                &["--scenario", "s3", "--peers", "100", "--duration", &d],
            ),
            sc(
                "s3k",
                "S3 broadcast, room of 1000",
                &["--scenario", "s3", "--peers", "1000", "--duration", &d],
            ),
            sc(
                "s4",
                "S4 10,000 idle peers",
                &["--scenario", "s4", "--peers", "10000"],
            ),
            sc(
                "s5",
                "S5 churn: connect, echo, close; 8 concurrent",
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
        ]
    };
    for s in &mut list {
        if s.key == "s6" {
            s.server_args = vec!["--max-queue".into(), S6_QUEUE.to_string()];
        }
        s.pin = s.key == "s1" && can_pin();
    }
    if let Some(only) = &o.scenarios {
        list.retain(|s| only.iter().any(|k| k == s.key));
    }
    list
}

#[derive(Debug)]
enum ServerKind {
    Ours { bin: PathBuf },
    Anchor { dir: PathBuf },
}

impl ServerKind {
    fn name(&self) -> &'static str {
        match self {
            ServerKind::Ours { .. } => "protoo-rs",
            ServerKind::Anchor { .. } => "protoo-server",
        }
    }

    fn short(&self) -> &'static str {
        match self {
            ServerKind::Ours { .. } => "ours",
            ServerKind::Anchor { .. } => "anchor",
        }
    }

    fn command(&self, listen: &str, extra: &[String], cpus: Option<&str>) -> Command {
        let (program, mut args, dir): (String, Vec<String>, Option<&Path>) = match self {
            ServerKind::Ours { bin } => (bin.display().to_string(), Vec::new(), None),
            ServerKind::Anchor { dir } => (
                "node".to_owned(),
                vec!["anchor/room-server.js".to_owned()],
                Some(dir.as_path()),
            ),
        };
        args.push("--listen".into());
        args.push(listen.into());
        args.extend(extra.iter().cloned());
        let mut cmd = with_fd_limit(&program, &args, cpus);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        cmd
    }
}

/// `sh -c 'ulimit -n <hard>; exec [taskset -c CPUS] PROGRAM ARGS...'`: the
/// exec (and taskset's own exec) keeps the pid.
fn with_fd_limit(program: &str, args: &[String], cpus: Option<&str>) -> Command {
    let pin = match cpus {
        Some(c) => format!("taskset -c {c} "),
        None => String::new(),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec {pin}"$0" "$@""#
        ))
        .arg(program)
        .args(args);
    cmd
}

/// Whether `taskset` exists and there are two CPUs to pin to.
fn can_pin() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .args(["-c", "0", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A started server; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(
        kind: &ServerKind,
        extra: &[String],
        cpus: Option<&str>,
        log: &Path,
    ) -> Result<Server> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = kind
            .command(&listen, extra, cpus)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("start {}: {e}", kind.name()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no stdout".into());
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keeps draining stdout for the server's whole life.
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let server = Server {
            child,
            url: String::new(),
        };
        server.wait_listening(rx, kind, log)
    }

    fn wait_listening(
        mut self,
        rx: mpsc::Receiver<String>,
        kind: &ServerKind,
        log: &Path,
    ) -> Result<Server> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        self.url = rest.trim().to_owned();
                        return Ok(self);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "{} exited before listening (log: {})",
                        kind.name(),
                        log.display()
                    ));
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening (log: {})",
                    kind.name(),
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not print `listening on` within 30 s",
                    kind.name()
                ));
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The `RESULT` line of one run.
#[derive(Debug)]
struct Parsed {
    line: String,
    fields: BTreeMap<String, String>,
}

impl Parsed {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    fn num(&self, k: &str) -> Option<f64> {
        self.get(k)?.parse().ok()
    }
}

#[derive(Debug)]
struct Outcome {
    scenario: &'static str,
    server: &'static str,
    result: Result<Parsed>,
}

fn run_one(sc: &Scenario, kind: &ServerKind, bench: &Path, logs: &Path, opts: &Opts) -> Outcome {
    let log = logs.join(format!("{}-{}.log", kind.short(), sc.key));
    let outcome = |result| Outcome {
        scenario: sc.key,
        server: kind.short(),
        result,
    };
    let (server_cpus, bench_cpus) = if sc.pin {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    let server = match Server::start(kind, &sc.server_args, server_cpus, &log) {
        Ok(s) => s,
        Err(e) => return outcome(Err(e)),
    };
    let mut args = vec![
        "--url".to_owned(),
        server.url.clone(),
        "--pid".to_owned(),
        server.pid().to_string(),
    ];
    args.extend(sc.args.iter().cloned());
    let limit = Duration::from_secs_f64(if opts.smoke {
        60.0
    } else {
        300.0 + opts.duration * 2.0
    });
    let result = run_bench(bench, &args, bench_cpus, limit);
    drop(server);
    outcome(result)
}

/// Runs the load generator (stderr passed through), bounded by `limit`.
fn run_bench(bench: &Path, args: &[String], cpus: Option<&str>, limit: Duration) -> Result<Parsed> {
    let mut child = with_fd_limit(&bench.display().to_string(), args, cpus)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start {}: {e}", bench.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "protoo-bench still running after {} s: killed",
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| format!("protoo-bench ({status}) printed no RESULT line"))?;
    let fields = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>();
    if !status.success() {
        return Err(format!("protoo-bench failed ({status}): {line}"));
    }
    Ok(Parsed {
        line: line.to_owned(),
        fields,
    })
}

// ---------------------------------------------------------------------------
// The table.

/// Whether a larger value is better, for the ratio's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Debug)]
struct Row {
    scenario: &'static str,
    metric: &'static str,
    key: &'static str,
    /// Value shown = field / scale.
    scale: f64,
    decimals: usize,
    better: Better,
    target: Target,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    None,
    /// ours / anchor at least this.
    RatioAtLeast(f64),
    /// ours no higher than the anchor.
    NotAboveAnchor,
    /// ours (in displayed units) at most this.
    AtMost(f64),
    /// ours (in displayed units) at least this.
    AtLeast(f64),
}

fn rows(key: &str) -> Vec<Row> {
    use Better::{Higher, Lower, Neither};
    let r = |metric, key, scale, decimals, better, target| Row {
        scenario: "",
        metric,
        key,
        scale,
        decimals,
        better,
        target,
    };
    let cpu = |unit| r(unit, "srv_cpu_us_per_op", 1.0, 2, Lower, Target::None);
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
        "s2" => vec![
            r(
                "requests/s",
                "rate",
                1.0,
                0,
                Higher,
                Target::RatioAtLeast(3.0),
            ),
            r("latency p50 (µs)", "p50_us", 1.0, 1, Lower, Target::None),
            r("latency p99 (µs)", "p99_us", 1.0, 1, Lower, Target::None),
            cpu("server CPU per request (µs)"),
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
        "s3" | "s3k" => vec![
            r(
                "deliveries/s",
                "rate",
                1.0,
                0,
                Higher,
                Target::RatioAtLeast(5.0),
            ),
            r(
                "send→receive p50 (µs)",
                "p50_us",
                1.0,
                0,
                Lower,
                Target::None,
            ),
            r(
                "send→receive p99 (µs)",
                "p99_us",
                1.0,
                0,
                Lower,
                Target::None,
            ),
            cpu("server CPU per delivery (µs)"),
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
        "s4" => vec![
            r(
                "server RSS per idle peer (KB)",
                "rss_per_peer_bytes",
                1000.0,
                1,
                Lower,
                Target::AtMost(5.0),
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
            r("cycle p50 (µs)", "p50_us", 1.0, 0, Lower, Target::None),
            r("cycle p99 (µs)", "p99_us", 1.0, 0, Lower, Target::None),
            cpu("server CPU per connection (µs)"),
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
            r(
                "all-peer echo round (ms)",
                "round_ms",
                1.0,
                0,
                Lower,
                Target::None,
            ),
            r(
                "server RSS per peer (KB)",
                "rss_per_peer_bytes",
                1000.0,
                1,
                Lower,
                Target::None,
            ),
        ],
        _ => Vec::new(),
    }
}

fn cell(p: Option<&Parsed>, row: &Row) -> (String, Option<f64>) {
    let Some(p) = p else {
        return ("failed".into(), None);
    };
    match row.key {
        "@cpu" => {
            let s = p
                .num("srv_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            let c = p
                .num("cli_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            let x = p
                .num("other_cpu_pct")
                .map_or("?".into(), |v| format!("{v:.0}"));
            (format!("{s} / {c} / {x}"), None)
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
        k => match p.num(k) {
            Some(v) => {
                let v = v / row.scale;
                (format!("{v:.*}", row.decimals), Some(v))
            }
            None => ("–".into(), None),
        },
    }
}

/// A smoke run passes when it had no error, did some work and, where
/// delivery is measured, delivered everything.
fn smoke_ok(r: &Parsed) -> bool {
    r.num("errors") == Some(0.0)
        && r.num("ops").is_some_and(|n| n > 0.0)
        && r.num("delivered_pct").is_none_or(|p| p >= 100.0)
}

/// The markdown table; `targets`: fill the Target and Met columns.
fn table(
    scenarios: &[Scenario],
    servers: &[ServerKind],
    results: &[Outcome],
    targets: bool,
) -> String {
    let find = |sc: &str, server: &str| {
        results
            .iter()
            .find(|o| o.scenario == sc && o.server == server)
            .and_then(|o| o.result.as_ref().ok())
    };
    let has = |w: &str| servers.iter().any(|s| s.short() == w);
    let mut out = String::from(
        "| Scenario | Metric | protoo-rs | protoo-server | ours / anchor | Target | Met |\n\
         |---|---|---:|---:|---:|---|---|\n",
    );
    for sc in scenarios {
        let ours = find(sc.key, "ours");
        let anchor = find(sc.key, "anchor");
        for (i, mut row) in rows(sc.key).into_iter().enumerate() {
            row.scenario = if i == 0 { sc.title } else { "" };
            let (o_txt, o) = if has("ours") {
                cell(ours, &row)
            } else {
                ("–".into(), None)
            };
            let (a_txt, a) = if has("anchor") {
                cell(anchor, &row)
            } else {
                ("–".into(), None)
            };
            let ratio = match (o, a) {
                (Some(o), Some(a)) if a != 0.0 && row.better != Better::Neither => {
                    format!("{:.2}×", o / a)
                }
                _ => String::new(),
            };
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
                Target::AtLeast(t) => (format!("≥ {t}"), yes_no(o.map(|o| o >= t))),
            };
            out.push_str(&format!(
                "| {} | {} | {o_txt} | {a_txt} | {ratio} | {target} | {met} |\n",
                row.scenario, row.metric
            ));
        }
    }
    out
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "**NO**".into(),
        None => "?".into(),
    }
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md

const BEGIN: &str =
    "<!-- bench:begin (generated by `cargo xtask bench`; edit outside these markers) -->";
const END: &str = "<!-- bench:end -->";

fn write_benchmarks(
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
         Ratios are ours / anchor: above 1 is better for rates, below 1 for \
         latency, CPU and memory. {}\n\n",
        opts.duration,
        if results.iter().any(|o| o.scenario == "s1") && can_pin() {
            PIN_NOTE
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

const HEADER: &str = "# Benchmarks\n\n\
protoo-rs (`examples/room.rs`) side by side with the Node original \
(`tests/interop/anchor/room-server.js` on protoo-server 4.0.8), same room \
contract, same load generator (`crates/protoo-bench`), same run. Reproduce \
with one command:\n\n```sh\ncargo xtask bench            # all scenarios, writes this file\n\
cargo xtask bench --smoke    # two-second check of the harness (CI)\n```\n\n";

const SCENARIOS: &str = "\n## Scenarios\n\n\
- **S1** request/response (`echo`), 1 client, 1 request in flight: latency.\n\
- **S2** request/response, 50 clients x 4 requests in flight (closed loop).\n\
- **S3** one sender calls `broadcast` with `{t, s}` in its data; every other member \
of a room of 100 (and of 1000) receives `chat` with that data. The sender keeps at \
most about 16,384 deliveries outstanding (flow control on what receivers have got), \
so the rate is what the server carries without any queue growing past that. \
Deliveries per second, and send-to-receive latency, which therefore includes \
waiting behind up to that many deliveries (it is latency at saturation).\n\
- **S4** 10,000 peers (rooms of 100) connect and each is verified by one echo; \
server RSS per peer = (RSS after, settled 1 s - RSS before the first connection) / peers.\n\
- **S5** churn: connect, one echo, close (close handshake completed), 8 loops in parallel.\n\
- **S6** a member does the WebSocket handshake and never reads; 3 members read; a \
sender broadcasts 50,000 notifications of 1 KB (at most 64 not yet delivered to the \
readers). Server RSS growth (peak - before), what the readers got, and when the \
stalled member was closed (from the readers' `peerClosed`; its socket is read to the \
end afterwards). Both servers are started with `--max-queue 1048576` (protoo-server \
has no such limit and ignores it).\n\
- **S7** 15,000 peers connected at once; then all of them send an echo at the same \
moment and every one must be answered.\n";

fn machine(root: &Path) -> String {
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

// ---------------------------------------------------------------------------
// Helpers.

/// The workspace root: the nearest folder above this crate that holds
/// `Cargo.toml` and `tests/interop`.
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file() && d.join("tests/interop").is_dir())
        .or_else(|| here.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root.join(d) }
        }
        None => root.join("target"),
    }
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    println!("==> {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
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
        assert!(Opts::parse(&args("--scenarios s9")).is_err());
        assert!(Opts::parse(&args("--duration")).is_err());
    }

    #[test]
    fn table_marks_targets() {
        let parsed = |line: &str| Parsed {
            line: line.to_owned(),
            fields: line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
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
            t.contains("| requests/s | 300 | 100 | 3.00× | ≥ 3× anchor | yes |"),
            "{t}"
        );
    }
}
