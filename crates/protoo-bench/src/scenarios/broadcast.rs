//! S3 (broadcast throughput), S10 (the same across the nodes of a cluster)
//! and S6 (a member that stops reading).
//!
//! One sender calls `broadcast` with data `{"t":SEND_NS,"s":SEQ[,"p":PAD]}`;
//! every other member receives `chat` with that data unchanged. The sender is
//! flow-controlled by what the receivers have got: at most `window`
//! broadcasts are not yet delivered to every receiver. So the load is as high
//! as the server can carry while no receiver's queue grows past `window`
//! notifications, and a server with bounded queues is not pushed into
//! closing readers that keep up.
//!
//! S6 adds a member that completes the WebSocket handshake and then never
//! reads. It is left out of the flow control. After the run its socket is
//! read to the end: how many notifications reached it, and whether (with
//! which close code) the server closed it; the readers' `peerClosed` tells
//! when.
//!
//! S10 is S3 given several nodes (`Run::targets`): the members are split
//! between them in equal runs (the sender and the first receivers on the
//! first node), so some deliveries stay on the sender's node and the others
//! cross Redis; their latency is also reported apart (`remote_*`).
//!
//! S3 in several rooms (`Opts::rooms`): each room has a sender and
//! receivers of its own, all on one node (room `r` on node `r % nodes`), so
//! that two processes without Redis each serve their own rooms (how several
//! processes share one box); the rooms run side by side, each with its own
//! flow control, and are counted together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{DONE, MEASURE, Phase, WARMUP, connect_many_on, read_batch};
use crate::client::{self, Buffers, Incoming, Ws, now_ns};
use crate::hist::{Local, Shared};
use crate::procfs::{self, Snap, Window};
use crate::{Errors, Report, Run};

/// What to run.
#[derive(Debug)]
pub(crate) struct Opts {
    /// Members that read (everyone but the sender and the stalled member).
    pub(crate) receivers: usize,
    /// Add a member that never reads (S6).
    pub(crate) stalled: bool,
    /// Broadcasts to send (S6); `None`: for the measurement window (S3).
    pub(crate) count: Option<u64>,
    /// Padding added to each broadcast's data so that it is about this many bytes.
    pub(crate) size: usize,
    /// Broadcasts not yet delivered to every receiver, at most (per room).
    pub(crate) window: u64,
    /// Rooms, each with `receivers` and a sender of its own, each served
    /// by one node; 1: one room (split over the nodes when there are
    /// several: S10).
    pub(crate) rooms: usize,
}

/// Flow control and shared counters.
#[derive(Debug, Default)]
struct Flow {
    phase: Phase,
    /// `chat` deliveries to the counted receivers, since the start.
    delivered: AtomicU64,
    /// Broadcasts sent (the measured ones, sequence numbers from 1).
    sent: AtomicU64,
    /// Receivers that have got at least one `chat`.
    started: AtomicUsize,
    /// The sender waits for `delivered >= target`.
    waiting: AtomicBool,
    target: AtomicU64,
    notify: Notify,
    /// When the stalled member was reported closed (`peerClosed`): ns since
    /// the run began and broadcasts sent by then; 0 when not (yet).
    stalled_closed_ns: AtomicU64,
    stalled_closed_sent: AtomicU64,
    run_start_ns: AtomicU64,
}

impl Flow {
    fn delivered(&self, n: u64) {
        let total = self.delivered.fetch_add(n, Ordering::SeqCst) + n;
        if self.waiting.load(Ordering::SeqCst)
            && total >= self.target.load(Ordering::SeqCst)
            && self.waiting.swap(false, Ordering::SeqCst)
        {
            self.notify.notify_one();
        }
    }

