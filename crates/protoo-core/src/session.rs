//! Sessions that outlive their transport ([`PeerConfig::resume_window`]):
//! [`Session`], the sink of a peer with a resume window, which writes to
//! the peer's current transport while it has one and holds what is sent
//! meanwhile (bounded in bytes) while it has none; and [`Parked`], the
//! server-wide bound on the sessions waiting for their peer and on the
//! bytes they hold.
//!
//! What a session guarantees: every frame sent to the peer after its
//! transport was lost is held and written first on the transport that
//! resumes it, in order, once. Frames written to the lost transport before
//! the loss are given back by the transport when it can tell that the
//! remote did not confirm them ([`FrameSink::take_unconfirmed`]: a
//! WebSocket confirms with the pong to a ping written after them), and are
//! written again: at least once for them, exactly once for the rest.
//!
//! [`PeerConfig::resume_window`]: crate::PeerConfig::resume_window

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use protoo_transport::{
    Bytes, CloseReason, Frame, FrameSink, FrameStream, Initiator, SLOW_CONSUMER_REASON, Transport,
    TransportError, close_code,
};

use crate::metrics as meter;
use crate::sync::lock;

/// The reason a session waiting for its peer ends with when the
/// server-wide bound on waiting sessions ([`Rooms`](crate::Rooms)'s
/// `max_parked_sessions` and `max_parked_bytes`) makes room for newer
/// ones: the oldest end first.
pub const SESSION_EVICTED_REASON: &str = "session evicted: too many disconnected sessions";

/// The close reason of a peer whose session moved to another node, where
/// its remote resumed it ([`Initiator::Moved`]): nobody left.
pub const SESSION_MOVED_REASON: &str = "session moved to another node";

/// The reason sent (with 4000, so that a protoo-client does not reconnect)
/// on a peer's old connection when a new one resumes its session while the
/// old one still looked open.
pub const TAKEN_OVER_REASON: &str = "session resumed on a new connection";

/// The default of the bound on sessions waiting for their peer in one
/// registry ([`RoomsBuilder::max_parked_sessions`](crate::RoomsBuilder::max_parked_sessions)).
pub const DEFAULT_MAX_PARKED_SESSIONS: usize = 10_000;

/// The default of the bound on the bytes held by the sessions waiting for
/// their peer in one registry ([`RoomsBuilder::max_parked_bytes`](crate::RoomsBuilder::max_parked_bytes)):
/// 256 MiB.
pub const DEFAULT_MAX_PARKED_BYTES: usize = 256 << 20;

/// The sink of a peer with a resume window.
pub(crate) struct Session {
    /// This session, for [`Parked`] to end it.
    me: Weak<Session>,
    state: Mutex<State>,
    /// Set (under the lock) when a new connection's stream is stored in
    /// `incoming`; cleared by [`Session::poll_takeover`]. Lets the reader
    /// skip the lock on every frame ([`Session::takeover_hint`]).
    incoming_hint: AtomicBool,
    /// [`PeerConfig::resume_window`](crate::PeerConfig::resume_window).
    pub(crate) window: Duration,
    /// [`PeerConfig::resume_buffer`](crate::PeerConfig::resume_buffer).
    limit: usize,
    /// The server-wide bound, for peers in a registry.
    parked: Option<Arc<Parked>>,
}

struct State {
    link: Link,
    /// A new connection's stream, for the reader task to take, and how
    /// many frames were written to it again.
    incoming: Option<(Box<dyn FrameStream>, usize)>,
    /// The reader task, while it waits for a resume.
    waker: Option<Waker>,
    /// Why a waiting session must end now (over its buffer, evicted).
    ended: Option<CloseReason>,
}

enum Link {
    /// Writing to the peer's current transport.
    Attached(Arc<dyn FrameSink>),
    /// No transport: holding what is sent.
    Detached(Held),
    /// Closed: nothing more is written or held.
    Gone,
}

