//! The scenarios, and what they share.

pub(crate) mod amplify;
pub(crate) mod blips;
pub(crate) mod broadcast;
pub(crate) mod churn;
pub(crate) mod drain;
pub(crate) mod flood;
pub(crate) mod idle;
pub(crate) mod rr;
pub(crate) mod shape;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::{self, Buffers, Incoming, Ws};
use crate::hist::Shared;
use crate::procfs::{Snap, Window};
use crate::{Errors, Report, Run};

/// What one worker task of a closed-loop scenario did in the window.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Operations completed inside the window.
    pub(crate) ops: u64,
    /// What went wrong.
    pub(crate) errors: Errors,
}

/// Runs the window of a closed-loop scenario whose `workers` are already
/// going: warm-up, then the measured window (server CPU and RSS read at its
/// edges), then stops them and reports their operations as `unit` per
/// second and the latency histogram. A worker not done within `join` of the
/// window's end is reported as an error.
pub(crate) async fn measure(
    run: &Run,
    phase: &Phase,
    workers: Vec<JoinHandle<Stats>>,
    hist: &Shared,
    join: Duration,
    unit: &'static str,
    report: &mut Report,
) {
    tokio::time::sleep(run.warmup).await;
    let a = Snap::take(&run.procs);
    phase.set(MEASURE);
    tokio::time::sleep(run.duration).await;
    phase.set(DONE);
    let b = Snap::take(&run.procs);

    let mut ops = 0;
    for worker in workers {
        match tokio::time::timeout(join, worker).await {
            Ok(Ok(s)) => {
                ops += s.ops;
                report.errors(s.errors);
            }
            Ok(Err(e)) => report.error(format!("worker task: {e}")),
            Err(_) => report.error(format!(
                "a worker did not finish within {join:?} of the window's end"
            )),
        }
    }
    report.window(&Window::between(&a, &b), ops, unit);
    let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
    report.latency(&h);
}

/// Counts one more arrival of the chat numbered `seq` (from 1) in `got`.
pub(crate) fn count_arrival(got: &mut Vec<u32>, seq: u64) {
    let i = (seq - 1) as usize;
    if got.len() <= i {
        got.resize(i + 1, 0);
    }
    got[i] += 1;
}

/// Before the measurement window: traffic flows, nothing is recorded.
pub(crate) const WARMUP: u8 = 0;
/// Inside the window: completed operations are counted and timed.
pub(crate) const MEASURE: u8 = 1;
/// After the window: no new work starts.
pub(crate) const DONE: u8 = 2;

/// The phase of a scenario, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct Phase(AtomicU8);

impl Phase {
    /// The current phase.
    pub(crate) fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves to `p`.
    pub(crate) fn set(&self, p: u8) {
        self.0.store(p, Ordering::SeqCst);
    }
}

/// Reads the next frame and then every frame already buffered, calling `f`
/// with each; returns `false` once the connection has ended (with the reason
/// in `ended`). This lets a task answer a whole batch with one flush.
pub(crate) async fn read_batch<S>(
    ws: &mut S,
    ended: &mut Option<String>,
    mut f: impl FnMut(Message),
) -> bool
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut item = ws.next().await;
    loop {
        match item {
            Some(Ok(Message::Close(frame))) => {
                *ended = Some(match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close (no code)".to_owned(),
                });
                return false;
            }
            Some(Ok(m)) => f(m),
            Some(Err(e)) => {
                *ended = Some(format!("error: {e}"));
                return false;
            }
            None => {
                *ended = Some("end of stream".to_owned());
                return false;
            }
        }
        match ws.next().now_or_never() {
            Some(next) => item = next,
            None => return true,
        }
    }
}

/// Connects `n` reading members, `run.connect_concurrency` handshakes at a
/// time; returned in order (receiver `k` is member `k + 1` of `n + 1`, the
/// sender being member 0: see [`Run::node_of`] for the node it is on).
pub(crate) async fn connect_many(run: &Run, room: &str, n: usize) -> Result<Vec<Ws>, String> {
    connect_many_on(run, room, n, None).await
}

/// [`connect_many`], every member on node `node` when it is given (a room
/// served by one process of several).
pub(crate) async fn connect_many_on(
    run: &Run,
    room: &str,
    n: usize,
    node: Option<usize>,
) -> Result<Vec<Ws>, String> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(run.connect_concurrency);
        let mut set = tokio::task::JoinSet::new();
        for k in i..i + chunk {
            let node = node.unwrap_or_else(|| run.node_of(k + 1, n + 1));
            let target = run.targets[node].clone();
            let room = room.to_owned();
            set.spawn(async move {
                let ws = client::connect(&target, &room, &format!("r{k}"), Buffers::Busy).await;
                (k, ws)
            });
        }
        let mut chunk_out = Vec::with_capacity(chunk);
        while let Some(r) = set.join_next().await {
            let (k, ws) = r.map_err(|e| e.to_string())?;
            chunk_out.push((k, ws?));
        }
        chunk_out.sort_by_key(|(k, _)| *k);
        out.extend(chunk_out.into_iter().map(|(_, ws)| ws));
        i += chunk;
    }
    Ok(out)
}

/// Sends one echo request and waits for its response; returns the round
/// trip in nanoseconds.
pub(crate) async fn echo_once(ws: &mut Ws, id: u64, timeout: Duration) -> Result<u64, String> {
    request_once(ws, id, "echo", client::echo(id), timeout)
        .await
        .map(|(ns, _)| ns)
}

/// Sends `request` (a `method` request numbered `id`) and waits for its
/// response, ignoring notifications meanwhile; returns the round trip in
/// nanoseconds and the response's data (raw JSON, `null` when it has none).
pub(crate) async fn request_once(
    ws: &mut Ws,
    id: u64,
    method: &str,
    request: Message,
    timeout: Duration,
) -> Result<(u64, String), String> {
    let t0 = client::now_ns();
    ws.send(request)
        .await
        .map_err(|e| format!("send {method}: {e}"))?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let Some(inc) = Incoming::parse(&t) else {
                        return Err(format!("unparsable message: {}", t.as_str()));
                    };
                    if inc.response && inc.id == Some(id) {
                        return if inc.ok == Some(true) {
                            let data = inc.data.map_or("null", |d| d.get()).to_owned();
                            Ok((client::now_ns().saturating_sub(t0), data))
                        } else {
                            Err(format!(
                                "{method} rejected: {}",
                                inc.error_reason.as_deref().unwrap_or("?")
                            ))
                        };
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!("closed before the {method} response: {f:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err(format!("closed before the {method} response")),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("timed out waiting for the {method} response"))?
}

/// Closes politely (close frame, then reads until the server closes), bounded in time.
pub(crate) async fn close(mut ws: Ws, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
