//! Per-thread shards of the counts every message touches, and their flush
//! to the recorder (see [`flush`](super::flush)).
//!
//! Each thread adds to a shard of its own: only that thread writes it (a
//! load and a store, no contended cache line, no atomic read-modify-write).
//! The flush reads every shard and hands the recorder what each slot grew
//! by since the last flush; it runs under the registry's lock, so two
//! flushes never count the same growth twice. A thread that ends leaves its
//! shard for one last flush.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use ::metrics::{counter, gauge};

use crate::sync::lock;

use super::{
    BYTES_RECEIVED, BYTES_SENT, MESSAGES_RECEIVED, MESSAGES_SENT, OUTCOMES, PEERS,
    REQUESTS_ANSWERED, REQUESTS_SENT,
};

/// `protoo_messages_received_total`, by kind (3 slots).
pub(super) const RECEIVED: usize = 0;
pub(super) const RECEIVED_BYTES: usize = 3;
/// `protoo_messages_sent_total`, by kind (4 slots).
pub(super) const SENT: usize = 4;
pub(super) const SENT_BYTES: usize = 8;
/// `protoo_requests_answered_total`, by outcome (4 slots).
pub(super) const ANSWERED: usize = 9;
/// `protoo_requests_sent_total`, by outcome (6 slots).
pub(super) const REQUESTS: usize = 13;
/// Peers opened minus peers closed (wrapping: a close adds `u64::MAX`).
pub(super) const PEERS_DELTA: usize = 19;
const SLOTS: usize = 20;

/// How often the counts reach the recorder without a [`flush`] call.
const EVERY: Duration = Duration::from_secs(1);

const KINDS: [&str; 4] = ["request", "response", "notification", "other"];

/// One thread's counts, on cache lines of their own.
#[repr(align(64))]
struct Shard {
    slots: [AtomicU64; SLOTS],
    /// Its thread ended: flushed once more, then forgotten.
    retired: AtomicBool,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            slots: [const { AtomicU64::new(0) }; SLOTS],
            retired: AtomicBool::new(false),
        }
    }
}

/// A shard and what the recorder has had of it.
struct Entry {
    shard: Arc<Shard>,
    flushed: [u64; SLOTS],
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The shard of counts made while a thread's own is gone (in its thread's
/// destructors): written by any thread, so with atomic adds.
static SHARED: Shard = Shard::new();
static SHARED_FLUSHED: Mutex<[u64; SLOTS]> = Mutex::new([0; SLOTS]);

/// The current thread's shard, registered on first use.
struct Local(Arc<Shard>);

impl Drop for Local {
    fn drop(&mut self) {
        self.0.retired.store(true, Ordering::Release);
    }
}

thread_local! {
    static LOCAL: Local = register();
}

fn register() -> Local {
    static FLUSHER: Once = Once::new();
    FLUSHER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("protoo-metrics".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(EVERY);
                    flush();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no metrics flusher thread: counts reach the recorder on flush() only");
        }
    });
    let shard = Arc::new(Shard::new());
    lock(&REGISTRY).push(Entry {
        shard: shard.clone(),
        flushed: [0; SLOTS],
    });
    Local(shard)
}

/// Adds `n` to `slot` of this thread's shard.
#[inline]
pub(super) fn add(slot: usize, n: u64) {
    let added = LOCAL.try_with(|local| bump(&local.0.slots[slot], n));
    if added.is_err() {
        SHARED.slots[slot].fetch_add(n, Ordering::Relaxed);
    }
}

/// [`add`] to two slots at once (a message and its bytes).
#[inline]
pub(super) fn add2(slot: usize, n: u64, other: usize, m: u64) {
    let added = LOCAL.try_with(|local| {
        bump(&local.0.slots[slot], n);
        bump(&local.0.slots[other], m);
    });
    if added.is_err() {
        SHARED.slots[slot].fetch_add(n, Ordering::Relaxed);
        SHARED.slots[other].fetch_add(m, Ordering::Relaxed);
    }
}

/// Only the owning thread writes its shard: a load and a store.
#[inline]
fn bump(slot: &AtomicU64, n: u64) {
    slot.store(
        slot.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Hands the growth of every shard since the last flush to the recorder.
pub(super) fn flush() {
    let mut grown = [0u64; SLOTS];
    {
        let mut registry = lock(&REGISTRY);
        for entry in registry.iter_mut() {
            collect(&entry.shard, &mut entry.flushed, &mut grown);
        }
        registry.retain(|entry| !entry.shard.retired.load(Ordering::Acquire));
        collect(&SHARED, &mut lock(&SHARED_FLUSHED), &mut grown);
    }
    publish(&grown);
}

/// Adds what `shard` grew by since `flushed` to `grown`.
fn collect(shard: &Shard, flushed: &mut [u64; SLOTS], grown: &mut [u64; SLOTS]) {
    for (slot, (now, before)) in shard.slots.iter().zip(flushed.iter_mut()).enumerate() {
        let now = now.load(Ordering::Relaxed);
        grown[slot] = grown[slot].wrapping_add(now.wrapping_sub(*before));
        *before = now;
    }
}

fn publish(grown: &[u64; SLOTS]) {
    for (at, kind) in KINDS.iter().take(3).enumerate() {
        count(
            grown[RECEIVED + at],
            || counter!(MESSAGES_RECEIVED, "kind" => *kind),
        );
    }
    count(grown[RECEIVED_BYTES], || counter!(BYTES_RECEIVED));
    for (at, kind) in KINDS.iter().enumerate() {
        count(
            grown[SENT + at],
            || counter!(MESSAGES_SENT, "kind" => *kind),
        );
    }
    count(grown[SENT_BYTES], || counter!(BYTES_SENT));
    for (at, outcome) in OUTCOMES.iter().take(4).enumerate() {
        count(
            grown[ANSWERED + at],
            || counter!(REQUESTS_ANSWERED, "outcome" => *outcome),
        );
    }
    for (at, outcome) in OUTCOMES.iter().enumerate() {
        count(
            grown[REQUESTS + at],
            || counter!(REQUESTS_SENT, "outcome" => *outcome),
        );
    }
    let peers = grown[PEERS_DELTA] as i64;
    if peers != 0 {
        gauge!(PEERS).increment(peers as f64);
    }
}

fn count(n: u64, counter: impl FnOnce() -> ::metrics::Counter) {
    if n > 0 {
        counter().increment(n);
    }
}
