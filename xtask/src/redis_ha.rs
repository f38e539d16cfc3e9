//! The two highly available Redis topologies the cluster tests also run
//! over: a Sentinel set-up (a master, a replica, three `redis-sentinel`
//! processes) and a Redis Cluster (three masters with a replica each, six
//! `redis-server --cluster-enabled yes` joined with `redis-cli --cluster
//! create`). Each process on a free port of 127.0.0.1, stopped by pid when
//! dropped (so also when the run fails). Readiness is polled with
//! `redis-cli` (bounded retries, never a fixed sleep).
//!
//! `cargo xtask ci` starts both on a thread of their own while clippy runs,
//! and hands them to the tests as `PROTOO_REDIS_SENTINEL` (+
//! `PROTOO_REDIS_MASTER`) and `PROTOO_REDIS_CLUSTER`, then, with the same
//! variables, to the interop suites (the three-process cluster suite runs
//! over each). Tests that kill a master or move slots start their own
//! (protoo-redis's `failover.rs`, and `outage.rs`, whose cases restart,
//! stop or reconfigure the master on each of the three topologies, so they
//! run in the plain test step, not over these shared ones). The
//! benchmarks' `-sentinel` and `-cluster` scenarios start a fresh one per
//! run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis::Server;
use crate::{Result, apt_install};

const REDIS_SENTINEL: &str = "/usr/bin/redis-sentinel";
const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// The master's name in the sentinels' configuration.
pub(crate) const MASTER: &str = "protoo";

