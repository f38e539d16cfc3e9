//! Warnings a remote can trigger (invalid frames, responses to unknown ids,
//! binary messages, messages over budget or rate), limited per peer so that
//! a remote cannot flood the log.
//!
//! In each period of [`PERIOD`], the first [`BURST`] such warnings of a peer
//! are logged at WARN; the rest go to DEBUG and are counted. The first
//! warning after the period (or the peer's close) logs a summary at WARN
//! with how many were held back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::peer::lock;

/// Warnings logged at WARN per peer and period.
pub(crate) const BURST: u32 = 5;

/// The period after which a peer's warnings are logged again, with a
/// summary of those held back.
pub(crate) const PERIOD: Duration = Duration::from_secs(60);

/// What to do with one remote-triggered warning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it at WARN; `held_back` warnings (if any) were only logged at
    /// DEBUG since the last summary: say so first.
    Warn { held_back: u64 },
    /// Log it at DEBUG.
    Debug,
}

#[derive(Debug, Default)]
struct State {
    start: Option<Instant>,
    logged: u32,
    held_back: u64,
}

/// The warning limiter of one peer.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    state: Mutex<State>,
}

impl LogLimit {
    /// Counts one warning and says how to log it.
    pub(crate) fn verdict(&self) -> Verdict {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let expired = state
            .start
            .is_none_or(|start| now.duration_since(start) >= PERIOD);
        if expired {
            let held_back = std::mem::take(&mut state.held_back);
            state.start = Some(now);
            state.logged = 1;
            return Verdict::Warn { held_back };
        }
        if state.logged < BURST {
            state.logged += 1;
            return Verdict::Warn { held_back: 0 };
        }
        state.held_back += 1;
        Verdict::Debug
    }

    /// Warnings held back since the last summary (logged when the peer
    /// closes).
    pub(crate) fn take_held_back(&self) -> u64 {
        std::mem::take(&mut lock(&self.state).held_back)
    }
}

/// Logs a remote-triggered warning through the peer's [`LogLimit`]: at WARN
/// while within the limit (after a summary of those held back, if any), at
/// DEBUG beyond it.
macro_rules! remote_warn {
    ($core:expr, $($arg:tt)+) => {
        match $core.log_limit.verdict() {
            $crate::log_limit::Verdict::Warn { held_back } => {
                if held_back > 0 {
                    tracing::warn!(
                        peer_id = %$core.id,
                        held_back,
                        "more warnings caused by this peer were logged at debug level only"
                    );
                }
                tracing::warn!(peer_id = %$core.id, $($arg)+);
            }
            $crate::log_limit::Verdict::Debug => tracing::debug!(peer_id = %$core.id, $($arg)+),
        }
    };
}
pub(crate) use remote_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_few_then_a_summary_each_period() {
        let limit = LogLimit::default();
        for _ in 0..BURST {
            assert_eq!(limit.verdict(), Verdict::Warn { held_back: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(limit.verdict(), Verdict::Debug);
        }
        tokio::time::advance(PERIOD).await;
        assert_eq!(limit.verdict(), Verdict::Warn { held_back: 1000 });
        assert_eq!(limit.verdict(), Verdict::Warn { held_back: 0 });
        for _ in 0..BURST {
            limit.verdict();
        }
        assert_eq!(limit.take_held_back(), 2);
        assert_eq!(limit.take_held_back(), 0);
    }
}
