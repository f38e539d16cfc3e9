//! The crate's one poison-tolerant lock helper, for every `std` mutex of
//! protoo-core (peers, rooms, the registry, presence, metrics). Each crate
//! of the workspace keeps exactly one such helper (protoo-transport's is in
//! its `sync` module, loom-aware): none exports a locking utility as
//! public API.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex whose every critical section leaves its data consistent,
/// so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
