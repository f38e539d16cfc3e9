//! What the cluster tests share: a real `redis-server` started (and
//! stopped by pid) per test, or the one `cargo xtask ci` started
//! (`PROTOO_REDIS_URL`); nodes (a `Rooms` with a `RedisCluster` each)
//! serving a small room application over in-memory transports; and
//! clients for them.
//!
//! Every wait is on an event; the timeouts are failure guards.

#![allow(dead_code, unreachable_pub)]

mod cluster_set;
mod inspect;
mod sentinel_set;
pub mod setup;
pub mod topology;

#[allow(unused_imports)]
pub use inspect::keys_of;

#[allow(unused_imports)]
pub use cluster_set::ClusterSet;
#[allow(unused_imports)]
pub use sentinel_set::SentinelSet;
#[allow(unused_imports)]
pub use setup::{Kind, Setup};
#[allow(unused_imports)]
pub use topology::TestConn;

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use protoo_core::transport::memory;
use protoo_core::{
    DuplicatePolicy, Identity, Payload, Peer, PeerConfig, PeerEvent, PeerEvents, Room, Rooms,
};
use protoo_redis::{RedisCluster, RedisConfig, RedisTopology};
use protoo_testkit::guard_for;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any one expected event may take before the test fails.
pub const GUARD: Duration = Duration::from_secs(15);

/// A redis-server of the test's own, on a free port, stopped when dropped;
/// or the one the run shares.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The topology the run shares, when it is not one server.
    topology: Option<RedisTopology>,
    /// A directory of its own, removed with it.
    dir: Option<String>,
}

impl RedisServer {
    /// The redis-server `cargo xtask ci` started for the run
    /// (`PROTOO_REDIS_URL`), if any, else one of the test's own: for tests
    /// that neither restart, pause nor reconfigure it (each test keeps to
    /// its own key prefix).
    ///
    /// `PROTOO_REDIS_SENTINEL` (sentinel addresses, with the master's name
    /// in `PROTOO_REDIS_MASTER`, default `protoo`) or `PROTOO_REDIS_CLUSTER`
    /// (seed addresses) run the same tests over a Sentinel set-up or a
    /// Redis Cluster the run started.
    pub async fn shared() -> RedisServer {
        if let Some(topology) = topology::from_env() {
            return RedisServer {
                child: None,
                port: 0,
                topology: Some(topology),
                dir: None,
            };
        }
        let url = std::env::var("PROTOO_REDIS_URL").ok();
        let port = url
            .as_deref()
            .and_then(|url| url.rsplit(':').next())
            .and_then(|port| port.trim_end_matches('/').parse().ok());
        match port {
            Some(port) => RedisServer {
                child: None,
                port,
                topology: None,
                dir: None,
            },
            None => RedisServer::start().await,
        }
    }

