//! The one way into a room: [`Rooms::admit`] gives an [`Admit`] builder
//! (peer settings, duplicate policy, the admission's [`Context`]) that
//! either joins a peer ([`Admit::join`] -> [`Joined`]) or holds the room
//! open for a member that is not a protoo peer ([`Admit::hold`] ->
//! [`RoomHold`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use protoo_transport::Transport;

use super::Connecting;
use super::Rooms;
use super::reservation::Reservation;
use crate::identity::may_replace;
use crate::room::DuplicatePolicy;
use crate::{CoreError, Identity, Peer, PeerConfig, PeerEvents, Room};

/// The context of an admission: what the connection said about itself
/// (its query parameters) and what the application learned about it
/// (typed values, such as verified claims).
///
/// Given to the room's setup ([`RoomsBuilder::setup`](crate::RoomsBuilder::setup))
/// by the admission that starts it, so the setup can read, say,
/// mediasoup-demo's `consumerReplicas` query parameter. `protoo_server`
/// fills it with the connection's query parameters by default.
///
/// ```
/// use protoo_core::Context;
///
/// struct Claims { user: String }
///
/// let mut context = Context::new().with_param("consumerReplicas", "2");
/// context.insert(Claims { user: "alice".into() });
/// assert_eq!(context.param("consumerReplicas"), Some("2"));
/// assert_eq!(context.get::<Claims>().map(|c| c.user.as_str()), Some("alice"));
/// assert!(context.get::<u32>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct Context {
    params: Vec<(String, String)>,
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Context::default()
    }

    /// The context with one more parameter `name` = `value` (a name may
    /// repeat; [`Context::param`] gives the first value).
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The first value of the parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every parameter, in the order given.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Stores `value`, replacing the value of the same type stored before.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("params", &self.params)
            .field("values", &self.values.len())
            .finish()
    }
}

/// A peer admitted into a room ([`Admit::join`]).
///
/// With a [resume window](PeerConfig::resume_window), the admission may
/// instead resume the session of the peer already in the room with this id
/// (and identity): then `resumed` is set, `peer` is that peer (its data,
/// its place in the room and its presence as they were), and `events` is
/// empty and inert: the peer's events keep going to the loop that took
/// them when it first joined ([`PeerEvent::Resumed`](crate::PeerEvent::Resumed)
/// tells it). [`Router::run`](crate::handler::Router::run) returns at once
/// for such a `Joined`; a hand-written loop must check `resumed` first.
#[non_exhaustive]
pub struct Joined<D = (), R = ()> {
    /// The room, its data ready.
    pub room: Room<D, R>,
    /// The new peer, or the resumed one.
    pub peer: Peer<D>,
    /// The peer's events: the application's loop (dropping them closes
    /// the peer). Inert when `resumed`: they yield `None` at once, and
    /// dropping them does nothing.
    pub events: PeerEvents,
    /// Whether this admission resumed the session of a peer already in the
    /// room rather than admitting a new one.
    pub resumed: bool,
}

impl<D, R> fmt::Debug for Joined<D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Joined")
            .field("room", &self.room)
            .field("peer", &self.peer.id())
            .finish_non_exhaustive()
    }
}

/// A place in a room for a member that is not a protoo peer (a REST
/// broadcaster): the room is not removed for being empty while the hold
/// lives, exactly as if a peer were in it. Dropping the last hold of a room
/// with no peers removes and closes it, as the last peer leaving would (at
/// once, or after the registry's empty-room grace).
///
/// The room may still be closed meanwhile ([`Room::close`],
/// [`Rooms::close_all`]); the hold then keeps nothing. A hold belongs to
/// this process: with a cluster backend it keeps the local room, and is not
/// listed as a member on other nodes. Given by [`Admit::hold`].
#[must_use = "dropping the hold gives the room's place back at once"]
pub struct RoomHold {
    place: Box<dyn HeldPlace>,
}

/// A reservation with its types erased.
trait HeldPlace: Send + Sync {
    fn room_id(&self) -> &str;
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> HeldPlace for Reservation<D, R> {
    fn room_id(&self) -> &str {
        self.room().id()
    }
}

impl RoomHold {
    /// The id of the room held.
    pub fn room_id(&self) -> &str {
        self.place.room_id()
    }
}

impl fmt::Debug for RoomHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomHold")
            .field("room_id", &self.room_id())
            .finish()
    }
}

