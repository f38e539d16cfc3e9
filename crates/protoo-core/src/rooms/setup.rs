//! How a room's data is made: `R::default()` at once, or the application's
//! async setup, run once per room in a task of its own while the room's
//! first admissions wait for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use protoo_codec::{ErrorData, encode};
use serde::Serialize;
use tokio::sync::watch;

use super::Context;
use super::{RegistryInner, Rooms, Slot};
use crate::cluster::{ClusterBackend, LostMember, OnMemberLost};
use crate::room::{DuplicatePolicy, OnClose, RoomRegistry};
use crate::sync::lock;
use crate::{CoreError, IntoErrorData, PeerConfig, Room};

/// A boxed setup future.
pub(super) type SetupFuture<R> = Pin<Box<dyn Future<Output = Result<R, ErrorData>> + Send>>;

/// The room data's maker.
pub(crate) enum Setup<R> {
    /// Synchronous (`R::default`), called under the registry's lock.
    Default(fn() -> R),
    /// The application's async setup.
    Async(Box<dyn Fn(RoomSetup) -> SetupFuture<R> + Send + Sync>),
}

/// What a room's setup ([`RoomsBuilder::setup`]) is given: the room id,
/// and the [`Context`] of the admission that started the setup.
///
/// When several admissions race to a room that does not exist yet, the
/// setup runs once, started by the first of them to reach the registry
/// (the one that found no room): its context is the one given here. The
/// others wait for that setup; their contexts are not seen by it. If the
/// setup fails, the next admission starts a new one with its own context.
#[derive(Debug)]
#[non_exhaustive]
pub struct RoomSetup {
    /// The id of the room being set up.
    pub room_id: String,
    /// The context of the admission that started the setup
    /// ([`Admit::context`](crate::Admit::context); `protoo_server` gives the
    /// connection's query parameters).
    pub context: Context,
}

/// Builds a [`Rooms`] registry: [`Rooms::builder`], then the settings, then
/// [`build`](RoomsBuilder::build) (room data `R::default()`) or
/// [`setup`](RoomsBuilder::setup) (room data from an async setup).
///
/// ```
/// use std::time::Duration;
/// use protoo_core::{DuplicatePolicy, ErrorData, PeerConfig, RoomSetup, Rooms};
///
/// struct RoomState { router: String }
///
/// let rooms: Rooms<(), RoomState> = Rooms::builder()
///     .peer_config(PeerConfig::default())
///     .duplicate_policy(DuplicatePolicy::Replace)
///     // A peer that reconnects within 10 s finds its room (and router).
///     .empty_room_grace(Duration::from_secs(10))
///     .setup(|setup: RoomSetup| async move {
///         let room_id = setup.room_id;
///         if room_id.len() > 64 {
///             // The connection is rejected with HTTP 400 and this reason.
///             return Err(ErrorData::new(400, "room id too long"));
///         }
///         Ok(RoomState { router: format!("router of {room_id}") })
///     });
/// assert_eq!(rooms.empty_room_grace(), Duration::from_secs(10));
/// ```
#[must_use = "a builder does nothing until `build` or `setup`"]
pub struct RoomsBuilder<D = (), R = ()> {
    parts: Parts,
    on_close: Option<Arc<OnClose<D, R>>>,
}

