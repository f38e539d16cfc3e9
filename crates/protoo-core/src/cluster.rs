//! The seam a cluster backend plugs into: rooms whose peers live in several
//! processes.
//!
//! Without a backend (the default) a [`Rooms`](crate::Rooms) registry is
//! one process's rooms and nothing here runs. With one, given to
//! [`RoomsBuilder::cluster`](crate::RoomsBuilder::cluster) at startup, each
//! process is a **node** of a cluster, and a room of one id is one room
//! across the nodes:
//!
//! - its **members** are the peers connected to any node; each lives, and
//!   is handled, where it connected;
//! - a broadcast ([`Room::to_all`](crate::Room::to_all)) reaches the
//!   members on every node: delivered here at once, handed to the backend
//!   once (the encoded frame and its [`Target`], which is data: excluded
//!   ids, [`listed`](crate::Broadcast::listed)) for the other nodes. A
//!   broadcast to this node only is named so
//!   ([`Broadcast::local`](crate::Broadcast::local)), and only such a
//!   broadcast takes a [`filter`](crate::LocalBroadcast::filter), a closure
//!   that can only run here;
//! - [presence](crate::Room::set_presence) is shared: [`Room::presence`](crate::Room::presence)
//!   lists the peers listed on every node;
//! - a peer id joining on one node replaces (or, under
//!   [`DuplicatePolicy::Refuse`](crate::DuplicatePolicy::Refuse), is refused by) a peer with that id on
//!   another node; a peer with a [resume window](crate::PeerConfig::resume_window)
//!   is not replaced but moved: its node hands over what its remote did
//!   not get ([`Handover`]) and lets it go without a close anybody hears
//!   of ([`Initiator::Moved`](crate::Initiator::Moved)), and the newcomer
//!   goes on with its session;
//! - [`Room::notify_peer`](crate::Room::notify_peer),
//!   [`request_peer`](crate::Room::request_peer) and
//!   [`close_peer`](crate::Room::close_peer) reach a peer on whatever node it
//!   is;
//! - the members of a node that dies are announced gone once, cluster-wide,
//!   with what [`RoomsBuilder::on_member_lost`](crate::RoomsBuilder::on_member_lost)
//!   makes.
//!
//! The core calls a [`ClusterBackend`] synchronously (each call only queues
//! work, in the order the calls were made, so one sender's messages keep
//! their order), except for the three calls that need an answer, which
//! return a future. The backend reaches this node's rooms through the
//! [`LocalNode`] it is given in [`ClusterBackend::attach`]. `protoo-redis` is
//! a backend over Redis; a NATS or Postgres backend implements the same
//! trait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use protoo_codec::{Frame, Payload};

use crate::{Identity, Presence, RequestError, Target};

/// A boxed future a [`ClusterBackend`] returns.
pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a node hands over when the session of one of its peers moves to
/// another node, where its remote resumed it ([`LocalNode::replace`]).
///
/// The registry it came from counts it as in flight until it is dropped
/// (every clone of it): [`Rooms::drained`](crate::Rooms::drained) waits for
/// that, so a backend drops it only once it has sent (or queued) it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Handover {
    /// What was sent to the peer and its remote did not get, in order: the
    /// new node writes it first.
    pub frames: Vec<Frame>,
    /// What the peer was listed with in its room, if anything.
    pub presence: Option<Payload>,
    /// Counts the handover in flight in its registry while it lives.
    pub(crate) in_flight: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Handover {
    /// A handover of `frames` and `presence`.
    pub fn new(frames: Vec<Frame>, presence: Option<Payload>) -> Self {
        Handover {
            frames,
            presence,
            in_flight: None,
        }
    }
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("frames", &self.frames.len())
            .field("presence", &self.presence)
            .finish_non_exhaustive()
    }
}

