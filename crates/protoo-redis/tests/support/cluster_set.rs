//! A Redis Cluster of a test's own (three masters with a replica each):
//! real processes on free ports, stopped when dropped.

use protoo_redis::RedisTopology;
use redis::Value;
use tokio::process::Child;

use super::topology::{own_dir, restart_server, run_on, server, text, until};

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
