//! The two HA topologies for the tests: the Sentinel set-up and the Redis
//! Cluster the run shares (from the environment `cargo xtask ci` sets), or
//! ones of a test's own (for tests that kill a master or move slots):
//! real `redis-server` processes on free ports, stopped when dropped.
//!
//! Readiness is polled with bounded retries (short waits between polls of
//! Redis's own state), never assumed after a sleep.

use std::time::{Duration, Instant};

use protoo_redis::RedisTopology;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::process::Child;

use super::{GUARD, free_port, spawn_ready, unique_prefix};

/// The topology the run shares, from `PROTOO_REDIS_SENTINEL` (+
/// `PROTOO_REDIS_MASTER`) or `PROTOO_REDIS_CLUSTER`.
pub fn from_env() -> Option<RedisTopology> {
    let list = |var: &str| {
        std::env::var(var).ok().filter(|v| !v.is_empty()).map(|v| {
            v.split(',')
                .map(|address| address.trim().to_owned())
                .collect::<Vec<_>>()
        })
    };
    if let Some(sentinels) = list("PROTOO_REDIS_SENTINEL") {
        let master = std::env::var("PROTOO_REDIS_MASTER").unwrap_or_else(|_| "protoo".into());
        return Some(RedisTopology::Sentinel { master, sentinels });
    }
    list("PROTOO_REDIS_CLUSTER").map(|seeds| RedisTopology::Cluster { seeds })
}

