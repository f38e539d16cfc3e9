//! Who a peer is, as a verified credential says: [`Identity`], set on a
//! peer by its admission ([`Admit::identity`](crate::Admit::identity)).
//!
//! With an identity, three things hold for the peer, here in the core so
//! that no admission path and no application loop can skip them:
//!
//! - **no takeover**: a connection replaces a peer of its id
//!   ([`DuplicatePolicy::Replace`](crate::DuplicatePolicy::Replace)) only
//!   when both have an identity of the same subject and room; otherwise the
//!   newcomer is refused ([`CoreError::IdentityMismatch`]) and the peer in
//!   the room is left untouched, not even told;
//! - **allowed methods**: a request whose method is outside
//!   [`Identity::allow`] is answered 403 [`METHOD_NOT_ALLOWED_REASON`]
//!   before it reaches the application, and such a notification is dropped
//!   (both counted, with a rate-limited warning);
//! - **expiry**: the peer is closed with 4000 [`TOKEN_EXPIRED_REASON`] at
//!   [`Identity::expires_at`] (within a second), unless
//!   [`Peer::refresh_identity`](crate::Peer::refresh_identity) moved it.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::peer::PeerState;
use crate::sync::lock;

/// The code of the answer to a request whose method the peer's identity
/// does not allow.
pub const METHOD_NOT_ALLOWED_CODE: u16 = 403;

/// The reason of the answer to a request whose method the peer's identity
/// does not allow.
pub const METHOD_NOT_ALLOWED_REASON: &str = "method not allowed";

/// The close reason (with code 4000) of a peer whose identity expired.
///
/// 4000 because protoo-client does not reconnect after it: after any other
/// code it would reconnect to the very same URL, expired token and all, and
/// be refused (401) again and again. The application's page sees the close
/// and connects anew with a fresh token.
pub const TOKEN_EXPIRED_REASON: &str = "token expired";

/// Who a peer is: the verified claims of its credential (a token).
///
/// Made by the application's verifier (`protoo_server`'s `auth` module
/// makes one from a JWT), given to the admission
/// ([`Admit::identity`](crate::Admit::identity)), and read back with
/// [`Peer::identity`](crate::Peer::identity). Cheap to clone (its lists are
/// shared).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use protoo_core::Identity;
///
/// #[derive(Debug, PartialEq)]
/// struct Plan { tier: String }
///
/// let identity = Identity::new("alice", "room-1", SystemTime::now() + Duration::from_secs(600))
///     .with_name("Alice")
///     .with_allow(["join", "chat"])
///     .with_custom(Plan { tier: "gold".into() });
/// assert_eq!((identity.subject(), identity.room()), ("alice", "room-1"));
/// assert!(identity.allows("chat") && !identity.allows("kick"));
/// assert_eq!(identity.custom::<Plan>().map(|plan| plan.tier.as_str()), Some("gold"));
/// ```
#[derive(Clone)]
pub struct Identity {
    // The ids are shared with the peer's own (the admission swaps them for
    // the peer's and room's `Arc`s when equal): an identity costs a peer
    // little more than its own allocation.
    pub(crate) subject: Arc<str>,
    pub(crate) room: Arc<str>,
    /// Unix time in milliseconds.
    expires_at: u64,
    name: Option<Box<str>>,
    allow: Option<Arc<[Box<str>]>>,
    custom: Option<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    /// The identity of `subject` (the peer id) in `room`, valid until
    /// `expires_at`; every method allowed, no display name.
    pub fn new(
        subject: impl Into<Arc<str>>,
        room: impl Into<Arc<str>>,
        expires_at: SystemTime,
    ) -> Self {
        let expires_at = expires_at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        Identity {
            subject: subject.into(),
            room: room.into(),
            expires_at,
            name: None,
            allow: None,
            custom: None,
        }
    }

