//! Latency histograms (values in nanoseconds), on `hdrhistogram`.
//!
//! Three significant digits: a reported quantile is within 0.1 % of the true
//! value, from 1 ns to an hour. Workers record into a [`Local`] buffer that
//! is merged into the shared histogram every few hundred samples, so the
//! lock is rare.

use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

/// The largest value tracked exactly (one hour in ns); larger values are
/// recorded as this (a latency that long is a failure either way).
const HIGHEST: u64 = 3_600_000_000_000;

/// Counts of values.
#[derive(Debug, Clone)]
pub(crate) struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, HIGHEST, 3)
                .expect("1 ns..=1 h at three significant digits is a valid histogram"),
        )
    }
}

impl Hist {
    /// Records one value.
    pub(crate) fn record(&mut self, v: u64) {
        self.0.saturating_record(v.max(1));
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The value at quantile `q` (0.0..=1.0), or 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.value_at_quantile(q.clamp(0.0, 1.0))
    }
}

/// A histogram shared by many tasks.
pub(crate) type Shared = Arc<Mutex<Hist>>;

/// A per-task buffer of samples, merged into a [`Shared`] histogram when full
/// and when dropped.
#[derive(Debug)]
pub(crate) struct Local {
    buf: Vec<u64>,
    shared: Shared,
}

impl Local {
    const CAP: usize = 512;

    /// A buffer that merges into `shared`.
    pub(crate) fn new(shared: &Shared) -> Self {
        Self {
            buf: Vec::with_capacity(Self::CAP),
            shared: Arc::clone(shared),
        }
    }

    /// Records one value.
    pub(crate) fn record(&mut self, v: u64) {
        self.buf.push(v);
        if self.buf.len() >= Self::CAP {
            self.flush();
        }
    }

    /// Merges the buffered samples into the shared histogram.
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut h = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for v in self.buf.drain(..) {
            h.record(v);
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.002, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.002, "{p99}");
        assert!((h.quantile(1.0) as f64 / 1_000_000.0 - 1.0).abs() < 0.002);
        assert_eq!(h.count(), 1000);
        assert_eq!(Hist::default().quantile(0.5), 0);
    }
}