/// A connection for the tests' own commands, whatever the topology.
#[derive(Clone)]
pub enum TestConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl TestConn {
    pub async fn to(topology: &RedisTopology) -> TestConn {
        match topology {
            RedisTopology::Single { url } => TestConn::Single(
                redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
            RedisTopology::Sentinel { master, sentinels } => {
                let urls: Vec<String> = sentinels.iter().map(|a| format!("redis://{a}")).collect();
                let mut sentinel = redis::sentinel::Sentinel::build(urls).unwrap();
                let client = sentinel.async_master_for(master, None).await.unwrap();
                TestConn::Single(client.get_multiplexed_async_connection().await.unwrap())
            }
            RedisTopology::Cluster { seeds } => {
                let urls: Vec<String> = seeds.iter().map(|a| format!("redis://{a}")).collect();
                let client = redis::cluster::ClusterClient::new(urls).unwrap();
                TestConn::Cluster(client.get_async_connection().await.unwrap())
            }
            other => panic!("unknown topology {other:?}"),
        }
    }
}

impl ConnectionLike for TestConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            TestConn::Single(conn) => conn.req_packed_command(cmd),
            TestConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            TestConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            TestConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A directory of the test's own for Redis's files.
fn own_dir() -> String {
    let dir = std::env::temp_dir().join(format!("protoo-redis-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

/// What a redis-server of a set-up runs with, on `port`.
fn server_args(port: u16, args: &[String]) -> Vec<String> {
    let mut all: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
    .map(str::to_owned)
    .to_vec();
    all.extend(args.iter().cloned());
    all
}

/// Starts one redis-server on a free port with `args`; its port.
async fn server(args: &[&str]) -> (Child, u16) {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    for _ in 0..5 {
        let port = free_port();
        if let Some(child) =
            spawn_ready(&server_args(port, &args), "Ready to accept connections").await
        {
            return (child, port);
        }
    }
    panic!("could not start redis-server on a free port");
}

/// Starts again, on its port, a redis-server started with `args` (empty:
/// it saves nothing).
async fn restart_server(port: u16, args: &[String]) -> Child {
    spawn_ready(&server_args(port, args), "Ready to accept connections")
        .await
        .expect("redis-server restarts on its port")
}

/// Sends `signal` (`-STOP`, `-CONT`) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// One command to the Redis at `port`.
pub async fn run_on(port: u16, args: &[&str]) -> redis::RedisResult<Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await
}

/// Polls `check` until it holds (bounded: fails the test after `GUARD`).
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < GUARD, "{what}: not within {GUARD:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(value: redis::RedisResult<Value>) -> String {
    match value {
        Ok(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Value::VerbatimString { text, .. }) => text,
        Ok(Value::SimpleString(text)) => text,
        _ => String::new(),
    }
}

/// A master, one replica and three sentinels (quorum 2, a master down
/// after 1 s), all of the test's own.
pub struct SentinelSet {
    pub master: String,
    /// The servers: `(process, port)`; the first started as the master.
    pub servers: Vec<(Option<Child>, u16)>,
    /// What each server was started with (to restart it).
    args: Vec<Vec<String>>,
    pub sentinels: Vec<(Child, u16)>,
    dir: String,
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let master = "m".to_owned();
        // A replica keeps the master's data in a file: in a directory of
        // the test's own.
        let dir = own_dir();
        let master_args = ["--dir", &dir, "--dbfilename", "master.rdb"];
        let (m, mport) = server(&master_args).await;
        let mport_s = mport.to_string();
        let replica_args = [
            "--replicaof",
            "127.0.0.1",
            &mport_s,
            "--dir",
            &dir,
            "--dbfilename",
            "replica.rdb",
        ];
        let (r, rport) = server(&replica_args).await;
        let owned = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect();
        let args = vec![owned(&master_args), owned(&replica_args)];
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = format!("{dir}/sentinel-{i}.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {master} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 5000\n"
                ),
            )
            .unwrap();
            let child = spawn_ready(&[conf, "--sentinel".to_owned()], "+monitor master")
                .await
                .expect("redis-sentinel starts");
            sentinels.push((child, port));
        }
        let set = SentinelSet {
            master,
            servers: vec![(Some(m), mport), (Some(r), rport)],
            args,
            sentinels,
            dir,
        };
        // Ready once the replica is in sync and every sentinel knows the
        // replica and the two other sentinels (so that a failover can be
        // agreed on).
        until("the replica syncs", || async {
            text(run_on(rport, &["INFO", "replication"]).await).contains("master_link_status:up")
        })
        .await;
        for (_, port) in &set.sentinels {
            let port = *port;
            let master = set.master.clone();
            until("the sentinels know each other", || {
                let master = master.clone();
                async move {
                    let info = run_on(port, &["SENTINEL", "MASTER", &master]).await;
                    let fields = match info {
                        Ok(Value::Array(items)) => items,
                        Ok(Value::Map(pairs)) => {
                            pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()
                        }
                        _ => return false,
                    };
                    let fields: Vec<String> = fields.into_iter().map(|v| text(Ok(v))).collect();
                    let get = |name: &str| {
                        fields
                            .chunks_exact(2)
                            .find(|pair| pair[0] == name)
                            .map(|pair| pair[1].clone())
                    };
                    get("num-slaves").as_deref() == Some("1")
                        && get("num-other-sentinels").as_deref() == Some("2")
                }
            })
            .await;
        }
        set
    }

    pub fn topology(&self) -> RedisTopology {
        RedisTopology::Sentinel {
            master: self.master.clone(),
            sentinels: self
                .sentinels
                .iter()
                .map(|(_, port)| format!("127.0.0.1:{port}"))
                .collect(),
        }
    }

    /// The master's port, as the first sentinel names it.
    pub async fn master_port(&self) -> u16 {
        let port = self.sentinels[0].1;
        let answer = run_on(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master]).await;
        match answer {
            Ok(Value::Array(items)) => text(Ok(items[1].clone())).parse().unwrap(),
            other => panic!("no master: {other:?}"),
        }
    }

    /// The process at `port`.
    pub fn child(&self, port: u16) -> &Child {
        self.servers
            .iter()
            .find(|(_, p)| *p == port)
            .and_then(|(child, _)| child.as_ref())
            .expect("a live server")
    }

    /// Kills the server at `port` (SIGKILL).
    pub async fn kill(&mut self, port: u16) {
        for (child, p) in &mut self.servers {
            if *p == port
                && let Some(mut child) = child.take()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Starts the server at `port` again, as it was started (empty).
    pub async fn restart(&mut self, port: u16) {
        let i = self.servers.iter().position(|(_, p)| *p == port).unwrap();
        self.kill(port).await;
        self.servers[i].0 = Some(restart_server(port, &self.args[i]).await);
    }

    /// Keeps the sentinels from failing the master over for a minute (a
    /// master down for 60 s): for outages that are not failovers.
    pub async fn hold_failover(&self) {
        for (_, port) in &self.sentinels {
            run_on(
                *port,
                &[
                    "SENTINEL",
                    "SET",
                    &self.master,
                    "down-after-milliseconds",
                    "60000",
                ],
            )
            .await
            .expect("SENTINEL SET");
        }
    }

    /// Kills the master (SIGKILL); returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        for (child, p) in &mut self.servers {
            if *p == port
                && let Some(mut child) = child.take()
            {
                let _ = child.kill().await;
            }
        }
        port
    }

    /// Waits until the sentinels name another master than `old`.
    pub async fn switched_from(&self, old: u16) {
        until("the sentinels promote the replica", || async {
            self.master_port().await != old
        })
        .await;
    }
}

