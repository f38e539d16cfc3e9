//! S12 (blips): every member of a room loses its connection once and comes
//! straight back, while a steady broadcast goes on.
//!
//! A room of `peers`: one sender, connected to the server directly, calls
//! `broadcast` with data `{"t":SEND_NS,"s":SEQ}` every `interval`; every
//! other member (a receiver) is connected through a TCP proxy of the
//! harness ([`crate::proxy`]) and has sent `join`. After a warm-up and a
//! steady phase (`--duration`: the server's CPU without blips), the proxy
//! cuts the receivers' connections one by one, spread evenly over `spread`
//! (a reset on both sides, nothing flushed). Each receiver, as protoo-client
//! does, notices the loss by its failed read and connects again at once
//! (after `away`, 0 by default) to the same URL, through the proxy, and does
//! not `join` again: a server that resumes sessions hands it back the
//! session it had; one that does not (protoo-server) admits a new peer.
//!
//! Measured, per receiver and summed: the broadcasts it never got (each
//! broadcast must reach every receiver), split into those sent at or after
//! the moment it noticed the loss (a server that resumes must lose none of
//! them), those sent before (in flight at the cut), and those sent while it
//! was away (cut to reconnected); the broadcasts it got twice; those its new
//! connection brought that were sent before it was opened (held for it while
//! away, or a broadcast the server handled after it admitted the new
//! connection); the `peerClosed` the receivers heard (a resumed session is not
//! seen leaving); the time from the cut to the new connection's handshake,
//! and to the loss being noticed. The server's CPU over the blip phase (the
//! cuts, until every receiver is back, plus `settle`) minus what the steady
//! phase's rate would have used in that time, per receiver cut: what a
//! resume costs (the server's threads' time on a CPU, from
//! `/proc/PID/task/*/schedstat`, finer than the 10 ms ticks of
//! `/proc/PID/stat`). With `--metrics-url`, the server's Prometheus endpoint is
//! read every 20 ms during both phases: the peak of
//! `protoo_session_held_bytes` and `protoo_sessions_waiting`, and at the
//! end `protoo_sessions_total` by outcome.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{read_batch, request_once};
use crate::client::{self, Buffers, Incoming, Target, Ws, now_ns};
use crate::hist::Hist;
use crate::procfs::{self, Snap, Window};
use crate::proxy::Proxy;
use crate::scrape::{self, Endpoint};
use crate::{Errors, Report, Run};

/// The room.
const ROOM: &str = "s12";

/// How often the metrics endpoint is read during the blip phase.
const SCRAPE_EVERY: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Members: the sender and `peers - 1` receivers, each cut once.
    pub(crate) peers: usize,
    /// Between two broadcasts.
    pub(crate) interval: Duration,
    /// The cuts are spread evenly over this.
    pub(crate) spread: Duration,
    /// A receiver waits this long after noticing the loss before it
    /// connects again.
    pub(crate) away: Duration,
    /// After every receiver is back, the blip phase lasts this much longer.
    pub(crate) settle: Duration,
    /// The server's Prometheus endpoint, if it has one.
    pub(crate) metrics: Option<Endpoint>,
    /// The server resumes sessions: a member cut seen leaving is an error.
    pub(crate) expect_resume: bool,
}

/// What the tasks share.
#[derive(Debug)]
struct Shared {
    /// Send time of broadcast `s` at index `s - 1`.
    sent: Mutex<Vec<u64>>,
    /// Each receiver's current address as the proxy sees it.
    addrs: Vec<Mutex<Option<SocketAddr>>>,
    /// The highest sequence number each receiver got.
    last: Vec<AtomicU64>,
    /// Receivers connected again after a loss.
    back: AtomicUsize,
    /// Set once the run is over, before anyone closes: notifications
    /// caused by the end are not counted.
    frozen: AtomicBool,
}

