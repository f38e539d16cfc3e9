//! The crate's locks and its one poison-tolerant lock helper: `std`'s, or
//! loom's when the crate is built with `--cfg protoo_loom` for the model
//! tests of the queues (`tests/loom_queue.rs`; the other locks, the memory
//! transport's and the log limits', are not used there). Each crate of the
//! workspace keeps exactly one such helper, none exported.
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
