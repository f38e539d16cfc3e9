//! The remote-triggered warning limit: a budget per source (client address)
//! and a global one, in one bounded table for the process.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::{Mutex, MutexGuard, lock};

/// Remote-triggered warnings logged at WARN per source and [`PERIOD`].
pub const SOURCE_BURST: u32 = 5;

/// Remote-triggered warnings logged at WARN per [`PERIOD`] from all sources
/// together (many addresses, or many connections without one).
pub const GLOBAL_BURST: u32 = 100;

/// The period of the warning budgets: after it, a source's warnings are
/// logged again, after a summary of those held back.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Sources the limit remembers at once. Past it, a new source takes the
/// place of one whose period ended, or else of the oldest; what the evicted
/// one held back goes into the next global summary.
pub const MAX_SOURCES: usize = 1024;

/// Where a remote-triggered warning comes from: the client's address (an
/// IPv4 address, or the /64 network of an IPv6 one, which one client
/// usually holds whole), or, when the address is unknown (in-process
/// transports, a custom transport), one connection.
///
/// ```
/// use protoo_transport::log::Source;
///
/// let a = Source::from("203.0.113.7:50000".parse::<std::net::SocketAddr>().unwrap());
/// let b = Source::from("203.0.113.7:50001".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(a, b); // reconnecting does not make a new source
/// assert_eq!(a.to_string(), "203.0.113.7");
/// assert_ne!(Source::connection(), Source::connection());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(Key);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4([u8; 4]),
    /// The first 64 bits.
    V6([u8; 8]),
    Connection(u64),
}

impl Source {
    /// A source of its own, for a connection whose address is unknown.
    pub fn connection() -> Source {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Source(Key::Connection(NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// The source of `addr`, or [`Source::connection`] when there is none.
    pub fn of(addr: Option<SocketAddr>) -> Source {
        addr.map_or_else(Source::connection, Source::from)
    }

    fn is_connection(self) -> bool {
        matches!(self.0, Key::Connection(_))
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(Key::V4(v4.octets())),
            IpAddr::V6(v6) => {
                let mut net = [0; 8];
                net.copy_from_slice(&v6.octets()[..8]);
                Source(Key::V6(net))
            }
        }
    }
}

impl From<SocketAddr> for Source {
    fn from(addr: SocketAddr) -> Source {
        Source::from(addr.ip())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Key::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(octets)),
            Key::V6(net) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(&net);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
            Key::Connection(n) => write!(f, "connection #{n}"),
        }
    }
}

/// Counts one remote-triggered warning from `source` and says whether it
/// may be logged at WARN (`true`) or only at DEBUG (`false`); logs, at
/// WARN, the summaries that are due first (how many warnings of this
/// source, or of sources no longer tracked, were held back).
///
/// Within each [`PERIOD`], a source gets [`SOURCE_BURST`] warnings and all
/// sources together [`GLOBAL_BURST`]; the budget of an address survives its
/// reconnections. [`remote_warn!`](crate::remote_warn) is the usual way in.
pub fn allow_warn(source: Source) -> bool {
    let now = Instant::now();
    let (allowed, report) = limits().check(source, now);
    report.log();
    allowed
}

/// A connection from `source` ended. A per-connection source
/// ([`Source::connection`]) is forgotten, after a summary of what it held
/// back; an address keeps its budget for its next connections.
pub fn closed(source: Source) {
    if !source.is_connection() {
        return;
    }
    let held_back = limits()
        .sources
        .remove(&source)
        .map_or(0, |entry| entry.held_back);
    Report {
        source: (held_back > 0).then_some((source, held_back)),
        ..Report::default()
    }
    .log();
}

/// The limits of every source, locked.
fn limits() -> MutexGuard<'static, Limits> {
    static LIMITS: OnceLock<Mutex<Limits>> = OnceLock::new();
    lock(LIMITS.get_or_init(|| Mutex::new(Limits::default())))
}

/// One source's budget in its current period.
#[derive(Debug)]
struct Entry {
    start: Instant,
    logged: u32,
    held_back: u64,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= PERIOD
    }
}

/// The summaries one check found due.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// This source's held back warnings, its period over.
    source: Option<(Source, u64)>,
    /// Held back warnings of sources no longer tracked, and how many sources.
    others: Option<(u64, u64)>,
}

impl Report {
    fn log(self) {
        if let Some((held_back, sources)) = self.others {
            tracing::warn!(
                held_back,
                sources,
                "more remote-triggered warnings were logged at debug level only"
            );
        }
        if let Some((source, held_back)) = self.source {
            tracing::warn!(
                source = %source,
                held_back,
                "more warnings caused by this source were logged at debug level only"
            );
        }
    }
}

/// The state of every budget.
#[derive(Debug, Default)]
struct Limits {
    sources: HashMap<Source, Entry>,
    /// When the global period started.
    start: Option<Instant>,
    /// WARN lines in the global period.
    logged: u32,
    /// Held back warnings of sources no longer tracked (period over,
    /// evicted), for the next global summary, and how many sources.
    orphaned: u64,
    orphaned_sources: u64,
}