/// Three masters with a replica each (`redis-cli --cluster create`), node
/// timeout 1 s: all of the test's own.
pub struct ClusterSet {
    pub nodes: Vec<(Option<Child>, u16)>,
    /// What each node was started with (to restart it).
    args: Vec<Vec<String>>,
    dir: String,
}

impl ClusterSet {
    pub async fn start() -> ClusterSet {
        let dir = own_dir();
        // The six start side by side.
        let mut starts = tokio::task::JoinSet::new();
        for i in 0..6 {
            let dir = dir.clone();
            starts.spawn(async move {
                let conf = format!("nodes-{i}.conf");
                let dump = format!("dump-{i}.rdb");
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "1000",
                    // A replica fails over however long ago it synced.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--dir",
                    &dir,
                    // Each its own file: a replica's full sync writes one.
                    "--dbfilename",
                    &dump,
                ];
                let (child, port) = server(&args).await;
                let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
                (child, port, args)
            });
        }
        let started: Vec<(Child, u16, Vec<String>)> = starts.join_all().await;
        let mut nodes = Vec::new();
        let mut args = Vec::new();
        for (child, port, node_args) in started {
            nodes.push((child, port));
            args.push(node_args);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect();
        let status = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("redis-cli runs (install redis-tools)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let set = ClusterSet {
            nodes: nodes
                .into_iter()
                .map(|(child, port)| (Some(child), port))
                .collect(),
            args,
            dir,
        };
        set.until_ok().await;
        set
    }

    /// Waits until every live node says the cluster is ok, and every
    /// replica is in sync with its master (so that it can take over).
    pub async fn until_ok(&self) {
        for (child, port) in &self.nodes {
            if child.is_none() {
                continue;
            }
            let port = *port;
            until("the cluster is ok", || async move {
                text(run_on(port, &["CLUSTER", "INFO"]).await).contains("cluster_state:ok")
            })
            .await;
            until("the replicas sync", || async move {
                let info = text(run_on(port, &["INFO", "replication"]).await);
                info.contains("role:master") || info.contains("master_link_status:up")
            })
            .await;
        }
    }

    pub fn topology(&self) -> RedisTopology {
        RedisTopology::Cluster {
            seeds: self
                .nodes
                .iter()
                .map(|(_, port)| format!("127.0.0.1:{port}"))
                .collect(),
        }
    }

    /// The process at `port`.
    pub fn child(&self, port: u16) -> &Child {
        self.nodes
            .iter()
            .find(|(_, p)| *p == port)
            .and_then(|(child, _)| child.as_ref())
            .expect("a live node")
    }

    /// The ports of the live masters.
    pub async fn masters(&self) -> Vec<u16> {
        let mut masters = Vec::new();
        for port in self.live_ports() {
            if let Ok(Value::Array(role)) = run_on(port, &["ROLE"]).await
                && text(Ok(role[0].clone())) == "master"
            {
                masters.push(port);
            }
        }
        masters
    }

