//! The two HA topologies for the tests: the Sentinel set-up and the Redis
//! Cluster the run shares (from the environment `cargo xtask ci` sets); a
//! connection for the tests' own commands on any topology; and what the
//! set-ups of a test's own (`sentinel_set.rs`, `cluster_set.rs`: for tests
//! that kill a master or move slots) start their processes with.
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
pub(super) fn own_dir() -> String {
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
pub(super) async fn server(args: &[&str]) -> (Child, u16) {
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
pub(super) async fn restart_server(port: u16, args: &[String]) -> Child {
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

pub(super) fn text(value: redis::RedisResult<Value>) -> String {
    match value {
        Ok(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Value::VerbatimString { text, .. }) => text,
        Ok(Value::SimpleString(text)) => text,
        _ => String::new(),
    }
}
