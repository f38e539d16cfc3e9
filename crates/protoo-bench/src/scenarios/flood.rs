//! S8 (an `ask` flood against the incoming byte budget) and S9 (one sender
//! flooding a large room against the incoming rate limit).
//!
//! S8: one peer sends `ask` requests whose frames carry `--size` bytes of
//! padding (outside the `data` the server sends back, so the server's own
//! requests stay small) and never answers the requests the server sends
//! it; it reads everything the server sends. A server that holds every
//! such frame until its request times out grows by the whole flood; one
//! with a per-peer byte budget answers the asks past it at once. Server
//! RSS before, peak (sampled and `VmHWM`), growth, and the answers by code.
//!
//! S9: one sender in a room of `--peers` sends `broadcast` requests as
//! fast as it can (`--in-flight` outstanding); every other member counts
//! the `chat` notifications and bytes it receives in the measurement
//! window (frame text bytes: what the server sent them, WebSocket headers
//! aside). With a rate limit of `--rate-limit` messages per second per
//! peer, the server may send at most that many broadcasts times the
//! members per second: the ratio of what it sent to that bound.
//!
//! S15 is S9 in bytes: `--size` (64 KB) broadcasts in a room of 500, and
//! the bytes the members receive per second against the server's fan-out
//! budget (`--fan-out-rate`, bytes delivered on one sender's behalf per
//! second).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connect_many;
use super::{DONE, MEASURE, Phase, WARMUP, read_batch};
use crate::client::{self, Buffers, Incoming};
use crate::procfs::{self, Snap, Window};
use crate::{Report, Run};

/// Answers to the asks, by kind.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicU64,
    over_budget: AtomicU64,
    rate_limited: AtomicU64,
    other_error: AtomicU64,
    /// Requests the server sent (never answered).
    questions: AtomicU64,
}

impl Answers {
    fn total(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
            + self.over_budget.load(Ordering::SeqCst)
            + self.rate_limited.load(Ordering::SeqCst)
            + self.other_error.load(Ordering::SeqCst)
    }
}

/// The error code of a response frame, if it is an error response.
fn error_code(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Code {
        #[serde(rename = "errorCode")]
        code: Option<u64>,
    }
    serde_json::from_str::<Code>(text).ok()?.code
}

/// Runs S8: `asks` requests of about `size` bytes each.
pub(crate) async fn ask_flood(
    run: &Run,
    asks: u64,
    size: usize,
    report: &mut Report,
) -> Result<(), String> {
    report.set("asks", asks);
    report.set("size", size);
    let pid = run.pid;
    let ws = client::connect(&run.target, "s8", "asker", Buffers::Busy).await?;
    let (mut sink, mut stream) = ws.split();
    let answers = Arc::new(Answers::default());
    let (stop, stop_rx) = watch::channel(false);

    let reader = {
        let answers = Arc::clone(&answers);
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut ended = None;
            loop {
                let more = tokio::select! {
                    more = read_batch(&mut stream, &mut ended, |m| {
                        let Message::Text(t) = m else { return };
                        let Some(inc) = Incoming::parse(&t) else { return };
                        if inc.response {
                            let counter = match (inc.ok, error_code(&t)) {
                                (Some(true), _) => &answers.ok,
                                (_, Some(503)) => &answers.over_budget,
                                (_, Some(429)) => &answers.rate_limited,
                                _ => &answers.other_error,
                            };
                            counter.fetch_add(1, Ordering::SeqCst);
                        } else if !inc.notification {
                            answers.questions.fetch_add(1, Ordering::SeqCst);
                        }
                    }) => more,
                    _ = stop_rx.wait_for(|s| *s) => return (stream, None),
                };
                if !more {
                    return (stream, ended);
                }
            }
        })
    };

    let sampler = procfs::PeakRss::start(pid, stop_rx.clone(), Duration::from_millis(5));
    let hwm_before = pid.and_then(|p| procfs::status_kb(p, "VmHWM"));
    let before = Snap::take(&run.procs);

    // `{"request":true,"id":N,"method":"ask","data":{"method":"question","data":{"n":N},"p":"…"}}`
    let pad = "x".repeat(size.saturating_sub(120));
    let mut sent = 0u64;
    let mut send_error = None;
    for id in 1..=asks {
        let text = format!(
            r#"{{"request":true,"id":{id},"method":"ask","data":{{"method":"question","data":{{"n":{id}}},"p":"{pad}"}}}}"#
        );
        if let Err(e) = sink.send(Message::Text(Utf8Bytes::from(text))).await {
            send_error = Some(format!("send ask {id}: {e}"));
            break;
        }
        sent += 1;
    }
    let sent_at = Snap::take(&run.procs);
    // The answers a server gives at once arrive now; the others wait for
    // the server's requests to time out, which the run does not wait for.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && answers.total() < sent {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = Snap::take(&run.procs);
    let hwm_after = pid.and_then(|p| procfs::status_kb(p, "VmHWM"));
    let _ = stop.send(true);
    let sampled = sampler.finish().await;
    let (stream, ended) = reader.await.map_err(|e| format!("reader: {e}"))?;
    if let Some(e) = send_error {
        report.error(e);
    }
    if let Some(e) = ended {
        report.error(format!(
            "the asker's connection ended during the flood: {e}"
        ));
    }

    report.window(&Window::between(&before, &sent_at), sent, "ask");
    report.setf(
        "sent_mb",
        (sent as f64) * (pad.len() as f64 + 120.0) / 1048576.0,
        1,
    );
    let rss_before = before.server_rss_kb.unwrap_or(0);
    let peak_kb = match (hwm_before, hwm_after) {
        (Some(hb), Some(ha)) if ha > hb => ha.max(sampled),
        _ => sampled,
    };
    if pid.is_some() {
        report.set("srv_rss_before_kb", rss_before);
        report.set("srv_rss_peak_kb", peak_kb);
        report.set("srv_rss_growth_kb", peak_kb.saturating_sub(rss_before));
        if let Some(kb) = after.server_rss_kb {
            report.set("srv_rss_after_kb", kb);
            report.set("srv_rss_after_growth_kb", kb.saturating_sub(rss_before));
        }
    }
    report.set("answered_ok", answers.ok.load(Ordering::SeqCst));
    report.set("answered_503", answers.over_budget.load(Ordering::SeqCst));
    report.set("answered_429", answers.rate_limited.load(Ordering::SeqCst));
    report.set("answered_other", answers.other_error.load(Ordering::SeqCst));
    report.set("unanswered", sent.saturating_sub(answers.total()));
    report.set("questions", answers.questions.load(Ordering::SeqCst));
    let ws = sink.reunite(stream).map_err(|e| format!("reunite: {e}"))?;
    super::close(ws, Duration::from_secs(2)).await;
    Ok(())
}

