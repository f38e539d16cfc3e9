//! Rate limits: token buckets for incoming messages and bytes per second,
//! and the fan-out budget a sender spends on broadcasts.
//!
//! A small bucket of our own rather than `governor`: it runs on Tokio's
//! clock, so tests drive it with paused time instead of sleeping, and it is
//! a few integers per peer, behind a lock only the peer's reader task takes.

use tokio::time::Instant;

/// A rate: `per_second` on average, with bursts of up to `burst`.
///
/// ```
/// use protoo_core::Rate;
///
/// let rate = Rate::per_second(100).with_burst(200);
/// assert_eq!((rate.per_second, rate.burst), (100, 200));
/// assert_eq!(Rate::per_second(50).burst, 50);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// Tokens added per second (at least 1).
    pub per_second: u64,
    /// Tokens at most in the bucket: the largest burst (at least
    /// `per_second`).
    pub burst: u64,
}

impl Rate {
    /// `per_second` with a burst of one second's worth.
    pub fn per_second(per_second: u64) -> Self {
        let per_second = per_second.max(1);
        Rate {
            per_second,
            burst: per_second,
        }
    }

    /// Sets [`Rate::burst`] (at least [`Rate::per_second`]).
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = burst.max(self.per_second);
        self
    }
}

/// One token bucket, full at the start.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: Rate,
    /// Tokens, in millionths, so that refills of less than a token add up.
    micro_tokens: u128,
    last: Instant,
}

const MICRO: u128 = 1_000_000;
const MICRO_SIGNED: i128 = 1_000_000;

impl Bucket {
    pub(crate) fn new(rate: Rate) -> Self {
        Bucket {
            rate,
            micro_tokens: u128::from(rate.burst) * MICRO,
            last: Instant::now(),
        }
    }

    /// Takes `tokens` if the bucket holds them. A request for more than the
    /// burst is granted when the bucket is full (then empties it), so a
    /// single large message is never refused for ever.
    pub(crate) fn try_take(&mut self, tokens: u64) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let full = u128::from(self.rate.burst) * MICRO;
        let refill = elapsed.as_micros() * u128::from(self.rate.per_second);
        self.micro_tokens = self.micro_tokens.saturating_add(refill).min(full);
        let wanted = (u128::from(tokens) * MICRO).min(full);
        if self.micro_tokens >= wanted {
            self.micro_tokens -= wanted;
            true
        } else {
            false
        }
    }
}

/// The incoming limits of one peer: messages and bytes.
#[derive(Debug)]
pub(crate) struct Limiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Limiter {
    pub(crate) fn new(messages: Option<Rate>, bytes: Option<Rate>) -> Option<Self> {
        if messages.is_none() && bytes.is_none() {
            return None;
        }
        Some(Limiter {
            messages: messages.map(Bucket::new),
            bytes: bytes.map(Bucket::new),
        })
    }

    /// Whether one message of `len` bytes is within both limits (taking
    /// its tokens if so; a refused message takes none).
    pub(crate) fn allow(&mut self, len: usize) -> bool {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if let Some(bytes) = &mut self.bytes
            && !bytes.try_take(len)
        {
            return false;
        }
        match &mut self.messages {
            Some(messages) => messages.try_take(1),
            None => true,
        }
    }
}

/// The fan-out budget of one sender ([`PeerConfig::fan_out_rate`]): bytes
/// delivered on its behalf (frame length × recipients) per second.
///
/// Unlike [`Bucket`], it may go into debt: a broadcast is let through while
/// the balance is not negative, then charged its whole cost (known only once
/// it is delivered). While in debt, the sender's broadcasts are dropped and
/// its incoming requests and notifications refused, until the debt is paid
/// back at the configured rate. Over any interval `t`, what is delivered on
/// a sender's behalf is at most `burst + per_second × t` plus one
/// broadcast.
///
/// [`PeerConfig::fan_out_rate`]: crate::PeerConfig::fan_out_rate
#[derive(Debug)]
pub(crate) struct FanOut {
    rate: Rate,
    /// The balance, in millionths of a byte; negative in debt.
    micro_bytes: i128,
    last: Instant,
}

impl FanOut {
    pub(crate) fn new(rate: Rate) -> Self {
        FanOut {
            rate,
            micro_bytes: i128::from(rate.burst) * MICRO_SIGNED,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let full = i128::from(self.rate.burst) * MICRO_SIGNED;
        let refill = i128::try_from(elapsed.as_micros())
            .unwrap_or(i128::MAX)
            .saturating_mul(i128::from(self.rate.per_second));
        self.micro_bytes = self.micro_bytes.saturating_add(refill).min(full);
    }

    /// Whether the sender owes bytes: nothing more goes out on its behalf.
    pub(crate) fn in_debt(&mut self) -> bool {
        self.refill();
        self.micro_bytes < 0
    }

    /// Charges `bytes` delivered on the sender's behalf.
    pub(crate) fn charge(&mut self, bytes: u64) {
        self.refill();
        let cost = i128::from(bytes).saturating_mul(MICRO_SIGNED);
        self.micro_bytes = self.micro_bytes.saturating_sub(cost);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let mut bucket = Bucket::new(Rate::per_second(10).with_burst(20));
        let granted = (0..100).filter(|_| bucket.try_take(1)).count();
        assert_eq!(granted, 20);
        tokio::time::advance(SECOND).await;
        let granted = (0..100).filter(|_| bucket.try_take(1)).count();
        assert_eq!(granted, 10);
        tokio::time::advance(SECOND / 10).await;
        assert!(bucket.try_take(1));
        assert!(!bucket.try_take(1));
        // Never more than the burst, however long it waited.
        tokio::time::advance(SECOND * 100).await;
        assert_eq!((0..100).filter(|_| bucket.try_take(1)).count(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_and_messages_both_count() {
        let mut limiter =
            Limiter::new(Some(Rate::per_second(5)), Some(Rate::per_second(1000))).unwrap();
        assert!(limiter.allow(600));
        // 400 bytes left: refused, and no message token taken.
        assert!(!limiter.allow(600));
        for _ in 0..4 {
            assert!(limiter.allow(10));
        }
        assert!(!limiter.allow(10), "five messages per second");
        // A message larger than the byte burst passes once the bucket is full.
        tokio::time::advance(SECOND).await;
        assert!(limiter.allow(5000));
        assert!(Limiter::new(None, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn fan_out_goes_into_debt_and_pays_it_back() {
        let mut fan_out = FanOut::new(Rate::per_second(1000));
        assert!(!fan_out.in_debt());
        // One broadcast larger than the whole burst is let through...
        fan_out.charge(3000);
        // ...and the sender owes 2000 bytes: two seconds.
        assert!(fan_out.in_debt());
        tokio::time::advance(SECOND).await;
        assert!(fan_out.in_debt());
        tokio::time::advance(SECOND).await;
        assert!(!fan_out.in_debt());
        // Never more than the burst in hand, however long it waited.
        tokio::time::advance(SECOND * 100).await;
        fan_out.charge(1001);
        assert!(fan_out.in_debt());
    }
}
