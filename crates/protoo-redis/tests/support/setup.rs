//! A Redis of the test's own on any of the three topologies, for tests
//! that restart, pause or reconfigure it: one redis-server, a Sentinel
//! set-up or a Redis Cluster (real processes, stopped when dropped), with
//! the same operations on each: kill and restart a master, stop every
//! master (SIGSTOP) and let it go on, run a command on every master.
//!
//! On the two HA topologies failovers are held off (the sentinels take a
//! master for down after a minute; the cluster's replicas do not fail
//! over): these are outages of the master, not failovers (those are
//! `failover.rs`'s).

use protoo_redis::{RedisConfig, RedisTopology};
use redis::Value;

use super::topology::{run_on, signal};
use super::{ClusterSet, Node, RedisServer, SentinelSet, fast_on, unique_prefix};

/// Which topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Single,
    Sentinel,
    Cluster,
}

pub enum Setup {
    Single(RedisServer),
    Sentinel(SentinelSet),
    Cluster(ClusterSet),
}

impl Setup {
    pub async fn start(kind: Kind) -> Setup {
        match kind {
            Kind::Single => Setup::Single(RedisServer::start().await),
            Kind::Sentinel => {
                let set = SentinelSet::start().await;
                set.hold_failover().await;
                Setup::Sentinel(set)
            }
            Kind::Cluster => {
                let set = ClusterSet::start().await;
                set.hold_failover().await;
                Setup::Cluster(set)
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Setup::Single(_) => Kind::Single,
            Setup::Sentinel(_) => Kind::Sentinel,
            Setup::Cluster(_) => Kind::Cluster,
        }
    }

    pub fn topology(&self) -> RedisTopology {
        match self {
            Setup::Single(redis) => redis.topology(),
            Setup::Sentinel(set) => set.topology(),
            Setup::Cluster(set) => set.topology(),
        }
    }

    /// The test timings on this Redis, under `prefix`.
    pub fn fast(&self, prefix: &str) -> RedisConfig {
        fast_on(self.topology(), prefix)
    }

    /// `N` nodes of a new cluster (a prefix of its own), each node's
    /// settings changed by `tune`; the prefix too.
    pub async fn nodes<const N: usize>(
        &self,
        tune: impl Fn(RedisConfig) -> RedisConfig,
    ) -> (String, [Node; N]) {
        let prefix = unique_prefix();
        let mut nodes = Vec::with_capacity(N);
        for _ in 0..N {
            nodes.push(Node::start(tune(self.fast(&prefix))).await);
        }
        let Ok(nodes) = nodes.try_into() else {
            unreachable!("N nodes were made");
        };
        (prefix, nodes)
    }

    /// The port of the master that holds `key`: the one server, the
    /// master the sentinels name, or the master of the key's slot.
    pub async fn master_of(&self, key: &str) -> u16 {
        match self {
            Setup::Single(redis) => redis.port,
            Setup::Sentinel(set) => set.master_port().await,
            Setup::Cluster(set) => {
                let port = set.live_ports()[0];
                match run_on(port, &["CLUSTER", "KEYSLOT", key]).await {
                    Ok(Value::Int(slot)) => set.owner_of(u16::try_from(slot).unwrap()).await,
                    other => panic!("CLUSTER KEYSLOT: {other:?}"),
                }
            }
        }
    }

    /// The ports of every master.
    pub async fn masters(&self) -> Vec<u16> {
        match self {
            Setup::Single(redis) => vec![redis.port],
            Setup::Sentinel(set) => vec![set.master_port().await],
            Setup::Cluster(set) => set.masters().await,
        }
    }

    /// Runs `args` on every master.
    pub async fn on_masters(&self, args: &[&str]) {
        for port in self.masters().await {
            run_on(port, args)
                .await
                .unwrap_or_else(|error| panic!("{args:?} on {port}: {error}"));
        }
    }

    /// Kills the master at `port` (SIGKILL): an outage begins.
    pub async fn kill(&mut self, port: u16) {
        match self {
            Setup::Single(redis) => redis.kill().await,
            Setup::Sentinel(set) => set.kill(port).await,
            Setup::Cluster(set) => set.kill(port).await,
        }
    }

    /// Starts the master at `port` again, empty (it keeps no data).
    pub async fn restart(&mut self, port: u16) {
        match self {
            Setup::Single(redis) => redis.restart().await,
            Setup::Sentinel(set) => set.restart(port).await,
            Setup::Cluster(set) => set.restart(port).await,
        }
    }

    /// Stops every master (SIGSTOP): each holds its connections and
    /// answers nothing. Their ports, for [`Setup::resume`].
    pub async fn pause(&self) -> Vec<u16> {
        let masters = self.masters().await;
        for &port in &masters {
            self.signal(port, "-STOP");
        }
        masters
    }

    /// Lets the masters [`Setup::pause`] stopped go on (SIGCONT).
    pub fn resume(&self, masters: &[u16]) {
        for &port in masters {
            self.signal(port, "-CONT");
        }
    }

    fn signal(&self, port: u16, sig: &str) {
        match self {
            Setup::Single(redis) => match sig {
                "-STOP" => redis.pause(),
                _ => redis.resume(),
            },
            Setup::Sentinel(set) => signal(set.child(port), sig),
            Setup::Cluster(set) => signal(set.child(port), sig),
        }
    }

    /// After the last of [`Setup::restart`] or [`Setup::resume`]: waits
    /// until a Redis Cluster says it is ok again (nothing to wait for
    /// elsewhere).
    pub async fn until_ok(&self) {
        if let Setup::Cluster(set) = self {
            set.until_ok().await;
        }
    }
}
