//! S16 (production shape): many peers in many rooms, mostly quiet, with
//! keepalives running and peers coming and going.
//!
//! `peers` members in `rooms` rooms (`peers / rooms` each, in order), every
//! one connected (at most `--connect-concurrency` handshakes at once, each
//! from one of `sources` loopback addresses, 127.0.0.2 and up: one address
//! has about 28,000 ephemeral ports) and joined (`join`, so listed in its
//! room's presence). Then, until the end:
//!
//! - in each room one member in turn calls `broadcast` with data
//!   `{"t":NS,"s":SEQ}` once per `interval`, the rooms spread over it; the
//!   others receive `chat` and record the send→receive latency;
//! - `churn` % of the peers per second are replaced: the member closes
//!   (close handshake: its room hears `peerClosed`) and a new connection
//!   with a new peer id joins the same room at once;
//! - every member keeps reading, which answers the server's pings: the
//!   keepalive ones, and the confirmation pings our server sends on a
//!   connection whose frames it keeps for a resume (8 bytes of payload),
//!   counted apart.
//!
//! The window starts `--warmup` after the fill and no earlier than
//! `keepalive` after the first connection, so that it sees the server's
//! keepalive at work, and lasts `--duration`: server CPU, RSS at its end
//! against RSS before the first connection (per peer), deliveries, latency
//! p50/p99/max, pings per second, replacements per second, and this process'
//! CPU and RSS (the load generator's share of the machine).
//!
//! A peer is lost when its connection ends without its asking (a close or
//! an error), when a replacement fails to connect and join, or when it
//! misses a chat of its room that was due to it: one sent after its `join`
//! was answered (a sequence number above the room's last chat then; one
//! sent before may come too, as the server admits a connection before its
//! `join`, but need not). A due chat is missed when it has not come by 64
//! chats later (chats of a room come from different members' connections,
//! so two sent close together may arrive in either order), or, at the end
//! (once no chat has arrived for 2 s), when it has not come at all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{DONE, MEASURE, Phase, WARMUP, request_once};
use crate::client::{self, Buffers, Incoming, Target, Ws, now_ns};
use crate::hist::Hist;
use crate::procfs::{self, Snap, Window};
use crate::{Errors, Report, Run};

mod track;

use track::Track;

/// What to run.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Members in all.
    pub(crate) peers: usize,
    /// Rooms (the members split evenly, in order).
    pub(crate) rooms: usize,
    /// Between two chats of a room.
    pub(crate) interval: Duration,
    /// Peers replaced per second, % of `peers`.
    pub(crate) churn_pct: f64,
    /// The window starts no earlier than this after the first connection
    /// (the server's keepalive interval).
    pub(crate) keepalive: Duration,
    /// Loopback source addresses (127.0.0.2 and up); 0: one per 10,000
    /// peers, plus two.
    pub(crate) sources: usize,
}

/// A command to a member.
#[derive(Debug, Clone, Copy)]
enum Cmd {
    /// Send the room's next chat.
    Chat,
    /// Leave (close), and be replaced by a new connection.
    Leave,
}

/// Histogram shards: a member records into `slot % SHARDS`.
const SHARDS: usize = 32;

/// What every member task shares.
#[derive(Debug)]
struct Ctx {
    target: Target,
    per_room: usize,
    sources: usize,
    phase: Phase,
    /// The last chat sent in each room (sequence numbers from 1).
    room_seq: Vec<AtomicU64>,
    /// Send→receive latency, by shard.
    latency: Vec<Mutex<Hist>>,
    /// A replacement's connect, upgrade and `join`, in the window.
    rejoin: Mutex<Hist>,
    /// Members whose first connection joined, or failed to.
    joined: AtomicUsize,
    fill_failed: AtomicUsize,
    /// When a chat last arrived ([`now_ns`]).
    last_chat_ns: AtomicU64,
    /// In the window: chats received, chats sent, keepalive pings (no
    /// payload, or any but 8 bytes), confirmation pings (8 bytes: our
    /// server's, on a connection whose frames it keeps for a resume),
    /// replacements done.
    delivered: AtomicU64,
    sent: AtomicU64,
    pings: AtomicU64,
    confirm_pings: AtomicU64,
    replaced: AtomicU64,
    /// Over the whole run: connections that ended unasked, replacements
    /// that failed, connections that missed chats, and the chats missed.
    closed: AtomicU64,
    replace_failed: AtomicU64,
    missed_peers: AtomicU64,
    missed: AtomicU64,
    /// Chats received twice, after their place left the span (or before
    /// the first), and out of order (but in time); broadcasts refused.
    duplicates: AtomicU64,
    disorder: AtomicU64,
    reordered: AtomicU64,
    refused: AtomicU64,
    errors: Mutex<Errors>,
}