/// What one receiver saw.
#[derive(Debug, Default)]
struct Seen {
    /// Times each broadcast arrived, at index `s - 1`.
    got: Vec<u32>,
    /// Connections lost.
    losses: u32,
    /// When the (first) loss was noticed, and the new connection opened.
    detected_ns: Option<u64>,
    reconnected_ns: Option<u64>,
    /// Broadcasts on a new connection that were sent before it opened.
    replayed: u64,
    /// `peerClosed` heard, by peer id.
    closed: Vec<String>,
    /// How the lost connection ended.
    ended: Option<String>,
    errors: Errors,
}

/// `peerClosed`'s data.
#[derive(Deserialize)]
struct Closed {
    #[serde(rename = "peerId")]
    peer_id: String,
}

/// Runs S12.
pub(crate) async fn run(run: &Run, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n = opts.peers.max(2) - 1;
    report.set("peers", n + 1);
    report.set("cut", n);
    report.setf("interval_ms", opts.interval.as_secs_f64() * 1e3, 0);
    report.setf("spread_s", opts.spread.as_secs_f64(), 1);

    let proxy = Proxy::start(run.target.addr()).await?;
    let via = Target::parse(&format!("ws://{}/", proxy.addr()))?;
    let shared = Arc::new(Shared {
        sent: Mutex::new(Vec::new()),
        addrs: (0..n).map(|_| Mutex::new(None)).collect(),
        last: (0..n).map(|_| AtomicU64::new(0)).collect(),
        back: AtomicUsize::new(0),
        frozen: AtomicBool::new(false),
    });

    // Receivers first, each joined; then the sender.
    let mut receivers = Vec::with_capacity(n);
    let mut k = 0;
    while k < n {
        let chunk = (n - k).min(run.connect_concurrency);
        let mut set = tokio::task::JoinSet::new();
        for i in k..k + chunk {
            let (via, timeout) = (via.clone(), run.timeout);
            set.spawn(async move { (i, joined(&via, &format!("r{i}"), timeout).await) });
        }
        let mut got = Vec::with_capacity(chunk);
        while let Some(r) = set.join_next().await {
            let (i, ws) = r.map_err(|e| e.to_string())?;
            got.push((i, ws?));
        }
        got.sort_by_key(|(i, _)| *i);
        receivers.extend(got.into_iter().map(|(_, ws)| ws));
        k += chunk;
    }
    let sender = joined(&run.target, "sender", run.timeout).await?;

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for (k, ws) in receivers.into_iter().enumerate() {
        *lock(&shared.addrs[k]) = ws.get_ref().local_addr().ok();
        tasks.push(tokio::spawn(receive(
            k,
            ws,
            via.clone(),
            Arc::clone(&shared),
            stop_rx.clone(),
            opts.away,
        )));
    }
    let (stop_sending, stop_sending_rx) = watch::channel(false);
    let sending = tokio::spawn(send(
        sender,
        opts.interval,
        Arc::clone(&shared),
        stop_sending_rx,
    ));

    // Warm-up, then the steady phase: the server's CPU without blips. The
    // metrics are read in both phases alike, so that what reading them
    // costs the server is in the baseline too.
    tokio::time::sleep(run.warmup).await;
    let (stop_scrape, stop_scrape_rx) = watch::channel(false);
    let scraper = opts
        .metrics
        .clone()
        .map(|m| tokio::spawn(peaks(m, stop_scrape_rx)));
    let sched = || run.pid.and_then(procfs::sched_ns);
    let (steady_start, steady_start_ns) = (Snap::take(&run.procs), sched());
    tokio::time::sleep(run.duration).await;
    let (steady_end, steady_end_ns) = (Snap::take(&run.procs), sched());

    // The blips.
    let blips = Instant::now();
    let mut cut_ns = vec![0u64; n];
    for (k, at) in cut_ns.iter_mut().enumerate() {
        let due = blips + opts.spread.mul_f64(k as f64 / n as f64);
        tokio::time::sleep_until(due.into()).await;
        let addr = *lock(&shared.addrs[k]);
        *at = now_ns();
        if !addr.is_some_and(|a| proxy.cut(a)) {
            report.error(format!("r{k}: no connection to cut"));
        }
    }
    let deadline = Instant::now() + run.timeout;
    while shared.back.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(opts.settle).await;
    let (blips_end, blips_end_ns) = (Snap::take(&run.procs), sched());
    let _ = stop_scrape.send(true);
    let peak = match scraper {
        Some(task) => Some(task.await.map_err(|e| e.to_string())?),
        None => None,
    };

    // The last broadcast reaches everyone still there, then the end.
    let _ = stop_sending.send(true);
    let (broadcasts, sender_errors) = sending.await.map_err(|e| e.to_string())?;
    report.errors(sender_errors);
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared
        .last
        .iter()
        .any(|l| l.load(Ordering::SeqCst) < broadcasts)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.frozen.store(true, Ordering::SeqCst);
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(n);
    for (k, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(s)) => seen.push(s),
            Ok(Err(e)) => {
                report.error(format!("r{k}: {e}"));
                seen.push(Seen::default());
            }
            Err(_) => {
                report.error(format!("r{k} did not stop within 5 s"));
                seen.push(Seen::default());
            }
        }
    }
    let totals = if let Some(m) = &opts.metrics {
        Some(m.get(Duration::from_secs(5)).await?)
    } else {
        None
    };

    let sent = lock(&shared.sent).clone();
    let left = tally(&seen, &sent, &cut_ns, report);
    if opts.expect_resume && left > 0 {
        report.error(format!(
            "{left} of the {n} members cut were seen leaving (peerClosed): not resumed"
        ));
    }
    let mut steady = Window::between(&steady_start, &steady_end);
    let mut blipped = Window::between(&steady_end, &blips_end);
    // The finer reading where there is one.
    if let (Some(a), Some(b), Some(c)) = (steady_start_ns, steady_end_ns, blips_end_ns) {
        steady.server_cpu_us = Some(b.saturating_sub(a) / 1000);
        blipped.server_cpu_us = Some(c.saturating_sub(b) / 1000);
    }
    cpu(&steady, &blipped, n, report);
    if let Some((bytes, waiting)) = peak {
        report.setf("held_bytes_peak", bytes, 0);
        report.setf("waiting_peak", waiting, 0);
    }
    if let Some(text) = totals {
        for (key, outcome) in [
            ("srv_resumed", "resumed"),
            ("srv_expired", "expired"),
            ("srv_evicted", "evicted"),
            ("srv_overflow", "overflow"),
        ] {
            let label = format!("outcome=\"{outcome}\"");
            let v = scrape::sum(&text, "protoo_sessions_total", &[&label]).unwrap_or(0.0);
            report.setf(key, v, 0);
        }
    }
    for (k, s) in seen.iter_mut().enumerate() {
        if s.losses != 1 {
            report.error(format!(
                "r{k} lost {} connections (1 cut); last end: {}",
                s.losses,
                s.ended.as_deref().unwrap_or("none")
            ));
        }
        report.errors(std::mem::take(&mut s.errors));
    }
    drop(proxy);
    Ok(())
}

