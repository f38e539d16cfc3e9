//! The incoming byte budget of a peer: what a remote can make the server
//! hold, counted by the bytes of the frames kept alive.
//!
//! Every incoming request and notification is charged the length of its
//! whole frame (a zero-copy [`Payload`](protoo_codec::Payload) pins it) from
//! the moment it is read until the application is done with it: a
//! notification until it is dropped, a request until it is answered (or
//! dropped, which answers 500). Requests are also counted, against
//! [`PeerConfig::max_unanswered_requests`](crate::PeerConfig::max_unanswered_requests).
//!
//! Only the peer's reader task charges; any task releases. A frame that does
//! not fit is refused (see [`Budget::try_charge`]); a frame arriving while
//! nothing is held always fits, so a single message larger than the budget
//! still works and the bound is the budget or one frame, whichever is
//! larger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The counters of one peer.
#[derive(Debug)]
pub(crate) struct Budget {
    max_bytes: usize,
    max_requests: usize,
    held: AtomicUsize,
    requests: AtomicUsize,
    /// Requests answered at once and notifications dropped because the
    /// budget (or the rate limit) was exceeded.
    refused: AtomicU64,
}

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Over {
    /// The bytes held plus this frame would pass the byte budget.
    Bytes,
    /// As many requests as allowed wait for their answer.
    Requests,
}

impl Budget {
    pub(crate) fn new(max_bytes: usize, max_requests: usize) -> Arc<Self> {
        Arc::new(Budget {
            max_bytes,
            max_requests: max_requests.max(1),
            held: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Bytes of incoming frames held.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Incoming requests not yet answered.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// Incoming messages refused so far (over budget or rate).
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Charges a frame of `bytes` (a request when `request`), or says why
    /// it does not fit. Called by the one reader task only, so the check
    /// and the charge cannot race with another charge (releases only make
    /// room meanwhile).
    pub(crate) fn try_charge(
        self: &Arc<Self>,
        bytes: usize,
        request: bool,
    ) -> Result<Charge, Over> {
        // Counted in a `u32` (frames are far smaller), so that every
        // request stays small.
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        if request && self.requests() >= self.max_requests {
            return Err(Over::Requests);
        }
        let held = self.held();
        if held > 0 && held.saturating_add(bytes as usize) > self.max_bytes {
            return Err(Over::Bytes);
        }
        self.held.fetch_add(bytes as usize, Ordering::AcqRel);
        if request {
            self.requests.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Charge {
            budget: self.clone(),
            bytes,
            request,
        })
    }
}

/// What one incoming message holds of its peer's budget; released when
/// dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: u32,
    request: bool,
}

impl Charge {
    /// The bytes charged.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes as usize
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget
            .held
            .fetch_sub(self.bytes as usize, Ordering::AcqRel);
        if self.request {
            self.budget.requests.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_requests_are_held_until_released() {
        let budget = Budget::new(1000, 2);
        let a = budget.try_charge(600, true).unwrap();
        assert_eq!((budget.held(), budget.requests()), (600, 1));
        assert_eq!(budget.try_charge(500, false).unwrap_err(), Over::Bytes);
        let b = budget.try_charge(400, true).unwrap();
        assert_eq!(budget.try_charge(1, true).unwrap_err(), Over::Requests);
        drop(a);
        assert_eq!((budget.held(), budget.requests()), (400, 1));
        drop(b);
        assert_eq!((budget.held(), budget.requests()), (0, 0));
    }

    #[test]
    fn one_frame_larger_than_the_budget_fits_when_nothing_is_held() {
        let budget = Budget::new(1000, 8);
        let big = budget.try_charge(5000, false).unwrap();
        assert_eq!(budget.try_charge(1, false).unwrap_err(), Over::Bytes);
        drop(big);
        assert!(budget.try_charge(1, false).is_ok());
    }
}
