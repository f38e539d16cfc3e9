//! Room-wide consistency: [`Room::exclusive`] runs a synchronous section
//! atomically with respect to the room's other exclusive sections, over a
//! snapshot of the room's members ([`Members`]).

use std::fmt;

use protoo_codec::Payload;

use crate::sync::lock;
use crate::{Peer, Room};

impl<D, R> Room<D, R> {
    /// Runs `section` atomically with respect to every other `exclusive`
    /// section of this room, and returns what it returns.
    ///
    /// Node runs one piece of JavaScript at a time: the code of a handler
    /// between two `await`s can never interleave with another handler's.
    /// mediasoup-demo relies on it: `join` marks the peer joined and reads
    /// the others' producers, `produce` adds a producer and reads the joined
    /// peers, and because each pair of steps runs without interruption every
    /// (consumer, producer) pair is created exactly once. Here the peers'
    /// handlers run in parallel on several threads, so the same two steps
    /// race (both handlers can see each other and create the consumer twice,
    /// or, with the steps in another order, neither). Putting each pair of
    /// steps in an exclusive section of the room gives back Node's
    /// guarantee, for that room only (other rooms run on).
    ///
    /// The section is synchronous on purpose: it is the Rust equivalent of
    /// the code between two `await`s. Do not block in it. Work that waits
    /// (a request to a peer, a media server call) is started from it with
    /// [`tokio::spawn`], or done after it with what it returned.
    ///
    /// `members` is this process's peers of the room (in a room spanning
    /// several processes, the other processes' peers are not in it), with
    /// their presence ([`Room::set_presence`]), taken when the section
    /// starts: a presence set by an earlier section is seen, a peer admitted
    /// or gone meanwhile may not be. The section lock is separate from the
    /// room's own lock, so the section may broadcast, notify and set
    /// presence. It is poison-tolerant: a section that panicked does not
    /// block the next ones. Sections do not nest: calling `exclusive` on the
    /// same room from inside a section deadlocks.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use protoo_core::Rooms;
    /// use protoo_transport::memory;
    ///
    /// #[derive(Default)]
    /// struct PeerData { producers: Mutex<Vec<String>> }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rooms: Rooms<PeerData> = Rooms::new();
    /// let mut kept = Vec::new();
    /// for id in ["alice", "bob"] {
    ///     let (server_side, client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
    ///     kept.push((rooms.admit("r", id).join(server_side, PeerData::default()).await?, client_side));
    /// }
    /// let room = rooms.get("r").unwrap();
    /// // bob joins: he is listed, and gets a consumer for each producer of the
    /// // joined peers, which no `produce` section can add meanwhile.
    /// let to_consume = room.exclusive(|members| {
    ///     room.set_presence("bob", &serde_json::json!({}))?;
    ///     let producers: Vec<String> = members
    ///         .listed()
    ///         .filter(|member| member.id() != "bob")
    ///         .flat_map(|member| member.data().producers.lock().unwrap().clone())
    ///         .collect();
    ///     Ok::<_, protoo_core::PeerError>(producers)
    /// })?;
    /// assert!(to_consume.is_empty());
    /// assert!(room.exclusive(|members| members.get("bob").unwrap().is_listed()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn exclusive<T>(&self, section: impl FnOnce(&Members<D>) -> T) -> T {
        let _section = lock(&self.inner.section);
        let members = {
            let state = lock(&self.inner.state);
            state
                .peers
                .iter()
                .filter(|(_, peer)| !peer.is_closed())
                .map(|(id, peer)| Member {
                    peer: peer.clone(),
                    presence: state.presence.get(id).cloned(),
                })
                .collect()
        };
        section(&Members { members })
    }
}

/// The peers of a room in a [`Room::exclusive`] section: this process's
/// open peers of the room, each with its presence.
pub struct Members<D> {
    members: Vec<Member<D>>,
}

impl<D> Members<D> {
    /// Every member, in no particular order.
    pub fn iter(&self) -> std::slice::Iter<'_, Member<D>> {
        self.members.iter()
    }

    /// The listed members (those with a presence), in no particular order.
    pub fn listed(&self) -> impl Iterator<Item = &Member<D>> {
        self.members.iter().filter(|member| member.is_listed())
    }

    /// The member with this peer id.
    pub fn get(&self, peer_id: &str) -> Option<&Member<D>> {
        self.members.iter().find(|member| member.id() == peer_id)
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl<'a, D> IntoIterator for &'a Members<D> {
    type Item = &'a Member<D>;
    type IntoIter = std::slice::Iter<'a, Member<D>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<D> fmt::Debug for Members<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.members.iter()).finish()
    }
}

/// One peer of a room in a [`Room::exclusive`] section.
pub struct Member<D> {
    peer: Peer<D>,
    presence: Option<Payload>,
}

impl<D> Member<D> {
    /// The peer.
    pub fn peer(&self) -> &Peer<D> {
        &self.peer
    }

    /// The peer id.
    pub fn id(&self) -> &str {
        self.peer.id()
    }

    /// The peer's application data.
    pub fn data(&self) -> &D {
        self.peer.data()
    }

    /// What the peer is listed with, if it is listed.
    pub fn presence(&self) -> Option<&Payload> {
        self.presence.as_ref()
    }

    /// Whether the peer is listed (has a presence).
    pub fn is_listed(&self) -> bool {
        self.presence.is_some()
    }
}

impl<D> fmt::Debug for Member<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id())
            .field("presence", &self.presence)
            .finish()
    }
}
