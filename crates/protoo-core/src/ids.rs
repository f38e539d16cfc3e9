//! Request ids: random in `0..=10_000_000` like protoo, never one still
//! pending on the same peer.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest request id protoo draws (`Math.round(Math.random() * 1e7)`).
pub(crate) const MAX_ID: u32 = 10_000_000;

/// A small splitmix64 generator: request ids need to be spread, not secret.
#[derive(Debug)]
pub(crate) struct IdRng(u64);

impl IdRng {
    /// A generator seeded from the standard library's per-process random
    /// keys and a counter, so no two peers share a sequence.
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        IdRng(hasher.finish())
    }

    #[cfg(test)]
    pub(crate) fn from_seed(seed: u64) -> Self {
        IdRng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random id in `0..=MAX_ID`.
    pub(crate) fn next_id(&mut self) -> u32 {
        // The modulo bias (about 1e-12) does not matter here.
        (self.next_u64() % (u64::from(MAX_ID) + 1)) as u32
    }

    /// A random id that is not a key of `pending`.
    pub(crate) fn free_id<V>(&mut self, pending: &HashMap<u32, V>) -> u32 {
        loop {
            let id = self.next_id();
            if !pending.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_protoo_range() {
        let mut rng = IdRng::new();
        for _ in 0..10_000 {
            assert!(rng.next_id() <= MAX_ID);
        }
    }

    #[test]
    fn a_pending_id_is_never_reused() {
        // The same seed gives the same sequence: occupy its first ids.
        let mut probe = IdRng::from_seed(42);
        let mut pending = HashMap::new();
        for _ in 0..3 {
            pending.insert(probe.next_id(), ());
        }
        let mut rng = IdRng::from_seed(42);
        let id = rng.free_id(&pending);
        assert!(!pending.contains_key(&id));
    }

    #[test]
    fn seeds_differ() {
        let (mut a, mut b) = (IdRng::new(), IdRng::new());
        let xs: Vec<u32> = (0..4).map(|_| a.next_id()).collect();
        let ys: Vec<u32> = (0..4).map(|_| b.next_id()).collect();
        assert_ne!(xs, ys);
    }
}