/// An admission into a room of a [`Rooms`] registry: [`Rooms::admit`],
/// optional settings, then [`join`](Admit::join) (a protoo peer) or
/// [`hold`](Admit::hold) (a member that is not one).
///
/// Defaults: the registry's [`PeerConfig`] and [`DuplicatePolicy`]
/// ([`RoomsBuilder`](crate::RoomsBuilder)), an empty [`Context`].
///
/// ```
/// use protoo_core::{Context, DuplicatePolicy, ErrorData, Rooms, RoomSetup};
/// use protoo_transport::memory;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), protoo_core::CoreError> {
/// let rooms: Rooms<(), String> = Rooms::builder().setup(|setup: RoomSetup| async move {
///     let replicas = setup.context.param("replicas").unwrap_or("1").to_owned();
///     Ok::<_, ErrorData>(format!("{} x{replicas}", setup.room_id))
/// });
/// let (server_side, _client_side) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
/// let joined = rooms
///     .admit("room-1", "alice")
///     .policy(DuplicatePolicy::Replace)
///     .context(Context::new().with_param("replicas", "2"))
///     .join(server_side, ())
///     .await?;
/// assert_eq!(joined.room.data(), "room-1 x2");
/// assert_eq!(joined.peer.id(), "alice");
/// # Ok(())
/// # }
/// ```
#[must_use = "an admission does nothing until `join` or `hold`"]
pub struct Admit<'a, D, R> {
    rooms: &'a Rooms<D, R>,
    room_id: String,
    peer_id: String,
    config: Option<PeerConfig>,
    policy: Option<DuplicatePolicy>,
    context: Context,
    identity: Option<Identity>,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Rooms<D, R> {
    /// Starts the admission of the peer `peer_id` into the room `room_id`
    /// (created on demand, its setup run once): the one way into a room.
    /// `peer_id` is unused by [`Admit::hold`].
    pub fn admit(&self, room_id: impl Into<String>, peer_id: impl Into<String>) -> Admit<'_, D, R> {
        Admit {
            rooms: self,
            room_id: room_id.into(),
            peer_id: peer_id.into(),
            config: None,
            policy: None,
            context: Context::default(),
            identity: None,
        }
    }
}