/// Connects `peer` to the room and joins.
async fn joined(target: &Target, peer: &str, timeout: Duration) -> Result<Ws, String> {
    let mut ws = client::connect(target, ROOM, peer, Buffers::Busy).await?;
    request_once(&mut ws, 1, "join", client::join(1, peer), timeout).await?;
    Ok(ws)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sender: a broadcast every `interval` until told to stop; returns
/// how many it sent (sequence numbers 1..=that) and what went wrong.
async fn send(
    ws: Ws,
    interval: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> (u64, Errors) {
    let (mut sink, mut stream) = ws.split();
    let refused = Arc::new(Mutex::new(Errors::default()));
    let answers = {
        let refused = Arc::clone(&refused);
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                if let Some(inc) = Incoming::parse(&t)
                    && inc.response
                    && inc.ok != Some(true)
                {
                    lock(&refused).push(format!(
                        "broadcast refused: {}",
                        inc.error_reason.as_deref().unwrap_or("?")
                    ));
                }
            }
        })
    };
    let mut errors = Errors::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let message = client::broadcast(seq + 1, seq, "");
        // The stamp in the message is taken when it is built: the same
        // clock, a moment before.
        lock(&shared.sent).push(now_ns());
        if let Err(e) = sink.send(message).await {
            errors.push(format!("sender: {e}"));
            break;
        }
    }
    // The answers to the last broadcasts, then the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    answers.abort();
    errors.absorb(std::mem::take(&mut *lock(&refused)));
    (seq, errors)
}