    /// With a display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With the only methods (requests and notifications) the peer may
    /// send.
    #[must_use]
    pub fn with_allow<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.allow = Some(methods.into_iter().map(Into::into).collect());
        self
    }

    /// With the application's own claims, read back with
    /// [`Identity::custom`].
    #[must_use]
    pub fn with_custom<T: Any + Send + Sync>(mut self, claims: T) -> Self {
        self.custom = Some(Arc::new(claims));
        self
    }

    /// Who: the token's `sub`, the peer id.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Where: the token's `room`, the room id.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Until when: the token's `exp` (to the millisecond).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at)
    }

    /// The display name (the token's `name`), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The methods the peer may send (the token's `allow`); `None`: all.
    pub fn allow(&self) -> Option<&[Box<str>]> {
        self.allow.as_deref()
    }

    /// Whether the peer may send `method`.
    pub fn allows(&self, method: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|allowed| **allowed == *method))
    }

    /// The application's own claims, if they are of type `T`.
    pub fn custom<T: Any>(&self) -> Option<&T> {
        self.custom.as_deref()?.downcast_ref()
    }

    /// Whether `self` and `other` are the same subject in the same room.
    pub fn same_subject(&self, other: &Identity) -> bool {
        self.subject == other.subject && self.room == other.room
    }

    /// When the peer expires, on Tokio's clock.
    fn deadline(&self) -> Instant {
        let left = self
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        now.checked_add(left)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
    }
}

impl fmt::Debug for Identity {
    /// The subject, room, expiry and allowed methods; never a credential
    /// (an identity holds none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.subject)
            .field("room", &self.room)
            .field("expires_at", &self.expires_at())
            .field("name", &self.name)
            .field("allow", &self.allow)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

/// Whether a newcomer with identity `new` may replace a peer of its id
/// whose identity is `old`: the one rule of takeovers. Without identities
/// (an application without auth) anything goes, as before; with one on
/// either side, both must be the same subject in the same room.
pub(crate) fn may_replace(old: Option<&Identity>, new: Option<&Identity>) -> bool {
    match (old, new) {
        (None, None) => true,
        (Some(old), Some(new)) => old.same_subject(new),
        _ => false,
    }
}

/// A peer's identity, held by its core (boxed: a peer without one pays a
/// pointer).
pub(crate) struct IdentitySlot {
    current: Mutex<Current>,
}

struct Current {
    identity: Arc<Identity>,
    /// When the peer expires, on Tokio's clock.
    deadline: Instant,
    /// Its entry in the registry's [`Expiries`] ([`NO_KEY`]: none), taken
    /// out when the peer closes.
    key: u64,
}

/// No entry in the expiry queue.
const NO_KEY: u64 = u64::MAX;

impl IdentitySlot {
    pub(crate) fn new(identity: Identity) -> Box<Self> {
        let deadline = identity.deadline();
        Box::new(IdentitySlot {
            current: Mutex::new(Current {
                identity: Arc::new(identity),
                deadline,
                key: NO_KEY,
            }),
        })
    }

    pub(crate) fn identity(&self) -> Arc<Identity> {
        lock(&self.current).identity.clone()
    }

    pub(crate) fn deadline(&self) -> Instant {
        lock(&self.current).deadline
    }

    pub(crate) fn allows(&self, method: &str) -> bool {
        lock(&self.current).identity.allows(method)
    }

    /// Records the peer's entry in the expiry queue; the one it had, if
    /// any.
    fn replace_key(&self, key: u64) -> Option<u64> {
        let old = std::mem::replace(&mut lock(&self.current).key, key);
        (old != NO_KEY).then_some(old)
    }

    /// Takes the peer's entry in the expiry queue out (it closed).
    pub(crate) fn take_key(&self) -> Option<u64> {
        self.replace_key(NO_KEY)
    }

