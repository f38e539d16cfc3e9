//! S14: join amplification. `--names` (16) peers join a room with the
//! longest display name the server takes (`--size`, 1,000,000 bytes,
//! halved until a `join` is accepted), reading everything; then
//! `--attackers` (50) peers that never read send `--joins` (2) small
//! `join`s each, every one answered with the whole member list. Server
//! RSS before, at its peak during the attack and after (the attackers
//! gone, `--settle` later: what the allocator gave back), the bytes the
//! server wrote meanwhile (`/proc/PID/io` `wchar`, sockets included), and
//! one reading peer's `join` answer against its request (the
//! amplification).

use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{read_batch, request_once};
use crate::client::{self, Buffers, Ws};
use crate::procfs::{self, Snap, Window};
use crate::{Report, Run};

/// What S14 is given.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Peers listed with long names.
    pub(crate) names: usize,
    /// The longest name tried, in bytes.
    pub(crate) size: usize,
    /// Peers that send `join`s and never read.
    pub(crate) attackers: usize,
    /// `join`s each attacker sends.
    pub(crate) joins: u64,
    /// How long the attack lasts, and how long after it memory is read.
    pub(crate) attack: Duration,
    pub(crate) settle: Duration,
}

/// Joins `ws` with the longest name of at most `size` bytes the server
/// takes (halving): the length taken.
async fn join_longest(ws: &mut Ws, size: usize, run: &Run) -> Result<usize, String> {
    let mut len = size.max(1);
    let mut id = 1;
    loop {
        let name = "n".repeat(len);
        match request_once(ws, id, "join", client::join(id, &name), run.timeout).await {
            Ok(_) => return Ok(len),
            Err(e) if e.contains("rejected") && len > 1 => len /= 2,
            Err(e) => return Err(e),
        }
        id += 1;
    }
}

/// Runs S14.
pub(crate) async fn run(run: &Run, o: &Opts, report: &mut Report) -> Result<(), String> {
    const ROOM: &str = "s14";
    report.set("names", o.names);
    report.set("attackers", o.attackers);
    report.set("joins", o.joins);
    let pid = run.pid;
    let (stop, stop_rx) = watch::channel(false);
    let (done, done_rx) = watch::channel(false);

    // The listed peers, each then drained by a task of its own.
    let mut name_bytes = usize::MAX;
    let mut drains = Vec::with_capacity(o.names);
    for k in 0..o.names {
        let mut ws = client::connect(&run.target, ROOM, &format!("name{k}"), Buffers::Busy).await?;
        name_bytes = name_bytes.min(join_longest(&mut ws, o.size, run).await?);
        let mut stop_rx = done_rx.clone();
        drains.push(tokio::spawn(async move {
            let mut ended = None;
            loop {
                tokio::select! {
                    more = read_batch(&mut ws, &mut ended, |_| {}) => if !more { break },
                    _ = stop_rx.wait_for(|s| *s) => break,
                }
            }
            ws
        }));
    }
    report.set("name_bytes", name_bytes);

    // One reading peer's join: what a single small request costs.
    let mut probe = client::connect(&run.target, ROOM, "probe", Buffers::Busy).await?;
    let request = client::join(1, "probe");
    let request_bytes = match &request {
        Message::Text(t) => t.len(),
        _ => 0,
    };
    let (_, answer) = request_once(&mut probe, 1, "join", request, run.timeout).await?;
    report.set("join_request_bytes", request_bytes);
    report.set("join_answer_bytes", answer.len());
    report.setf(
        "amplification",
        answer.len() as f64 / request_bytes.max(1) as f64,
        0,
    );
    super::close(probe, Duration::from_secs(2)).await;

    let before = Snap::take(&run.procs);
    let wchar_before = pid.and_then(procfs::wchar);
    let sampler = procfs::PeakRss::start(pid, stop_rx.clone(), Duration::from_millis(5));

    // The attackers: connect, send their joins, never read.
    let started = Instant::now();
    let mut attackers = Vec::with_capacity(o.attackers);
    let mut sent = 0u64;
    for k in 0..o.attackers {
        let mut ws = match client::connect(&run.target, ROOM, &format!("a{k}"), Buffers::Busy).await
        {
            Ok(ws) => ws,
            Err(e) => {
                report.error(format!("attacker {k}: {e}"));
                continue;
            }
        };
        for id in 1..=o.joins {
            // A server that stopped reading us makes this wait: bounded.
            let send = tokio::time::timeout(
                Duration::from_millis(200),
                ws.send(client::join(id, &format!("a{k}"))),
            );
            match send.await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) | Err(_) => break,
            }
        }
        attackers.push(ws);
    }
    report.set("joins_sent", sent);
    let elapsed = started.elapsed();
    if elapsed < o.attack {
        tokio::time::sleep(o.attack - elapsed).await;
    }
    let during = Snap::take(&run.procs);
    let wchar_during = pid.and_then(procfs::wchar);
    let _ = stop.send(true);
    let peak_kb = sampler.finish().await;

    // The attackers go (abruptly, as a remote would), memory settles.
    drop(attackers);
    tokio::time::sleep(o.settle).await;
    let after = Snap::take(&run.procs);

    report.window(&Window::between(&before, &during), sent, "join");
    if let (Some(a), Some(b)) = (wchar_before, wchar_during) {
        let out = b.saturating_sub(a);
        report.setf("out_mb", out as f64 / 1e6, 1);
        report.setf(
            "out_mb_per_s",
            out as f64 / 1e6 / Window::between(&before, &during).secs.max(1e-9),
            1,
        );
    }
    if pid.is_some() {
        let rss_before = before.server_rss_kb.unwrap_or(0);
        report.set("srv_rss_before_kb", rss_before);
        report.set("srv_rss_peak_kb", peak_kb.max(rss_before));
        if let Some(kb) = after.server_rss_kb {
            report.set("srv_rss_after_kb", kb);
            report.set("srv_rss_after_growth_kb", kb.saturating_sub(rss_before));
        }
    }
    let _ = done.send(true);
    for drain in drains {
        if let Ok(ws) = drain.await {
            super::close(ws, Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