/// A receiver: reads until the run ends; on a loss, connects again at once
/// (after `away`), through the proxy, without joining again.
async fn receive(
    k: usize,
    mut ws: Ws,
    via: Target,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    away: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let peer = format!("r{k}");
    // When the current connection opened (0: the first one).
    let mut opened_ns = 0u64;
    loop {
        let mut ended = None;
        let batch = read_batch(&mut ws, &mut ended, |m| {
            let Message::Text(t) = m else { return };
            let Some(inc) = Incoming::parse(&t) else {
                seen.errors.push(format!("unparsable: {}", t.as_str()));
                return;
            };
            if !inc.notification {
                return;
            }
            match inc.method.as_deref() {
                Some("chat") => {
                    let Some(stamp) = inc.stamp().filter(|s| s.s > 0) else {
                        return;
                    };
                    super::count_arrival(&mut seen.got, stamp.s);
                    if stamp.t < opened_ns {
                        seen.replayed += 1;
                    }
                    shared.last[k].fetch_max(stamp.s, Ordering::SeqCst);
                }
                Some("peerClosed") if !shared.frozen.load(Ordering::SeqCst) => {
                    match inc.data.map(|d| serde_json::from_str::<Closed>(d.get())) {
                        Some(Ok(c)) => seen.closed.push(c.peer_id),
                        _ => seen
                            .errors
                            .push(format!("malformed peerClosed: {}", t.as_str())),
                    }
                }
                _ => {}
            }
        });
        let open = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return seen,
            open = batch => open,
        };
        if open {
            continue;
        }
        if *stop.borrow() || shared.frozen.load(Ordering::SeqCst) {
            return seen;
        }
        let now = now_ns();
        seen.losses += 1;
        seen.detected_ns.get_or_insert(now);
        seen.ended = ended;
        tokio::time::sleep(away).await;
        // At once, as protoo-client does; again if the attempt fails.
        let started = Instant::now();
        ws = loop {
            match client::connect(&via, ROOM, &peer, Buffers::Busy).await {
                Ok(ws) => break ws,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    seen.errors
                        .push(format!("{peer}: could not connect again: {e}"));
                    return seen;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        opened_ns = now_ns();
        seen.reconnected_ns.get_or_insert(opened_ns);
        *lock(&shared.addrs[k]) = ws.get_ref().local_addr().ok();
        shared.back.fetch_add(1, Ordering::SeqCst);
    }
}

/// The delivery figures and the times of the resumes; returns how many
/// members cut the others saw leaving.
fn tally(seen: &[Seen], sent: &[u64], cut_ns: &[u64], report: &mut Report) -> usize {
    let (mut lost, mut after, mut away, mut dups, mut replayed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut resume, mut detect) = (Hist::default(), Hist::default());
    let mut closed = 0u64;
    let mut left = HashSet::new();
    for (s, &cut) in seen.iter().zip(cut_ns) {
        for (i, &t) in sent.iter().enumerate() {
            match s.got.get(i).copied().unwrap_or(0) {
                0 => {
                    lost += 1;
                    if s.detected_ns.is_none_or(|d| t >= d) {
                        after += 1;
                    }
                    if s.reconnected_ns.is_some_and(|r| t >= cut && t <= r) {
                        away += 1;
                    }
                }
                g => dups += u64::from(g - 1),
            }
        }
        replayed += s.replayed;
        if let Some(r) = s.reconnected_ns {
            resume.record(r.saturating_sub(cut));
        }
        if let Some(d) = s.detected_ns {
            detect.record(d.saturating_sub(cut));
        }
        closed += s.closed.len() as u64;
        left.extend(s.closed.iter().filter(|id| id.starts_with('r')).cloned());
    }
    let expected = sent.len() as u64 * seen.len() as u64;
    report.set("unit", "resume");
    report.set("ops", resume.count());
    report.set("broadcasts", sent.len());
    report.set("deliveries_expected", expected);
    report.set("lost_after_detect", after);
    report.set("lost_in_flight", lost - after);
    report.set("lost_total", lost);
    report.set("lost_away", away);
    report.set("duplicates", dups);
    report.set("replayed", replayed);
    report.set("peer_closed", closed);
    report.set("sessions_left", left.len());
    let ms = |ns: u64| ns as f64 / 1e6;
    report.setf("resume_p50_ms", ms(resume.quantile(0.50)), 2);
    report.setf("resume_p99_ms", ms(resume.quantile(0.99)), 2);
    report.setf("resume_max_ms", ms(resume.quantile(1.0)), 2);
    report.setf("detect_p50_ms", ms(detect.quantile(0.50)), 2);
    report.setf("detect_p99_ms", ms(detect.quantile(0.99)), 2);
    left.len()
}

/// The server's CPU: the blip phase less what the steady phase's rate
/// would have used in it, per receiver cut; and the load of the blip phase.
fn cpu(steady: &Window, blips: &Window, cut: usize, report: &mut Report) {
    let pct = |us: u64, secs: f64| us as f64 / 1e4 / secs.max(1e-9);
    if let (Some(s), Some(b)) = (steady.server_cpu_us, blips.server_cpu_us) {
        report.setf("srv_cpu_steady_pct", pct(s, steady.secs), 1);
        report.setf("srv_cpu_pct", pct(b, blips.secs), 1);
        let baseline = s as f64 / steady.secs.max(1e-9) * blips.secs;
        let extra = b as f64 - baseline;
        report.setf("srv_cpu_us_per_resume", extra / cut.max(1) as f64, 1);
    }
    if let Some(c) = blips.client_cpu_us {
        report.setf("cli_cpu_pct", pct(c, blips.secs), 1);
    }
    if let Some(o) = blips.other_cpu_us {
        report.setf("other_cpu_pct", pct(o, blips.secs), 1);
    }
    if let Some(rss) = blips.server_rss_kb {
        report.set("srv_rss_kb", rss);
    }
    report.setf("steady_s", steady.secs, 2);
    report.setf("blips_s", blips.secs, 2);
}

/// Reads the metrics endpoint every [`SCRAPE_EVERY`] until told to stop
/// (the steady phase and the blips):
/// the peaks of the bytes held and of the sessions waiting.
async fn peaks(metrics: Endpoint, mut stop: watch::Receiver<bool>) -> (f64, f64) {
    let (mut bytes, mut waiting) = (0.0f64, 0.0f64);
    let mut tick = tokio::time::interval(SCRAPE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        if let Ok(text) = metrics.get(Duration::from_secs(2)).await {
            if let Some(b) = scrape::sum(&text, "protoo_session_held_bytes", &[]) {
                bytes = bytes.max(b);
            }
            if let Some(w) = scrape::sum(&text, "protoo_sessions_waiting", &[]) {
                waiting = waiting.max(w);
            }
        }
    }
    (bytes, waiting)
}
