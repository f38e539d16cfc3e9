//! S1 and S2: request/response (`echo`) with a fixed number of requests in
//! flight per client (closed loop: each response releases the next request).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;

use super::{DONE, MEASURE, Phase, Stats, read_batch};
use crate::client::{self, Buffers, Incoming, Ws, now_ns};
use crate::hist::{Local, Shared};
use crate::{Report, Run};

/// Runs `clients` clients with `in_flight` requests each for the window,
/// each request's data about `size` bytes (at least `{"t":NS}`).
pub(crate) async fn run(
    run: &Run,
    clients: usize,
    in_flight: usize,
    size: usize,
    report: &mut Report,
) -> Result<(), String> {
    let clients = clients.max(1);
    let in_flight = in_flight.max(1);
    report.set("clients", clients);
    report.set("in_flight", in_flight);
    report.set("size", size);
    let pad: Arc<str> = client::pad(size, client::ECHO_FIXED).into();
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(client::connect(&run.target, "rr", &format!("c{i}"), Buffers::Busy).await?);
    }
    let hist = Shared::default();
    let phase = Arc::new(Phase::default());
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|ws| {
            tokio::spawn(client_loop(
                ws,
                in_flight,
                Arc::clone(&pad),
                Arc::clone(&phase),
                hist.clone(),
            ))
        })
        .collect();

    super::measure(
        run,
        &phase,
        tasks,
        &hist,
        Duration::from_secs(10),
        "req",
        report,
    )
    .await;
    Ok(())
}

async fn client_loop(
    mut ws: Ws,
    in_flight: usize,
    pad: Arc<str>,
    phase: Arc<Phase>,
    hist: Shared,
) -> Stats {
    let mut stats = Stats::default();
    let mut local = Local::new(&hist);
    // (id, send time) of the requests in flight, in order.
    let mut pending: VecDeque<(u64, u64)> = VecDeque::with_capacity(in_flight);
    let mut next_id = 1u64;
    let mut to_send = in_flight;
    let mut ended = None;
    loop {
        if to_send > 0 {
            for _ in 0..to_send {
                pending.push_back((next_id, now_ns()));
                if let Err(e) = ws.feed(client::echo_padded(next_id, &pad)).await {
                    stats.errors.push(format!("send: {e}"));
                    return stats;
                }
                next_id += 1;
            }
            if let Err(e) = ws.flush().await {
                stats.errors.push(format!("flush: {e}"));
                return stats;
            }
            to_send = 0;
        }
        let mut replies = 0;
        let open = read_batch(&mut ws, &mut ended, |m| {
            let Message::Text(t) = m else { return };
            let Some(inc) = Incoming::parse(&t) else {
                stats
                    .errors
                    .push(format!("unparsable message: {}", t.as_str()));
                return;
            };
            if !inc.response {
                return;
            }
            match pending.pop_front() {
                Some((id, sent)) if Some(id) == inc.id => {
                    replies += 1;
                    if inc.ok != Some(true) {
                        stats.errors.push(format!("echo rejected: {}", t.as_str()));
                    } else if phase.get() == MEASURE {
                        stats.ops += 1;
                        local.record(now_ns().saturating_sub(sent));
                    }
                }
                other => stats.errors.push(format!(
                    "response id {:?} but expected {:?}",
                    inc.id,
                    other.map(|p| p.0)
                )),
            }
        })
        .await;
        if !open {
            if phase.get() != DONE || !pending.is_empty() {
                stats
                    .errors
                    .push(format!("connection ended: {}", ended.unwrap_or_default()));
            }
            return stats;
        }
        if phase.get() == DONE {
            if pending.is_empty() {
                break;
            }
        } else {
            to_send = replies;
        }
    }
    drop(local);
    super::close(ws, Duration::from_secs(2)).await;
    stats
}