/// What the backend says of a peer admitted on this node
/// ([`ClusterBackend::member_added`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Admission {
    /// The peer is a member of the room across the cluster: it may read.
    Admitted,
    /// Another node has a peer with this id in the room, and the policy is
    /// [`DuplicatePolicy::Refuse`](crate::DuplicatePolicy::Refuse) or that
    /// peer's [`Identity`] is not the newcomer's (no takeover across nodes,
    /// as within one: see [`ClusterBackend::member_added`]): the newcomer
    /// is closed (4000,
    /// [`DUPLICATE_ELSEWHERE_REASON`](crate::DUPLICATE_ELSEWHERE_REASON))
    /// before it reads anything, and that peer is left untouched.
    Refused,
    /// The peer is a member of the room across the cluster, and it resumed
    /// the session of the peer with its id on another node, which handed it
    /// over: its frames are written first, its presence kept.
    Resumed(Handover),
}

/// A message for one peer of a room, by id, wherever it is
/// ([`ClusterBackend::to_peer`], [`LocalNode::to_peer`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PeerMessage {
    /// An encoded notification, queued to the peer.
    Notify(Frame),
    /// A request: answered with the peer's response.
    Request {
        /// The request's method.
        method: String,
        /// The request's data.
        data: Payload,
    },
    /// Close the peer (4000, as [`Peer::close`](crate::Peer::close)).
    Close,
}

/// What became of a [`PeerMessage`]: `Ok(None)` for a notification queued
/// or a close done, `Ok(Some(data))` for a request's response, and an error
/// when no peer with the id is in the room anywhere
/// ([`RequestError::PeerClosed`]) or the request failed.
pub type PeerReply = Result<Option<Payload>, RequestError>;

/// A member of a room on this node, as [`LocalNode::members`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The room's id.
    pub room_id: String,
    /// The peer's id.
    pub peer_id: String,
    /// What the peer is listed with, if it is listed
    /// ([`Room::set_presence`](crate::Room::set_presence)).
    pub info: Option<Payload>,
}

/// A member of a room that was on a node that is gone (its process died):
/// what [`RoomsBuilder::on_member_lost`](crate::RoomsBuilder::on_member_lost)
/// is asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostMember {
    /// The room's id.
    pub room_id: String,
    /// The peer's id.
    pub peer_id: String,
    /// What it was listed with, if it was listed.
    pub info: Option<Payload>,
}

impl LostMember {
    /// A lost member of `room_id`.
    pub fn new(
        room_id: impl Into<String>,
        peer_id: impl Into<String>,
        info: Option<Payload>,
    ) -> Self {
        LostMember {
            room_id: room_id.into(),
            peer_id: peer_id.into(),
            info,
        }
    }
}

/// What makes the notification broadcast for a [`LostMember`] (`None`:
/// nothing is broadcast), encoded.
pub(crate) type OnMemberLost = Box<dyn Fn(&LostMember) -> Option<Frame> + Send + Sync>;

