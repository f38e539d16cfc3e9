//! S4 (idle peers) and S7 (capacity).
//!
//! `n` peers connect (at most `--connect-concurrency` handshakes at once), in
//! rooms of 100, and each is verified by one echo (with `--join`, then a
//! `join`: listed in its room's presence, and the room's earlier peers hear
//! `newPeer`). Once all are in, the
//! server settles for a second and its RSS is read: RSS per peer is
//! (RSS now - RSS before the first connection) / n. For S7 every peer then
//! sends one more echo at the same moment and each must be answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{echo_once, request_once};
use crate::client::{self, Buffers, Target, Ws};
use crate::hist::{Local, Shared};
use crate::procfs::{Snap, Window};
use crate::{Errors, Report, Run};

/// Peers per room.
const ROOM: usize = 100;

/// Signals from the main task to every peer task.
const GO: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug, Default)]
struct Counters {
    ready: AtomicUsize,
    failed: AtomicUsize,
    answered: AtomicUsize,
    round_failed: AtomicUsize,
    errors: Mutex<Errors>,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e);
    }
}

/// How the peers of S4 and S7 behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    /// S7's simultaneous echo from every peer.
    pub(crate) round: bool,
    /// Each peer `join`s its room after its first echo.
    pub(crate) join: bool,
}

/// Runs `n` peers.
pub(crate) async fn run(
    run: &Run,
    n: usize,
    Idle { round, join }: Idle,
    report: &mut Report,
) -> Result<(), String> {
    report.set("peers", n);
    if join {
        report.set("joined", 1);
    }
    // Fail fast when the server cannot be reached at all.
    let probe = client::connect(&run.target, "idle-probe", "probe", Buffers::Idle).await?;
    super::close(probe, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = Snap::take(&run.procs);
    let counters = Arc::new(Counters::default());
    let connect_hist = Shared::default();
    let round_hist = Shared::default();
    let sem = Arc::new(Semaphore::new(run.connect_concurrency));
    let (signal, signal_rx) = watch::channel(0u8);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(peer(
                run.target.clone(),
                i,
                Arc::clone(&sem),
                Arc::clone(&counters),
                (connect_hist.clone(), round_hist.clone()),
                signal_rx.clone(),
                join,
            ))
        })
        .collect();

    let deadline = Instant::now() + run.timeout;
    let all_in = wait_until(deadline, || {
        counters.ready.load(Ordering::SeqCst) + counters.failed.load(Ordering::SeqCst) >= n
    })
    .await;
    let connected = Snap::take(&run.procs);
    let ready = counters.ready.load(Ordering::SeqCst);
    if !all_in {
        report.error(format!(
            "only {ready} of {n} peers connected within the timeout"
        ));
    }
    let connect = Window::between(&before, &connected);
    report.window(&connect, ready as u64, "peer");
    let h = connect_hist.lock().map(|h| h.clone()).unwrap_or_default();
    report.latency(&h);
    report.set("peers_ok", ready);

    // Let the server settle (handshake buffers freed, allocator trimmed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = Snap::take(&run.procs);
    if let (Some(b), Some(a)) = (before.server_rss_kb, settled.server_rss_kb) {
        report.set("srv_rss_before_kb", b);
        report.set("srv_rss_kb", a);
        if ready > 0 {
            report.set(
                "rss_per_peer_bytes",
                (a.saturating_sub(b) * 1024) / ready as u64,
            );
        }
    }
    if let Some(kb) = crate::procfs::rss_kb(Some(std::process::id())) {
        report.set("cli_rss_kb", kb);
    }

    if round {
        let a = Snap::take(&run.procs);
        let _ = signal.send(GO);
        let all = wait_until(deadline, || {
            counters.answered.load(Ordering::SeqCst) + counters.round_failed.load(Ordering::SeqCst)
                >= ready
        })
        .await;
        let b = Snap::take(&run.procs);
        let answered = counters.answered.load(Ordering::SeqCst);
        if !all {
            report.error(format!(
                "only {answered} of {ready} round echoes answered in time"
            ));
        }
        let w = Window::between(&a, &b);
        report.set("round_ok", answered);
        report.setf("round_ms", w.secs * 1e3, 1);
        report.setf("round_rate", answered as f64 / w.secs.max(1e-9), 1);
        if let Some(cpu) = w.server_cpu_us {
            report.setf("round_srv_cpu_ms", cpu as f64 / 1e3, 1);
        }
        let h = round_hist.lock().map(|h| h.clone()).unwrap_or_default();
        report.setf("round_p50_us", h.quantile(0.5) as f64 / 1e3, 1);
        report.setf("round_p99_us", h.quantile(0.99) as f64 / 1e3, 1);
    }

    let _ = signal.send(STOP);
    for t in tasks {
        // Peers close on STOP; one that does not is dropped with the runtime.
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            break;
        }
    }
    let errors = std::mem::take(
        &mut *counters
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    report.errors(errors);
    Ok(())
}

async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn peer(
    target: Target,
    i: usize,
    sem: Arc<Semaphore>,
    counters: Arc<Counters>,
    (connect_hist, round_hist): (Shared, Shared),
    mut signal: watch::Receiver<u8>,
    join: bool,
) {
    let connected = async {
        let _permit = sem.acquire().await.map_err(|e| e.to_string())?;
        let room = format!("idle-{}", i / ROOM);
        let peer = format!("p{i}");
        let mut ws = tokio::time::timeout(
            Duration::from_secs(20),
            client::connect(&target, &room, &peer, Buffers::Idle),
        )
        .await
        .map_err(|_| format!("connect {room}/{peer}: timed out"))??;
        let rtt = echo_once(&mut ws, 1, Duration::from_secs(20)).await?;
        Local::new(&connect_hist).record(rtt);
        if join {
            let request = client::join(3, &peer);
            request_once(&mut ws, 3, "join", request, Duration::from_secs(20)).await?;
        }
        Ok::<Ws, String>(ws)
    };
    let mut ws = match connected.await {
        Ok(ws) => ws,
        Err(e) => {
            counters.error(e);
            counters.failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    counters.ready.fetch_add(1, Ordering::SeqCst);

    // Idle: keep reading (pings are answered while reading) until told.
    let mut round_done = false;
    loop {
        let s = *signal.borrow_and_update();
        if s == STOP {
            break;
        }
        if s == GO && !round_done {
            round_done = true;
            match echo_once(&mut ws, 2, Duration::from_secs(60)).await {
                Ok(rtt) => {
                    Local::new(&round_hist).record(rtt);
                    counters.answered.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    counters.error(format!("round echo: {e}"));
                    counters.round_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            changed = signal.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(f))) => {
                    counters.error(format!("idle peer closed by the server: {f:?}"));
                    counters.round_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    counters.error(format!("idle peer: {e}"));
                    counters.round_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                None => {
                    counters.error("idle peer: connection ended".to_owned());
                    counters.round_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            },
        }
    }
    super::close(ws, Duration::from_secs(2)).await;
}