/// What S9 counts, shared by its tasks.
#[derive(Debug, Default)]
struct Counts {
    phase: Phase,
    /// `chat` notifications received by the members in the window.
    delivered: AtomicU64,
    /// Their frame text bytes.
    delivered_bytes: AtomicU64,
    /// Broadcast requests answered in the window: carried out / refused.
    accepted: AtomicU64,
    refused: AtomicU64,
    other_error: AtomicU64,
}

/// What S9 and S15 are given.
#[derive(Debug)]
pub(crate) struct Flood {
    /// Room size, the sender included.
    pub(crate) peers: usize,
    /// Broadcast requests outstanding.
    pub(crate) in_flight: usize,
    /// The server's incoming rate limit (messages per second per peer)
    /// the result is compared with.
    pub(crate) rate_limit: u64,
    /// Bytes of each broadcast's data (S9: 64 of padding).
    pub(crate) size: Option<usize>,
    /// The server's fan-out budget (bytes per second delivered on one
    /// sender's behalf) the result is compared with (S15).
    pub(crate) fan_out_rate: Option<u64>,
}

/// Runs S9 (or S15): one sender in a room of `peers`, `in_flight`
/// requests outstanding.
pub(crate) async fn rate_flood(run: &Run, o: &Flood, report: &mut Report) -> Result<(), String> {
    let (peers, in_flight, rate_limit) = (o.peers, o.in_flight, o.rate_limit);
    let room = if o.fan_out_rate.is_some() {
        "s15"
    } else {
        "s9"
    };
    let receivers = peers.saturating_sub(1).max(1);
    report.set("peers", receivers + 1);
    report.set("rate_limit", rate_limit);
    if let Some(size) = o.size {
        report.set("size", size);
    }
    let members = connect_many(run, room, receivers).await?;
    let sender = client::connect(&run.target, room, "sender", Buffers::Busy).await?;
    let (mut sink, mut sender_stream) = sender.split();
    let counts = Arc::new(Counts::default());
    let (stop, stop_rx) = watch::channel(false);

    let mut readers = Vec::with_capacity(members.len());
    for mut ws in members {
        let counts = Arc::clone(&counts);
        let mut stop_rx = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut ended = None;
            loop {
                let more = tokio::select! {
                    more = read_batch(&mut ws, &mut ended, |m| {
                        let Message::Text(t) = m else { return };
                        if counts.phase.get() != MEASURE {
                            return;
                        }
                        if Incoming::parse(&t).is_some_and(|i| i.notification && i.method.as_deref() == Some("chat")) {
                            counts.delivered.fetch_add(1, Ordering::Relaxed);
                            counts.delivered_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        }
                    }) => more,
                    _ = stop_rx.wait_for(|s| *s) => return (ws, None),
                };
                if !more {
                    return (ws, ended);
                }
            }
        }));
    }

    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    let responses = {
        let counts = Arc::clone(&counts);
        let slots = Arc::clone(&slots);
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut ended = None;
            loop {
                let more = tokio::select! {
                    more = read_batch(&mut sender_stream, &mut ended, |m| {
                        let Message::Text(t) = m else { return };
                        let Some(inc) = Incoming::parse(&t) else { return };
                        if !inc.response {
                            return;
                        }
                        slots.add_permits(1);
                        if counts.phase.get() != MEASURE {
                            return;
                        }
                        let counter = match (inc.ok, error_code(&t)) {
                            (Some(true), _) => &counts.accepted,
                            (_, Some(429)) => &counts.refused,
                            _ => &counts.other_error,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }) => more,
                    _ = stop_rx.wait_for(|s| *s) => return (sender_stream, None),
                };
                if !more {
                    return (sender_stream, ended);
                }
            }
        })
    };

    let writer = {
        let size = o.size;
        let slots = Arc::clone(&slots);
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let pad = match size {
                Some(size) => client::pad(size, client::BROADCAST_FIXED),
                None => "x".repeat(64),
            };
            let mut id = 1u64;
            while !*stop_rx.borrow() {
                let Ok(permit) = slots.acquire().await else {
                    break;
                };
                permit.forget();
                if let Err(e) = sink.feed(client::broadcast(id, id, &pad)).await {
                    return (sink, Some(format!("send: {e}")));
                }
                // Flush once the window of outstanding requests is full.
                if slots.available_permits() == 0
                    && let Err(e) = sink.flush().await
                {
                    return (sink, Some(format!("flush: {e}")));
                }
                id += 1;
            }
            (sink, None)
        })
    };

    counts.phase.set(WARMUP);
    tokio::time::sleep(run.warmup).await;
    let a = Snap::take(&run.procs);
    counts.phase.set(MEASURE);
    tokio::time::sleep(run.duration).await;
    counts.phase.set(DONE);
    let b = Snap::take(&run.procs);
    let _ = stop.send(true);
    slots.close();

    let w = Window::between(&a, &b);
    let secs = w.secs.max(1e-9);
    let delivered = counts.delivered.load(Ordering::SeqCst);
    report.window(&w, delivered, "delivery");
    let limit = rate_limit as f64 * receivers as f64;
    report.setf("limit_deliveries_per_s", limit, 0);
    report.setf("of_limit", delivered as f64 / secs / limit.max(1e-9), 3);
    let bytes = counts.delivered_bytes.load(Ordering::SeqCst);
    report.setf("recv_bytes_per_s", bytes as f64 / secs, 0);
    if delivered > 0 {
        let frame = bytes as f64 / delivered as f64;
        report.setf("limit_bytes_per_s", limit * frame, 0);
    }
    if let Some(budget) = o.fan_out_rate {
        report.set("fan_out_rate", budget);
        report.setf("recv_mb_per_s", bytes as f64 / secs / 1e6, 1);
        report.setf(
            "of_fan_out_rate",
            bytes as f64 / secs / budget.max(1) as f64,
            3,
        );
    }
    let accepted = counts.accepted.load(Ordering::SeqCst);
    report.setf("accepted_per_s", accepted as f64 / secs, 1);
    report.setf(
        "refused_per_s",
        counts.refused.load(Ordering::SeqCst) as f64 / secs,
        1,
    );
    let other = counts.other_error.load(Ordering::SeqCst);
    if other > 0 {
        report.error(format!("{other} broadcast requests failed other than 429"));
    }

    let (sink, send_error) = writer.await.map_err(|e| format!("writer: {e}"))?;
    if let Some(e) = send_error {
        report.error(e);
    }
    let (stream, ended) = responses.await.map_err(|e| format!("responses: {e}"))?;
    if let Some(e) = ended {
        report.error(format!("the sender's connection ended: {e}"));
    }
    let mut open = Vec::with_capacity(readers.len());
    for r in readers {
        let (ws, ended) = r.await.map_err(|e| format!("reader: {e}"))?;
        if let Some(e) = ended {
            report.error(format!("a member's connection ended: {e}"));
        }
        open.push(ws);
    }
    if let Ok(ws) = sink.reunite(stream) {
        super::close(ws, Duration::from_secs(2)).await;
    }
    drop(open);
    Ok(())
}