/// A cluster backend: what carries rooms across the nodes of a cluster.
///
/// Every method but the three returning a [`ClusterFuture`] is called
/// synchronously, sometimes under a room's lock: it must only queue work
/// (never block, never call back into the core). Calls about one room are
/// made in the order of the room's changes, and calls from one task in the
/// order the task made them; a backend keeps that order on the way to the
/// other nodes.
///
/// What a backend must guarantee, and what `protoo-redis` does, is in the
/// [module docs](self).
pub trait ClusterBackend: Send + Sync + 'static {
    /// Called once, when the registry is built, with the handle through
    /// which the backend reaches this node's rooms.
    fn attach(&self, node: LocalNode);

    /// This node's id in the cluster, if it has one: the peers' `tracing`
    /// spans carry it (`node_id`), beside their peer and room ids (shared,
    /// not copied, by every peer).
    fn node_id(&self) -> Option<Arc<str>> {
        None
    }

    /// The peer `peer_id` was admitted into `room_id` on this node (with
    /// the registry's duplicate policy `replace`: `true` for
    /// [`DuplicatePolicy::Replace`](crate::DuplicatePolicy::Replace)).
    ///
    /// The peer reads nothing until the future resolves: resolve once the
    /// peer is a member cluster-wide (it gets the room's broadcasts from
    /// other nodes) and a peer with its id on another node, if any, is
    /// closed and its close handled there ([`LocalNode::replace`]), so
    /// that what that node broadcast about it arrives first. A peer with
    /// this id already on this node has been replaced by the core.
    ///
    /// `identity` is the newcomer's verified [`Identity`], if it has one
    /// ([`Admit::identity`](crate::Admit::identity)). The backend enforces
    /// across nodes the rule the core enforces on one: a peer with this id
    /// on another node is replaced only when both have no identity or both
    /// have one of the same subject and room
    /// ([`Identity::same_subject`]); otherwise the answer is
    /// [`Admission::Refused`] and that peer is not touched, not even told.
    /// A backend keeps what it needs of an identity to compare it (a
    /// fingerprint of its subject and room, say), never the credential.
    ///
    /// `resume` is set for a newcomer with a
    /// [resume window](crate::PeerConfig::resume_window): a peer with its
    /// id (and identity) on another node that has a session too hands it
    /// over ([`LocalNode::replace`] there returns a [`Handover`]), answered
    /// as [`Admission::Resumed`]; meanwhile the member stays listed with
    /// what it was listed with there, so that its presence shows no gap.
    fn member_added(
        &self,
        room_id: &str,
        peer_id: &str,
        replace: bool,
        identity: Option<&Identity>,
        resume: bool,
    ) -> ClusterFuture<Admission>;

    /// Whether a live peer `peer_id` of `room_id` on another node has
    /// another identity than `identity` (the newcomer's): then
    /// [`member_added`](ClusterBackend::member_added) would refuse the
    /// newcomer. Asked, for a newcomer with an identity, before it is
    /// admitted, so that it is refused
    /// ([`CoreError::IdentityMismatch`](crate::CoreError::IdentityMismatch))
    /// before anything of it exists: a server answers it with a status
    /// before the upgrade, and the application never sees it.
    /// `member_added` still decides (another may join in between). The
    /// default, `false`, leaves it all to `member_added`.
    fn taken_elsewhere(
        &self,
        room_id: &str,
        peer_id: &str,
        identity: &Identity,
    ) -> ClusterFuture<bool> {
        let _ = (room_id, peer_id, identity);
        Box::pin(std::future::ready(false))
    }

    /// The peer `peer_id` of `room_id` on this node is listed with `info`.
    fn presence_set(&self, room_id: &str, peer_id: &str, info: &Payload);

    /// The peer `peer_id` left `room_id` on this node (before the
    /// application sees its close).
    fn member_removed(&self, room_id: &str, peer_id: &str);

    /// A broadcast in `room_id`, already delivered to this node's members:
    /// deliver `frame` to the members on the other nodes that `target`
    /// chooses, once each ([`LocalNode::deliver`] there, with the same
    /// target: carry it whole, it serialises with serde). Never called for
    /// a broadcast to this node only ([`Target::local`]).
    fn broadcast(&self, room_id: &str, frame: &Frame, target: &Target);

    /// The listed peers of `room_id` across the cluster; `None` when the
    /// backend cannot tell now (then this node's own list is used).
    fn presence(&self, room_id: &str) -> ClusterFuture<Option<Vec<Presence>>>;

    /// A message for the peer `peer_id` of `room_id`, which is not on this
    /// node: deliver it where the peer is ([`LocalNode::to_peer`] there).
    fn to_peer(
        &self,
        room_id: &str,
        peer_id: &str,
        message: PeerMessage,
    ) -> ClusterFuture<PeerReply>;
}

