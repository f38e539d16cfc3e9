//! A small log-linear latency histogram (values in nanoseconds).
//!
//! Each power of two is split into 64 buckets, so a reported quantile is
//! within about 1.6 % of the true value; the whole `u64` range fits in
//! 3,776 counters. Workers record into a [`Local`] buffer that is merged into
//! the shared histogram every few hundred samples, so the lock is rare.

use std::sync::{Arc, Mutex, PoisonError};

const BITS: u32 = 6;
const SUB: u64 = 1 << BITS;
const BUCKETS: usize = (2 * SUB + (63 - BITS as u64) * SUB) as usize;

/// Counts of values by bucket.
#[derive(Debug, Clone)]
pub(crate) struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - BITS;
    let top = v >> shift;
    (2 * SUB + u64::from(shift - 1) * SUB + (top - SUB)) as usize
}

/// The middle of the bucket at `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let k = i - 2 * SUB;
    let shift = k / SUB + 1;
    let top = k % SUB + SUB;
    (top << shift) + ((1u64 << shift) >> 1)
}

impl Hist {
    /// Records one value.
    pub(crate) fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c += 1;
            self.total += 1;
            self.max = self.max.max(v);
        }
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0.0..=1.0), or 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
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
    fn index_and_value_round_trip_within_precision() {
        for v in (0..2_000_000u64)
            .step_by(7)
            .chain([u64::MAX, 1 << 40, 12_345_678_901])
        {
            let i = index(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            let back = value(i);
            let err = back.abs_diff(v) as f64 / (v.max(1)) as f64;
            assert!(err <= 1.0 / SUB as f64, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(Hist::default().quantile(0.5), 0);
    }
}
