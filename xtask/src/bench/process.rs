//! Process control: starting a fresh server per scenario (ours, the Node
//! anchor or the floor) under the file-descriptor limit, optionally pinned to a CPU,
//! running the load generator against it, and stopping both by pid. A
//! cluster scenario (S10, S11) starts a fresh redis-server (`redis.rs`), or
//! a fresh Sentinel set-up or Redis Cluster (`ha.rs`), and two servers on it
//! (`--redis URL --redis-prefix bench`, or the Sentinel or Cluster flags),
//! and stops the servers, then Redis. The scenarios of several processes
//! per box (`PROCS`) start two servers without Redis, each serving its own
//! rooms, and set their worker threads (`TOKIO_WORKER_THREADS`).

use super::*;

#[derive(Debug)]
pub(super) enum ServerKind {
    Ours {
        bin: PathBuf,
    },
    /// Ours built with the `metrics` feature, run with `--metrics`.
    OursMetrics {
        bin: PathBuf,
    },
    /// The same build, in the scenarios that read its metrics (see
    /// `Scenario::metrics`): `--metrics` on a port the load generator is
    /// told (`--metrics-url`); reported in our column.
    OursObserved {
        bin: PathBuf,
    },
    /// The quickstart (`examples/echo.rs`), for the scenarios that measure
    /// the plainest application (S4 on echo); reported in our column.
    Echo {
        bin: PathBuf,
    },
    Anchor {
        dir: PathBuf,
    },
    /// The floor (`crates/protoo-bench/src/bin/floor.rs`): a bare
    /// tokio-tungstenite protoo server, only in the scenarios it can serve.
    Floor {
        bin: PathBuf,
    },
}

impl ServerKind {
    pub(super) fn name(&self) -> &'static str {
        match self {
            ServerKind::Ours { .. } => "protoo-rs",
            ServerKind::OursMetrics { .. } => "protoo-rs with metrics",
            ServerKind::OursObserved { .. } => "protoo-rs (metrics build, /metrics read)",
            ServerKind::Echo { .. } => "protoo-rs (echo example)",
            ServerKind::Anchor { .. } => "protoo-server",
            ServerKind::Floor { .. } => "floor (bare tokio-tungstenite)",
        }
    }

    pub(super) fn short(&self) -> &'static str {
        match self {
            ServerKind::Ours { .. } | ServerKind::Echo { .. } | ServerKind::OursObserved { .. } => {
                "ours"
            }
            ServerKind::OursMetrics { .. } => "metrics",
            ServerKind::Anchor { .. } => "anchor",
            ServerKind::Floor { .. } => "floor",
        }
    }

    pub(super) fn command(&self, listen: &str, extra: &[String], cpus: Option<&str>) -> Command {
        let (program, mut args, dir): (String, Vec<String>, Option<&Path>) = match self {
            // `--metrics` for the observed build: see `run_one`.
            ServerKind::Ours { bin }
            | ServerKind::Floor { bin }
            | ServerKind::OursObserved { bin } => (bin.display().to_string(), Vec::new(), None),
            ServerKind::OursMetrics { bin } => (
                bin.display().to_string(),
                vec!["--metrics".to_owned(), "127.0.0.1:0".to_owned()],
                None,
            ),
            // The quickstart takes its address as its one argument.
            ServerKind::Echo { bin } => (bin.display().to_string(), Vec::new(), None),
            ServerKind::Anchor { dir } => (
                "node".to_owned(),
                vec!["anchor/room-server.js".to_owned()],
                Some(dir.as_path()),
            ),
        };
        if !matches!(self, ServerKind::Echo { .. }) {
            args.push("--listen".into());
        }
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
/// exec (and taskset's own exec) keeps the pid. A hard limit below
/// [`NOFILE`] is raised to it first where allowed (root): S16's 100,000
/// connections need more descriptors than a default hard limit gives.
pub(super) fn with_fd_limit(program: &str, args: &[String], cpus: Option<&str>) -> Command {
    let pin = match cpus {
        Some(c) => format!("taskset -c {c} "),
        None => String::new(),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"h="$(ulimit -Hn)"; [ "$h" = unlimited ] || [ "$h" -ge {NOFILE} ] || ulimit -Hn {NOFILE} 2>/dev/null; ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec {pin}"$0" "$@""#
        ))
        .arg(program)
        .args(args);
    cmd
}

