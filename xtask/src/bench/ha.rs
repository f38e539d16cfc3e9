//! The Redis behind a cluster scenario: a fresh redis-server (S10, S11), a
//! fresh Sentinel set-up (`-sentinel`) or a fresh Redis Cluster
//! (`-cluster`), started for each measured server and stopped by pid after
//! it (`redis_ha.rs`). Which processes the load generator measures as Redis
//! (the one server; the master of a Sentinel set-up; each master of a
//! Redis Cluster, one per shard), and, on a Redis Cluster, what each shard
//! carried: its `SPUBLISH` calls, whether the measured room's shard is the
//! only one that published, and how 1,000 rooms' slots spread over the
//! shards.

use super::*;
use crate::redis_ha::{self, Shard};

/// The binaries the cluster scenarios need.
#[derive(Debug)]
pub(super) struct RedisTools {
    /// redis-server.
    pub(super) server: PathBuf,
    /// redis-sentinel and redis-cli, when a `-sentinel` or `-cluster`
    /// scenario runs.
    pub(super) ha: Option<(PathBuf, PathBuf)>,
}

/// The Redis of one cluster run.
pub(super) enum Backing {
    Single(crate::redis::Server),
    Sentinel(redis_ha::Sentinel),
    Cluster {
        cluster: redis_ha::Cluster,
        shards: Vec<Shard>,
        cli: PathBuf,
    },
}

/// Rooms whose slots are counted per shard (the target: within ±25 % of
/// the mean on three shards).
pub(super) const SPREAD_ROOMS: usize = 1000;

/// The room each cluster scenario's load generator uses
/// (`crates/protoo-bench`: S10 broadcasts in `s10`, S11 churns in `s11`).
fn bench_room(key: &str) -> &'static str {
    if key.starts_with("s10") { "s10" } else { "s11" }
}

/// The hash tag of room `room` under `prefix`, as protoo-redis names it
/// (`crates/protoo-redis/src/keys.rs`: `{P:room:R}`, the room's keys and its
/// channel).
fn room_tag(prefix: &str, room: &str) -> String {
    format!("{{{prefix}:room:{room}}}")
}

impl Backing {
    /// Starts the Redis of `sc` (`log`: the single server's output).
    pub(super) fn start(sc: &Scenario, tools: &RedisTools, log: &Path) -> Result<Backing> {
        let ha = || {
            tools
                .ha
                .as_ref()
                .ok_or_else(|| "no redis-sentinel / redis-cli for this scenario".to_owned())
        };
        Ok(match sc.topology {
            Topology::Single => {
                Backing::Single(crate::redis::Server::start(&tools.server, Some(log))?)
            }
            Topology::Sentinel => {
                let (sentinel, cli) = ha()?;
                Backing::Sentinel(redis_ha::Sentinel::start(&tools.server, sentinel, cli)?)
            }
            Topology::Cluster => {
                let (_, cli) = ha()?;
                let cluster = redis_ha::Cluster::start(&tools.server, cli)?;
                let shards = cluster.masters(cli)?;
                if shards.len() != 3 {
                    return Err(format!("Redis Cluster with {} masters", shards.len()));
                }
                Backing::Cluster {
                    cluster,
                    shards,
                    cli: cli.clone(),
                }
            }
        })
    }

    /// The room server's flags to reach it.
    pub(super) fn server_args(&self) -> Vec<String> {
        match self {
            Backing::Single(r) => vec!["--redis".to_owned(), r.url()],
            Backing::Sentinel(s) => vec![
                "--redis-sentinel".to_owned(),
                s.addresses(),
                "--redis-master".to_owned(),
                redis_ha::MASTER.to_owned(),
            ],
            Backing::Cluster { cluster, .. } => {
                vec!["--redis-cluster".to_owned(), cluster.addresses()]
            }
        }
    }

    /// The processes measured as Redis (`--redis-pid`, once each).
    pub(super) fn pids(&self) -> Vec<u32> {
        match self {
            Backing::Single(r) => vec![r.pid()],
            Backing::Sentinel(s) => vec![s.master_pid()],
            Backing::Cluster { shards, .. } => shards.iter().map(|s| s.pid).collect(),
        }
    }

