//! Building a peer and starting it: the checks every new peer passes
//! ([`admission`]), [`build`], and [`Start`], which spawns the reader task
//! once the peer is in its room, gated when it must wait first (for the
//! application to handle the peer it replaces, or for the cluster's
//! admission).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, OnceLock};

use protoo_transport::log::{Remote, Source};
use protoo_transport::{FrameStream, Transport, close_code};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::Instrument;

use super::PeerEvents;
use super::reader::read;
use super::state::{PeerState, Pending};
use super::{Peer, PeerInner};
use crate::budget::Budget;
use crate::cluster::{Admission, Handover};
use crate::events::EventQueue;
use crate::identity::IdentitySlot;
use crate::ids::IdRng;
use crate::metrics::PeerMetrics;
use crate::rate::{FanOut, Limiter};
use crate::session::{Parked, Session};
use crate::sync::lock;
use crate::{CoreError, PeerConfig};

/// A peer built and not yet started: its reader task is spawned by
/// [`Start::spawn`], once the peer is where it belongs (its room).
pub(crate) struct Start {
    pub(crate) core: Arc<PeerState>,
    /// Taken by [`Start::spawn`].
    pub(crate) stream: Option<Box<dyn FrameStream>>,
    pub(crate) handle: Handle,
    /// The cluster node the peer is on, for its span (rooms spanning
    /// several processes).
    pub(crate) node_id: Option<Arc<str>>,
}

impl Start {
    pub(crate) fn core(&self) -> &Arc<PeerState> {
        &self.core
    }

    /// The span the peer's reader task runs in.
    fn span(&self) -> tracing::Span {
        match &self.node_id {
            None => tracing::debug_span!(
                "protoo_peer",
                peer_id = %Remote(&self.core.id),
                room_id = %Remote(self.core.room_id.as_deref().unwrap_or("")),
            ),
            Some(node_id) => tracing::debug_span!(
                "protoo_peer",
                peer_id = %Remote(&self.core.id),
                room_id = %Remote(self.core.room_id.as_deref().unwrap_or("")),
                node_id = %node_id,
            ),
        }
    }

    /// Names the cluster node the peer is on, in its span.
    pub(crate) fn set_node_id(&mut self, node_id: Option<Arc<str>>) {
        self.node_id = node_id;
    }

    pub(crate) fn spawn(mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let span = self.span();
        tracing::debug!(parent: &span, "peer created");
        self.handle
            .spawn(read(self.core.clone(), stream).instrument(span));
    }

    /// Like [`Start::spawn`], but the peer reads nothing before the
    /// application is done with the events of `replaced`, the peer it
    /// replaces (at most [`REPLACEMENT_WAIT`]), and the cluster backend
    /// admitted it (`gate`; at most [`CLUSTER_ADMISSION_WAIT`]): whatever
    /// the application does on the old peer's close (telling the others it
    /// left), here or on another node, happens before the newcomer's first
    /// request is handed out.
    pub(crate) fn spawn_after(
        mut self,
        replaced: Option<Arc<PeerState>>,
        gate: Option<crate::cluster::ClusterFuture<crate::cluster::Admission>>,
    ) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let span = self.span();
        tracing::debug!(parent: &span, "peer created, waiting for its admission");
        let core = self.core.clone();
        self.handle.spawn(
            async move {
                if let Some(replaced) = replaced {
                    let waited =
                        tokio::time::timeout(REPLACEMENT_WAIT, replaced.events_finished()).await;
                    drop(replaced);
                    if waited.is_err() {
                        tracing::debug!("the replaced peer's events were not handled in time");
                    }
                }
                let admission = match gate {
                    Some(gate) => match tokio::time::timeout(CLUSTER_ADMISSION_WAIT, gate).await {
                        Ok(admission) => Some(admission),
                        Err(_) => {
                            tracing::debug!("the cluster admission did not answer in time");
                            None
                        }
                    },
                    None => None,
                };
                let handover = match admission {
                    Some(Admission::Refused) => {
                        tracing::debug!("peer id already in the room on another node: refused");
                        core.close_locally(close_code::PROTOO_CLOSED, DUPLICATE_ELSEWHERE_REASON);
                        None
                    }
                    Some(Admission::Resumed(handover)) => Some(handover),
                    _ => None,
                };
                if !resumed_here(&core, handover) {
                    return;
                }
                read(core, stream).await;
            }
            .instrument(span),
        );
    }
}