/// The descriptor limit the servers and the load generator are given
/// (where the hard limit is lower and may be raised).
pub(super) const NOFILE: u64 = 262_144;

/// Whether `taskset` exists and there are two CPUs to pin to.
pub(super) fn can_pin() -> bool {
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
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) url: String,
}

impl Server {
    /// Starts `kind` with `extra` arguments, pinned to `cpus`, with
    /// `workers` tokio worker threads (`TOKIO_WORKER_THREADS`; `None`:
    /// tokio's default, one per core), its stderr to `log`.
    pub(super) fn start(
        kind: &ServerKind,
        extra: &[String],
        cpus: Option<&str>,
        workers: Option<usize>,
        log: &Path,
    ) -> Result<Server> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = kind.command(&listen, extra, cpus);
        match workers {
            Some(n) => cmd.env("TOKIO_WORKER_THREADS", n.to_string()),
            // Not inherited from the caller's environment either.
            None => cmd.env_remove("TOKIO_WORKER_THREADS"),
        };
        let mut child = cmd
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

    pub(super) fn wait_listening(
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_by_pid(&mut self.child);
    }
}

pub(super) use crate::stop_by_pid;

/// The Redis key prefix of the cluster scenarios' servers.
const REDIS_PREFIX: &str = "bench";

/// A port that was free a moment ago on 127.0.0.1.
pub(super) fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The `RESULT` line of one run.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) line: String,
    pub(super) fields: BTreeMap<String, String>,
}

impl Parsed {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    pub(super) fn num(&self, k: &str) -> Option<f64> {
        self.get(k)?.parse().ok()
    }
}

#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) scenario: &'static str,
    pub(super) server: &'static str,
    pub(super) result: Result<Parsed>,
}

