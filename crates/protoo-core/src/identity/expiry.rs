//! The expiry queue of a registry: the peers whose identity expires, by
//! deadline, and the one task that closes them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::TOKEN_EXPIRED_REASON;
use crate::peer::PeerState;
use crate::sync::lock;

/// The peers of a registry that expire, by deadline, and the one task that
/// closes them: a peer with an identity pays an entry here, not a timer
/// task of its own.
pub(crate) struct Expiries {
    state: Mutex<ExpiryState>,
    wake: Notify,
    /// What the keys count milliseconds from.
    base: Instant,
}

/// The queue's keys: milliseconds since `base` (rounded up) in the high
/// bits, a sequence number in the low ones: 16 bytes an entry.
const SEQ_BITS: u32 = 20;

#[derive(Default)]
struct ExpiryState {
    queue: BTreeMap<u64, Weak<PeerState>>,
    next: u64,
    started: bool,
    closed: bool,
}

impl Default for Expiries {
    fn default() -> Self {
        Expiries {
            state: Mutex::default(),
            wake: Notify::new(),
            base: Instant::now(),
        }
    }
}

impl Expiries {
    /// The key's time.
    fn at(&self, key: u64) -> Instant {
        self.base + Duration::from_millis(key >> SEQ_BITS)
    }

    /// The first key after every key due at `now`.
    fn due_before(&self, now: Instant) -> u64 {
        let millis = now.saturating_duration_since(self.base).as_millis();
        let millis = u64::try_from(millis).unwrap_or(u64::MAX >> SEQ_BITS);
        (millis + 1) << SEQ_BITS
    }

    /// Closes `core` (a peer with an identity) at `at`, unless its identity
    /// is refreshed by then; its entry replaces the one it had. `handle`
    /// starts the queue's task if it is not running yet.
    pub(crate) fn expire(
        self: &Arc<Self>,
        core: &Arc<PeerState>,
        at: Instant,
        handle: Option<&Handle>,
    ) {
        let Some(slot) = core.identity.as_deref() else {
            return;
        };
        let Some(key) = self.schedule(at, Arc::downgrade(core), handle) else {
            return;
        };
        if let Some(old) = slot.replace_key(key) {
            self.cancel(old);
        }
        // Closed meanwhile (its leave found no entry to take out yet): no
        // entry kept for it.
        if core.is_closed()
            && let Some(key) = slot.take_key()
        {
            self.cancel(key);
        }
    }

    /// Forgets the entry `key` (its peer closed): no closed peer's memory
    /// is kept until its token would have expired.
    pub(crate) fn cancel(&self, key: u64) {
        let removed = lock(&self.state).queue.remove(&key);
        drop(removed);
    }

    /// Queues `core` to be closed at `at`, starting the task on `handle`
    /// the first time; its key.
    fn schedule(
        self: &Arc<Self>,
        at: Instant,
        core: Weak<PeerState>,
        handle: Option<&Handle>,
    ) -> Option<u64> {
        let since = at.saturating_duration_since(self.base);
        // Rounded up: never early. Capped at some 500 years.
        let millis = since.as_nanos().div_ceil(1_000_000);
        let millis = u64::try_from(millis)
            .unwrap_or(u64::MAX)
            .min(u64::MAX >> SEQ_BITS >> 1);
        let (key, first) = {
            let mut state = lock(&self.state);
            if state.closed {
                return None;
            }
            let mut key;
            loop {
                key = (millis << SEQ_BITS) | (state.next & ((1 << SEQ_BITS) - 1));
                state.next = state.next.wrapping_add(1);
                if !state.queue.contains_key(&key) {
                    break;
                }
            }
            state.queue.insert(key, core);
            if !state.started
                && let Some(handle) = handle
            {
                state.started = true;
                handle.spawn(run(self.clone()));
            }
            let first = state
                .queue
                .first_key_value()
                .is_some_and(|(first, _)| *first == key);
            (key, first)
        };
        if first {
            self.wake.notify_one();
        }
        Some(key)
    }

    /// Entries queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// The registry is gone: the task ends.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }
}

/// The expiry task: sleeps until the first deadline, closes what is due.
async fn run(expiries: Arc<Expiries>) {
    loop {
        let next = {
            let state = lock(&expiries.state);
            if state.closed {
                return;
            }
            state
                .queue
                .first_key_value()
                .map(|(key, _)| expiries.at(*key))
        };
        match next {
            None => expiries.wake.notified().await,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = expiries.wake.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        let due: Vec<(u64, Weak<PeerState>)> = {
            let mut state = lock(&expiries.state);
            let later = state.queue.split_off(&expiries.due_before(now));
            std::mem::replace(&mut state.queue, later)
                .into_iter()
                .collect()
        };
        for (key, core) in due {
            let Some(core) = core.upgrade() else { continue };
            let Some(slot) = core.identity.as_deref() else {
                continue;
            };
            // Not if a refresh replaced the entry meanwhile.
            if slot.take_due(key) && !core.is_closed() {
                tracing::debug!(
                    peer_id = %protoo_transport::log::Remote(&core.id),
                    "identity expired: closing the peer"
                );
                core.close_locally(
                    protoo_transport::close_code::PROTOO_CLOSED,
                    TOKEN_EXPIRED_REASON,
                );
            }
        }
    }
}