impl Ctx {
    /// The run's shared state: `rooms` rooms of `per_room`, every counter
    /// at zero.
    fn new(target: Target, per_room: usize, sources: usize, rooms: usize) -> Ctx {
        Ctx {
            target,
            per_room,
            sources,
            phase: Phase::default(),
            room_seq: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..SHARDS).map(|_| Mutex::new(Hist::default())).collect(),
            rejoin: Mutex::new(Hist::default()),
            joined: AtomicUsize::new(0),
            fill_failed: AtomicUsize::new(0),
            last_chat_ns: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            confirm_pings: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            replace_failed: AtomicU64::new(0),
            missed_peers: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            errors: Mutex::new(Errors::default()),
        }
    }

    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e);
    }

    fn measuring(&self) -> bool {
        self.phase.get() == MEASURE
    }
}

/// Raises this process' descriptor limit: the soft one to the hard one,
/// and, where allowed (root), both to `want` first when the hard one is
/// lower. Returns the soft limit now.
pub(crate) fn raise_nofile(want: u64) -> u64 {
    use rlimit::Resource;
    if let Ok((_, hard)) = rlimit::getrlimit(Resource::NOFILE)
        && hard < want
    {
        let _ = rlimit::setrlimit(Resource::NOFILE, want, want);
    }
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Runs S16.
pub(crate) async fn run(run: &Run, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let per_room = (opts.peers / opts.rooms.max(1)).max(2);
    let wanted = per_room * opts.rooms.max(1);
    // One descriptor per peer on each side, and some to spare: where the
    // limits (this process', the server's) cannot be raised that far, as
    // many whole rooms as fit.
    let mut limit = raise_nofile(wanted as u64 + 4096);
    for &pid in &run.procs.servers {
        if let Some(l) = procfs::nofile(pid) {
            limit = limit.min(l);
        }
    }
    let fits = (limit.saturating_sub(1024) as usize / per_room).max(1);
    let rooms = opts.rooms.max(1).min(fits);
    let n = per_room * rooms;
    if n < wanted {
        report.set("peers_wanted", wanted);
        report.set("nofile", limit);
        eprintln!(
            "protoo-bench: S16: the descriptor limit is {limit} (the lower of this process' \
             and the server's, hard limit included): {n} peers instead of {wanted}; raise the \
             hard limit (`ulimit -Hn`, as root with CAP_SYS_RESOURCE) for the full count"
        );
    }
    let sources = if opts.sources == 0 {
        n / 10_000 + 2
    } else {
        opts.sources
    }
    .clamp(1, 250);
    report.set("peers", n);
    report.set("rooms", rooms);
    report.set("sources", sources);

    // Fail fast when the server cannot be reached at all.
    let probe = client::connect(&run.target, "s16-probe", "probe", Buffers::Lean).await?;
    super::close(probe, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = Snap::take(&run.procs);

    let ctx = Arc::new(Ctx::new(run.target.clone(), per_room, sources, rooms));
    ctx.phase.set(WARMUP);

    // The fill.
    let fill_start = Instant::now();
    let sem = Arc::new(Semaphore::new(run.connect_concurrency));
    let mut cmds = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        cmds.push(tx);
        tasks.push(tokio::spawn(slot(
            i,
            Arc::clone(&ctx),
            rx,
            Arc::clone(&sem),
        )));
    }
    let deadline = fill_start + run.timeout;
    while ctx.joined.load(Ordering::SeqCst) + ctx.fill_failed.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fill = fill_start.elapsed().as_secs_f64();
    let joined = ctx.joined.load(Ordering::SeqCst);
    let fill_failed = ctx.fill_failed.load(Ordering::SeqCst);
    report.set("peers_ok", joined);
    report.setf("fill_s", fill, 1);
    report.setf("fill_rate", joined as f64 / fill.max(1e-9), 0);
    if joined + fill_failed < n {
        report.error(format!(
            "only {joined} of {n} peers joined within {:?}",
            run.timeout
        ));
    }

    // Chat and churn, then the window.
    let (stop, stop_rx) = watch::channel(false);
    let ticker = tokio::spawn(ticks(
        cmds,
        per_room,
        opts.interval,
        n as f64 * opts.churn_pct / 100.0,
        stop_rx,
    ));
    let start = (Instant::now() + run.warmup).max(fill_start + opts.keepalive);
    tokio::time::sleep_until(start.into()).await;
    let a = Snap::take(&run.procs);
    ctx.phase.set(MEASURE);
    tokio::time::sleep(run.duration).await;
    ctx.phase.set(DONE);
    let b = Snap::take(&run.procs);
    let cli_rss = procfs::rss_kb(Some(std::process::id()));

    // The last chats reach everyone, then the members (their commands'
    // senders dropped) check what they got and close.
    let _ = stop.send(true);
    let cmds = ticker.await.map_err(|e| format!("ticker: {e}"))?;
    let quiet = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let since = now_ns().saturating_sub(ctx.last_chat_ns.load(Ordering::Relaxed));
        if since > 2_000_000_000 || Instant::now() > quiet {
            break;
        }
    }
    drop(cmds);
    let mut stuck = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for t in tasks {
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            stuck += 1;
        }
    }
    if stuck > 0 {
        report.error(format!("{stuck} members did not stop within 15 s"));
    }

    let w = Window::between(&a, &b);
    let delivered = ctx.delivered.load(Ordering::SeqCst);
    report.window(&w, delivered, "delivery");
    let mut h = Hist::default();
    for shard in &ctx.latency {
        h.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner));
    }
    report.latency(&h);
    let per_s = |x: &AtomicU64| x.load(Ordering::SeqCst) as f64 / w.secs.max(1e-9);
    report.setf("chats_per_s", per_s(&ctx.sent), 1);
    report.setf("pings_per_s", per_s(&ctx.pings), 1);
    report.setf("confirm_pings_per_s", per_s(&ctx.confirm_pings), 1);
    report.setf("replaced_per_s", per_s(&ctx.replaced), 1);
    let rejoin = ctx
        .rejoin
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    report.setf("rejoin_p50_us", rejoin.quantile(0.5) as f64 / 1e3, 1);
    report.setf("rejoin_p99_us", rejoin.quantile(0.99) as f64 / 1e3, 1);
    if let (Some(before), Some(after)) = (base.server_rss_kb, b.server_rss_kb) {
        report.set("srv_rss_before_kb", before);
        report.set(
            "rss_per_peer_bytes",
            after.saturating_sub(before) * 1024 / n as u64,
        );
    }
    if let Some(kb) = cli_rss {
        report.set("cli_rss_kb", kb);
    }
    let get = |x: &AtomicU64| x.load(Ordering::SeqCst);
    let lost =
        fill_failed as u64 + get(&ctx.closed) + get(&ctx.replace_failed) + get(&ctx.missed_peers);
    report.set("lost", lost);
    report.set("lost_fill", fill_failed);
    report.set("lost_closed", get(&ctx.closed));
    report.set("lost_replace", get(&ctx.replace_failed));
    report.set("lost_missed", get(&ctx.missed_peers));
    report.set("missed", get(&ctx.missed));
    if get(&ctx.missed) > 0 {
        report.error(format!(
            "{} chats missed, by {} connections",
            get(&ctx.missed),
            get(&ctx.missed_peers)
        ));
    }
    report.set("reordered", get(&ctx.reordered));
    if get(&ctx.duplicates) + get(&ctx.disorder) > 0 {
        report.error(format!(
            "{} chats received twice, {} too late to place",
            get(&ctx.duplicates),
            get(&ctx.disorder)
        ));
    }
    if get(&ctx.refused) > 0 {
        report.error(format!("{} broadcasts refused", get(&ctx.refused)));
    }
    let errors = std::mem::take(&mut *ctx.errors.lock().unwrap_or_else(PoisonError::into_inner));
    report.errors(errors);
    Ok(())
}