struct Held {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// The session's place in [`Parked`].
    key: u64,
    /// The transport of a peer admitted on this node whose session may
    /// come from another node ([`Session::new`]): attached once
    /// the cluster said ([`Session::attach_pending`]). Such a session is
    /// not waiting for its peer: not counted in [`Parked`].
    pending: Option<Arc<dyn FrameSink>>,
    /// The transport a send found ended before its reader saw the end:
    /// what its remote did not confirm is taken once the reader sees it
    /// (the end of a close handshake confirms what was written before it),
    /// and goes before what is held.
    ended: Option<Arc<dyn FrameSink>>,
}

impl Held {
    /// Takes what the ended transport's remote did not confirm, before
    /// what is held; the bytes added.
    fn collect(&mut self) -> usize {
        let Some(sink) = self.ended.take() else {
            return 0;
        };
        let first = sink.take_unconfirmed();
        let added: usize = first.iter().map(weight).sum();
        for frame in first.into_iter().rev() {
            self.frames.push_front(frame);
        }
        self.bytes += added;
        added
    }
}

/// What [`Session::detach`] found.
pub(crate) enum Detach {
    /// The session waits for its peer.
    Waiting,
    /// A new connection resumed it already: its stream, and how many
    /// frames were written to it again.
    Resumed(Box<dyn FrameStream>, usize),
    /// The session cannot wait (closed, or nothing holds it).
    Gone,
}

/// What a waiting session's reader task is woken for.
pub(crate) enum Wake {
    /// A new connection resumed the session: its stream, and how many
    /// frames were written to it again.
    Resumed(Box<dyn FrameStream>, usize),
    /// The session must end: why.
    Ended(CloseReason),
}

impl Session {
    /// A session on `sink`, attached (`pending` false) or, when `pending`,
    /// not yet: then what is sent is held until [`Session::attach_pending`]
    /// (a peer admitted in a room that spans several processes, whose
    /// session another node may hand over).
    pub(crate) fn new(
        sink: Arc<dyn FrameSink>,
        pending: bool,
        window: Duration,
        limit: usize,
        parked: Option<Arc<Parked>>,
    ) -> Arc<Self> {
        sink.retain_unconfirmed();
        let link = match pending {
            false => Link::Attached(sink),
            true => Link::Detached(Held {
                frames: VecDeque::new(),
                bytes: 0,
                key: 0,
                pending: Some(sink),
                ended: None,
            }),
        };
        Arc::new_cyclic(|me| Session {
            me: me.clone(),
            state: Mutex::new(State {
                link,
                incoming: None,
                waker: None,
                ended: None,
            }),
            incoming_hint: AtomicBool::new(false),
            window,
            limit,
            parked,
        })
    }

    /// Attaches a pending session's transport ([`Session::new`]):
    /// writes `first` (what another node handed over), then what was held
    /// meanwhile, then everything sent from now on. Returns how many frames
    /// of `first` were written (none for a session not pending), or why
    /// the session ended meanwhile (it held more than its buffer).
    pub(crate) fn attach_pending(&self, first: Vec<Frame>) -> Result<usize, CloseReason> {
        let mut state = lock(&self.state);
        if let Some(reason) = &state.ended {
            return Err(reason.clone());
        }
        let Link::Detached(held) = &mut state.link else {
            return Ok(0);
        };
        let Some(sink) = held.pending.take() else {
            return Ok(0);
        };
        let missed = first.len();
        let mut held = std::mem::take(&mut held.frames);
        // While the session moved, a broadcast reached both nodes: the old
        // one held it for the handover, this one for the newcomer. The
        // overlap is the end of `first` and the start of `held` (one
        // room's broadcasts reach every node in the same order): written
        // once.
        let overlap = overlap(&first, &held);
        held.drain(..overlap);
        for frame in first.into_iter().chain(held) {
            if sink.send(frame).is_err() {
                break;
            }
        }
        state.link = Link::Attached(sink);
        Ok(missed)
    }