/// The settings of a registry, but for its room data's setup.
pub(super) struct Parts {
    pub(super) config: PeerConfig,
    pub(super) policy: DuplicatePolicy,
    pub(super) grace: Duration,
    pub(super) max_id_bytes: usize,
    pub(super) cluster: Option<Arc<dyn ClusterBackend>>,
    pub(super) on_member_lost: Option<OnMemberLost>,
    pub(super) max_parked_sessions: usize,
    pub(super) max_parked_bytes: usize,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> RoomsBuilder<D, R> {
    pub(crate) fn new() -> Self {
        RoomsBuilder {
            parts: Parts {
                config: PeerConfig::default(),
                policy: DuplicatePolicy::default(),
                grace: Duration::ZERO,
                max_id_bytes: super::DEFAULT_MAX_ID_BYTES,
                cluster: None,
                on_member_lost: None,
                max_parked_sessions: crate::DEFAULT_MAX_PARKED_SESSIONS,
                max_parked_bytes: crate::DEFAULT_MAX_PARKED_BYTES,
            },
            on_close: None,
        }
    }

    /// The peer settings [`Rooms::admit`] admits peers with unless
    /// overridden (default:
    /// [`PeerConfig::default`]).
    pub fn peer_config(mut self, config: PeerConfig) -> Self {
        self.parts.config = config;
        self
    }

    /// What [`Rooms::admit`] does with a duplicate peer id unless
    /// overridden (default:
    /// [`DuplicatePolicy::Refuse`], protoo's).
    pub fn duplicate_policy(mut self, policy: DuplicatePolicy) -> Self {
        self.parts.policy = policy;
        self
    }

    /// The longest room id and peer id [`Rooms::admit`] takes, in bytes
    /// (default [`DEFAULT_MAX_ID_BYTES`](super::DEFAULT_MAX_ID_BYTES), 256):
    /// a longer one is refused with [`CoreError::IdTooLong`] before any room
    /// is made (`protoo_server` answers it 400 before the upgrade). Ids are
    /// keys of every room, presence entry, log line and cluster message, so
    /// a remote must not choose their size.
    pub fn max_id_bytes(mut self, bytes: usize) -> Self {
        self.parts.max_id_bytes = bytes;
        self
    }

    /// How many sessions at most wait for their peer in this registry's
    /// rooms (peers with a [resume window](PeerConfig::resume_window) whose
    /// transport was lost). Default
    /// [`DEFAULT_MAX_PARKED_SESSIONS`](crate::DEFAULT_MAX_PARKED_SESSIONS),
    /// 10,000. Past it the session that has waited longest ends at once, as
    /// its window would (its peer closes with 4000
    /// [`SESSION_EVICTED_REASON`](crate::SESSION_EVICTED_REASON)): a remote
    /// that opens and drops connections cannot make the server hold more.
    pub fn max_parked_sessions(mut self, sessions: usize) -> Self {
        self.parts.max_parked_sessions = sessions;
        self
    }

    /// How many bytes at most the sessions waiting for their peer hold
    /// together (what was sent to their peers meanwhile). Default
    /// [`DEFAULT_MAX_PARKED_BYTES`](crate::DEFAULT_MAX_PARKED_BYTES), 256
    /// MiB. Past it the sessions that have waited longest end first.
    pub fn max_parked_bytes(mut self, bytes: usize) -> Self {
        self.parts.max_parked_bytes = bytes;
        self
    }

    /// How long a room whose last peer left is kept, with its data, before
    /// it is removed and closed: a peer that reconnects within the grace
    /// finds it. Default zero: removed when its last peer leaves, as
    /// protoo applications do.
    pub fn empty_room_grace(mut self, grace: Duration) -> Self {
        self.parts.grace = grace;
        self
    }

    /// Makes the rooms span several processes: `backend` carries
    /// broadcasts, presence, replacements and messages to a peer by id
    /// between this process (a node) and the others with the same backend
    /// settings (see [`cluster`](crate::cluster)). Without it (the
    /// default), rooms are this process's alone.
    pub fn cluster(mut self, backend: impl ClusterBackend) -> Self {
        self.parts.cluster = Some(Arc::new(backend));
        self
    }

    /// What is broadcast, in its room, about a member whose node died (its
    /// process was killed, or lost its cluster link for good): the method
    /// and data of a notification, made once per lost member,
    /// cluster-wide, by the node that notices. Return `None` to broadcast
    /// nothing (the default: the member just leaves the room's presence).
    /// The lost peer's id is excluded from the broadcast. Data that cannot
    /// be encoded is logged and nothing is broadcast.
    ///
    /// ```
    /// use protoo_core::Rooms;
    ///
    /// let rooms: Rooms = Rooms::builder()
    ///     .on_member_lost(|lost| {
    ///         Some(("peerClosed", serde_json::json!({ "peerId": lost.peer_id })))
    ///     })
    ///     .build();
    /// # drop(rooms);
    /// ```
    pub fn on_member_lost<M, T>(
        mut self,
        hook: impl Fn(&LostMember) -> Option<(M, T)> + Send + Sync + 'static,
    ) -> Self
    where
        M: AsRef<str>,
        T: Serialize,
    {
        self.parts.on_member_lost = Some(Box::new(move |lost: &LostMember| {
            let (method, data) = hook(lost)?;
            encode::notification(method.as_ref(), &data)
                .inspect_err(|error| {
                    tracing::warn!(
                        room_id = lost.room_id,
                        peer_id = lost.peer_id,
                        %error,
                        "lost member's notification not encodable, nothing broadcast"
                    );
                })
                .ok()
        }));
        self
    }

    /// Runs `hook` once when a room closes, with the room (its data still
    /// there): its last member left (a peer or a [`RoomHold`](crate::RoomHold);
    /// after the empty-room grace, if any), [`Room::close`],
    /// [`Rooms::remove`] or [`Rooms::close_all`]. The room's peers are
    /// closed by then. Lets an application release what the room's data
    /// holds (close its mediasoup router) at once, instead of when the last
    /// handle to the room goes.
    ///
    /// Called outside every lock of the registry and the room; it must not
    /// block (spawn what takes time). The registry keeps the hook: a hook
    /// that captures the registry itself (a `Rooms` clone) keeps it alive
    /// for good; capture what the room's teardown needs instead.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use protoo_core::Rooms;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), protoo_core::CoreError> {
    /// let closed = Arc::new(AtomicUsize::new(0));
    /// let counter = closed.clone();
    /// let rooms: Rooms = Rooms::builder()
    ///     .on_close(move |room| {
    ///         assert_eq!(room.id(), "r1");
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build();
    /// let (room, hold) = rooms.admit("r1", "").hold().await?;
    /// drop(hold); // the last member: the room closes
    /// room.closed().await;
    /// assert_eq!(closed.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_close(mut self, hook: impl Fn(&Room<D, R>) + Send + Sync + 'static) -> Self {
        self.on_close = Some(Arc::new(hook));
        self
    }