    /// Replaces the identity by a fresh one of the same subject and room,
    /// moving the expiry; the new deadline if it is earlier than the old
    /// one (to be scheduled).
    pub(crate) fn refresh(&self, identity: Identity) -> Result<Option<Instant>, Identity> {
        let mut current = lock(&self.current);
        if !current.identity.same_subject(&identity) {
            return Err(identity);
        }
        let deadline = identity.deadline();
        let earlier = (deadline < current.deadline).then_some(deadline);
        // Keep sharing the ids.
        let identity = Identity {
            subject: current.identity.subject.clone(),
            room: current.identity.room.clone(),
            ..identity
        };
        current.identity = Arc::new(identity);
        current.deadline = deadline;
        Ok(earlier)
    }
}

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
    /// was refreshed by then; its entry replaces the one it had.
    pub(crate) fn expire(self: &Arc<Self>, core: &Arc<PeerState>, at: Instant, handle: &Handle) {
        let Some(slot) = core.identity.as_deref() else {
            return;
        };
        let Some(key) = self.schedule(at, Arc::downgrade(core), handle) else {
            return;
        };
        if let Some(old) = slot.replace_key(key) {
            self.cancel(old);
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
        handle: &Handle,
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
            if !state.started {
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
        let due: Vec<Weak<PeerState>> = {
            let mut state = lock(&expiries.state);
            let later = state.queue.split_off(&expiries.due_before(now));
            std::mem::replace(&mut state.queue, later)
                .into_values()
                .collect()
        };
        for core in due {
            let Some(core) = core.upgrade() else { continue };
            let Some(slot) = core.identity.as_deref() else {
                continue;
            };
            let deadline = slot.deadline();
            if deadline > now {
                // Refreshed meanwhile.
                expiries.expire(&core, deadline, &Handle::current());
            } else if !core.is_closed() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_rule() {
        let far = SystemTime::now() + Duration::from_secs(60);
        let alice = Identity::new("alice", "r", far);
        let alice_again = Identity::new("alice", "r", far + Duration::from_secs(60));
        let mallory = Identity::new("mallory", "r", far);
        let alice_elsewhere = Identity::new("alice", "other", far);
        assert!(may_replace(None, None));
        assert!(may_replace(Some(&alice), Some(&alice_again)));
        assert!(!may_replace(Some(&alice), Some(&mallory)));
        assert!(!may_replace(Some(&alice), Some(&alice_elsewhere)));
        assert!(!may_replace(Some(&alice), None));
        assert!(!may_replace(None, Some(&alice)));
    }

    /// A peer that closes leaves the queue: nothing of it is kept until its
    /// token would have expired. A refresh to an earlier expiry replaces
    /// its entry.
    #[tokio::test]
    async fn a_closed_peer_leaves_the_expiry_queue() {
        let rooms: crate::Rooms = crate::Rooms::new();
        let mut peers = Vec::new();
        for id in ["a", "b", "c"] {
            let (transport, remote) = protoo_transport::memory::pair(1024);
            let joined = rooms
                .admit("r", id)
                .identity(Identity::new(
                    id,
                    "r",
                    SystemTime::now() + Duration::from_secs(3600),
                ))
                .join(transport, ())
                .await
                .unwrap();
            peers.push((joined, remote));
        }
        assert_eq!(rooms.expiry_entries(), 3);
        let earlier = Identity::new("a", "r", SystemTime::now() + Duration::from_secs(60));
        peers[0].0.peer.refresh_identity(earlier).unwrap();
        assert_eq!(rooms.expiry_entries(), 3);
        peers[0].0.peer.close();
        peers[1].0.peer.close();
        assert_eq!(rooms.expiry_entries(), 1);
        drop(peers);
        assert_eq!(rooms.expiry_entries(), 0);
    }

    #[test]
    fn identity_is_small() {
        let size = std::mem::size_of::<Identity>();
        println!("Identity: {size} bytes");
        assert!(size <= 112, "Identity grew to {size} bytes");
    }
}
