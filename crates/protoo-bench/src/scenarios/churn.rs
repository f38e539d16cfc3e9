//! S5 (churn) and S11 (presence churn across the nodes of a cluster).
//!
//! Each worker loops: connect, one request, close (close handshake
//! completed); the rate is full cycles (sessions) per second, the latency
//! one cycle.
//!
//! - S5 ([`Cycle::Echo`]): the request is `echo`; each worker in a room of
//!   its own. The upgrade is written and checked by hand
//!   ([`client::connect_lean`]): the load generator shares the cores with
//!   the server, so what it spends per cycle bounds the rate of every
//!   server measured.
//! - S11 ([`Cycle::Join`]): the request is `join`; every worker in one room,
//!   worker `w`'s session `i` on node `(w + i) mod nodes`, so sessions keep
//!   moving between the nodes. Before the workers start, one observer per
//!   node joins the room and stays. Every `join` answer must list every
//!   observer (the presence read spans the nodes), and every observer must
//!   get `newPeer` and `peerClosed` for every session that joined, once
//!   each (departures reach every node), within 5 s of the window's end.
//!   The `join` round trip is reported apart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{DONE, MEASURE, Phase, Stats, close, echo_once, read_batch, request_once};
use crate::client::{self, Buffers, Incoming, Target, Ws, now_ns};
use crate::hist::{Local, Shared};
use crate::{Errors, Report, Run};

/// What one session does between connecting and closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cycle {
    /// One `echo` (S5).
    Echo,
    /// One `join` in the shared room, observed from every node (S11).
    Join,
}

/// The room of S11.
const ROOM: &str = "s11";

/// How long the observers may take, after the window, to see every session.
const OBSERVE_WAIT: Duration = Duration::from_secs(5);

/// Runs `workers` concurrent churn loops for the window.
pub(crate) async fn run(
    run: &Run,
    workers: usize,
    cycle: Cycle,
    report: &mut Report,
) -> Result<(), String> {
    report.set("clients", workers);
    // Fail fast when a server cannot be reached at all.
    for target in &run.targets {
        let ws = client::connect(target, "churn-probe", "probe", Buffers::Idle).await?;
        close(ws, Duration::from_secs(2)).await;
    }
    let observers = match cycle {
        Cycle::Echo => None,
        Cycle::Join => Some(Observers::start(run).await?),
    };
    let observer_ids: Arc<Vec<String>> = Arc::new(
        observers
            .as_ref()
            .map(|o| o.ids.clone())
            .unwrap_or_default(),
    );
    let joined = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let hist = Shared::default();
    let join_hist = Shared::default();
    let phase = Arc::new(Phase::default());
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let worker = Worker {
                w,
                targets: run.targets.clone(),
                cycle,
                observers: Arc::clone(&observer_ids),
                joined: Arc::clone(&joined),
            };
            let phase = Arc::clone(&phase);
            let hist = hist.clone();
            let join_hist = join_hist.clone();
            tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut local = Local::new(&hist);
                let mut join_local = Local::new(&join_hist);
                let mut i = 0u64;
                while phase.get() != DONE && stats.errors.count < 1000 {
                    let t0 = now_ns();
                    match tokio::time::timeout(Duration::from_secs(10), worker.session(i)).await {
                        Ok(Ok(join_ns)) => {
                            if phase.get() == MEASURE {
                                stats.ops += 1;
                                local.record(now_ns().saturating_sub(t0));
                                if let Some(ns) = join_ns {
                                    join_local.record(ns);
                                }
                            }
                        }
                        Ok(Err(e)) => stats.errors.push(e),
                        Err(_) => stats.errors.push("churn cycle took over 10 s"),
                    }
                    i += 1;
                }
                stats
            })
        })
        .collect();

    let unit = match cycle {
        Cycle::Echo => "conn",
        Cycle::Join => "session",
    };
    super::measure(
        run,
        &phase,
        tasks,
        &hist,
        Duration::from_secs(15),
        unit,
        report,
    )
    .await;
    if let Some(observers) = observers {
        let h = join_hist.lock().map(|h| h.clone()).unwrap_or_default();
        report.setf("join_p50_us", h.quantile(0.50) as f64 / 1e3, 1);
        report.setf("join_p99_us", h.quantile(0.99) as f64 / 1e3, 1);
        observers
            .finish(joined.load(std::sync::atomic::Ordering::SeqCst), report)
            .await;
    }
    Ok(())
}

/// One worker's settings.
struct Worker {
    w: usize,
    targets: Vec<Target>,
    cycle: Cycle,
    /// The ids every `join` answer must list (S11).
    observers: Arc<Vec<String>>,
    /// Sessions whose `join` was answered (S11), in every phase.
    joined: Arc<std::sync::atomic::AtomicU64>,
}

/// A `join` answer: the peers listed.
#[derive(Deserialize)]
struct Joined {
    peers: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    id: String,
}

impl Worker {
    /// Session `i`: connect, the request, close; the `join` round trip (S11).
    async fn session(&self, i: u64) -> Result<Option<u64>, String> {
        const WAIT: Duration = Duration::from_secs(5);
        match self.cycle {
            Cycle::Echo => {
                let room = format!("churn-{}", self.w);
                let mut ws =
                    client::connect_lean(&self.targets[0], &room, &format!("p{i}")).await?;
                echo_once(&mut ws, 1, WAIT).await?;
                close(ws, WAIT).await;
                Ok(None)
            }
            Cycle::Join => {
                let node = (self.w + i as usize) % self.targets.len();
                let peer = format!("s{}x{i}", self.w);
                let mut ws =
                    client::connect(&self.targets[node], ROOM, &peer, Buffers::Idle).await?;
                let (ns, data) =
                    request_once(&mut ws, 1, "join", client::join(1, &peer), WAIT).await?;
                self.joined
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                close(ws, WAIT).await;
                let joined: Joined =
                    serde_json::from_str(&data).map_err(|e| format!("join answer {data}: {e}"))?;
                for id in self.observers.iter() {
                    if !joined.peers.iter().any(|p| &p.id == id) {
                        return Err(format!(
                            "join of {peer} on node {node} did not list {id}: {data}"
                        ));
                    }
                }
                Ok(Some(ns))
            }
        }
    }
}