    /// The registry, whose rooms get `R::default()` as their data.
    pub fn build(self) -> Rooms<D, R>
    where
        R: Default,
    {
        Rooms::from_parts(self.parts, Setup::Default(R::default), self.on_close)
    }

    /// The registry, whose rooms get their data from `setup(room_setup)`:
    /// the room id and the [`Context`] of the admission that started the
    /// setup (see [`RoomSetup`] for which one that is when several race).
    ///
    /// The setup runs once per room, in a task of its own (it is not
    /// cancelled when the admission that started it gives up), when the
    /// room's first member arrives; the admissions that arrive meanwhile
    /// wait for it. If it fails, every waiting admission fails with its
    /// error ([`CoreError::RoomSetup`]; `protoo_server` rejects the
    /// connections with the error's code as the HTTP status), and the next
    /// admission runs it anew. A setup that panics fails with 500.
    pub fn setup<F, Fut, E>(self, setup: F) -> Rooms<D, R>
    where
        F: Fn(RoomSetup) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        E: IntoErrorData + 'static,
    {
        let setup = Setup::Async(Box::new(move |room_setup| {
            let made = setup(room_setup);
            Box::pin(async move { made.await.map_err(IntoErrorData::into_error_data) })
        }));
        Rooms::from_parts(self.parts, setup, self.on_close)
    }
}

impl<D, R> std::fmt::Debug for RoomsBuilder<D, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomsBuilder")
            .field("policy", &self.parts.policy)
            .field("grace", &self.parts.grace)
            .field("cluster", &self.parts.cluster.is_some())
            .finish_non_exhaustive()
    }
}

/// What a setup ends with: the room (holding a reservation for each
/// admission that waited), or the error.
type Outcome<D, R> = Option<Result<Room<D, R>, ErrorData>>;

