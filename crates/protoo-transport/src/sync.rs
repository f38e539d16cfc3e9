//! The locks of the queues: `std`'s, or loom's when the crate is built with
//! `--cfg protoo_loom` for the model tests (`tests/loom_queue.rs`).
//!
//! A cfg of our own rather than loom's customary `--cfg loom`: `RUSTFLAGS`
//! reaches every crate of the build, and tokio built with `cfg(loom)` leaves
//! out `tokio::net`, which tokio-tungstenite needs.

#[cfg(protoo_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(protoo_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks a mutex whose every critical section leaves its data consistent
/// (a handful of field updates), so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