    /// What the shards carried, as fields of the result (Redis Cluster
    /// only): `redis_shard_spublish` (each master's `SPUBLISH` calls since
    /// it started), `room_shard` (1-based: the shard of the measured room),
    /// `foreign_spublish` (S10: `SPUBLISH` calls on the other shards),
    /// `rooms_per_shard` and `rooms_spread_pct` (how [`SPREAD_ROOMS`]
    /// rooms' slots fall on the shards, and the largest deviation from the
    /// mean).
    pub(super) fn shard_fields(&self, sc: &Scenario, prefix: &str) -> Vec<(String, String)> {
        let Backing::Cluster { shards, cli, .. } = self else {
            return Vec::new();
        };
        let mut fields = Vec::new();
        let spublish: Vec<Option<u64>> = shards
            .iter()
            .map(|shard| {
                redis_ha::cli(cli, shard.port, &["INFO", "commandstats"])
                    .map(|info| command_calls(&info, "spublish"))
            })
            .collect();
        let owner = shards
            .iter()
            .position(|s| s.serves(redis_ha::slot(&room_tag(prefix, bench_room(sc.key)))));
        fields.push((
            "redis_shard_spublish".to_owned(),
            spublish
                .iter()
                .map(|c| c.map_or("?".to_owned(), |c| c.to_string()))
                .collect::<Vec<_>>()
                .join("+"),
        ));
        if let Some(owner) = owner {
            fields.push(("room_shard".to_owned(), (owner + 1).to_string()));
        }
        // S10's only publications are the room's broadcasts; S11's include
        // messages to a node on the node's own channel (`{P:node:N}`, on
        // that node's slot's shard), so the test is S10's.
        if let (Some(owner), true) = (owner, sc.key.starts_with("s10")) {
            let foreign: Option<u64> = spublish
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != owner)
                .map(|(_, c)| *c)
                .sum();
            if let Some(foreign) = foreign {
                fields.push(("foreign_spublish".to_owned(), foreign.to_string()));
            }
        }
        let counts = spread(shards, prefix, SPREAD_ROOMS);
        fields.push((
            "rooms_per_shard".to_owned(),
            counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("+"),
        ));
        fields.push((
            "rooms_spread_pct".to_owned(),
            format!("{:.1}", deviation_pct(&counts)),
        ));
        fields
    }
}

/// Rooms `room-0` … `room-{n-1}` under `prefix`, counted by the shard that
/// serves their slot.
fn spread(shards: &[Shard], prefix: &str, n: usize) -> Vec<usize> {
    let mut counts = vec![0; shards.len()];
    for i in 0..n {
        let slot = redis_ha::slot(&room_tag(prefix, &format!("room-{i}")));
        if let Some(owner) = shards.iter().position(|s| s.serves(slot)) {
            counts[owner] += 1;
        }
    }
    counts
}

/// The largest deviation of a count from their mean, in % of the mean.
fn deviation_pct(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return 0.0;
    }
    let mean = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - mean).abs() / mean * 100.0)
        .fold(0.0, f64::max)
}

/// `calls` of `cmdstat_NAME` in an `INFO commandstats` answer (0 when the
/// command never ran).
fn command_calls(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("cmdstat_")?
                .strip_prefix(name)?
                .strip_prefix(":calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards() -> Vec<Shard> {
        // What `redis-cli --cluster create` assigns to three masters.
        [(0, 5460), (5461, 10922), (10923, 16383)]
            .into_iter()
            .map(|range| Shard {
                port: 0,
                pid: 0,
                slots: vec![range],
            })
            .collect()
    }

    #[test]
    fn a_thousand_rooms_spread_within_a_quarter() {
        let counts = spread(&shards(), "bench", SPREAD_ROOMS);
        assert_eq!(counts.iter().sum::<usize>(), SPREAD_ROOMS);
        assert!(deviation_pct(&counts) <= 25.0, "{counts:?}");
    }

    #[test]
    fn reads_commandstats() {
        let info = "# Commandstats\r\ncmdstat_spublish:calls=42,usec=10,usec_per_call=0.24\r\n\
                    cmdstat_publish:calls=7,usec=1\r\n";
        assert_eq!(command_calls(info, "spublish"), 42);
        assert_eq!(command_calls(info, "publish"), 7);
        assert_eq!(command_calls(info, "ssubscribe"), 0);
        assert!((deviation_pct(&[300, 350, 350]) - 10.0).abs() < 1e-9);
    }
}