/// This node's rooms, as a backend reaches them.
pub(crate) trait NodeRooms: Send + Sync {
    fn deliver(&self, room_id: &str, frame: &Frame, target: &Target) -> usize;
    fn replace(&self, room_id: &str, peer_id: &str) -> Option<ClusterFuture<Option<Handover>>>;
    fn lost_frame(&self, member: &LostMember) -> Option<Frame>;
    fn to_peer(
        &self,
        room_id: &str,
        peer_id: &str,
        message: PeerMessage,
    ) -> ClusterFuture<PeerReply>;
    fn members(&self) -> Vec<Member>;
}

/// This node's rooms, for the cluster backend: what other nodes send is
/// delivered through it.
///
/// A cheap handle that does not keep the registry alive: once the
/// [`Rooms`](crate::Rooms) it came from is dropped, every call does nothing.
#[derive(Clone)]
pub struct LocalNode {
    rooms: Weak<dyn NodeRooms>,
}

impl LocalNode {
    pub(crate) fn new(rooms: Weak<dyn NodeRooms>) -> Self {
        LocalNode { rooms }
    }

    fn rooms(&self) -> Option<Arc<dyn NodeRooms>> {
        self.rooms.upgrade()
    }

    /// Delivers a broadcast from another node to this node's members of
    /// `room_id` (not to the other nodes): the peers `target` chooses.
    /// Returns to how many it was queued.
    pub fn deliver(&self, room_id: &str, frame: &Frame, target: &Target) -> usize {
        self.rooms()
            .map_or(0, |rooms| rooms.deliver(room_id, frame, target))
    }

    /// Closes this node's peer `peer_id` of `room_id` because a peer with
    /// its id joined on another node (4000, as a replacement here:
    /// [`Initiator::Replaced`](crate::Initiator::Replaced)). The future
    /// resolves once the application has handled its close (its events
    /// ended): what it broadcast about the peer is queued by then. `None`
    /// if there is no such open peer here.
    ///
    /// A peer with a [resume window](crate::PeerConfig::resume_window) is
    /// moved rather than replaced: its session is handed over (what its
    /// remote did not get, its presence) and it closes as
    /// [`Initiator::Moved`](crate::Initiator::Moved), which an application
    /// does not announce; the future resolves to the [`Handover`] for the
    /// new node. A replaced peer's resolves to `None`.
    pub fn replace(&self, room_id: &str, peer_id: &str) -> Option<ClusterFuture<Option<Handover>>> {
        self.rooms()?.replace(room_id, peer_id)
    }

    /// What the application broadcasts about a member of a dead node
    /// ([`RoomsBuilder::on_member_lost`](crate::RoomsBuilder::on_member_lost)),
    /// if anything. The backend broadcasts it in the member's room (here
    /// with [`LocalNode::deliver`], and to the other nodes), once
    /// cluster-wide, with the lost peer's id excluded so that a newcomer
    /// with its id does not hear it. The hook's method and data come
    /// encoded as a notification.
    pub fn lost_frame(&self, member: &LostMember) -> Option<Frame> {
        self.rooms()?.lost_frame(member)
    }

    /// Delivers a message from another node to this node's peer `peer_id`
    /// of `room_id`; [`RequestError::PeerClosed`] if there is none.
    pub fn to_peer(
        &self,
        room_id: &str,
        peer_id: &str,
        message: PeerMessage,
    ) -> ClusterFuture<PeerReply> {
        match self.rooms() {
            Some(rooms) => rooms.to_peer(room_id, peer_id, message),
            None => Box::pin(std::future::ready(Err(RequestError::PeerClosed))),
        }
    }

    /// Every member of every room on this node, with its presence: what a
    /// backend registers again after it lost its shared state (this node's
    /// rooms are the truth about this node's peers).
    pub fn members(&self) -> Vec<Member> {
        self.rooms()
            .map(|rooms| rooms.members())
            .unwrap_or_default()
    }
}

impl fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalNode")
            .field("attached", &(self.rooms.strong_count() > 0))
            .finish()
    }
}
