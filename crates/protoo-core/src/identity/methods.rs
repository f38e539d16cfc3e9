//! The allowed methods of identities, interned: every identity with the
//! same list shares one allocation, so 10,000 peers whose tokens carry the
//! same `allow` claim pay a pointer each rather than a list each.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::sync::lock;

/// A list of allowed methods, shared by every identity that allows exactly
/// these (in this order).
pub(crate) struct Methods(Box<[Box<str>]>);

impl Methods {
    /// The methods.
    pub(crate) fn as_slice(&self) -> &[Box<str>] {
        &self.0
    }

    /// Whether `method` is one of them.
    pub(crate) fn contains(&self, method: &str) -> bool {
        self.0.iter().any(|allowed| **allowed == *method)
    }
}

impl fmt::Debug for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The lists in use, by the hash of their content. An entry whose list is
/// no longer used is dropped by the next sweep.
struct Interner {
    hasher: RandomState,
    lists: HashMap<u64, Vec<Weak<Methods>>>,
    /// Weak pointers held in `lists`.
    entries: usize,
    /// Sweep when `entries` reaches this.
    sweep_at: usize,
}

/// Sweeps no smaller a table than this.
const MIN_SWEEP: usize = 64;

static INTERNED: LazyLock<Mutex<Interner>> = LazyLock::new(|| {
    Mutex::new(Interner {
        hasher: RandomState::new(),
        lists: HashMap::new(),
        entries: 0,
        sweep_at: MIN_SWEEP,
    })
});

/// The shared list of `methods`: the one already in use if any identity
/// allows the same, a new one otherwise.
pub(crate) fn intern(methods: Box<[Box<str>]>) -> Arc<Methods> {
    let mut interner = lock(&INTERNED);
    let hash = interner.hasher.hash_one(&methods);
    let found = interner.lists.get(&hash).and_then(|bucket| {
        bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|list| list.0 == methods)
    });
    if let Some(found) = found {
        return found;
    }
    if interner.entries >= interner.sweep_at {
        interner.sweep();
    }
    let list = Arc::new(Methods(methods));
    interner
        .lists
        .entry(hash)
        .or_default()
        .push(Arc::downgrade(&list));
    interner.entries += 1;
    list
}

impl Interner {
    /// Forgets the lists no identity uses any more: amortised, as the
    /// table has at least doubled since the last sweep.
    fn sweep(&mut self) {
        self.lists.retain(|_, bucket| {
            bucket.retain(|list| list.strong_count() > 0);
            !bucket.is_empty()
        });
        self.entries = self.lists.values().map(Vec::len).sum();
        self.sweep_at = (2 * self.entries).max(MIN_SWEEP);
    }
}

/// Lists in the table (live or not yet swept).
#[cfg(test)]
pub(crate) fn interned() -> usize {
    lock(&INTERNED).entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(methods: &[&str]) -> Box<[Box<str>]> {
        methods.iter().map(|method| Box::from(*method)).collect()
    }

    #[test]
    fn the_same_list_is_shared_and_an_unused_one_swept() {
        let a = intern(list(&["interned-join", "interned-chat"]));
        let b = intern(list(&["interned-join", "interned-chat"]));
        assert!(Arc::ptr_eq(&a, &b));
        // Another order is another list (`allow` reads back as given).
        let c = intern(list(&["interned-chat", "interned-join"]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(a.contains("interned-chat") && !a.contains("kick"));
        drop((b, c));
        // Many distinct lists, dropped at once: the table does not keep
        // them all.
        for n in 0..10 * MIN_SWEEP {
            drop(intern(list(&[&format!("interned-{n}")])));
        }
        assert!(interned() <= 4 * MIN_SWEEP, "{} kept", interned());
        // The one still in use is still shared.
        let again = intern(list(&["interned-join", "interned-chat"]));
        assert!(Arc::ptr_eq(&a, &again));
    }
}