/// What one observer saw of the sessions.
#[derive(Debug, Default)]
struct Seen {
    new_peers: HashSet<String>,
    closed: HashSet<String>,
    /// `newPeer` or `peerClosed` for a session already announced so.
    duplicates: u64,
    ended: Option<String>,
    errors: Errors,
}

/// S11's observers: one member per node, joined before the churn starts.
struct Observers {
    ids: Vec<String>,
    seen: Vec<Arc<Mutex<Seen>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Observers {
    /// Connects and joins one observer per node, then reads them.
    async fn start(run: &Run) -> Result<Observers, String> {
        let (stop, stop_rx) = watch::channel(false);
        let mut observers = Observers {
            ids: Vec::new(),
            seen: Vec::new(),
            stop,
            tasks: Vec::new(),
        };
        for (node, target) in run.targets.iter().enumerate() {
            let id = format!("obs{node}");
            let mut ws = client::connect(target, ROOM, &id, Buffers::Busy).await?;
            request_once(&mut ws, 1, "join", client::join(1, &id), run.timeout).await?;
            let seen = Arc::new(Mutex::new(Seen::default()));
            observers.tasks.push(tokio::spawn(observe(
                ws,
                Arc::clone(&seen),
                stop_rx.clone(),
            )));
            observers.ids.push(id);
            observers.seen.push(seen);
        }
        Ok(observers)
    }

    /// Waits (at most [`OBSERVE_WAIT`]) until every observer has seen each
    /// of the `joined` sessions arrive and leave, then reports what they saw.
    async fn finish(self, joined: u64, report: &mut Report) {
        let seen_least = |f: fn(&Seen) -> usize| {
            self.seen
                .iter()
                .map(|s| f(&s.lock().unwrap_or_else(PoisonError::into_inner)) as u64)
                .min()
                .unwrap_or(0)
        };
        let deadline = Instant::now() + OBSERVE_WAIT;
        while Instant::now() < deadline
            && (seen_least(|s| s.closed.len()) < joined
                || seen_least(|s| s.new_peers.len()) < joined)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (closed, new_peers) = (
            seen_least(|s| s.closed.len()),
            seen_least(|s| s.new_peers.len()),
        );
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        report.set("sessions_joined", joined);
        let pct = |n: u64| {
            if joined == 0 {
                0.0
            } else {
                100.0 * n as f64 / joined as f64
            }
        };
        report.setf("observed_pct", pct(closed.min(new_peers)), 2);
        report.setf("observed_closed_pct", pct(closed), 2);
        report.setf("observed_new_pct", pct(new_peers), 2);
        if closed < joined || new_peers < joined {
            report.error(format!(
                "{OBSERVE_WAIT:?} after the window, an observer had seen {new_peers} newPeer \
                 and {closed} peerClosed of the {joined} sessions that joined"
            ));
        }
        for (id, seen) in self.ids.iter().zip(&self.seen) {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.duplicates > 0 {
                report.error(format!(
                    "{id} got {} newPeer/peerClosed twice for the same session",
                    seen.duplicates
                ));
            }
            if let Some(e) = seen.ended.take() {
                report.error(format!(
                    "observer {id}'s connection ended during the run: {e}"
                ));
            }
            report.errors(std::mem::take(&mut seen.errors));
        }
    }
}

/// An observer's read loop: notes every session's `newPeer` and `peerClosed`.
async fn observe(mut ws: Ws, seen: Arc<Mutex<Seen>>, mut stop: watch::Receiver<bool>) {
    #[derive(Deserialize)]
    struct About<'a> {
        #[serde(default, borrow)]
        id: Option<&'a str>,
        #[serde(default, rename = "peerId", borrow)]
        peer_id: Option<&'a str>,
    }
    let mut ended = None;
    loop {
        let batch = read_batch(&mut ws, &mut ended, |m| {
            let Message::Text(t) = m else { return };
            let Some(inc) = Incoming::parse(&t) else {
                return;
            };
            if !inc.notification {
                return;
            }
            let about: Option<About<'_>> =
                inc.data.and_then(|d| serde_json::from_str(d.get()).ok());
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let (set, id) = match (inc.method.as_deref(), about) {
                (Some("newPeer"), Some(About { id: Some(id), .. })) => (&mut seen.new_peers, id),
                (
                    Some("peerClosed"),
                    Some(About {
                        peer_id: Some(id), ..
                    }),
                ) => (&mut seen.closed, id),
                (Some("newPeer" | "peerClosed"), _) => {
                    seen.errors
                        .push(format!("malformed notification: {}", t.as_str()));
                    return;
                }
                _ => return,
            };
            // Sessions only (the probe and the other observers are not counted).
            if id.starts_with('s') && !set.insert(id.to_owned()) {
                seen.duplicates += 1;
            }
        });
        let open = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            open = batch => open,
        };
        if !open {
            seen.lock().unwrap_or_else(PoisonError::into_inner).ended = ended.take();
            return;
        }
    }
    close(ws, Duration::from_secs(2)).await;
}
