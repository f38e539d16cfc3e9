//! The scenarios, and what they share.

pub(crate) mod broadcast;
pub(crate) mod churn;
pub(crate) mod flood;
pub(crate) mod idle;
pub(crate) mod rr;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::{Incoming, Ws};
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
    let a = Snap::take(run.pid);
    phase.set(MEASURE);
    tokio::time::sleep(run.duration).await;
    phase.set(DONE);
    let b = Snap::take(run.pid);

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

/// Sends one echo request and waits for its response; returns the round
/// trip in nanoseconds.
pub(crate) async fn echo_once(ws: &mut Ws, id: u64, timeout: Duration) -> Result<u64, String> {
    let t0 = crate::client::now_ns();
    ws.send(crate::client::echo(id))
        .await
        .map_err(|e| format!("send echo: {e}"))?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let Some(inc) = Incoming::parse(&t) else {
                        return Err(format!("unparsable message: {}", t.as_str()));
                    };
                    if inc.response && inc.id == Some(id) {
                        return if inc.ok == Some(true) {
                            Ok(crate::client::now_ns().saturating_sub(t0))
                        } else {
                            Err(format!(
                                "echo rejected: {}",
                                inc.error_reason.as_deref().unwrap_or("?")
                            ))
                        };
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!("closed before the echo response: {f:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("closed before the echo response".to_owned()),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| "timed out waiting for the echo response".to_owned())?
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
