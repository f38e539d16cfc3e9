//! CPU time and memory of the measured processes (the server or the
//! nodes of a cluster, its Redis, the load generator itself), from `/proc`
//! (Linux).

use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, else 100).
fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` of a process in microseconds (`pid` `None`: this process).
pub(crate) fn cpu_us(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clk_tck())
}

/// Time on a CPU of every thread of a process, nanoseconds, from
/// `/proc/PID/task/*/schedstat`: finer than [`cpu_us`] (clock ticks of
/// 10 ms), for small differences over a few seconds. Threads that have
/// exited are not counted; `None` when the kernel does not say.
pub(crate) fn sched_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat
            .split_ascii_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// Whether process `pid` has exited: gone from `/proc`, or a zombie its
/// parent has not reaped yet.
pub(crate) fn exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_ascii_whitespace().next())
        .is_some_and(|state| matches!(state, "Z" | "X" | "x"))
}

/// CPU time spent by the whole machine (all processes, all cores) outside
/// idle and I/O wait, in microseconds, from `/proc/stat`.
pub(crate) fn system_busy_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy = v.get(0..3)?.iter().sum::<u64>() + v.get(5..8)?.iter().sum::<u64>();
    Some(busy * 1_000_000 / clk_tck())
}

/// A `Vm*` line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The soft descriptor limit of `pid` (`Max open files` of
/// `/proc/PID/limits`; `None` when unknown or unlimited).
pub(crate) fn nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits.lines().find_map(|l| {
        l.strip_prefix("Max open files")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Bytes `pid` has written through `write`-like calls (sockets included):
/// `wchar` of `/proc/PID/io`.
pub(crate) fn wchar(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
}

/// Resident memory of `pid` in KiB.
pub(crate) fn rss_kb(pid: Option<u32>) -> Option<u64> {
    status_kb(pid?, "VmRSS")
}

/// The processes a run measures besides itself: the server (one, or the
/// nodes of a cluster) and, for a cluster, its Redis.
#[derive(Debug, Clone, Default)]
pub(crate) struct Procs {
    /// Server process ids (`--pid`, one per node).
    pub(crate) servers: Vec<u32>,
    /// The cluster's redis-server (`--redis-pid`), or the masters of a
    /// Redis Cluster, one per shard.
    pub(crate) redis: Vec<u32>,
}

/// One reading of the servers, Redis and this process.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    at: Instant,
    /// CPU time of each server, in the order of [`Procs::servers`].
    node_cpu_us: Vec<Option<u64>>,
    /// CPU time of each Redis process, in the order of [`Procs::redis`].
    redis_cpu_us: Vec<Option<u64>>,
    client_cpu_us: Option<u64>,
    system_busy_us: Option<u64>,
    /// Server resident memory in KiB (summed over the nodes).
    pub(crate) server_rss_kb: Option<u64>,
}

impl Snap {
    /// Reads the servers and Redis (those known) and this process now.
    pub(crate) fn take(procs: &Procs) -> Self {
        let rss: Option<Vec<u64>> = procs.servers.iter().map(|&p| rss_kb(Some(p))).collect();
        Self {
            at: Instant::now(),
            node_cpu_us: procs.servers.iter().map(|&p| cpu_us(Some(p))).collect(),
            redis_cpu_us: procs.redis.iter().map(|&p| cpu_us(Some(p))).collect(),
            client_cpu_us: cpu_us(None),
            system_busy_us: system_busy_us(),
            server_rss_kb: rss.filter(|r| !r.is_empty()).map(|r| r.iter().sum()),
        }
    }

    /// CPU time of every server together (`None` when one is unknown).
    fn server_cpu_us(&self) -> Option<u64> {
        let all: Option<Vec<u64>> = self.node_cpu_us.iter().copied().collect();
        all.filter(|a| !a.is_empty()).map(|a| a.iter().sum())
    }

    /// CPU time of every Redis process together (`None` when one is unknown).
    fn redis_cpu_us(&self) -> Option<u64> {
        let all: Option<Vec<u64>> = self.redis_cpu_us.iter().copied().collect();
        all.filter(|a| !a.is_empty()).map(|a| a.iter().sum())
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Wall time in seconds.
    pub(crate) secs: f64,
    /// Server CPU time in microseconds (every node together).
    pub(crate) server_cpu_us: Option<u64>,
    /// Each node's CPU time in microseconds, when there are several.
    pub(crate) node_cpu_us: Vec<u64>,
    /// The cluster's Redis CPU time in microseconds (every shard together).
    pub(crate) redis_cpu_us: Option<u64>,
    /// Each shard's CPU time in microseconds, when there are several.
    pub(crate) redis_shard_cpu_us: Vec<u64>,
    /// Client (this process) CPU time in microseconds.
    pub(crate) client_cpu_us: Option<u64>,
    /// CPU time of every other process on the machine, microseconds: a
    /// busy machine makes a run noisy.
    pub(crate) other_cpu_us: Option<u64>,
    /// Server resident memory at the end, KiB.
    pub(crate) server_rss_kb: Option<u64>,
}

impl Window {
    /// The window from `a` to `b`.
    pub(crate) fn between(a: &Snap, b: &Snap) -> Self {
        let delta = |b: Option<u64>, a: Option<u64>| b.zip(a).map(|(b, a)| b.saturating_sub(a));
        let server_cpu_us = delta(b.server_cpu_us(), a.server_cpu_us());
        let node_cpu_us: Vec<u64> = if b.node_cpu_us.len() > 1 {
            b.node_cpu_us
                .iter()
                .zip(&a.node_cpu_us)
                .map(|(b, a)| delta(*b, *a).unwrap_or(0))
                .collect()
        } else {
            Vec::new()
        };
        let redis_cpu_us = delta(b.redis_cpu_us(), a.redis_cpu_us());
        let redis_shard_cpu_us: Vec<u64> = if b.redis_cpu_us.len() > 1 {
            b.redis_cpu_us
                .iter()
                .zip(&a.redis_cpu_us)
                .map(|(b, a)| delta(*b, *a).unwrap_or(0))
                .collect()
        } else {
            Vec::new()
        };
        let client_cpu_us = delta(b.client_cpu_us, a.client_cpu_us);
        let other_cpu_us = delta(b.system_busy_us, a.system_busy_us).map(|all| {
            all.saturating_sub(
                server_cpu_us.unwrap_or(0) + client_cpu_us.unwrap_or(0) + redis_cpu_us.unwrap_or(0),
            )
        });
        Self {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            server_cpu_us,
            node_cpu_us,
            redis_cpu_us,
            redis_shard_cpu_us,
            client_cpu_us,
            other_cpu_us,
            server_rss_kb: b.server_rss_kb,
        }
    }
}

/// The peak RSS of a process, sampled every `every` by a task of its own
/// until `stop` turns true.
pub(crate) struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling `pid` (nothing to sample without one).
    pub(crate) fn start(
        pid: Option<u32>,
        stop: tokio::sync::watch::Receiver<bool>,
        every: std::time::Duration,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = pid.map(|pid| {
            let peak = peak.clone();
            tokio::spawn(async move {
                while !*stop.borrow() {
                    if let Some(kb) = rss_kb(Some(pid)) {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
                    tokio::time::sleep(every).await;
                }
            })
        });
        PeakRss { peak, task }
    }

    /// Waits for the sampler to stop (after `stop` turned true); the peak
    /// in KB (0 without a pid).
    pub(crate) async fn finish(self) -> u64 {
        if let Some(task) = self.task {
            let _ = task.await;
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_us(Some(pid)).is_some());
        assert!(cpu_us(None).is_some());
        assert!(system_busy_us().is_some());
        assert!(rss_kb(Some(pid)).is_some_and(|k| k > 0));
        assert!(status_kb(pid, "VmHWM").is_some_and(|k| k > 0));
        assert!(wchar(pid).is_some());
    }

    #[test]
    fn sums_the_nodes_and_counts_redis_apart() {
        let pid = std::process::id();
        let procs = Procs {
            servers: vec![pid, pid],
            redis: vec![pid, pid, pid],
        };
        let a = Snap::take(&procs);
        // Burn a little CPU so that the window is not empty.
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = Snap::take(&procs);
        let w = Window::between(&a, &b);
        assert_eq!(w.node_cpu_us.len(), 2);
        assert_eq!(
            w.server_cpu_us,
            Some(w.node_cpu_us.iter().sum::<u64>()),
            "{w:?}"
        );
        assert!(w.redis_cpu_us.is_some());
        // Several Redis processes (a Redis Cluster's masters): each apart too.
        assert_eq!(w.redis_shard_cpu_us.len(), 3);
        assert_eq!(
            w.redis_cpu_us,
            Some(w.redis_shard_cpu_us.iter().sum::<u64>()),
            "{w:?}"
        );
        let single = Window::between(
            &Snap::take(&Procs {
                servers: vec![pid],
                redis: Vec::new(),
            }),
            &Snap::take(&Procs {
                servers: vec![pid],
                redis: Vec::new(),
            }),
        );
        assert!(single.node_cpu_us.is_empty() && single.redis_cpu_us.is_none());
        assert!(single.redis_shard_cpu_us.is_empty());
        assert!(Snap::take(&Procs::default()).server_rss_kb.is_none());
    }
}
