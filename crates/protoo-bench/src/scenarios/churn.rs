//! S5: churn. Each worker loops: connect, one echo, close (close handshake
//! completed); the rate is full cycles per second, the latency one cycle.

use std::sync::Arc;
use std::time::Duration;

use super::{DONE, MEASURE, Phase, Stats, close, echo_once};
use crate::client::{self, Buffers, now_ns};
use crate::hist::{Local, Shared};
use crate::{Report, Run};

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

    super::measure(
        run,
        &phase,
        tasks,
        &hist,
        Duration::from_secs(15),
        "conn",
        report,
    )
    .await;
    Ok(())
}
