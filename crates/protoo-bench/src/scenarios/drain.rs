//! S13 (rolling drain): two nodes of a cluster behind a round-robin
//! balancer; one of them is taken out of the rotation and stopped
//! (SIGTERM) while light chat goes on in every room.
//!
//! `peers` members in `rooms` rooms (`peers / rooms` each, in order),
//! every one connected through the balancer of the harness
//! ([`crate::balancer`]) one after the other, so that the round robin puts
//! half of each room on each node, and joined. In each room, one of its
//! members (each in turn) sends a `broadcast` with data `{"t":NS,"s":SEQ}`
//! every `interval`; the others record what they get by sequence number.
//! After a warm-up and a steady phase (`--duration`), the harness takes
//! node A (the first `--url`) out of the balancer's rotation and sends it
//! SIGTERM (its `--pid`). Each member, as protoo-client does, reconnects at
//! once through the balancer on a close other than 4000 (4000: the server
//! ended the session on purpose; protoo-client stays closed), without a
//! new `join`: a server that moves sessions between nodes hands it back its
//! session on node B, which sends `resumed`.
//!
//! Measured: the time from the SIGTERM until every member of node A got
//! `resumed` (p50 and the last), until node A's process exited, the
//! deliveries lost and duplicated (each chat must reach every other member
//! of its room), the chats whose sender never got an answer and nobody got
//! (lost with the sender's connection), those a node shutting down refused
//! (sent again on the sender's next connection, as an app would retry),
//! the `peerClosed` heard and the
//! members of node A seen leaving, node B's CPU during the drain and over
//! the whole time after the SIGTERM (`settle`, the same for every server)
//! against the steady phase.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::request_once;
use crate::balancer::Balancer;
use crate::client::{self, Buffers, Incoming, Target, Ws, now_ns};
use crate::hist::Hist;
use crate::procfs::{self, Snap, Window};
use crate::{Errors, Report, Run};

/// What to run.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Members in all.
    pub(crate) peers: usize,
    /// Rooms (the members split evenly, in order).
    pub(crate) rooms: usize,
    /// Between two chats of a room.
    pub(crate) interval: Duration,
    /// Chat goes on until this long after the SIGTERM (and at least a
    /// second after the drain), the same for every server: what a server
    /// that loses the sessions loses is counted over the same time.
    pub(crate) settle: Duration,
    /// The server moves sessions: a member of node A seen leaving is an error.
    pub(crate) expect_resume: bool,
}

/// What the tasks share.
#[derive(Debug)]
struct Shared {
    /// Members of node A that have not yet got `resumed` (or ended).
    pending: AtomicUsize,
    /// Members of node A that reconnected.
    back: AtomicUsize,
    /// Set once the run is over, before anyone closes: notifications
    /// caused by the end are not counted.
    frozen: AtomicBool,
}

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    /// Times each chat of its room arrived, at index `s - 1`.
    got: Vec<u32>,
    /// Its own chats answered `ok`, by sequence number.
    acked: Vec<u64>,
    /// Its own chats sent, by sequence number.
    sent: Vec<u64>,
    /// Its chats refused by a node shutting down, and those of them to
    /// send again once connected again.
    refused: u64,
    retry: Vec<u64>,
    /// Connections lost, and how the last one ended.
    losses: u32,
    ended: Option<String>,
    /// Closed with 4000: stays closed, as protoo-client does.
    gone: bool,
    /// When it got `resumed` after a loss.
    resumed_ns: Option<u64>,
    /// `peerClosed` heard, by peer id.
    closed: Vec<String>,
    errors: Errors,
}

/// `peerClosed`'s data.
#[derive(Deserialize)]
struct Closed {
    #[serde(rename = "peerId")]
    peer_id: String,
}

