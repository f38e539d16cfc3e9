//! A Sentinel set-up of a test's own (a master, a replica, three
//! sentinels): real processes on free ports, stopped when dropped.

use protoo_redis::RedisTopology;
use redis::Value;
use tokio::process::Child;

use super::topology::{own_dir, restart_server, run_on, server, text, until};
use super::{free_port, spawn_ready};

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
