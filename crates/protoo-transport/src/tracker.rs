//! [`Tracker`]: a count of work in flight (requests being answered,
//! connection tasks running) that a graceful shutdown waits on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// Set by [`Tracker::close`]: [`Tracker::try_enter`] refuses new work.
    closed: AtomicBool,
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

    /// [`Tracker::enter`], unless the tracker was closed
    /// ([`Tracker::close`]): `None` then, and the work is to be refused
    /// (a graceful shutdown waits only for work that started before it).
    pub fn try_enter(&self) -> Option<TrackerGuard> {
        if self.is_closed() {
            return None;
        }
        let guard = self.enter();
        // Closed meanwhile: the closer may already have seen the count.
        if self.is_closed() {
            return None;
        }
        Some(guard)
    }

    /// Refuses new work from [`Tracker::try_enter`] from now on; the work
    /// already entered is still counted until done.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }

    /// Whether [`Tracker::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
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

    #[test]
    fn a_closed_tracker_refuses_new_work_and_keeps_counting_the_old() {
        let tracker = Tracker::new();
        let old = tracker.try_enter().expect("open");
        tracker.close();
        assert!(tracker.try_enter().is_none());
        assert_eq!(tracker.count(), 1);
        drop(old);
        assert_eq!(tracker.count(), 0);
        // `enter` still counts (connection tasks).
        let _other = tracker.enter();
        assert_eq!(tracker.count(), 1);
    }
}