impl<'a, D: Send + Sync + 'static, R: Send + Sync + 'static> Admit<'a, D, R> {
    /// The peer's settings, instead of the registry's.
    pub fn config(mut self, config: PeerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// What to do with a peer of the same id already in the room, instead
    /// of the registry's policy.
    pub fn policy(mut self, policy: DuplicatePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The admission's context: what the room's setup sees if this
    /// admission is the one that starts it.
    pub fn context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }

    /// Who the peer is, as its verified credential says (see
    /// [`Identity`]): with one, the peer replaces a peer of its id only as
    /// the same subject in the same room, sends only the methods it
    /// allows, and is closed when it expires. `protoo_server` sets it from
    /// the connection's token when the server verifies them.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The room id.
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// The peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Finds or creates the room (waiting for its setup) and admits a new
    /// peer on `connection` into it: the room cannot be removed in between.
    /// `connection` is a peer's [`Transport`], or a handshake still to be
    /// answered (see [`Connecting`]: `protoo_server`'s admission), which is
    /// accepted only once the room is ready and the peer id is free for it.
    ///
    /// Refuses an empty peer id ([`CoreError::EmptyId`]) and a room or peer
    /// id over the registry's [`max_id_bytes`](crate::Rooms::max_id_bytes)
    /// ([`CoreError::IdTooLong`]) before any room is made, a duplicate one
    /// under [`DuplicatePolicy::Refuse`] ([`CoreError::DuplicateId`]), a
    /// takeover of a peer of another identity, here or on another node
    /// ([`CoreError::IdentityMismatch`]: see [`Identity`]) and a closed room
    /// ([`CoreError::RoomClosed`]); fails with [`CoreError::RoomSetup`] if
    /// the room's setup failed, and with [`CoreError::SetupTimedOut`] if it
    /// outlasted the connection's [deadline](Connecting::deadline). A
    /// transport is closed on every failure. Dropping the future stops only
    /// this admission's wait.
    pub async fn join<C: Connecting>(
        self,
        connection: C,
        data: D,
    ) -> Result<Joined<D, R>, C::Error> {
        if self.peer_id.is_empty() {
            return Err(connection.refuse(CoreError::EmptyId));
        }
        let ready = async {
            let ready = self.ready().await?;
            let takeover = ready.is_takeover().await;
            Ok::<_, CoreError>((ready, takeover))
        };
        let ready = match connection.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, ready)
                .await
                .unwrap_or(Err(CoreError::SetupTimedOut)),
            None => ready.await,
        };
        match ready {
            Ok((ready, false)) => {
                let (transport, opening) = connection.accept().await?;
                let joined = ready.join(transport, data);
                C::open(opening);
                Ok(joined?)
            }
            Ok((ready, true)) => Err(connection.refuse(CoreError::IdentityMismatch(ready.peer_id))),
            Err(error) => Err(connection.refuse(error)),
        }
    }

    /// Finds or creates the room (waiting for its setup) and holds it open
    /// for a member that is not a protoo peer: see [`RoomHold`]. Fails with
    /// [`CoreError::RoomSetup`] if the room's setup failed.
    pub async fn hold(self) -> Result<(Room<D, R>, RoomHold), CoreError> {
        let ready = self.ready().await?;
        let room = ready.reservation.room().clone();
        let hold = RoomHold {
            place: Box::new(ready.reservation),
        };
        Ok((room, hold))
    }

    /// Waits for the room (its setup) and holds a place in it for this
    /// admission, to join once the connection is accepted.
    async fn ready(self) -> Result<ReadyAdmit<D, R>, CoreError> {
        self.check_length(&self.room_id, "room id")?;
        self.check_length(&self.peer_id, "peer id")?;
        let Admit {
            rooms,
            room_id,
            peer_id,
            config,
            policy,
            context,
            identity,
        } = self;
        let reservation = rooms.reserve(&room_id, context).await?;
        let (defaults, default_policy) = rooms.defaults();
        Ok(ReadyAdmit {
            reservation,
            peer_id,
            config: config.unwrap_or_else(|| defaults.clone()),
            policy: policy.unwrap_or(default_policy),
            identity,
        })
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Admit<'_, D, R> {
    /// Refuses an id over the registry's limit.
    fn check_length(&self, id: &str, what: &'static str) -> Result<(), CoreError> {
        let max = self.rooms.max_id_bytes();
        match id.len() > max {
            true => Err(CoreError::IdTooLong { what, max }),
            false => Ok(()),
        }
    }
}

impl<D, R> fmt::Debug for Admit<'_, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admit")
            .field("room_id", &self.room_id)
            .field("peer_id", &self.peer_id)
            .field("policy", &self.policy)
            .field("context", &self.context)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// An admission whose room is ready, its place held.
struct ReadyAdmit<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    reservation: Reservation<D, R>,
    peer_id: String,
    config: PeerConfig,
    policy: DuplicatePolicy,
    identity: Option<Identity>,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> ReadyAdmit<D, R> {
    /// Whether joining now would be refused as a takeover (a peer of this
    /// id, of another identity, is in the room, on this node or, for a
    /// newcomer with an identity under [`DuplicatePolicy::Replace`], on
    /// another: `ClusterBackend::taken_elsewhere`), checked before the
    /// connection is accepted so a server can answer it with an HTTP
    /// status. The join checks it again under the room's lock, and the
    /// cluster backend when it registers the peer.
    async fn is_takeover(&self) -> bool {
        let room = self.reservation.room();
        if let Some(old) = room.peer(&self.peer_id) {
            return !may_replace(old.identity().as_deref(), self.identity.as_ref());
        }
        match (&room.inner.cluster, &self.identity) {
            (Some(cluster), Some(identity)) if self.policy == DuplicatePolicy::Replace => {
                cluster
                    .taken_elsewhere(room.id(), &self.peer_id, identity)
                    .await
            }
            _ => false,
        }
    }

    /// Admits the peer on `transport`; fails as [`Admit::join`] does,
    /// closing the transport.
    fn join(self, transport: Transport, data: D) -> Result<Joined<D, R>, CoreError> {
        self.reservation.join(
            self.peer_id,
            transport,
            data,
            &self.config,
            self.policy,
            self.identity,
        )
    }
}