/// Runs S13.
pub(crate) async fn run(run: &Run, opts: &Opts, report: &mut Report) -> Result<(), String> {
    if run.targets.len() < 2 {
        return Err("s13 needs two nodes (two --url)".into());
    }
    let Some(&pid_a) = run.procs.servers.first() else {
        return Err("s13 needs node A's --pid to stop it".into());
    };
    let rooms = opts.rooms.max(1);
    let per_room = (opts.peers / rooms).max(2);
    let n = per_room * rooms;
    report.set("peers", n);
    report.set("rooms", rooms);
    report.setf("interval_ms", opts.interval.as_secs_f64() * 1e3, 0);

    let lb = Balancer::start(run.targets.iter().map(|t| t.addr().to_owned()).collect()).await?;
    let via = Target::parse(&format!("ws://{}/", lb.addr()))?;

    // One after the other, so that the round robin alternates within each
    // room; then the joins, many at a time.
    let mut wss = Vec::with_capacity(n);
    let mut on_a = vec![false; n];
    for (i, a) in on_a.iter_mut().enumerate() {
        let ws = client::connect(&via, &room_of(i, per_room), &peer(i), Buffers::Idle).await?;
        let local = ws
            .get_ref()
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?;
        *a = lb.node_of(local) == Some(0);
        wss.push(ws);
    }
    let mut joined = Vec::with_capacity(n);
    let mut it = wss.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        let mut set = tokio::task::JoinSet::new();
        for (i, mut ws) in it.by_ref().take(run.connect_concurrency) {
            let timeout = run.timeout;
            set.spawn(async move {
                let r = request_once(&mut ws, 1, "join", client::join(1, &peer(i)), timeout).await;
                (i, r.map(|_| ws))
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, ws) = r.map_err(|e| e.to_string())?;
            joined.push((i, ws?));
        }
    }
    joined.sort_by_key(|(i, _)| *i);
    let a_count = on_a.iter().filter(|a| **a).count();
    report.set("on_a", a_count);

    let shared = Arc::new(Shared {
        pending: AtomicUsize::new(a_count),
        back: AtomicUsize::new(0),
        frozen: AtomicBool::new(false),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut cmds = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (i, ws) in joined {
        let (tx, rx) = mpsc::unbounded_channel();
        cmds.push(tx);
        tasks.push(tokio::spawn(member(
            i,
            per_room,
            ws,
            via.clone(),
            Arc::clone(&shared),
            rx,
            stop_rx.clone(),
            on_a[i],
        )));
    }
    // The rooms' chat: one tick for every room, the rooms' turns spread
    // over the interval.
    let (stop_chat, stop_chat_rx) = watch::channel(false);
    let chat = tokio::spawn(ticks(cmds, per_room, opts.interval, stop_chat_rx));

    tokio::time::sleep(run.warmup).await;
    // Node B's CPU, finer than the clock ticks of `Snap` (the anchor's
    // drain lasts a few of them).
    let pid_b = run.procs.servers.get(1).copied();
    let b_ns = || pid_b.and_then(procfs::sched_ns);
    let (steady_start, b0) = (Snap::take(&run.procs), b_ns());
    tokio::time::sleep(run.duration).await;
    let (steady_end, b1) = (Snap::take(&run.procs), b_ns());

    // The drain.
    lb.remove(0);
    let term_ns = now_ns();
    let term = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid_a.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if !killed.success() {
        return Err(format!("kill -TERM {pid_a}: {killed}"));
    }
    let deadline = term + run.timeout;
    let mut exited_after = None;
    let mut all_resumed_at = None;
    loop {
        let now = Instant::now();
        if exited_after.is_none() && procfs::exited(pid_a) {
            exited_after = Some(now.duration_since(term));
        }
        if all_resumed_at.is_none() && shared.pending.load(Ordering::SeqCst) == 0 {
            all_resumed_at = Some(now);
        }
        // Done once node A is gone and every member of it is back or
        // ended (a server that moves sessions: every one resumed).
        let settled = all_resumed_at.is_some() || !opts.expect_resume;
        if exited_after.is_some() && settled || now > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (drain_end, b2) = (Snap::take(&run.procs), b_ns());
    let until = (term + opts.settle).max(Instant::now() + Duration::from_secs(1));
    tokio::time::sleep_until(until.into()).await;
    let (after_end, b3) = (Instant::now(), b_ns());

    // The last chats reach everyone still there, then the end.
    let _ = stop_chat.send(true);
    let chats = chat.await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.frozen.store(true, Ordering::SeqCst);
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(s)) => seen.push(s),
            Ok(Err(e)) => {
                report.error(format!("{}: {e}", peer(i)));
                seen.push(Seen::default());
            }
            Err(_) => {
                report.error(format!("{} did not stop within 5 s", peer(i)));
                seen.push(Seen::default());
            }
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match exited_after {
        Some(d) => report.setf("a_exit_ms", ms(d), 0),
        None => report.error("node A did not exit"),
    }
    let mut resumed = Hist::default();
    for (s, _) in seen.iter().zip(&on_a).filter(|(_, a)| **a) {
        if let Some(r) = s.resumed_ns {
            resumed.record(r.saturating_sub(term_ns));
        }
    }
    report.set("resumed", resumed.count());
    if resumed.count() > 0 {
        report.setf("resume_p50_ms", resumed.quantile(0.5) as f64 / 1e6, 0);
        report.setf("resume_last_ms", resumed.quantile(1.0) as f64 / 1e6, 0);
    }
    report.set("a_back", shared.back.load(Ordering::SeqCst));
    let left = tally(&seen, &on_a, per_room, &chats, report);
    if opts.expect_resume {
        if resumed.count() < a_count as u64 {
            report.error(format!(
                "{} of the {a_count} members of node A resumed",
                resumed.count()
            ));
        }
        if left > 0 {
            report.error(format!("{left} members of node A were seen leaving"));
        }
    }
    let (steady, drain) = (
        Window::between(&steady_start, &steady_end),
        Window::between(&steady_end, &drain_end),
    );
    cpu(&steady, &drain, report);
    // Node B: the steady phase, the drain, and the same time after the
    // SIGTERM for every server.
    let pct = |a: Option<u64>, b: Option<u64>, secs: f64| {
        a.zip(b)
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e7 / secs.max(1e-9))
    };
    let after = after_end.duration_since(term).as_secs_f64();
    for (key, v) in [
        ("b_cpu_steady_pct", pct(b0, b1, steady.secs)),
        ("b_cpu_drain_pct", pct(b1, b2, drain.secs)),
        ("b_cpu_after_pct", pct(b1, b3, after)),
    ] {
        if let Some(v) = v {
            report.setf(key, v, 1);
        }
    }
    report.setf("after_s", after, 2);
    for (i, s) in seen.iter_mut().enumerate() {
        let expected = u32::from(on_a[i]);
        if s.losses != expected && !s.gone {
            report.error(format!(
                "{} lost {} connections ({expected} expected); last end: {}",
                peer(i),
                s.losses,
                s.ended.as_deref().unwrap_or("none")
            ));
        }
        report.errors(std::mem::take(&mut s.errors));
    }
    drop(lb);
    Ok(())
}

fn peer(i: usize) -> String {
    format!("p{i}")
}

fn room_of(i: usize, per_room: usize) -> String {
    format!("s13-{}", i / per_room)
}

/// Every room's turns: each `interval`, one chat per room, by its members
/// in turn, the rooms spread over the interval; returns how many chats each
/// room was told to send (sequence numbers 1..=that).
async fn ticks(
    cmds: Vec<mpsc::UnboundedSender<u64>>,
    per_room: usize,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<u64> {
    let rooms = cmds.len() / per_room;
    let mut seq = vec![0u64; rooms];
    let step = interval / rooms.max(1) as u32;
    let mut tick = tokio::time::interval(step.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        seq[r] += 1;
        let s = seq[r];
        let sender = r * per_room + sender_of(s, per_room);
        let _ = cmds[sender].send(s);
        r = (r + 1) % rooms;
    }
    seq
}

/// The member (index within its room) that sends chat `s`.
fn sender_of(s: u64, per_room: usize) -> usize {
    ((s - 1) % per_room as u64) as usize
}

/// One member: reads, sends its room's chats when told to, and on a loss
/// reconnects at once through the balancer, without a new `join`, unless
/// the server closed it with 4000.
#[allow(clippy::too_many_arguments)]
async fn member(
    i: usize,
    per_room: usize,
    mut ws: Ws,
    via: Target,
    shared: Arc<Shared>,
    mut cmds: mpsc::UnboundedReceiver<u64>,
    mut stop: watch::Receiver<bool>,
    on_a: bool,
) -> Seen {
    let mut seen = Seen::default();
    let (room, me) = (room_of(i, per_room), peer(i));
    let mut pending = on_a;
    let done_pending = |pending: &mut bool| {
        if std::mem::take(pending) {
            shared.pending.fetch_sub(1, Ordering::SeqCst);
        }
    };
    loop {
        let step = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return seen,
            Some(s) = cmds.recv() => Err(s),
            m = ws.next() => Ok(match m {
                Some(Ok(Message::Text(t))) => {
                    handle(&t, &mut seen, &shared, &mut pending, &done_pending);
                    continue;
                }
                Some(Ok(Message::Close(f))) => match f {
                    Some(f) => {
                        let code = u16::from(f.code);
                        if code == 4000 {
                            seen.gone = true;
                        }
                        format!("close {code} {}", f.reason)
                    }
                    None => "close (no code)".to_owned(),
                },
                Some(Ok(_)) => continue,
                Some(Err(e)) => format!("error: {e}"),
                None => "end of stream".to_owned(),
            }),
        };
        let ended = match step {
            Ok(ended) => ended,
            Err(s) => {
                seen.sent.push(s);
                if let Err(e) = ws.send(client::broadcast(s, s, "")).await {
                    // The loss shows on the read side.
                    seen.errors.push(format!("{me}: send chat {s}: {e}"));
                }
                continue;
            }
        };
        if shared.frozen.load(Ordering::SeqCst) {
            return seen;
        }
        seen.losses += 1;
        if ended.starts_with("close") {
            // The close handshake completes, as a browser's WebSocket
            // (under protoo-client) completes it: the answer tells the
            // server everything it wrote before its close arrived.
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        seen.ended = Some(ended);
        if seen.gone {
            // Ended for good: nothing more to wait for.
            done_pending(&mut pending);
            return seen;
        }
        let started = Instant::now();
        ws = loop {
            match client::connect(&via, &room, &me, Buffers::Idle).await {
                Ok(ws) => break ws,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    seen.errors
                        .push(format!("{me}: could not connect again: {e}"));
                    done_pending(&mut pending);
                    return seen;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if on_a {
            shared.back.fetch_add(1, Ordering::SeqCst);
        }
        for s in std::mem::take(&mut seen.retry) {
            if let Err(e) = ws.send(client::broadcast(s, s, "")).await {
                seen.errors.push(format!("{me}: send chat {s} again: {e}"));
            }
        }
    }
}

/// One text frame to a member.
fn handle(
    t: &str,
    seen: &mut Seen,
    shared: &Shared,
    pending: &mut bool,
    done_pending: &impl Fn(&mut bool),
) {
    let Some(inc) = Incoming::parse(t) else {
        seen.errors.push(format!("unparsable: {t}"));
        return;
    };
    if inc.response {
        match (inc.ok, inc.id) {
            // The join's answer was read before: every answer here is a
            // chat's, numbered by its sequence number.
            (Some(true), Some(id)) => seen.acked.push(id),
            (Some(true), None) => {}
            // A node that drains refuses what comes in meanwhile: sent
            // again on the next connection, as an app would retry.
            (_, Some(id))
                if inc
                    .error_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("shutting down")) =>
            {
                seen.refused += 1;
                seen.retry.push(id);
            }
            _ => seen.errors.push(format!(
                "request {:?} refused: {}",
                inc.id,
                inc.error_reason.as_deref().unwrap_or("?")
            )),
        }
        return;
    }
    if !inc.notification {
        return;
    }
    match inc.method.as_deref() {
        Some("chat") => {
            let Some(stamp) = inc.stamp().filter(|s| s.s > 0) else {
                return;
            };
            super::count_arrival(&mut seen.got, stamp.s);
        }
        Some("resumed") => {
            seen.resumed_ns.get_or_insert_with(now_ns);
            done_pending(pending);
        }
        Some("peerClosed") if !shared.frozen.load(Ordering::SeqCst) => {
            match inc.data.map(|d| serde_json::from_str::<Closed>(d.get())) {
                Some(Ok(c)) => seen.closed.push(c.peer_id),
                _ => seen.errors.push(format!("malformed peerClosed: {t}")),
            }
        }
        _ => {}
    }
}

/// Deliveries lost and duplicated, chats lost with their sender, and the
/// members seen leaving; returns how many members of node A were seen
/// leaving.
fn tally(
    seen: &[Seen],
    on_a: &[bool],
    per_room: usize,
    chats: &[u64],
    report: &mut Report,
) -> usize {
    let (mut lost, mut dups, mut expected, mut unconfirmed) = (0u64, 0u64, 0u64, 0u64);
    for (r, &count) in chats.iter().enumerate() {
        let members = &seen[r * per_room..((r + 1) * per_room).min(seen.len())];
        for s in 1..=count {
            let k = (s - 1) as usize;
            let sender = sender_of(s, per_room);
            let acked = members.get(sender).is_some_and(|m| m.acked.contains(&s));
            let got = |m: &Seen| m.got.get(k).copied().unwrap_or(0);
            let anyone = members.iter().any(|m| got(m) > 0);
            if !acked && !anyone {
                unconfirmed += 1;
                continue;
            }
            for (j, m) in members.iter().enumerate() {
                if j == sender {
                    continue;
                }
                expected += 1;
                match got(m) {
                    0 => lost += 1,
                    g => dups += u64::from(g - 1),
                }
            }
        }
    }
    let mut closed = 0u64;
    let mut left = HashSet::new();
    let a_ids: HashSet<String> = (0..seen.len()).filter(|&i| on_a[i]).map(peer).collect();
    for s in seen {
        closed += s.closed.len() as u64;
        left.extend(s.closed.iter().filter(|id| a_ids.contains(*id)).cloned());
    }
    // The work done, for any server: the chats (a server that loses the
    // sessions resumes none).
    report.set("unit", "chat");
    report.set("ops", chats.iter().sum::<u64>());
    report.set("chats", chats.iter().sum::<u64>());
    report.set("chats_unconfirmed", unconfirmed);
    report.set("chats_refused", seen.iter().map(|s| s.refused).sum::<u64>());
    report.set("deliveries_expected", expected);
    report.set("lost", lost);
    report.set("duplicates", dups);
    report.set("peer_closed", closed);
    report.set("sessions_left", left.len());
    report.set("a_gone", seen.iter().filter(|s| s.gone).count());
    left.len()
}

/// This process' and the other processes' CPU during the drain.
fn cpu(steady: &Window, drain: &Window, report: &mut Report) {
    let pct = |us: u64, secs: f64| us as f64 / 1e4 / secs.max(1e-9);
    if let Some(c) = drain.client_cpu_us {
        report.setf("cli_cpu_pct", pct(c, drain.secs), 1);
    }
    if let Some(o) = drain.other_cpu_us {
        report.setf("other_cpu_pct", pct(o, drain.secs), 1);
    }
    report.setf("steady_s", steady.secs, 2);
    report.setf("drain_s", drain.secs, 2);
}
