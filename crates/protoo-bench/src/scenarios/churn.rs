//! S5: churn. Each worker loops: connect, one echo, close (close handshake
//! completed); the rate is full cycles per second, the latency one cycle.

use std::sync::Arc;
use std::time::Duration;

use super::{DONE, MEASURE, Phase, close, echo_once};
use crate::client::{self, Buffers, now_ns};
use crate::hist::{Local, Shared};
use crate::procfs::{Snap, Window};
use crate::{Errors, Report, Run};

#[derive(Debug, Default)]
struct Stats {
    ops: u64,
    errors: Errors,
}

/// Runs `workers` concurrent churn loops for the window.
pub(crate) async fn run(run: &Run, workers: usize, report: &mut Report) -> Result<(), String> {
    report.set("clients", workers);
    // Fail fast when the server cannot be reached at all.
    let ws = client::connect(&run.target, "churn-probe", "probe", Buffers::Idle).await?;
    close(ws, Duration::from_secs(2)).await;

    let hist = Shared::default();
    let phase = Arc::new(Phase::default());
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let target = run.target.clone();
            let phase = Arc::clone(&phase);
            let hist = hist.clone();
            tokio::spawn(async move {
                let mut stats = Stats::default();
                let mut local = Local::new(&hist);
                let room = format!("churn-{w}");
                let mut i = 0u64;
                while phase.get() != DONE && stats.errors.count < 1000 {
                    let t0 = now_ns();
                    let cycle = async {
                        let peer = format!("p{i}");
                        let mut ws = client::connect(&target, &room, &peer, Buffers::Idle).await?;
                        echo_once(&mut ws, 1, Duration::from_secs(5)).await?;
                        close(ws, Duration::from_secs(5)).await;
                        Ok::<(), String>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(10), cycle).await {
                        Ok(Ok(())) => {
                            if phase.get() == MEASURE {
                                stats.ops += 1;
                                local.record(now_ns().saturating_sub(t0));
                            }
                        }
                        Ok(Err(e)) => stats.errors.push(e),
                        Err(_) => stats.errors.push("churn cycle took over 10 s"),
                    }
                    i += 1;
                }
                stats
            })
        })
        .collect();

    tokio::time::sleep(run.warmup).await;
    let a = Snap::take(run.pid);
    phase.set(MEASURE);
    tokio::time::sleep(run.duration).await;
    phase.set(DONE);
    let b = Snap::take(run.pid);

    let mut ops = 0;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(15), t).await {
            Ok(Ok(s)) => {
                ops += s.ops;
                report.errors(s.errors);
            }
            Ok(Err(e)) => report.error(format!("churn task: {e}")),
            Err(_) => report.error("churn worker did not finish"),
        }
    }
    report.window(&Window::between(&a, &b), ops, "conn");
    let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
    report.latency(&h);
    Ok(())
}