    /// Hands the session over to another node, where its remote resumed
    /// it: takes what the peer did not get (what is held, or what its
    /// transport, then closed with 4000 [`TAKEN_OVER_REASON`], did not
    /// confirm), in order; nothing more is written or held here. `None` if
    /// the session is over.
    pub(crate) fn hand_over(&self) -> Option<Vec<Frame>> {
        let (old, waker) = {
            let mut state = lock(&self.state);
            if state.ended.is_some() {
                return None;
            }
            state.incoming = None;
            (
                std::mem::replace(&mut state.link, Link::Gone),
                state.waker.take(),
            )
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        match old {
            Link::Attached(sink) => {
                let frames = sink.take_unconfirmed();
                sink.close(close_code::PROTOO_CLOSED, TAKEN_OVER_REASON);
                Some(frames)
            }
            Link::Detached(mut held) => {
                let added = held.collect();
                held.bytes -= added;
                let frames = std::mem::take(&mut held.frames).into();
                if let Some(sink) = held.pending.take() {
                    sink.close(close_code::PROTOO_CLOSED, TAKEN_OVER_REASON);
                }
                self.forget(held, "moved");
                Some(frames)
            }
            Link::Gone => None,
        }
    }

    /// The transport was lost: takes back from it what the remote did not
    /// confirm and holds it, from now on with everything sent, until the
    /// peer resumes or the window ends.
    pub(crate) fn detach(&self) -> Detach {
        let mut state = lock(&self.state);
        if let Some((stream, missed)) = state.incoming.take() {
            // A new connection took over while the old one was ending.
            return Detach::Resumed(stream, missed);
        }
        let bytes = match &mut state.link {
            // What the remote did not confirm is taken when the session
            // resumes: a close this side began (a drain's 1012) is
            // reported at once, and the remote's reply, which confirms
            // what was written before it, may still be on its way.
            Link::Attached(_) => self.detach_locked(&mut state, false),
            // A send found the transport ended first: held already.
            Link::Detached(_) => return Detach::Waiting,
            Link::Gone => return Detach::Gone,
        };
        drop(state);
        self.parked_now(bytes);
        Detach::Waiting
    }

    /// Takes an attached session's transport away, holding what its remote
    /// did not confirm (now, or, when `now` is false, once its reader saw
    /// its end); the bytes now held. Under the state's lock.
    fn detach_locked(&self, state: &mut State, now: bool) -> usize {
        let Link::Attached(sink) = &state.link else {
            return 0;
        };
        let (mut frames, ended): (VecDeque<Frame>, _) = match now {
            true => (sink.take_unconfirmed().into(), None),
            false => (VecDeque::new(), Some(sink.clone())),
        };
        let mut bytes: usize = frames.iter().map(weight).sum();
        // The oldest beyond the bound are given up: at most once for them.
        while bytes > self.limit {
            match frames.pop_front() {
                Some(frame) => bytes -= weight(&frame),
                None => break,
            }
        }
        let key = match &self.parked {
            Some(parked) => parked.park(self.me.clone(), bytes),
            None => 0,
        };
        state.link = Link::Detached(Held {
            frames,
            bytes,
            key,
            pending: None,
            ended,
        });
        bytes
    }

    /// Counts a session that started waiting, holding `bytes`, and applies
    /// the server-wide bounds. Outside the state's lock.
    fn parked_now(&self, bytes: usize) {
        meter::session_parked(bytes);
        if let Some(parked) = &self.parked {
            parked.enforce();
        }
    }

    /// Resumes the session on `transport`: what it holds (or, from an old
    /// transport still open, what that one's remote did not confirm) is
    /// written to it first, in order, then everything sent from now on.
    /// An old transport still open is closed with 4000
    /// [`TAKEN_OVER_REASON`]. Returns how many frames were written again,
    /// or the transport back when the session is over.
    pub(crate) fn resume(&self, transport: Transport) -> Result<usize, Transport> {
        let mut state = lock(&self.state);
        if state.ended.is_some() || matches!(state.link, Link::Gone) {
            return Err(transport);
        }
        let (sink, stream) = transport.into_parts();
        sink.retain_unconfirmed();
        let (frames, old, unparked) =
            match std::mem::replace(&mut state.link, Link::Attached(sink.clone())) {
                Link::Attached(old) => (VecDeque::from(old.take_unconfirmed()), Some(old), None),
                Link::Detached(mut held) => {
                    // What Parked counted: without what collect adds now.
                    let added = held.collect();
                    (held.frames, None, Some((held.key, held.bytes - added)))
                }
                Link::Gone => (VecDeque::new(), None, None),
            };
        let missed = frames.len();
        for frame in frames {
            // Over the new transport's limit: it closes as a slow consumer,
            // and the peer with it.
            if sink.send(frame).is_err() {
                break;
            }
        }
        // Set before the old transport is closed, under the same lock: the
        // reader task, seeing the old one end, finds the new one waiting.
        // A stream it did not take yet (two resumes in a row) is dropped:
        // its transport was just taken over.
        state.incoming = Some((stream, missed));
        self.incoming_hint.store(true, Ordering::Release);
        if let Some(old) = old {
            old.close(close_code::PROTOO_CLOSED, TAKEN_OVER_REASON);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some((key, bytes)) = unparked {
            meter::session_unparked(bytes, "resumed");
            if let Some(parked) = &self.parked {
                parked.unpark(key, bytes);
            }
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(missed)
    }

    /// Reader task, while the session waits: a resume or a reason to end,
    /// or `Pending` (the task is woken for either).
    pub(crate) fn poll_wake(&self, cx: &Context<'_>) -> Poll<Wake> {
        let mut state = lock(&self.state);
        if let Some((stream, missed)) = state.incoming.take() {
            return Poll::Ready(Wake::Resumed(stream, missed));
        }
        if let Some(reason) = state.ended.clone() {
            return Poll::Ready(Wake::Ended(reason));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Reader task, while it reads: a new connection's stream (and how
    /// many frames were written to it again), if one took the session
    /// over; else registers the task to be woken for one.
    pub(crate) fn poll_takeover(&self, cx: &Context<'_>) -> Option<(Box<dyn FrameStream>, usize)> {
        let mut state = lock(&self.state);
        self.incoming_hint.store(false, Ordering::Relaxed);
        if let Some(incoming) = state.incoming.take() {
            return Some(incoming);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        None
    }

    /// Reader task, while frames arrive: whether a new connection's stream
    /// may be waiting ([`Session::poll_takeover`] then finds it), without
    /// the lock. Once the reader idles it calls `poll_takeover` anyway, to
    /// be woken for one.
    pub(crate) fn takeover_hint(&self) -> bool {
        self.incoming_hint.load(Ordering::Acquire)
    }

    /// Reader task, once its transport ended: a new connection's stream,
    /// if one took the session over meanwhile.
    pub(crate) fn take_incoming(&self) -> Option<(Box<dyn FrameStream>, usize)> {
        lock(&self.state).incoming.take()
    }

    /// Ends a waiting session now (`reason`; `outcome`, a label of
    /// [`SESSIONS_ENDED`](crate::metrics::SESSIONS_ENDED)): its reader task
    /// closes the peer. Nothing for an attached session.
    pub(crate) fn end(&self, reason: CloseReason, outcome: &'static str) {
        let (held, waker) = {
            let mut state = lock(&self.state);
            if !matches!(state.link, Link::Detached(_)) || state.ended.is_some() {
                return;
            }
            state.ended = Some(reason);
            let held = match std::mem::replace(&mut state.link, Link::Gone) {
                Link::Detached(held) => Some(held),
                _ => None,
            };
            (held, state.waker.take())
        };
        if let Some(held) = held {
            self.forget(held, outcome);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The window ended without a resume: drops what the session holds.
    pub(crate) fn expire(&self) {
        let old = {
            let mut state = lock(&self.state);
            match state.link {
                Link::Detached(_) => std::mem::replace(&mut state.link, Link::Gone),
                _ => return,
            }
        };
        if let Link::Detached(held) = old {
            self.forget(held, "expired");
        }
    }

    /// Drops what a session holds, for good.
    fn forget(&self, held: Held, outcome: &'static str) {
        if let Some(sink) = &held.pending {
            // Not a waiting session: nothing was counted.
            sink.close(
                close_code::PROTOO_CLOSED,
                protoo_transport::PROTOO_CLOSED_REASON,
            );
            return;
        }
        meter::session_unparked(held.bytes, outcome);
        if let Some(parked) = &self.parked {
            parked.unpark(held.key, held.bytes);
        }
        drop(held.frames);
    }
}

impl Session {
    /// Whether the session has no transport now.
    pub(crate) fn is_detached(&self) -> bool {
        matches!(lock(&self.state).link, Link::Detached(_))
    }
}

/// The longest run of frames that ends `first` and starts `then`.
fn overlap(first: &[Frame], then: &VecDeque<Frame>) -> usize {
    let longest = first.len().min(then.len());
    (1..=longest)
        .rev()
        .find(|&n| {
            first[first.len() - n..]
                .iter()
                .zip(then.iter())
                .all(|(a, b)| a.as_bytes() == b.as_bytes())
        })
        .unwrap_or(0)
}

/// The bytes a frame counts for in a session's buffer.
fn weight(frame: &Frame) -> usize {
    frame.as_bytes().len() + protoo_transport::FRAME_OVERHEAD
}

impl FrameSink for Session {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let mut state = lock(&self.state);
        let mut detached = None;
        let frame = match &state.link {
            Link::Attached(sink) => match sink.send(frame) {
                // The transport ended (a drain's close, a reset) before its
                // reader said so: the session holds from now on, as it
                // will once the reader sees the end (a clean close then
                // ends it, and what it holds with it).
                Err(TransportError::Closed(frame)) if state.ended.is_none() => {
                    detached = Some(self.detach_locked(&mut state, false));
                    frame
                }
                other => return other,
            },
            Link::Gone => return Err(TransportError::Closed(frame)),
            Link::Detached(_) => frame,
        };
        let Link::Detached(held) = &mut state.link else {
            return Err(TransportError::Closed(frame));
        };
        let len = weight(&frame);
        let fits = held.bytes + len <= self.limit;
        let counted = held.pending.is_none();
        let refused = match fits {
            true => {
                held.bytes += len;
                held.frames.push_back(frame);
                None
            }
            false => Some(frame),
        };
        drop(state);
        if let Some(bytes) = detached {
            self.parked_now(bytes);
        }
        let Some(frame) = refused else {
            if counted {
                meter::session_held(len);
                if let Some(parked) = &self.parked {
                    parked.grow(len);
                }
            }
            return Ok(());
        };
        // Past its buffer, a waiting session ends as a slow consumer would.
        self.end(
            CloseReason::new(
                Some(close_code::POLICY_VIOLATION),
                SLOW_CONSUMER_REASON,
                Initiator::Local,
            ),
            "overflow",
        );
        Err(TransportError::QueueFull(frame))
    }

    fn close(&self, code: u16, reason: &str) {
        let (old, waker) = {
            let mut state = lock(&self.state);
            state.incoming = None;
            (
                std::mem::replace(&mut state.link, Link::Gone),
                state.waker.take(),
            )
        };
        // A reader task waiting for a resume sees the peer closed.
        if let Some(waker) = waker {
            waker.wake();
        }
        match old {
            Link::Attached(sink) => sink.close(code, reason),
            Link::Detached(held) => self.forget(held, "closed"),
            Link::Gone => {}
        }
    }

    fn is_closed(&self) -> bool {
        match &lock(&self.state).link {
            Link::Attached(sink) => sink.is_closed(),
            Link::Detached(_) => false,
            Link::Gone => true,
        }
    }

    fn queued_bytes(&self) -> usize {
        match &lock(&self.state).link {
            Link::Attached(sink) => sink.queued_bytes(),
            Link::Detached(held) => held.bytes,
            Link::Gone => 0,
        }
    }

    fn send_binary(&self, data: Bytes) -> Result<(), TransportError> {
        let sink = match &lock(&self.state).link {
            Link::Attached(sink) => sink.clone(),
            _ => {
                return Err(TransportError::BinaryNotSent {
                    data,
                    reason: "no connection: the session waits for its peer",
                });
            }
        };
        sink.send_binary(data)
    }

    fn set_remote_addr(&self, addr: SocketAddr) {
        if let Link::Attached(sink) = &lock(&self.state).link {
            sink.set_remote_addr(addr);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        let link = match &state.link {
            Link::Attached(_) => "attached",
            Link::Detached(_) => "detached",
            Link::Gone => "gone",
        };
        f.debug_struct("Session")
            .field("link", &link)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The sessions of one registry waiting for their peer, oldest first, and
/// the bytes they hold, each bounded: past either bound the oldest end.
pub(crate) struct Parked {
    max_sessions: usize,
    max_bytes: usize,
    state: Mutex<ParkedState>,
}

#[derive(Default)]
struct ParkedState {
    waiting: BTreeMap<u64, Weak<Session>>,
    next: u64,
    bytes: usize,
}

impl Parked {
    pub(crate) fn new(max_sessions: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Parked {
            max_sessions,
            max_bytes,
            state: Mutex::new(ParkedState::default()),
        })
    }

    /// Counts a new waiting session holding `bytes`; its key.
    fn park(&self, session: Weak<Session>, bytes: usize) -> u64 {
        let mut state = lock(&self.state);
        let key = state.next;
        state.next += 1;
        state.waiting.insert(key, session);
        state.bytes += bytes;
        key
    }

    fn grow(&self, bytes: usize) {
        let over = {
            let mut state = lock(&self.state);
            state.bytes += bytes;
            state.bytes > self.max_bytes
        };
        if over {
            self.enforce();
        }
    }

    fn unpark(&self, key: u64, bytes: usize) {
        let mut state = lock(&self.state);
        if state.waiting.remove(&key).is_some() {
            state.bytes = state.bytes.saturating_sub(bytes);
        }
    }

    /// Ends the oldest waiting sessions while either bound is passed.
    fn enforce(&self) {
        loop {
            let oldest = {
                let mut state = lock(&self.state);
                if state.waiting.len() <= self.max_sessions && state.bytes <= self.max_bytes {
                    return;
                }
                match state.waiting.pop_first() {
                    Some((_, oldest)) => oldest,
                    None => return,
                }
            };
            // Its key is gone, so `end` unparks nothing: its bytes are taken
            // off here.
            if let Some(session) = oldest.upgrade() {
                let bytes = match &lock(&session.state).link {
                    Link::Detached(held) => held.bytes,
                    _ => 0,
                };
                {
                    let mut state = lock(&self.state);
                    state.bytes = state.bytes.saturating_sub(bytes);
                }
                session.end(
                    CloseReason::new(
                        Some(close_code::PROTOO_CLOSED),
                        SESSION_EVICTED_REASON,
                        Initiator::Local,
                    ),
                    "evicted",
                );
            }
        }
    }

    /// Sessions waiting and the bytes they hold.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.waiting.len(), state.bytes)
    }
}

impl fmt::Debug for Parked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sessions, bytes) = self.usage();
        f.debug_struct("Parked")
            .field("sessions", &sessions)
            .field("bytes", &bytes)
            .field("max_sessions", &self.max_sessions)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(texts: &[&str]) -> Vec<Frame> {
        texts.iter().map(|t| Frame::from((*t).to_owned())).collect()
    }

    #[test]
    fn the_overlap_of_a_handover_and_what_was_held_is_written_once() {
        let first = frames(&["a", "b", "c"]);
        let held = |texts: &[&str]| VecDeque::from(frames(texts));
        assert_eq!(overlap(&first, &held(&["b", "c", "d"])), 2);
        assert_eq!(overlap(&first, &held(&["c"])), 1);
        assert_eq!(overlap(&first, &held(&["d", "e"])), 0);
        assert_eq!(overlap(&first, &held(&[])), 0);
        assert_eq!(overlap(&[], &held(&["a"])), 0);
        // Only a run that ends the handover counts.
        assert_eq!(overlap(&first, &held(&["a", "b"])), 0);
    }
}