    /// Starts one of the test's own on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// Starts one in cluster mode, owning every slot: a Redis Cluster of
    /// one shard. It enforces what a cluster does (a script touches
    /// declared keys of one slot), and needs no redirection.
    pub async fn start_one_shard_cluster() -> RedisServer {
        let dir = std::env::temp_dir().join(format!("protoo-redis-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.to_string_lossy().into_owned();
        let mut redis = RedisServer::start_with(&["--cluster-enabled", "yes", "--dir", &dir]).await;
        redis.dir = Some(dir);
        redis.run(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await;
        let mut conn = redis.connection().await;
        for _ in 0..200 {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the one-shard cluster did not become ready");
    }

    async fn start_with(args: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn_redis(port, args).await {
                return RedisServer {
                    child: Some(child),
                    port,
                    topology: None,
                    dir: None,
                };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// The topology of an own set-up (Sentinel, Cluster), without its
    /// processes (they stay with the set-up).
    pub fn of(topology: RedisTopology) -> RedisServer {
        RedisServer {
            child: None,
            port: 0,
            topology: Some(topology),
            dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Which Redis this is.
    pub fn topology(&self) -> RedisTopology {
        self.topology
            .clone()
            .unwrap_or_else(|| RedisTopology::Single { url: self.url() })
    }

    /// The test timings ([`fast`]) on this Redis, under `prefix`.
    pub fn fast(&self, prefix: &str) -> RedisConfig {
        fast_on(self.topology(), prefix)
    }

    /// Kills it (SIGKILL): an outage begins.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (empty: it keeps no data).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = Some(
            spawn_redis(self.port, &[])
                .await
                .expect("redis-server restarts on its port"),
        );
    }

    /// Runs one command of the test's own (`CONFIG SET ...`, `SCRIPT FLUSH`).
    pub async fn run(&self, args: &[&str]) {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let _: redis::Value = cmd.query_async(&mut self.connection().await).await.unwrap();
    }

    /// A connection for the test's own commands (on a Redis Cluster, to
    /// every shard; `KEYS` asks them all).
    pub async fn connection(&self) -> TestConn {
        TestConn::to(&self.topology()).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts redis-server on `port`; `None` if it exited before it was ready
/// (the port was taken).
async fn spawn_redis(port: u16, args: &[&str]) -> Option<Child> {
    let mut all = vec!["--port".to_owned(), port.to_string()];
    all.extend(
        [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .map(str::to_owned),
    );
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    spawn_ready(&all, "Ready to accept connections").await
}

/// Starts the Redis binary with `args`; `None` if it exited before it
/// logged `ready` (its port was taken).
pub async fn spawn_ready(args: &[String], ready: &str) -> Option<Child> {
    let binary = std::env::var("PROTOO_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut child = Command::new(&binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start {binary} (install redis-server ≥ 7): {error}")
        });
    let stdout = child.stdout.take()?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(GUARD, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(ready) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ready {
        let _ = child.kill().await;
        return None;
    }
    // Keep draining its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(child)
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Cluster timings short enough for tests: heartbeat 200 ms, TTL 600 ms.
pub fn fast(url: &str, prefix: &str) -> RedisConfig {
    fast_on(RedisTopology::Single { url: url.into() }, prefix)
}

/// [`fast`] on any topology.
pub fn fast_on(topology: RedisTopology, prefix: &str) -> RedisConfig {
    RedisConfig::with_topology(topology)
        .with_prefix(prefix)
        .with_heartbeat(Duration::from_millis(200), Duration::from_millis(600))
}

/// `N` nodes of a new cluster (a key prefix of its own) on `redis`, with
/// the fast test timings; the prefix too.
pub async fn cluster<const N: usize>(redis: &RedisServer) -> (String, [Node; N]) {
    cluster_with(redis, |config| config).await
}

/// [`cluster`], each node's settings changed by `tune`.
pub async fn cluster_with<const N: usize>(
    redis: &RedisServer,
    tune: impl Fn(RedisConfig) -> RedisConfig,
) -> (String, [Node; N]) {
    let prefix = unique_prefix();
    let mut nodes = Vec::with_capacity(N);
    for _ in 0..N {
        nodes.push(Node::start(tune(redis.fast(&prefix))).await);
    }
    let Ok(nodes) = nodes.try_into() else {
        unreachable!("N nodes were made");
    };
    (prefix, nodes)
}

/// One node: rooms over a Redis cluster, serving the test application.
#[derive(Clone)]
pub struct Node {
    pub rooms: Rooms,
    pub cluster: RedisCluster,
}

impl Node {
    pub async fn start(config: RedisConfig) -> Node {
        Node::start_with(config, DuplicatePolicy::Replace).await
    }

    pub async fn start_with(config: RedisConfig, policy: DuplicatePolicy) -> Node {
        // `RUST_LOG=protoo_redis=debug` shows what the nodes do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cluster = RedisCluster::connect(config).await.expect("Redis is up");
        let rooms = Rooms::builder()
            .duplicate_policy(policy)
            .cluster(cluster.clone())
            .on_member_lost(|lost| Some(("peerClosed", json!({ "peerId": lost.peer_id }))))
            .build();
        Node { rooms, cluster }
    }

    /// A client joined to `room` as `peer` (its connection admitted; it has
    /// not sent `join`).
    pub async fn connect(&self, room: &str, peer: &str) -> Client {
        self.connect_as(room, peer, None).await
    }

    /// [`Node::connect`], with a verified identity (or none).
    pub async fn connect_as(&self, room: &str, peer: &str, identity: Option<Identity>) -> Client {
        let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
        let mut admit = self.rooms.admit(room, peer);
        if let Some(identity) = identity {
            admit = admit.identity(identity);
        }
        let joined = admit.join(server_side, ()).await.expect("admitted");
        tokio::spawn(serve(joined.room, joined.peer, joined.events));
        let (peer, events) = Peer::new("server", client_side, (), PeerConfig::default()).unwrap();
        Client { peer, events }
    }
}

/// The test application: the room example's contract, in short.
async fn serve(room: Room, peer: Peer, mut events: PeerEvents) {
    while let Some(event) = events.next().await {
        match event {
            PeerEvent::Request(request) => match request.method() {
                "join" => {
                    let name = request
                        .data::<Value>()
                        .ok()
                        .and_then(|data| data["displayName"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let _ = room.set_presence(peer.id(), &json!({ "displayName": name }));
                    let peers: Vec<Value> = room
                        .presence()
                        .await
                        .into_iter()
                        .filter(|other| other.peer_id != peer.id())
                        .map(|other| {
                            let info: Value = other.info_as().unwrap_or_default();
                            json!({ "id": other.peer_id, "displayName": info["displayName"] })
                        })
                        .collect();
                    request.accept(&json!({ "peers": peers }));
                    let _ = room
                        .to_all()
                        .except_peer(&peer)
                        .notify("newPeer", &json!({ "id": peer.id(), "displayName": name }));
                }
                "broadcast" => {
                    let _ = room
                        .to_all()
                        .except([peer.id()])
                        .notify("chat", request.payload());
                    request.accept(&json!({}));
                }
                "target" => {
                    // A `chat` of `data` to the peers chosen by `except`
                    // and `listed`, or, with `filterOut`, to this node's
                    // peers but that one.
                    let data: Value = request.data().unwrap_or_default();
                    let except: Vec<String> = data["except"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect();
                    let mut broadcast = room.to_all().except(&except);
                    if data["listed"] == true {
                        broadcast = broadcast.listed();
                    }
                    let report = match data["filterOut"].as_str() {
                        Some(out) => broadcast
                            .local()
                            .filter(|peer| peer.id() != out)
                            .notify("chat", &data["data"]),
                        None => broadcast.notify("chat", &data["data"]),
                    };
                    match report {
                        Ok(report) => request.accept(&json!({ "delivered": report.delivered })),
                        Err(error) => request.respond(Err::<(), _>(error)),
                    }
                }
                "kick" => {
                    request.accept(&json!({}));
                    peer.close();
                }
                "notifyPeer" | "requestPeer" | "closePeer" => {
                    let data: Value = request.data().unwrap_or_default();
                    let target = data["peerId"].as_str().unwrap_or_default().to_owned();
                    let room = room.clone();
                    tokio::spawn(async move {
                        let answer = match request.method() {
                            "notifyPeer" => room
                                .notify_peer(&target, "hello", &json!({ "from": "server" }))
                                .await
                                .map(|()| json!({}))
                                .map_err(|error| error.to_string()),
                            "requestPeer" => room
                                .request_peer(&target, "hello", &json!({ "from": "server" }))
                                .await
                                .map(|data| json!({ "response": data }))
                                .map_err(|error| match error.code() {
                                    Some(code) => {
                                        format!("{code} {}", error.reason().unwrap_or_default())
                                    }
                                    None => error.to_string(),
                                }),
                            _ => Ok(json!({ "closed": room.close_peer(&target).await })),
                        };
                        match answer {
                            Ok(data) => request.accept(&data),
                            Err(reason) => request.reject(404, reason),
                        }
                    });
                }
                _ => request.reject(404, "unknown method"),
            },
            PeerEvent::Notification(_) | PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => {
            }
            PeerEvent::Closed(_) => {
                let _ = room
                    .to_all()
                    .except_peer(&peer)
                    .notify("peerClosed", &json!({ "peerId": peer.id() }));
            }
        }
    }
}

/// The client end of a connection.
pub struct Client {
    pub peer: Peer,
    pub events: PeerEvents,
}

impl Client {
    /// `join`: the ids of the other listed peers, sorted.
    pub async fn join(&self, name: &str) -> Vec<String> {
        let data = json!({ "displayName": name });
        let join = self.peer.request_as("join", &data);
        let answer: Value = guard_for(GUARD, "join", join).await.expect("join accepted");
        let mut ids: Vec<String> = answer["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|peer| peer["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The next notification (requests from the server are answered
    /// `{"hi": true}`), as `(method, data)`; fails if the connection closes.
    pub async fn next(&mut self) -> (String, Value) {
        match self.next_event().await {
            Event::Notification(method, data) => (method, data),
            Event::Closed(code) => panic!("closed ({code:?}) while waiting for a notification"),
        }
    }

    /// The next notification but `skip`s.
    pub async fn next_skipping(&mut self, skip: &str) -> (String, Value) {
        loop {
            let (method, data) = self.next().await;
            if method != skip {
                return (method, data);
            }
        }
    }

    /// The next notification or the close.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let event = guard_for(GUARD, "an event", self.events.next()).await;
            match event {
                Some(PeerEvent::Notification(n)) => {
                    return Event::Notification(
                        n.method().to_owned(),
                        n.data().unwrap_or_default(),
                    );
                }
                Some(PeerEvent::Request(request)) => request.accept(&json!({ "hi": true })),
                Some(PeerEvent::Closed(reason)) => return Event::Closed(reason.code),
                Some(PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. }) => {}
                None => return Event::Closed(None),
            }
        }
    }

    /// Waits for the close, skipping notifications; its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Event::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Waits for the notification `method`, skipping others; its data.
    pub async fn expect(&mut self, method: &str) -> Value {
        loop {
            let (got, data) = self.next().await;
            if got == method {
                return data;
            }
        }
    }

    /// Waits for `newPeer` about `id`, skipping others; its data.
    pub async fn expect_new_peer(&mut self, id: &str) -> Value {
        loop {
            let data = self.expect("newPeer").await;
            if data["id"] == id {
                return data;
            }
        }
    }

    /// Waits for `newPeer` about each of `ids`, in any order, skipping
    /// others.
    pub async fn expect_new_peers(&mut self, ids: &[&str]) {
        let mut missing: Vec<&str> = ids.to_vec();
        while !missing.is_empty() {
            let data = self.expect("newPeer").await;
            missing.retain(|id| data["id"] != *id);
        }
    }

    /// Sends a numbered `broadcast` and waits for its answer.
    pub async fn broadcast(&self, data: &Value) {
        self.peer
            .request("broadcast", data)
            .await
            .expect("broadcast accepted");
    }

    pub async fn request(&self, method: &str, data: &Value) -> Result<Value, String> {
        guard_for(GUARD, "an answer", self.peer.request(method, data))
            .await
            .map(|payload: Payload| payload.to_value())
            .map_err(|error| error.reason().unwrap_or_else(|| error.to_string()))
    }
}

/// What a client saw.
#[derive(Debug, PartialEq)]
pub enum Event {
    Notification(String, Value),
    Closed(Option<u16>),
}

impl RedisServer {
    /// Stops it (SIGSTOP): it holds every connection and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets it go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        topology::signal(self.child.as_ref().expect("running"), signal);
    }
}
