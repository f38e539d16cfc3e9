//! The crate's one poison-tolerant lock helper (the memory transport's, the
//! log limits' and the WebSocket connection's locks). Each crate of the
//! workspace keeps exactly one such helper, none exported; the byte queue's
//! own (loom-aware, for its model tests) is in protoo-queue.

pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks a mutex whose every critical section leaves its data consistent
/// (a handful of field updates), so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