    /// Starts the node at `port` again, as it was started: empty, with its
    /// cluster configuration file (so it takes its place again).
    pub async fn restart(&mut self, port: u16) {
        let i = self.nodes.iter().position(|(_, p)| *p == port).unwrap();
        self.kill(port).await;
        self.nodes[i].0 = Some(restart_server(port, &self.args[i]).await);
    }

    /// Keeps every replica from failing its master over: for outages that
    /// are not failovers.
    pub async fn hold_failover(&self) {
        let masters = self.masters().await;
        for port in self.live_ports() {
            if !masters.contains(&port) {
                run_on(
                    port,
                    &["CONFIG", "SET", "cluster-replica-no-failover", "yes"],
                )
                .await
                .expect("CONFIG SET");
            }
        }
    }

    /// The port of the live master that serves `slot`.
    pub async fn owner_of(&self, slot: u16) -> u16 {
        let port = self.live_port();
        let Ok(Value::Array(ranges)) = run_on(port, &["CLUSTER", "SLOTS"]).await else {
            panic!("CLUSTER SLOTS failed");
        };
        for range in ranges {
            let Value::Array(range) = range else { continue };
            let (Value::Int(from), Value::Int(to)) = (&range[0], &range[1]) else {
                continue;
            };
            if (*from..=*to).contains(&i64::from(slot))
                && let Value::Array(master) = &range[2]
                && let Value::Int(port) = master[1]
            {
                return u16::try_from(port).unwrap();
            }
        }
        panic!("no owner for slot {slot}");
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|(child, _)| child.is_some())
            .map(|(_, port)| *port)
            .unwrap()
    }

    /// The node id of the node at `port`.
    pub async fn id_of(&self, port: u16) -> String {
        text(run_on(port, &["CLUSTER", "MYID"]).await)
    }

    /// The port of a master that does not serve `slot`.
    pub async fn other_master(&self, slot: u16) -> u16 {
        let owner = self.owner_of(slot).await;
        for (child, port) in &self.nodes {
            let role = match run_on(*port, &["ROLE"]).await {
                Ok(Value::Array(role)) => text(Ok(role[0].clone())),
                _ => String::new(),
            };
            if child.is_some() && *port != owner && role == "master" {
                return *port;
            }
        }
        panic!("no other master");
    }

    /// How many `SPUBLISH` the node at `port` ran.
    pub async fn spublish_calls(&self, port: u16) -> u64 {
        let stats = text(run_on(port, &["INFO", "commandstats"]).await);
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_spublish:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    /// The ports of the live nodes.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(child, _)| child.is_some())
            .map(|(_, port)| *port)
            .collect()
    }

    /// Kills the node at `port` (SIGKILL).
    pub async fn kill(&mut self, port: u16) {
        for (child, p) in &mut self.nodes {
            if *p == port
                && let Some(mut child) = child.take()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Moves `slot` from its owner to the master at `to`, keys and all
    /// (`SETSLOT IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT NODE`), as
    /// `redis-cli --cluster reshard` does.
    pub async fn migrate(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot).await;
        let (from_id, to_id) = (self.id_of(from).await, self.id_of(to).await);
        let slot_s = slot.to_string();
        run_on(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])
            .await
            .unwrap();
        run_on(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])
            .await
            .unwrap();
        loop {
            let keys = run_on(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]).await;
            let keys: Vec<String> = match keys {
                Ok(Value::Array(keys)) => keys.into_iter().map(|k| text(Ok(k))).collect(),
                _ => Vec::new(),
            };
            if keys.is_empty() {
                break;
            }
            let to_s = to.to_string();
            let mut args = vec![
                "MIGRATE",
                "127.0.0.1",
                &to_s,
                "",
                "0",
                "5000",
                "REPLACE",
                "KEYS",
            ];
            args.extend(keys.iter().map(String::as_str));
            run_on(from, &args).await.unwrap();
        }
        for port in [to, from] {
            run_on(port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])
                .await
                .unwrap();
        }
        for (child, port) in &self.nodes {
            if child.is_some() && ![to, from].contains(port) {
                let _ = run_on(*port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]).await;
            }
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.start_kill();
        }
        for (child, _) in &mut self.servers {
            if let Some(child) = child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ClusterSet {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            if let Some(child) = child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