/// Attaches the transport of a peer admitted in a clustered room (its
/// session was pending: [`Session::new`]), writing first what
/// another node handed over if it resumed a session there, and restores
/// its presence; queues [`PeerEvent::Resumed`](crate::PeerEvent::Resumed)
/// for a resume. Whether the peer goes on (its session may have ended
/// meanwhile, past its buffer).
fn resumed_here(core: &Arc<PeerState>, handover: Option<Handover>) -> bool {
    let (frames, presence) = match handover {
        Some(handover) => (Some(handover.frames), handover.presence),
        None => (None, None),
    };
    let resumed = frames.is_some();
    let missed = match (&core.session, frames) {
        (Some(session), frames) => match session.attach_pending(frames.unwrap_or_default()) {
            Ok(missed) => missed,
            Err(reason) => {
                core.finish(reason, true);
                return false;
            }
        },
        (None, Some(frames)) => {
            // A newcomer without a window: written as they come.
            let missed = frames.len();
            for frame in frames {
                let _ = core.send_uncounted(frame);
            }
            missed
        }
        (None, None) => 0,
    };
    if resumed {
        if let Some(info) = presence {
            let room = lock(&core.leave)
                .as_ref()
                .and_then(std::sync::Weak::upgrade);
            if let Some(room) = room {
                room.restore_presence(core, info);
            }
        }
        tracing::debug!(missed, "session resumed from another node");
        let _ = core.events.try_push(crate::PeerEvent::Resumed { missed });
    }
    true
}

/// How long a peer admitted in a clustered room waits, at most, for the
/// cluster backend's admission before it reads anyway (the backend's own
/// bound, a replacement on another node included, is shorter).
pub const CLUSTER_ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The close reason of a peer refused because a peer with its id is in the
/// room on another node ([`DuplicatePolicy::Refuse`](crate::DuplicatePolicy::Refuse)).
pub const DUPLICATE_ELSEWHERE_REASON: &str = "peer id already in the room";

/// How long a peer that replaced another waits, at most, for the
/// application to handle the old peer's close before its own events flow.
pub const REPLACEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Start {
    /// Never started (see [`Drop`]).
    fn unused(&self) -> bool {
        self.stream.is_some()
    }
}

impl Drop for Start {
    /// Never started: no event will come (as when the reader task ends).
    fn drop(&mut self) {
        if self.unused() {
            self.core.events.close();
        }
    }
}

/// What every way of creating a peer checks first: a non-empty id and a
/// Tokio runtime to run its reader on. A refused peer's transport is closed
/// (4000), as protoo does.
pub(crate) fn admission(id: &str, transport: &Transport) -> Result<Handle, CoreError> {
    let refused = |error| {
        transport.close();
        Err(error)
    };
    if id.is_empty() {
        return refused(CoreError::EmptyId);
    }
    Handle::try_current().or_else(|_| refused(CoreError::NoRuntime))
}

/// Builds a peer without starting it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build<D>(
    id: Arc<str>,
    room_id: Option<Arc<str>>,
    transport: Transport,
    data: D,
    config: &PeerConfig,
    handle: Handle,
    identity: Option<Box<IdentitySlot>>,
    parked: Option<Arc<Parked>>,
    pending: bool,
) -> (Peer<D>, PeerEvents, Start) {
    let requests = transport.request_tracker().cloned();
    let source = Source::of(transport.remote_addr());
    let (sink, stream) = transport.into_parts();
    let session = config
        .resume_window
        .map(|window| Session::new(sink.clone(), pending, window, config.resume_buffer, parked));
    let sink = match &session {
        Some(session) => session.clone() as Arc<dyn protoo_transport::FrameSink>,
        None => sink,
    };
    let core = Arc::new(PeerState {
        id,
        room_id,
        sink,
        requests,
        request_timeout: config.request_timeout,
        max_invalid_messages: (config.max_invalid_messages)
            .map(|max| std::num::NonZeroU32::MIN.saturating_add(max.saturating_sub(1))),
        pending: Mutex::new(Pending {
            map: HashMap::new(),
            closed: false,
            next_seq: 0,
            rng: IdRng::new(),
        }),
        reason: OnceLock::new(),
        done: AtomicBool::new(false),
        events_done: AtomicBool::new(false),
        done_notify: Notify::new(),
        events: EventQueue::new(config.event_queue),
        leave: Mutex::new(None),
        budget: Budget::new(config.incoming_budget, config.max_unanswered_requests),
        source,
        warned: AtomicBool::new(false),
        rate: Limiter::new(config.message_rate, config.byte_rate)
            .map(|limiter| Box::new(Mutex::new(limiter))),
        fan_out: config
            .fan_out_rate
            .map(|rate| Box::new(Mutex::new(FanOut::new(rate)))),
        max_presence_bytes: u32::try_from(config.max_presence_bytes).unwrap_or(u32::MAX),
        invalid: AtomicU32::new(0),
        metrics: PeerMetrics::new(),
        identity,
        session,
    });
    let peer = Peer {
        inner: Arc::new(PeerInner {
            core: core.clone(),
            data,
        }),
    };
    let events = PeerEvents::new(core.clone());
    let start = Start {
        core,
        stream: Some(stream),
        handle,
        node_id: None,
    };
    (peer, events, start)
}