/// How long a topology may take to be ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// `redis-sentinel` and `redis-cli`, installed with apt-get if missing
/// (Debian's `redis-sentinel` and `redis-tools`); their paths.
pub(crate) fn ensure() -> Result<(PathBuf, PathBuf)> {
    let sentinel =
        crate::redis::which("redis-sentinel").unwrap_or_else(|| PathBuf::from(REDIS_SENTINEL));
    if !sentinel.exists() {
        apt_install("redis-sentinel", Path::new(REDIS_SENTINEL))?;
    }
    let cli = crate::redis::which("redis-cli").unwrap_or_else(|| PathBuf::from(REDIS_CLI));
    if !cli.exists() {
        apt_install("redis-tools", Path::new(REDIS_CLI))?;
    }
    Ok((sentinel, cli))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A directory of the run's own for the topologies' files.
fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("protoo-xtask-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A redis-server on a free port with `extra` arguments.
fn server(binary: &Path, extra: &[String]) -> Result<Server> {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no"])
            .chain(["--daemonize", "no", "--logfile", ""])
            .map(str::to_owned)
            .collect();
        args.extend(extra.iter().cloned());
        match Server::spawn(binary, &args, port, "Ready to accept connections", None) {
            Ok(server) => return Ok(server),
            Err(e) => last = e,
        }
    }
    Err(format!("redis-server did not start on a free port: {last}"))
}

/// `redis-cli -p PORT ARGS...`'s output, if it ran.
pub(crate) fn cli(cli: &Path, port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` until it holds, for at most [`READY_WAIT`].
fn until(what: &str, mut check: impl FnMut() -> bool) -> Result {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > READY_WAIT {
            return Err(format!("{what}: not within {READY_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A master, a replica and three sentinels (quorum 2).
pub(crate) struct Sentinel {
    servers: Vec<Server>,
    sentinels: Vec<Server>,
    dir: PathBuf,
}

impl Sentinel {
    pub(crate) fn start(binary: &Path, sentinel: &Path, cli_path: &Path) -> Result<Sentinel> {
        // A replica keeps the master's data in a file: in the run's own
        // directory.
        let dir = run_dir("sentinel")?;
        let dir_arg = dir.to_string_lossy().into_owned();
        let master = server(binary, &["--dir".to_owned(), dir_arg.clone()])?;
        let replica = server(
            binary,
            &[
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                master.port().to_string(),
                "--dir".to_owned(),
                dir_arg,
            ],
        )?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\n\
                     sentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n",
                    master.port()
                ),
            )
            .map_err(|e| format!("{}: {e}", conf.display()))?;
            let args = [conf.to_string_lossy().into_owned()];
            sentinels.push(Server::spawn(
                sentinel,
                &args,
                port,
                "+monitor master",
                None,
            )?);
        }
        let set = Sentinel {
            servers: vec![master, replica],
            sentinels,
            dir,
        };
        let replica_port = set.servers[1].port();
        until("the Sentinel replica syncs", || {
            cli(cli_path, replica_port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        })?;
        for sentinel in &set.sentinels {
            until("the sentinels know each other", || {
                cli(cli_path, sentinel.port(), &["SENTINEL", "MASTER", MASTER]).is_some_and(
                    |info| {
                        let lines: Vec<&str> = info.lines().collect();
                        let get = |name: &str| {
                            lines
                                .windows(2)
                                .find(|pair| pair[0] == name)
                                .map(|pair| pair[1])
                        };
                        get("num-slaves") == Some("1") && get("num-other-sentinels") == Some("2")
                    },
                )
            })?;
        }
        println!(
            "Sentinel set-up: master {} on 127.0.0.1:{}, replica on 127.0.0.1:{}, sentinels {}",
            MASTER,
            set.servers[0].port(),
            replica_port,
            set.addresses()
        );
        Ok(set)
    }

    /// The master's process id (the one it started as master: a failover
    /// moves the role, and none is made here).
    pub(crate) fn master_pid(&self) -> u32 {
        self.servers[0].pid()
    }

    /// `HOST:PORT,...` of the sentinels.
    pub(crate) fn addresses(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Three masters with a replica each.
pub(crate) struct Cluster {
    nodes: Vec<Server>,
    dir: PathBuf,
}

impl Cluster {
    pub(crate) fn start(binary: &Path, cli_path: &Path) -> Result<Cluster> {
        let dir = run_dir("cluster")?;
        let mut nodes = Vec::new();
        for i in 0..6 {
            nodes.push(server(
                binary,
                &[
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-config-file".to_owned(),
                    format!("nodes-{i}.conf"),
                    "--cluster-node-timeout".to_owned(),
                    "1000".to_owned(),
                    "--dir".to_owned(),
                    dir.to_string_lossy().into_owned(),
                ],
            )?);
        }
        let set = Cluster { nodes, dir };
        let addresses: Vec<String> = set
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = Command::new(cli_path)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", cli_path.display()))?;
        if !status.success() {
            return Err(format!("redis-cli --cluster create failed ({status})"));
        }
        for node in &set.nodes {
            until("the Redis Cluster is ok", || {
                cli(cli_path, node.port(), &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })?;
        }
        println!(
            "Redis Cluster: 3 masters, 3 replicas on {}",
            set.addresses()
        );
        Ok(set)
    }

    /// Its masters, by the slots they serve (`CLUSTER NODES`), first slot
    /// first.
    pub(crate) fn masters(&self, cli_path: &Path) -> Result<Vec<Shard>> {
        let port = self.nodes[0].port();
        let listing = cli(cli_path, port, &["CLUSTER", "NODES"])
            .ok_or_else(|| format!("redis-cli CLUSTER NODES on {port} failed"))?;
        let mut shards = Vec::new();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].split(',').any(|f| f == "master") {
                continue;
            }
            let address = fields[1].split('@').next().unwrap_or_default();
            let node_port: u16 = address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("CLUSTER NODES: no port in {line}"))?;
            let node = self
                .nodes
                .iter()
                .find(|n| n.port() == node_port)
                .ok_or_else(|| format!("CLUSTER NODES: unknown node {address}"))?;
            let mut slots = Vec::new();
            for range in &fields[8..] {
                // Slots being moved (`[...]`) are not served yet.
                if range.starts_with('[') {
                    continue;
                }
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                let parse = |v: &str| {
                    v.parse::<u16>()
                        .map_err(|e| format!("CLUSTER NODES: slot {v}: {e}"))
                };
                slots.push((parse(from)?, parse(to)?));
            }
            shards.push(Shard {
                port: node_port,
                pid: node.pid(),
                slots,
            });
        }
        shards.sort_by_key(|s| s.slots.first().map_or(u16::MAX, |r| r.0));
        Ok(shards)
    }

    /// `HOST:PORT,...` of its nodes.
    pub(crate) fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One master of a Redis Cluster: the shard of the slots it serves.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) port: u16,
    pub(crate) pid: u32,
    /// Inclusive ranges.
    pub(crate) slots: Vec<(u16, u16)>,
}

impl Shard {
    /// Whether it serves `slot`.
    pub(crate) fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(from, to)| (from..=to).contains(&slot))
    }
}

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of
/// its hash tag (`{...}`, when not empty), else of the whole key, modulo
/// 16384.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

// The processes stop (by pid) as their `Server`s drop, after this.
impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both topologies, started side by side with the caller's work.
pub(crate) struct Topologies {
    pub(crate) sentinel: Sentinel,
    pub(crate) cluster: Cluster,
}

/// Starts both on a thread; join it for them.
pub(crate) fn start_in_background(binary: PathBuf) -> std::thread::JoinHandle<Result<Topologies>> {
    std::thread::spawn(move || {
        let (sentinel_binary, cli_path) = ensure()?;
        let cluster = std::thread::scope(|scope| {
            let cluster = scope.spawn(|| Cluster::start(&binary, &cli_path));
            let sentinel = Sentinel::start(&binary, &sentinel_binary, &cli_path);
            let cluster = cluster
                .join()
                .map_err(|_| "the Redis Cluster start panicked".to_owned())?;
            Ok::<_, String>((sentinel?, cluster?))
        })?;
        Ok(Topologies {
            sentinel: cluster.0,
            cluster: cluster.1,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_as_redis_computes_them() {
        // `CLUSTER KEYSLOT` of these keys on redis-server 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("{}foo"), slot("{}foo"));
        // CRC16/XMODEM check value (below 16384).
        assert_eq!(slot("123456789"), 0x31C3);
        // The benchmarks' rooms, as protoo-redis tags them.
        assert_eq!(slot("{bench:room:s10}"), 14632);
        assert_eq!(slot("{bench:room:s11}"), 10505);
        assert_eq!(slot("{bench:room:room-7}"), 1440);
    }
}