    /// Waits until `delivered >= target`.
    async fn wait_for(&self, target: u64) {
        loop {
            if self.delivered.load(Ordering::SeqCst) >= target {
                return;
            }
            let notified = self.notify.notified();
            self.target.store(target, Ordering::SeqCst);
            self.waiting.store(true, Ordering::SeqCst);
            if self.delivered.load(Ordering::SeqCst) >= target {
                self.waiting.store(false, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }
}

/// What one reading member saw.
#[derive(Debug, Default)]
struct Seen {
    /// `chat` with a sequence number >= 1 (the measured broadcasts).
    chats: u64,
    /// Of those, received inside the measurement window.
    in_window: u64,
    /// Sequence numbers not in increasing order.
    out_of_order: u64,
    /// Responses to the sender's requests.
    responses_ok: u64,
    responses_err: u64,
    /// How the connection ended, if it did before the end of the run.
    ended: Option<String>,
    errors: Errors,
}

/// One room as the run drives it: its sender's sink (until the writer
/// takes it), its flow control and its members' reading tasks.
struct Room {
    flow: Arc<Flow>,
    sink: Option<SplitSink<Ws, Message>>,
    readers: Vec<JoinHandle<Seen>>,
    responses: JoinHandle<Seen>,
    /// The sender's next request id.
    id: u64,
}

impl Room {
    /// Connects room `name`'s receivers and sender (all on `node` when
    /// given, else split over the nodes) and starts their reading tasks.
    async fn open(
        run: &Run,
        name: &str,
        opts: &Opts,
        node: Option<usize>,
        hists: (&Shared, &Shared),
        stop_rx: &watch::Receiver<bool>,
    ) -> Result<(Room, usize), String> {
        let receivers = connect_many_on(run, name, opts.receivers, node).await?;
        let sender = client::connect(
            &run.targets[node.unwrap_or(0)],
            name,
            "sender",
            Buffers::Busy,
        )
        .await?;
        let (sink, sender_stream) = sender.split();
        let flow = Arc::new(Flow::default());
        let (hist, remote_hist) = hists;
        let mut readers = Vec::with_capacity(receivers.len());
        let mut remote_receivers = 0usize;
        for (k, ws) in receivers.into_iter().enumerate() {
            let remote = node.is_none() && run.node_of(k + 1, opts.receivers + 1) != 0;
            remote_receivers += usize::from(remote);
            readers.push(tokio::spawn(read_loop(
                ws,
                Arc::clone(&flow),
                Hists {
                    all: hist.clone(),
                    remote: remote.then(|| remote_hist.clone()),
                },
                stop_rx.clone(),
                true,
            )));
        }
        let responses = tokio::spawn(read_loop(
            sender_stream,
            Arc::clone(&flow),
            Hists {
                all: hist.clone(),
                remote: None,
            },
            stop_rx.clone(),
            false,
        ));
        let room = Room {
            flow,
            sink: Some(sink),
            readers,
            responses,
            id: 1,
        };
        Ok((room, remote_receivers))
    }
}

/// Moves every room to phase `p`.
fn set_phase(rooms: &[Room], p: u8) {
    for room in rooms {
        room.flow.phase.set(p);
    }
}

/// Runs S3, S10 (S3 on several nodes), S3 in several rooms (each served
/// by one node: node `r % nodes` serves room `r`) or S6.
pub(crate) async fn run(run: &Run, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let base = match (opts.stalled, run.targets.len(), opts.rooms) {
        (true, _, _) => "s6",
        (false, 1, _) | (false, _, 2..) => "s3",
        (false, _, _) => "s10",
    };
    let n_rooms = opts.rooms.max(1);
    if opts.stalled && n_rooms > 1 {
        return Err("s6 runs in one room".into());
    }
    report.set("peers", opts.receivers + 1 + usize::from(opts.stalled));
    if n_rooms > 1 {
        report.set("rooms", n_rooms);
    }
    report.set("window", opts.window);
    report.set("size", opts.size);

    // The stalled member joins first and is never polled until the end.
    let stalled = if opts.stalled {
        Some(client::connect(&run.target, base, "stalled", Buffers::Busy).await?)
    } else {
        None
    };
    let hist = Shared::default();
    // Deliveries to the members on other nodes than the sender's.
    let remote_hist = Shared::default();
    let (stop, stop_rx) = watch::channel(false);
    let mut rooms = Vec::with_capacity(n_rooms);
    let mut remote_receivers = 0usize;
    for r in 0..n_rooms {
        let (name, node) = if n_rooms == 1 {
            (base.to_owned(), None)
        } else {
            (format!("{base}-{r}"), Some(r % run.targets.len()))
        };
        let (room, remote) =
            Room::open(run, &name, opts, node, (&hist, &remote_hist), &stop_rx).await?;
        remote_receivers += remote;
        rooms.push(room);
    }

    // Warm-up: sequence number 0 until every receiver has one.
    let n = opts.receivers;
    let warm = Instant::now();
    while rooms
        .iter()
        .any(|r| r.flow.started.load(Ordering::SeqCst) < n)
    {
        if warm.elapsed() > Duration::from_secs(15) {
            let _ = stop.send(true);
            let started: usize = rooms
                .iter()
                .map(|r| r.flow.started.load(Ordering::SeqCst))
                .sum();
            return Err(format!(
                "only {started} of {} receivers got a broadcast within 15 s",
                n * n_rooms
            ));
        }
        for room in &mut rooms {
            if let Some(sink) = &mut room.sink {
                sink.send(client::broadcast(room.id, 0, ""))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            room.id += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pad = client::pad(opts.size, client::BROADCAST_FIXED);
    let sampler = procfs::PeakRss::start(run.pid, stop_rx.clone(), Duration::from_millis(10));
    let hwm_before = run.pid.and_then(|p| procfs::status_kb(p, "VmHWM"));
    let before = Snap::take(&run.procs);
    let mut bases = Vec::with_capacity(n_rooms);
    let mut writers = Vec::with_capacity(n_rooms);
    for room in &mut rooms {
        let base = room.flow.delivered.load(Ordering::SeqCst);
        bases.push(base);
        room.flow.run_start_ns.store(now_ns(), Ordering::SeqCst);
        let Some(mut sink) = room.sink.take() else {
            return Err("a room's sender is gone".into());
        };
        let flow = Arc::clone(&room.flow);
        let per_send = n as u64;
        let window = opts.window.max(1);
        let count = opts.count;
        let id = room.id;
        let pad = pad.clone();
        writers.push(tokio::spawn(async move {
            write_loop(&mut sink, &flow, base, per_send, window, count, id, &pad).await
        }));
    }
    // Every broadcast sent delivered to every receiver, by `deadline`.
    let wait_all = |deadline: Instant| {
        let rooms = &rooms;
        let bases = &bases;
        async move {
            for (room, base) in rooms.iter().zip(bases) {
                let all = base + room.flow.sent.load(Ordering::SeqCst) * n as u64;
                if tokio::time::timeout_at(deadline.into(), room.flow.wait_for(all))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        }
    };

    let (a, b) = if opts.count.is_some() {
        // S6: everything counts; the run ends when every reader has every notification.
        set_phase(&rooms, MEASURE);
        let deadline = Instant::now() + run.timeout;
        for writer in writers {
            match writer.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => report.error(e),
                Err(e) => report.error(format!("writer: {e}")),
            }
        }
        if !wait_all(deadline).await {
            report.error("not every notification reached every reader in time");
        }
        set_phase(&rooms, DONE);
        let end = Snap::take(&run.procs);
        (before.clone(), end)
    } else {
        // S3: warm-up, then the measurement window.
        set_phase(&rooms, WARMUP);
        tokio::time::sleep(run.warmup).await;
        let a = Snap::take(&run.procs);
        set_phase(&rooms, MEASURE);
        tokio::time::sleep(run.duration).await;
        set_phase(&rooms, DONE);
        let b = Snap::take(&run.procs);
        for writer in writers {
            match writer.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => report.error(e),
                Err(e) => report.error(format!("writer: {e}")),
            }
        }
        if !wait_all(Instant::now() + Duration::from_secs(10)).await {
            report.error("broadcasts still undelivered 10 s after the window");
        }
        (a, b)
    };
    let sent: u64 = rooms
        .iter()
        .map(|r| r.flow.sent.load(Ordering::SeqCst))
        .sum();

    // Memory after the run, with a moment for a late close of the stalled member.
    if opts.stalled {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = Snap::take(&run.procs);
    let hwm_after = run.pid.and_then(|p| procfs::status_kb(p, "VmHWM"));
    let _ = stop.send(true);
    let sampled = sampler.finish().await;

    // What each room's members saw; the smallest share of its room's
    // broadcasts one receiver got.
    let mut seen = Vec::with_capacity(n * n_rooms);
    let mut sender_seen = Vec::with_capacity(n_rooms);
    let mut min_pct = 100.0f64;
    // S6's one room: when its stalled member was closed.
    let flow = rooms
        .first()
        .map(|r| Arc::clone(&r.flow))
        .unwrap_or_default();
    for room in rooms {
        let from = seen.len();
        for r in room.readers {
            match tokio::time::timeout(Duration::from_secs(10), r).await {
                Ok(Ok(s)) => seen.push(s),
                Ok(Err(e)) => report.error(format!("reader: {e}")),
                Err(_) => report.error("reader did not stop"),
            }
        }
        sender_seen.push(
            match tokio::time::timeout(Duration::from_secs(10), room.responses).await {
                Ok(Ok(s)) => s,
                _ => Seen::default(),
            },
        );
        let room_sent = room.flow.sent.load(Ordering::SeqCst);
        let min = seen[from..].iter().map(|s| s.chats).min().unwrap_or(0);
        min_pct = min_pct.min(if room_sent == 0 {
            0.0
        } else {
            100.0 * min as f64 / room_sent as f64
        });
    }

    let w = Window::between(&a, &b);
    let deliveries = if opts.count.is_some() {
        seen.iter().map(|s| s.chats).sum::<u64>()
    } else {
        seen.iter().map(|s| s.in_window).sum::<u64>()
    };
    report.window(&w, deliveries, "delivery");
    report.setf(
        "broadcasts_per_s",
        deliveries as f64 / n as f64 / w.secs.max(1e-9),
        1,
    );
    let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
    report.latency(&h);
    if remote_receivers > 0 {
        report.set("remote_receivers", remote_receivers);
        let r = remote_hist.lock().map(|h| h.clone()).unwrap_or_default();
        report.setf("remote_p50_us", r.quantile(0.50) as f64 / 1e3, 1);
        report.setf("remote_p99_us", r.quantile(0.99) as f64 / 1e3, 1);
        report.set("remote_samples", r.count());
        // Redis carries one publication per broadcast, whatever the room size.
        if let (Some(cpu), true) = (w.redis_cpu_us, deliveries > 0) {
            let broadcasts = deliveries as f64 / n as f64;
            report.setf("redis_cpu_us_per_broadcast", cpu as f64 / broadcasts, 3);
            if !w.redis_shard_cpu_us.is_empty() {
                let shards: Vec<String> = w
                    .redis_shard_cpu_us
                    .iter()
                    .map(|&us| format!("{:.3}", us as f64 / broadcasts))
                    .collect();
                report.set("redis_shard_cpu_us_per_broadcast", shards.join("+"));
            }
        }
    }
    report.set("sent", sent);
    report.setf("delivered_pct", min_pct, 2);
    report.set(
        "responses_ok",
        sender_seen.iter().map(|s| s.responses_ok).sum::<u64>(),
    );
    let out_of_order: u64 = seen.iter().map(|s| s.out_of_order).sum();
    if out_of_order > 0 {
        report.error(format!("{out_of_order} notifications out of order"));
    }
    let rejected: u64 = sender_seen.iter().map(|s| s.responses_err).sum();
    if rejected > 0 {
        report.error(format!("{rejected} broadcast requests rejected"));
    }
    for s in &mut seen {
        if let Some(e) = s.ended.take() {
            report.error(format!("a reader's connection ended during the run: {e}"));
        }
        report.errors(std::mem::take(&mut s.errors));
    }
    for s in sender_seen {
        report.errors(s.errors);
    }

    if let Some(stalled) = stalled {
        let rss_before = before.server_rss_kb.unwrap_or(0);
        let peak_kb = match (hwm_before, hwm_after) {
            (Some(hb), Some(ha)) if ha > hb => ha.max(sampled),
            _ => sampled,
        };
        report.set("srv_rss_before_kb", rss_before);
        report.set("srv_rss_peak_kb", peak_kb);
        report.set("srv_rss_growth_kb", peak_kb.saturating_sub(rss_before));
        if let Some(kb) = after.server_rss_kb {
            report.set("srv_rss_after_kb", kb);
        }
        let (received, how) = drain_stalled(stalled).await;
        report.set("stalled_received", received);
        report.set("stalled_end", how);
        let at = flow.stalled_closed_ns.load(Ordering::SeqCst);
        if at > 0 {
            let start = flow.run_start_ns.load(Ordering::SeqCst);
            report.setf(
                "stalled_closed_ms",
                at.saturating_sub(start) as f64 / 1e6,
                1,
            );
            report.set(
                "stalled_closed_after_sent",
                flow.stalled_closed_sent.load(Ordering::SeqCst),
            );
        }
    }
    Ok(())
}

/// Where a reader records its send→receive latencies.
struct Hists {
    /// Every delivery.
    all: Shared,
    /// Also here when the reader is on another node than the sender.
    remote: Option<Shared>,
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    sink: &mut SplitSink<Ws, Message>,
    flow: &Flow,
    base: u64,
    per_send: u64,
    window: u64,
    count: Option<u64>,
    mut id: u64,
    pad: &str,
) -> Result<u64, String> {
    const BATCH: u64 = 64;
    let mut sent = 0u64;
    loop {
        if flow.phase.get() == DONE || count.is_some_and(|c| sent >= c) {
            return Ok(sent);
        }
        // Send broadcast number `sent + 1` once at most `window - 1` are undelivered.
        let need = base + (sent + 1).saturating_sub(window) * per_send;
        if flow.delivered.load(Ordering::SeqCst) < need {
            let _ = tokio::time::timeout(Duration::from_millis(100), flow.wait_for(need)).await;
            continue;
        }
        let delivered = flow.delivered.load(Ordering::SeqCst).saturating_sub(base);
        let mut batch = (delivered / per_send + window)
            .saturating_sub(sent)
            .clamp(1, BATCH);
        if let Some(c) = count {
            batch = batch.min(c - sent);
        }
        for _ in 0..batch {
            sent += 1;
            sink.feed(client::broadcast(id, sent, pad))
                .await
                .map_err(|e| format!("send: {e}"))?;
            id += 1;
        }
        flow.sent.store(sent, Ordering::SeqCst);
        sink.flush().await.map_err(|e| format!("flush: {e}"))?;
    }
}

async fn read_loop<S>(
    mut ws: S,
    flow: Arc<Flow>,
    hists: Hists,
    mut stop: watch::Receiver<bool>,
    counted: bool,
) -> Seen
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = Seen::default();
    let mut local = Local::new(&hists.all);
    let mut remote = hists.remote.as_ref().map(Local::new);
    let mut last = 0u64;
    let mut any = false;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let mut n = 0u64;
        let batch = read_batch(&mut ws, &mut seen.ended, |m| {
            let Message::Text(t) = m else { return };
            let Some(inc) = Incoming::parse(&t) else {
                seen.errors
                    .push(format!("unparsable message: {}", t.as_str()));
                return;
            };
            if inc.response {
                if inc.ok == Some(true) {
                    seen.responses_ok += 1;
                } else {
                    seen.responses_err += 1;
                    seen.errors
                        .push(format!("broadcast rejected: {}", t.as_str()));
                }
                return;
            }
            if !inc.notification {
                return;
            }
            match inc.method.as_deref() {
                Some("chat") => {
                    let Some(stamp) = inc.stamp() else {
                        seen.errors
                            .push(format!("chat without t/s: {}", t.as_str()));
                        return;
                    };
                    n += 1;
                    if stamp.s == 0 {
                        return;
                    }
                    seen.chats += 1;
                    if stamp.s <= last {
                        seen.out_of_order += 1;
                    }
                    last = stamp.s;
                    if flow.phase.get() == MEASURE {
                        seen.in_window += 1;
                        let latency = now_ns().saturating_sub(stamp.t);
                        local.record(latency);
                        if let Some(remote) = &mut remote {
                            remote.record(latency);
                        }
                    }
                }
                Some("peerClosed") if t.as_str().contains(r#""stalled""#) => {
                    let _ = flow.stalled_closed_ns.compare_exchange(
                        0,
                        now_ns(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    let _ = flow.stalled_closed_sent.compare_exchange(
                        0,
                        flow.sent.load(Ordering::SeqCst),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                _ => {}
            }
        });
        let open = tokio::select! {
            biased;
            _ = &mut stopped => break,
            open = batch => open,
        };
        if counted && n > 0 {
            if !any {
                any = true;
                flow.started.fetch_add(1, Ordering::SeqCst);
            }
            flow.delivered(n);
        }
        if !open {
            break;
        }
    }
    drop(local);
    drop(remote);
    seen
}

/// Reads the stalled member's socket to its end (bounded): the measured
/// `chat`s it got, and how it ended.
async fn drain_stalled(mut ws: Ws) -> (u64, String) {
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left.min(Duration::from_secs(3)), ws.next()).await;
        match next {
            Err(_) => return (received, "open".to_owned()),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Some(inc) = Incoming::parse(&t)
                    && inc.method.as_deref() == Some("chat")
                    && inc.stamp().is_some_and(|s| s.s > 0)
                {
                    received += 1;
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                let how = match f {
                    Some(f) => format!("closed:{}", u16::from(f.code)),
                    None => "closed:none".to_owned(),
                };
                return (received, how);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))) => {
                return (received, "closed:no-close-frame".to_owned());
            }
            Ok(Some(Err(WsError::Io(e)))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (received, "reset".to_owned());
            }
            Ok(Some(Err(e))) => return (received, format!("error:{e}")),
            Ok(None) => return (received, "eof".to_owned()),
        }
    }
}