/// Runs scenario `sc` against a fresh `kind` server (a fresh cluster of
/// `sc.nodes` of them on a fresh Redis of the scenario's topology, `redis`
/// being its binaries).
pub(super) fn run_one(
    sc: &Scenario,
    kind: &ServerKind,
    bench: &Path,
    logs: &Path,
    redis: Option<&RedisTools>,
    opts: &Opts,
) -> Outcome {
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
    let mut server_args = sc.server_args.clone();
    if matches!(
        kind,
        ServerKind::Ours { .. } | ServerKind::OursMetrics { .. } | ServerKind::OursObserved { .. }
    ) {
        server_args.extend(sc.ours_args.iter().cloned());
    }
    let mut bench_args = Vec::new();
    if matches!(
        kind,
        ServerKind::Ours { .. } | ServerKind::OursMetrics { .. } | ServerKind::OursObserved { .. }
    ) {
        bench_args.extend(sc.ours_bench_args.iter().cloned());
    }
    // The metrics endpoint the load generator reads (one node).
    if matches!(kind, ServerKind::OursObserved { .. }) {
        let addr = match free_port() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(e) => return outcome(Err(e)),
        };
        server_args.extend(["--metrics".to_owned(), addr.clone()]);
        bench_args.extend(["--metrics-url".to_owned(), format!("http://{addr}/metrics")]);
    }
    // Declared before the servers: dropped (stopped) after them, also on
    // an early return.
    let cluster = if sc.redis {
        let Some(tools) = redis else {
            return outcome(Err("no redis-server for a cluster scenario".into()));
        };
        let log = logs.join(format!("redis-{}-{}.log", kind.short(), sc.key));
        match Backing::start(sc, tools, &log) {
            Ok(r) => Some(r),
            Err(e) => return outcome(Err(e)),
        }
    } else {
        None
    };
    if let Some(r) = &cluster {
        server_args.extend(r.server_args());
        server_args.extend(["--redis-prefix".to_owned(), REDIS_PREFIX.to_owned()]);
    }
    let mut servers = Vec::with_capacity(sc.nodes);
    for node in 0..sc.nodes {
        let log = if sc.nodes > 1 {
            logs.join(format!("{}-{}-node{}.log", kind.short(), sc.key, node + 1))
        } else {
            logs.join(format!("{}-{}.log", kind.short(), sc.key))
        };
        match Server::start(kind, &server_args, server_cpus, sc.workers, &log) {
            Ok(s) => servers.push(s),
            Err(e) => return outcome(Err(e)),
        }
    }
    let mut args = Vec::new();
    for server in &servers {
        args.extend(["--url".to_owned(), server.url.clone()]);
    }
    for server in &servers {
        args.extend(["--pid".to_owned(), server.pid().to_string()]);
    }
    if let Some(r) = &cluster {
        for pid in r.pids() {
            args.extend(["--redis-pid".to_owned(), pid.to_string()]);
        }
    }
    args.extend(sc.args.iter().cloned());
    args.extend(bench_args);
    let limit = Duration::from_secs_f64(if opts.smoke {
        60.0
    } else {
        300.0 + opts.duration * 2.0
    });
    let mut result = run_bench(bench, &args, bench_cpus, limit);
    // What each shard of a Redis Cluster carried, read before it stops.
    if let (Ok(parsed), Some(r)) = (&mut result, &cluster) {
        for (key, value) in r.shard_fields(sc, REDIS_PREFIX) {
            parsed.line.push_str(&format!(" {key}={value}"));
            parsed.fields.insert(key, value);
        }
    }
    // S13: how the node the load generator stopped (SIGTERM) exited.
    if let (Ok(parsed), true, Some(a)) = (&mut result, sc.key == "s13", servers.first_mut()) {
        let status = match a.child.try_wait() {
            Ok(Some(status)) => status
                .code()
                .map_or_else(|| "signal".to_owned(), |c| c.to_string()),
            _ => "running".to_owned(),
        };
        parsed.line.push_str(&format!(" a_exit_status={status}"));
        parsed.fields.insert("a_exit_status".to_owned(), status);
    }
    // The nodes leave the cluster while Redis still answers.
    drop(servers);
    drop(cluster);
    outcome(result)
}

/// Runs the load generator (stderr passed through), bounded by `limit`.
pub(super) fn run_bench(
    bench: &Path,
    args: &[String],
    cpus: Option<&str>,
    limit: Duration,
) -> Result<Parsed> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// redis-server from `PROTOO_REDIS_SERVER` or PATH; `None` (the test
    /// is skipped) on a machine without it.
    fn redis_server() -> Option<PathBuf> {
        let named = std::env::var_os("PROTOO_REDIS_SERVER").map(PathBuf::from);
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        });
        let found = named.filter(|p| p.is_file()).or(on_path);
        if found.is_none() {
            eprintln!("redis-server not found: skipped");
        }
        found
    }

    /// A cluster run whose server cannot start still stops its Redis (by
    /// pid, SIGTERM: Redis logs it) before it returns.
    #[test]
    fn a_failed_cluster_run_stops_its_redis() {
        let Some(redis) = redis_server() else { return };
        let opts = Opts::parse(&["--smoke".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
        let all = scenarios(&opts);
        let Some(sc) = all.iter().find(|s| s.key == "s10") else {
            panic!("no s10 in the smoke");
        };
        let logs = std::env::temp_dir().join(format!("bench-fail-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
        let kind = ServerKind::Ours {
            bin: logs.join("no-such-server"),
        };
        let outcome = run_one(
            sc,
            &kind,
            Path::new("/nonexistent"),
            &logs,
            Some(&RedisTools {
                server: redis,
                ha: None,
            }),
            &opts,
        );
        assert!(outcome.result.is_err());
        let log = logs.join("redis-ours-s10.log");
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("SIGTERM") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_dir_all(&logs);
        assert!(text.contains("Ready to accept connections"), "{text}");
        assert!(text.contains("SIGTERM"), "{text}");
    }
}
