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

mod methods;
mod slot;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use methods::Methods;
pub(crate) use slot::IdentitySlot;

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
/// shared; the allowed methods with every identity allowing the same).
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
    /// Shared with every identity of the same list ([`methods`]).
    allow: Option<Arc<Methods>>,
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
        self.allow = Some(methods::intern(
            methods.into_iter().map(Into::into).collect(),
        ));
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
        self.allow.as_deref().map(Methods::as_slice)
    }

    /// Whether the peer may send `method`.
    pub fn allows(&self, method: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.contains(method))
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

    /// Many peers expiring in shuffled order, some closed and some
    /// refreshed (earlier and later) on the way: each is closed at its
    /// own deadline (within a second), none early, and the queue empties.
    #[tokio::test(start_paused = true)]
    async fn the_queue_closes_each_peer_at_its_own_deadline() {
        const PEERS: u64 = 60;
        let rooms: crate::Rooms = crate::Rooms::new();
        let mut peers = Vec::new();
        // A permutation of 1..=PEERS: deadlines out of order.
        let secs = |n: u64| (n * 37) % PEERS + 1;
        for n in 0..PEERS {
            let id = format!("p{n}");
            let (transport, remote) = protoo_transport::memory::pair(1024);
            let joined = rooms
                .admit("r", id.as_str())
                .identity(Identity::new(
                    id.as_str(),
                    "r",
                    SystemTime::now() + Duration::from_secs(10 * secs(n)),
                ))
                .join(transport, ())
                .await
                .unwrap();
            peers.push((joined, remote));
        }
        // When each peer must close (in tens of seconds); `None`: never
        // (closed by hand).
        let mut expected: Vec<Option<u64>> = (0..PEERS).map(|n| Some(secs(n))).collect();
        for n in (0..PEERS).step_by(7) {
            peers[n as usize].0.peer.close();
            expected[n as usize] = None;
        }
        for n in (3..PEERS).step_by(5) {
            if expected[n as usize].is_none() {
                continue;
            }
            let later = if n % 2 == 0 {
                PEERS + n
            } else {
                secs(n) / 2 + 1
            };
            let id = format!("p{n}");
            peers[n as usize]
                .0
                .peer
                .refresh_identity(Identity::new(
                    id.as_str(),
                    "r",
                    SystemTime::now() + Duration::from_secs(10 * later),
                ))
                .unwrap();
            expected[n as usize] = Some(later);
        }
        let open = expected.iter().flatten().count();
        assert_eq!(rooms.expiry_entries(), open);
        // Half a second before each ten seconds, then half a second after.
        tokio::time::sleep(Duration::from_millis(9_500)).await;
        for tens in 1..=2 * PEERS + 1 {
            for (n, (joined, _)) in peers.iter().enumerate() {
                if let Some(at) = expected[n] {
                    assert_eq!(joined.peer.is_closed(), at < tens, "p{n} at {tens}0 s");
                }
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            for (n, (joined, _)) in peers.iter().enumerate() {
                if let Some(at) = expected[n] {
                    assert_eq!(joined.peer.is_closed(), at <= tens, "p{n} after {tens}0 s");
                }
            }
            tokio::time::sleep(Duration::from_millis(9_000)).await;
        }
        assert_eq!(rooms.expiry_entries(), 0);
    }

    #[test]
    fn identity_is_small() {
        let size = std::mem::size_of::<Identity>();
        println!("Identity: {size} bytes");
        assert!(size <= 112, "Identity grew to {size} bytes");
    }
}