/// Each `interval`, one chat per room, by its members in turn, the rooms
/// spread over the interval; `churn` replacements per second, spread
/// evenly, over the members in a scattered order. Runs until `stop`;
/// returns the senders (dropping them stops the members).
async fn ticks(
    cmds: Vec<mpsc::UnboundedSender<Cmd>>,
    per_room: usize,
    interval: Duration,
    churn: f64,
    mut stop: watch::Receiver<bool>,
) -> Vec<mpsc::UnboundedSender<Cmd>> {
    let n = cmds.len();
    let rooms = n / per_room;
    // A stride coprime with `n`: every member is picked once per `n` picks.
    let mut stride = (n as f64 * 0.618) as usize | 1;
    while gcd(stride, n) != 1 {
        stride += 1;
    }
    let start = Instant::now();
    let (mut chats, mut leaves) = (0u64, 0u64);
    let mut turn = vec![0usize; rooms];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return cmds,
            _ = tick.tick() => {}
        }
        let secs = start.elapsed().as_secs_f64();
        let chats_due = (secs / interval.as_secs_f64().max(1e-6) * rooms as f64) as u64;
        while chats < chats_due {
            let r = (chats % rooms as u64) as usize;
            let member = r * per_room + turn[r] % per_room;
            turn[r] += 1;
            let _ = cmds[member].send(Cmd::Chat);
            chats += 1;
        }
        let leaves_due = (secs * churn) as u64;
        while leaves < leaves_due {
            let member = (leaves as usize).wrapping_mul(stride) % n;
            let _ = cmds[member].send(Cmd::Leave);
            leaves += 1;
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Why a member's connection ended.
enum End {
    /// Told to leave: a new connection takes its place.
    Replaced,
    /// The run is over (or the connection was lost: counted already).
    Stop,
}

/// One place in a room: its first connection (in the fill), then each
/// replacement, until the run ends.
async fn slot(
    i: usize,
    ctx: Arc<Ctx>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    sem: Arc<Semaphore>,
) {
    let room = i / ctx.per_room;
    let mut generation = 0u32;
    loop {
        let t0 = now_ns();
        let joined = {
            let _permit = if generation == 0 {
                sem.acquire().await.ok()
            } else {
                None
            };
            join(&ctx, i, room, generation).await
        };
        let (ws, floor) = match joined {
            Ok(joined) => joined,
            Err(e) => {
                if generation == 0 {
                    ctx.fill_failed.fetch_add(1, Ordering::SeqCst);
                } else {
                    ctx.replace_failed.fetch_add(1, Ordering::SeqCst);
                }
                ctx.error(e);
                // The place stays empty: its commands are dropped.
                while cmds.recv().await.is_some() {}
                return;
            }
        };
        if generation == 0 {
            ctx.joined.fetch_add(1, Ordering::SeqCst);
        } else if ctx.measuring() {
            ctx.replaced.fetch_add(1, Ordering::SeqCst);
            ctx.rejoin
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(now_ns().saturating_sub(t0));
        }
        match member(&ctx, i, room, ws, Track::after(floor), &mut cmds).await {
            End::Replaced => generation += 1,
            End::Stop => {
                while cmds.recv().await.is_some() {}
                return;
            }
        }
    }
}

/// Connects (from the slot's source address) and joins. Returns the
/// connection and the room's last chat once the `join` was answered: the
/// chats after it are due to the member.
async fn join(ctx: &Ctx, i: usize, room: usize, generation: u32) -> Result<(Ws, u64), String> {
    let source = std::net::Ipv4Addr::new(
        127,
        0,
        0,
        2 + ((i + generation as usize) % ctx.sources) as u8,
    );
    let peer = format!("p{i}-{generation}");
    let name = format!("s16-{room}");
    let mut ws = tokio::time::timeout(
        Duration::from_secs(30),
        client::connect_from(
            &ctx.target,
            &name,
            &peer,
            Buffers::Lean,
            Some(source.into()),
        ),
    )
    .await
    .map_err(|_| format!("connect {name}/{peer}: timed out"))??;
    request_once(
        &mut ws,
        1,
        "join",
        client::join(1, &peer),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("{name}/{peer}: {e}"))?;
    // Read once the answer has come: a chat numbered above it was sent
    // after that, so it reached the server with the member in the room.
    let floor = ctx.room_seq[room].load(Ordering::SeqCst);
    Ok((ws, floor))
}

/// A joined member: reads (answering pings), sends its room's chat when
/// told, leaves when told; at the end checks it got every chat due to it
/// (`track`, from its `join`'s answer).
async fn member(
    ctx: &Ctx,
    i: usize,
    room: usize,
    mut ws: Ws,
    mut track: Track,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) -> End {
    let mut id = 1u64;
    // Broadcasts not yet answered; told to leave while some are: leaves
    // once they are (as a client that waits for its requests).
    let mut unanswered = 0u32;
    let mut leaving = false;
    let shard = &ctx.latency[i % SHARDS];
    let lost = |track: &Track, why: String| {
        ctx.closed.fetch_add(1, Ordering::SeqCst);
        ctx.error(format!("p{i} in s16-{room}: {why}"));
        settle(ctx, track);
    };
    loop {
        enum Step {
            Cmd(Option<Cmd>),
            Msg(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
        }
        let step = tokio::select! {
            biased;
            c = cmds.recv() => Step::Cmd(c),
            m = ws.next() => Step::Msg(m),
        };
        match step {
            Step::Cmd(Some(Cmd::Chat)) => {
                let s = ctx.room_seq[room].fetch_add(1, Ordering::SeqCst) + 1;
                id += 1;
                if let Err(e) = ws.send(client::broadcast(id, s, "")).await {
                    lost(&track, format!("send: {e}"));
                    return End::Stop;
                }
                track.saw(s, ctx);
                unanswered += 1;
                if ctx.measuring() {
                    ctx.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Step::Cmd(Some(Cmd::Leave)) if unanswered > 0 => leaving = true,
            Step::Cmd(Some(Cmd::Leave)) => {
                // Only the chats missed for sure: a few still in flight,
                // out of order, are not counted.
                settle(ctx, &track);
                super::close(ws, Duration::from_secs(5)).await;
                return End::Replaced;
            }
            Step::Cmd(None) => {
                // The end: no chat has arrived for 2 s, so every one due
                // has come.
                track.close(ctx.room_seq[room].load(Ordering::SeqCst));
                settle(ctx, &track);
                super::close(ws, Duration::from_secs(2)).await;
                return End::Stop;
            }
            Step::Msg(Some(Ok(Message::Text(t)))) => {
                let Some(inc) = Incoming::parse(&t) else {
                    ctx.error(format!("unparsable message: {}", t.as_str()));
                    continue;
                };
                if inc.response {
                    if inc.ok != Some(true) {
                        ctx.refused.fetch_add(1, Ordering::Relaxed);
                        ctx.error(format!("broadcast refused: {}", t.as_str()));
                    }
                    unanswered = unanswered.saturating_sub(1);
                    if leaving && unanswered == 0 {
                        settle(ctx, &track);
                        super::close(ws, Duration::from_secs(5)).await;
                        return End::Replaced;
                    }
                    continue;
                }
                if inc.method.as_deref() != Some("chat") {
                    continue;
                }
                let Some(stamp) = inc.stamp() else {
                    ctx.error(format!("chat without t/s: {}", t.as_str()));
                    continue;
                };
                track.saw(stamp.s, ctx);
                ctx.last_chat_ns.store(now_ns(), Ordering::Relaxed);
                if ctx.measuring() {
                    ctx.delivered.fetch_add(1, Ordering::Relaxed);
                    shard
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(now_ns().saturating_sub(stamp.t));
                }
            }
            Step::Msg(Some(Ok(Message::Ping(payload)))) => {
                if ctx.measuring() {
                    let count = if payload.len() == 8 {
                        &ctx.confirm_pings
                    } else {
                        &ctx.pings
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Step::Msg(Some(Ok(Message::Close(f)))) => {
                lost(&track, format!("closed by the server: {f:?}"));
                return End::Stop;
            }
            Step::Msg(Some(Ok(_))) => {}
            Step::Msg(Some(Err(e))) => {
                lost(&track, format!("read: {e}"));
                return End::Stop;
            }
            Step::Msg(None) => {
                lost(&track, "connection ended".to_owned());
                return End::Stop;
            }
        }
    }
}

/// Counts what a connection missed, once it is over.
fn settle(ctx: &Ctx, track: &Track) {
    if track.missed > 0 {
        ctx.missed_peers.fetch_add(1, Ordering::SeqCst);
        ctx.missed.fetch_add(track.missed, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stride_reaches_every_member() {
        assert_eq!(gcd(61_803, 100_000), 1);
    }
}
