//! The expiry queue of a registry: the peers whose identity expires, by
//! deadline, and the one task that closes them. Beside the peer's state it
//! closes, not in `identity`, which stays below the peer.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::PeerState;
use crate::identity::{IdentitySlot, TOKEN_EXPIRED_REASON};
use crate::sync::lock;

/// The peers of a registry that expire, by deadline, and the one task that
/// closes them: a peer with an identity pays an entry here (16 bytes), not
/// a timer task of its own.
pub(crate) struct Expiries {
    state: Mutex<ExpiryState>,
    wake: Notify,
    /// What the deadlines count milliseconds from.
    base: Instant,
}

#[derive(Default)]
struct ExpiryState {
    /// A binary min-heap by deadline. Each entry's peer knows its place
    /// ([`IdentitySlot::position`]), so that a closing peer's entry leaves
    /// at once: no closed peer's memory is kept until its token would have
    /// expired.
    heap: Vec<Entry>,
    started: bool,
    closed: bool,
}

/// A peer's entry in the queue.
struct Entry {
    /// Milliseconds since [`Expiries::base`], rounded up: never early.
    at: u64,
    peer: Weak<PeerState>,
}

/// The peers reached, under the queue's lock, to tell them their place:
/// dropped once the lock is released (a peer's last reference may go with
/// them).
type Reached = Vec<Arc<PeerState>>;

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
    /// Milliseconds since `base` to `at`, rounded up: never early. Capped
    /// at some 500 million years.
    fn millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .min(u64::MAX >> 1)
    }

    /// The time of an entry.
    fn at(&self, millis: u64) -> Instant {
        self.base + Duration::from_millis(millis)
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
        let at = self.millis(at);
        let mut reached = Reached::new();
        let first = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            let place = match state.find(core, slot) {
                Some(place) => {
                    state.heap[place].at = at;
                    place
                }
                None => {
                    state.heap.push(Entry {
                        at,
                        peer: Arc::downgrade(core),
                    });
                    state.heap.len() - 1
                }
            };
            state.fix(place, &mut reached);
            if !state.started
                && let Some(handle) = handle
            {
                state.started = true;
                handle.spawn(run(self.clone()));
            }
            state
                .heap
                .first()
                .is_some_and(|first| std::ptr::eq(first.peer.as_ptr(), Arc::as_ptr(core)))
        };
        drop(reached);
        if first {
            self.wake.notify_one();
        }
        // Closed meanwhile (its leave found no entry to take out yet): no
        // entry kept for it.
        if core.is_closed() {
            self.cancel(core);
        }
    }

    /// Takes `core`'s entry out (it closed): no closed peer's memory is
    /// kept until its token would have expired.
    pub(crate) fn cancel(&self, core: &Arc<PeerState>) {
        let Some(slot) = core.identity.as_deref() else {
            return;
        };
        let mut reached = Reached::new();
        let removed = {
            let mut state = lock(&self.state);
            state
                .find(core, slot)
                .map(|place| state.remove(place, &mut reached))
        };
        drop((removed, reached));
    }

    /// Entries queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).heap.len()
    }

    /// The registry is gone: the task ends.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_one();
    }
}

impl ExpiryState {
    /// Where `core`'s entry is, if it has one.
    fn find(&self, core: &Arc<PeerState>, slot: &IdentitySlot) -> Option<usize> {
        let place = slot.position()?;
        let entry = self.heap.get(place)?;
        std::ptr::eq(entry.peer.as_ptr(), Arc::as_ptr(core)).then_some(place)
    }

    /// Tells the peer of the entry at `place` where it is (`None`: out).
    fn tell(entry: &Entry, place: Option<usize>, reached: &mut Reached) {
        // A peer that cannot be reached is gone: nobody asks for its place.
        if let Some(core) = entry.peer.upgrade() {
            if let Some(slot) = core.identity.as_deref() {
                slot.set_position(place);
            }
            reached.push(core);
        }
    }

    /// Moves the entry at `place` where its deadline puts it.
    fn fix(&mut self, place: usize, reached: &mut Reached) {
        if place > 0 && self.heap[place].at < self.heap[(place - 1) / 2].at {
            self.sift_up(place, reached);
        } else {
            self.sift_down(place, reached);
        }
    }

    fn sift_up(&mut self, mut place: usize, reached: &mut Reached) {
        while place > 0 {
            let parent = (place - 1) / 2;
            if self.heap[parent].at <= self.heap[place].at {
                break;
            }
            self.heap.swap(parent, place);
            Self::tell(&self.heap[place], Some(place), reached);
            place = parent;
        }
        Self::tell(&self.heap[place], Some(place), reached);
    }

    fn sift_down(&mut self, mut place: usize, reached: &mut Reached) {
        let len = self.heap.len();
        loop {
            let left = 2 * place + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].at < self.heap[left].at {
                right
            } else {
                left
            };
            if self.heap[place].at <= self.heap[child].at {
                break;
            }
            self.heap.swap(place, child);
            Self::tell(&self.heap[place], Some(place), reached);
            place = child;
        }
        Self::tell(&self.heap[place], Some(place), reached);
    }

    /// Takes the entry at `place` out, the others reordered.
    fn remove(&mut self, place: usize, reached: &mut Reached) -> Entry {
        let entry = self.heap.swap_remove(place);
        Self::tell(&entry, None, reached);
        if place < self.heap.len() {
            // The last entry took its place.
            self.fix(place, reached);
        }
        entry
    }

    /// Takes out the entries due at `now` (milliseconds since the base).
    fn due(&mut self, now: u64, reached: &mut Reached) -> Vec<Weak<PeerState>> {
        let mut due = Vec::new();
        while self.heap.first().is_some_and(|first| first.at <= now) {
            due.push(self.remove(0, reached).peer);
        }
        due
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
            state.heap.first().map(|first| expiries.at(first.at))
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
        let now = Instant::now().saturating_duration_since(expiries.base);
        let now = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let mut reached = Reached::new();
        let due = lock(&expiries.state).due(now, &mut reached);
        drop(reached);
        for core in due {
            let Some(core) = core.upgrade() else { continue };
            let Some(slot) = core.identity.as_deref() else {
                continue;
            };
            // Not if a refresh queued it again meanwhile.
            if slot.position().is_none() && !core.is_closed() {
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