impl Limits {
    fn check(&mut self, source: Source, now: Instant) -> (bool, Report) {
        let mut report = Report::default();
        if self
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= PERIOD)
        {
            // A new global period: sources whose period is over are
            // forgotten, what they held back summed up in one line.
            let (orphaned, orphaned_sources) = (&mut self.orphaned, &mut self.orphaned_sources);
            self.sources.retain(|_, entry| {
                let keep = !entry.expired(now);
                if !keep && entry.held_back > 0 {
                    *orphaned += entry.held_back;
                    *orphaned_sources += 1;
                }
                keep
            });
            if self.orphaned > 0 {
                report.others = Some((
                    std::mem::take(&mut self.orphaned),
                    std::mem::take(&mut self.orphaned_sources),
                ));
                self.logged = 1;
            } else {
                self.logged = 0;
            }
            self.start = Some(now);
        }
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.evict(now);
        }
        let entry = self.sources.entry(source).or_insert(Entry {
            start: now,
            logged: 0,
            held_back: 0,
        });
        let mut held_back = 0;
        if entry.expired(now) {
            held_back = std::mem::take(&mut entry.held_back);
            entry.start = now;
            entry.logged = 0;
        }
        if entry.logged < SOURCE_BURST && self.logged < GLOBAL_BURST {
            entry.logged += 1;
            self.logged += 1;
            if held_back > 0 {
                report.source = Some((source, held_back));
                self.logged += 1;
            }
            (true, report)
        } else {
            entry.held_back += 1;
            if held_back > 0 {
                self.orphaned += held_back;
                self.orphaned_sources += 1;
            }
            (false, report)
        }
    }

    /// Makes room for one source: forgets one whose period is over, or else
    /// the oldest; what it held back goes to the global summary.
    fn evict(&mut self, now: Instant) {
        let victim = self
            .sources
            .iter()
            .find(|(_, entry)| entry.expired(now))
            .or_else(|| self.sources.iter().min_by_key(|(_, entry)| entry.start))
            .map(|(source, _)| *source);
        if let Some(entry) = victim.and_then(|source| self.sources.remove(&source))
            && entry.held_back > 0
        {
            self.orphaned += entry.held_back;
            self.orphaned_sources += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> Source {
        Source::from(IpAddr::from(std::net::Ipv4Addr::from(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_gets_its_burst_then_a_summary_each_period() {
        let mut limits = Limits::default();
        let a = ip(1);
        for _ in 0..SOURCE_BURST {
            assert_eq!(limits.check(a, Instant::now()), (true, Report::default()));
        }
        for _ in 0..1000 {
            assert!(!limits.check(a, Instant::now()).0);
        }
        // Another source is not held back by this one.
        assert!(limits.check(ip(2), Instant::now()).0);
        tokio::time::advance(PERIOD / 2).await;
        assert!(!limits.check(a, Instant::now()).0);
        tokio::time::advance(PERIOD / 2).await;
        // The global period rolls first: a's own period is not over yet
        // (it started with its first warning, at 0; now is 60 s: over).
        let (allowed, report) = limits.check(a, Instant::now());
        assert!(allowed);
        assert_eq!(report.others, Some((1001, 1)));
        assert_eq!(report.source, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_summary_comes_with_the_sources_next_warning() {
        let mut limits = Limits::default();
        let (a, b) = (ip(1), ip(2));
        limits.check(b, Instant::now());
        tokio::time::advance(PERIOD / 2).await;
        for _ in 0..SOURCE_BURST + 3 {
            limits.check(a, Instant::now());
        }
        tokio::time::advance(PERIOD / 2).await;
        // The global period rolls with b's warning; a's is not over.
        assert_eq!(limits.check(b, Instant::now()), (true, Report::default()));
        tokio::time::advance(PERIOD / 2).await;
        let (allowed, report) = limits.check(a, Instant::now());
        assert!(allowed);
        assert_eq!(report.source, Some((a, 3)));
    }

    #[tokio::test(start_paused = true)]
    async fn all_sources_together_get_the_global_burst() {
        let mut limits = Limits::default();
        let warned = (0..1000)
            .filter(|n| limits.check(ip(*n), Instant::now()).0)
            .count();
        assert_eq!(warned, GLOBAL_BURST as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let mut limits = Limits::default();
        for n in 0..(MAX_SOURCES as u32) * 3 {
            for _ in 0..SOURCE_BURST + 1 {
                limits.check(ip(n), Instant::now());
            }
        }
        assert_eq!(limits.sources.len(), MAX_SOURCES);
        // Every evicted source's held back warning is kept for the summary.
        assert_eq!(limits.orphaned_sources, 2 * MAX_SOURCES as u64);
        tokio::time::advance(PERIOD).await;
        let (_, report) = limits.check(ip(0), Instant::now());
        assert_eq!(
            report.others.map(|(_, sources)| sources),
            Some(3 * MAX_SOURCES as u64)
        );
        assert_eq!(limits.sources.len(), 1);
    }

    #[test]
    fn ipv6_clients_are_counted_by_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
        assert_eq!(Source::from(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::from(mapped).to_string(), "192.0.2.1");
    }
}
