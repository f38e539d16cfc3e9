use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts work in flight (requests being answered, connection tasks
/// running) so that a graceful shutdown can wait until it is all done.
///
/// Each piece of work holds a [`TrackerGuard`] from [`Tracker::enter`] and
/// drops it when done; [`Tracker::idle`] completes once none is held.
/// Clones share the count.
#[derive(Clone, Default)]
pub struct Tracker(Arc<Inner>);

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

impl Tracker {
    /// A tracker with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks one piece of work as in flight until the guard is dropped.
    pub fn enter(&self) -> TrackerGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        TrackerGuard(self.clone())
    }

    /// How many guards are held.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Completes when no guard is held.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("in_flight", &self.count())
            .finish()
    }
}

/// One piece of work counted by a [`Tracker`]; dropping it ends the work.
#[derive(Debug)]
pub struct TrackerGuard(Tracker);

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_after_last_guard() {
        let tracker = Tracker::new();
        tracker.idle().await;
        let a = tracker.enter();
        let b = tracker.enter();
        assert_eq!(tracker.count(), 2);
        let waiter = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.idle().await }
        });
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
        assert_eq!(tracker.count(), 0);
    }
}