/// One room's setup in progress, as its slot in the registry holds it.
pub(super) struct Pending<D, R> {
    shared: Arc<watch::Sender<Outcome<D, R>>>,
    /// Admissions waiting (their [`Waiting`] alive).
    waiters: usize,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Pending<D, R> {
    /// A setup of `room_id` about to start, with the caller as its first
    /// waiter. Called under the registry's lock; the setup itself is
    /// started outside it ([`Starter::run`]).
    pub(super) fn new(
        registry: &Arc<RegistryInner<D, R>>,
        room_id: Arc<str>,
    ) -> (Self, Waiting<D, R>, Starter<D, R>) {
        let (shared, _) = watch::channel(None);
        let shared = Arc::new(shared);
        let starter = Starter(Completion {
            registry: Arc::downgrade(registry),
            room_id: room_id.clone(),
            shared: shared.clone(),
        });
        let mut pending = Pending { shared, waiters: 0 };
        let waiting = pending.wait(registry, room_id);
        (pending, waiting, starter)
    }

    /// One more admission waits for this setup.
    pub(super) fn wait(
        &mut self,
        registry: &Arc<RegistryInner<D, R>>,
        room_id: Arc<str>,
    ) -> Waiting<D, R> {
        self.waiters += 1;
        Waiting {
            registry: Arc::downgrade(registry),
            room_id,
            shared: self.shared.clone(),
            done: false,
        }
    }
}

/// Starts a room's setup (outside the registry's lock: the application's
/// function may take its time, or panic).
pub(super) struct Starter<D: Send + Sync + 'static, R: Send + Sync + 'static>(Completion<D, R>);

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Starter<D, R> {
    /// Runs `made`, the application's setup future for the room, in a task
    /// of its own.
    pub(super) fn run(self, made: SetupFuture<R>) {
        let completion = self.0;
        tracing::debug!(room_id = %protoo_transport::log::Remote(&completion.room_id), "room setup started");
        tokio::spawn(async move {
            let result = made.await;
            completion.finish(result);
        });
    }
}

/// Completes a setup when its task ends: with the task's result, or with a
/// 500 if the task ended without one (the setup panicked or the runtime
/// shut down).
struct Completion<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    registry: Weak<RegistryInner<D, R>>,
    room_id: Arc<str>,
    shared: Arc<watch::Sender<Outcome<D, R>>>,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Completion<D, R> {
    /// Publishes the outcome (once) and registers the room, or removes the
    /// slot of a failed setup.
    fn finish(&self, result: Result<R, ErrorData>) {
        if self.shared.borrow().is_some() {
            return;
        }
        let Some(registry) = self.registry.upgrade() else {
            let error = result
                .err()
                .unwrap_or_else(|| ErrorData::new(503, "rooms dropped"));
            self.shared.send_replace(Some(Err(error)));
            return;
        };
        let mut emptied = None;
        let replaced = {
            let mut rooms = lock(&registry.rooms);
            let waiters = match rooms.get(&self.room_id) {
                Some(Slot::Pending(pending)) if Arc::ptr_eq(&pending.shared, &self.shared) => {
                    pending.waiters
                }
                // Not ours (cannot happen: only the setup replaces its slot):
                // fail whoever waits, leave the slot alone.
                _ => {
                    self.shared
                        .send_replace(Some(Err(ErrorData::new(500, "room setup failed"))));
                    return;
                }
            };
            let (slot, outcome) = match result {
                Ok(data) => {
                    let weak = Arc::downgrade(&registry);
                    let room = Room::create(
                        self.room_id.clone(),
                        weak,
                        registry.cluster.clone(),
                        registry.on_close.clone(),
                        data,
                        waiters,
                    );
                    tracing::debug!(room_id = %protoo_transport::log::Remote(&self.room_id), waiters, "room setup done");
                    if waiters == 0 {
                        emptied = Some(room.clone());
                    }
                    (Some(Slot::Ready(room.clone())), Ok(room))
                }
                Err(error) => {
                    tracing::debug!(
                        room_id = %protoo_transport::log::Remote(&self.room_id),
                        error = %protoo_transport::log::Remote(&error),
                        waiters,
                        "room setup failed"
                    );
                    (None, Err(error))
                }
            };
            let replaced = match slot {
                Some(slot) => rooms.insert(self.room_id.clone(), slot),
                None => rooms.remove(&self.room_id),
            };
            self.shared.send_replace(Some(outcome));
            replaced
        };
        drop(replaced);
        // Nobody waited any more: the room is empty from the start.
        if let Some(room) = emptied {
            let emptiness = lock(&room.inner.state).emptiness();
            if let Some(emptiness) = emptiness {
                registry.room_emptied(&room, emptiness);
            }
        }
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Drop for Completion<D, R> {
    fn drop(&mut self) {
        // The task ended without a result (the setup panicked, or the
        // runtime is shutting down): the waiters fail, and the next
        // admission starts over.
        self.finish(Err(ErrorData::new(500, "room setup failed")));
    }
}

/// An admission waiting for its room's setup. Dropped before the outcome
/// (the admission gave up), it stops being counted; dropped after a
/// successful outcome it did not take, it gives back the room's
/// reservation made for it.
pub(super) struct Waiting<D: Send + Sync + 'static, R: Send + Sync + 'static> {
    registry: Weak<RegistryInner<D, R>>,
    room_id: Arc<str>,
    shared: Arc<watch::Sender<Outcome<D, R>>>,
    /// The outcome was taken.
    done: bool,
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Waiting<D, R> {
    /// Waits for the setup's outcome: the room, with a reservation held
    /// for this admission, or the setup's error.
    pub(super) async fn outcome(mut self) -> Result<Room<D, R>, CoreError> {
        let mut outcome = self.shared.subscribe();
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(outcome) => match &*outcome {
                Some(Ok(room)) => Ok(room.clone()),
                Some(Err(error)) => Err(CoreError::RoomSetup(error.clone())),
                None => Err(CoreError::RoomSetup(ErrorData::new(
                    500,
                    "room setup failed",
                ))),
            },
            Err(_) => Err(CoreError::RoomSetup(ErrorData::new(
                500,
                "room setup failed",
            ))),
        };
        self.done = true;
        result
    }
}

impl<D: Send + Sync + 'static, R: Send + Sync + 'static> Drop for Waiting<D, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let given_up = {
            let mut rooms = lock(&registry.rooms);
            match &*self.shared.borrow() {
                None => {
                    if let Some(Slot::Pending(pending)) = rooms.get_mut(&self.room_id)
                        && Arc::ptr_eq(&pending.shared, &self.shared)
                    {
                        pending.waiters -= 1;
                    }
                    None
                }
                Some(Ok(room)) => Some(room.clone()),
                Some(Err(_)) => None,
            }
        };
        // The setup completed with a place held for this admission.
        if let Some(room) = given_up {
            room.release_reservation();
        }
    }
}
