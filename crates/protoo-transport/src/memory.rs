//! A connected pair of transports inside one process.
//!
//! What one side sends, the other receives, through a bounded queue per
//! direction (the same byte limit and slow-consumer rule as the WebSocket
//! transport). Closing either side delivers the close code and reason to the
//! other after the frames sent before it, and each side's stream reports the
//! close exactly once.
//!
//! A pair made with [`pair_with_cable`] can also be cut, as a network cut
//! would: both sides report a lost connection at once, without a close
//! frame and without reading the rest ([`Cable::cut`]).
//!
//! ```
//! use protoo_transport::{memory, Frame, Inbound, Initiator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (a, mut b) = memory::pair(memory::DEFAULT_QUEUE_LIMIT);
//! a.send(Frame::from_static("{}")).unwrap();
//! a.close_with(4000, "bye");
//! assert_eq!(b.recv().await, Inbound::Text("{}".into()));
//! let Inbound::Closed(reason) = b.recv().await else { panic!() };
//! assert_eq!((reason.code, reason.reason.as_str(), reason.initiator), (Some(4000), "bye", Initiator::Remote));
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use crate::queue::{OutboundQueue, Work};
use crate::sync::{Mutex, lock};
use crate::{
    CloseReason, Frame, FrameSink, FrameStream, Inbound, Initiator, Transport, TransportError,
    close_code,
};

/// The default byte limit of each direction's queue: 4 MiB, the same as the
/// WebSocket transport's outbound queue.
pub const DEFAULT_QUEUE_LIMIT: usize = 4 << 20;

/// The reason both sides of a cut pair report (with no code, initiator
/// [`Initiator::Remote`]): the same as a WebSocket that ended without a
/// close frame.
pub const CONNECTION_LOST_REASON: &str = "connection lost";

/// [`Link::ended`]: open, cut, or closed by side `s` (`CLOSED_BY + s`).
const OPEN: u8 = 0;
const CUT: u8 = 1;
const CLOSED_BY: u8 = 2;
/// The queues' close code for a cut.
const ABNORMAL: u16 = 1006;

/// How a pair ended, decided once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// This side closed it first.
    Closed(usize),
    Cut,
}

#[derive(Debug)]
struct Link {
    /// Frames from side 0 to side 1, and from side 1 to side 0.
    queues: [OutboundQueue; 2],
    /// How the pair ended: decided here, first come first served.
    end: Mutex<Option<End>>,
    /// `end`, published once both queues are closed: the streams check it
    /// on every read, without the lock.
    ended: AtomicU8,
    /// Per side: it keeps the frames it sent until the remote reads them
    /// ([`FrameSink::retain_unconfirmed`]): the remote takes them one at a
    /// time, and the side's queue is not cleared when the pair ends.
    retain: [AtomicBool; 2],
}

impl Link {
    fn decide(&self, end: End) -> bool {
        let mut decided = lock(&self.end);
        if decided.is_some() {
            return false;
        }
        *decided = Some(end);
        true
    }

    fn close(&self, side: usize, code: u16, reason: &str) {
        if !self.decide(End::Closed(side)) {
            return;
        }
        // The remote still gets what was sent before the close; this side
        // stops receiving at once.
        self.queues[side].close(code, reason);
        self.stop(1 - side, code, reason);
        self.ended.store(CLOSED_BY + side as u8, Ordering::Release);
    }

    /// Cuts the pair: neither side reads anything more.
    fn cut(&self) {
        if !self.decide(End::Cut) {
            return;
        }
        self.stop(0, ABNORMAL, CONNECTION_LOST_REASON);
        self.stop(1, ABNORMAL, CONNECTION_LOST_REASON);
        self.ended.store(CUT, Ordering::Release);
    }

    /// Closes what `side` sends, which its remote will not read: freed, or
    /// kept for `take_unconfirmed` when `side` retains.
    fn stop(&self, side: usize, code: u16, reason: &str) {
        if self.retain[side].load(Ordering::Acquire) {
            self.queues[side].close(code, reason);
        } else {
            self.queues[side].close_and_clear(code, reason);
        }
    }

    fn end(&self) -> Option<End> {
        *lock(&self.end)
    }

    /// Whether `side` reads nothing more: the pair was cut, or `side`
    /// closed it.
    fn stops_reading(&self, side: usize) -> bool {
        let ended = self.ended.load(Ordering::Acquire);
        ended == CUT || ended == CLOSED_BY + side as u8
    }

    /// How the pair ended, as `side` reports it (once its inbound queue is
    /// closed).
    fn close_reason(&self, side: usize) -> CloseReason {
        let end = self.end();
        if end == Some(End::Cut) {
            return CloseReason::new(None, CONNECTION_LOST_REASON, Initiator::Remote);
        }
        let (code, reason) = self.queues[1 - side]
            .close_reason()
            .unwrap_or((close_code::NORMAL, String::new()));
        let initiator = if end == Some(End::Closed(side)) {
            Initiator::Local
        } else {
            Initiator::Remote
        };
        CloseReason::new(Some(code), reason, initiator)
    }
}

/// Two transports connected to each other, each direction's queue limited to
/// `queue_limit` bytes.
pub fn pair(queue_limit: usize) -> (Transport, Transport) {
    let (a, b, _) = pair_with_cable(queue_limit);
    (a, b)
}

/// Like [`pair`], with the [`Cable`] between the two sides, to cut it (a
/// test's lost connection).
///
/// ```
/// use protoo_transport::{memory, Frame, Inbound, Initiator};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (server_side, mut client_side, cable) = memory::pair_with_cable(memory::DEFAULT_QUEUE_LIMIT);
/// server_side.sink().retain_unconfirmed();
/// server_side.send(Frame::from_static("{}")).unwrap();
/// cable.cut();
/// // Neither side reads anything more; both report a lost connection.
/// let Inbound::Closed(reason) = client_side.recv().await else { panic!() };
/// assert!(reason.is_lost());
/// assert_eq!((reason.code, reason.initiator), (None, Initiator::Remote));
/// // The frame the client never read is given back.
/// assert_eq!(server_side.sink().take_unconfirmed(), vec![Frame::from_static("{}")]);
/// # }
/// ```
pub fn pair_with_cable(queue_limit: usize) -> (Transport, Transport, Cable) {
    let link = Arc::new(Link {
        queues: [
            OutboundQueue::new(queue_limit),
            OutboundQueue::new(queue_limit),
        ],
        end: Mutex::new(None),
        ended: AtomicU8::new(OPEN),
        retain: [AtomicBool::new(false), AtomicBool::new(false)],
    });
    let side = |side| {
        Transport::new(
            MemorySink {
                link: link.clone(),
                side,
            },
            MemoryStream {
                link: link.clone(),
                side,
                batch: Vec::new(),
                next: 0,
                closed: None,
            },
        )
    };
    let (a, b) = (side(0), side(1));
    (a, b, Cable { link })
}

/// The connection between the two sides of a [`pair_with_cable`]: cutting
/// it ends both sides as a lost connection would. Dropping it does nothing.
#[derive(Clone, Debug)]
pub struct Cable {
    link: Arc<Link>,
}

impl Cable {
    /// Cuts the pair, as a network cut would: both streams report
    /// `CloseReason { code: None, reason: CONNECTION_LOST_REASON, initiator:
    /// Remote }` at once ([`CloseReason::is_lost`]), without a close frame
    /// and without yielding what they had not read yet; both sinks are
    /// closed. The frames each side sent and the other did not read are
    /// dropped, unless that side called
    /// [`retain_unconfirmed`](FrameSink::retain_unconfirmed): then
    /// [`take_unconfirmed`](FrameSink::take_unconfirmed) gives them back.
    /// No effect on a pair already closed or cut.
    pub fn cut(&self) {
        self.link.cut();
    }

    /// Whether the pair was cut.
    pub fn is_cut(&self) -> bool {
        self.link.end() == Some(End::Cut)
    }
}

/// The sending half of a [`pair`] side.
#[derive(Debug)]
struct MemorySink {
    link: Arc<Link>,
    side: usize,
}

impl FrameSink for MemorySink {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let result = self.link.queues[self.side].push(frame);
        if let Err(TransportError::QueueFull(_)) = &result {
            // The queue closed itself as a slow consumer: close the pair with
            // the same code so both sides see it.
            if let Some((code, reason)) = self.link.queues[self.side].close_reason() {
                self.link.close(self.side, code, &reason);
            }
        }
        result
    }

    fn close(&self, code: u16, reason: &str) {
        self.link.close(self.side, code, reason);
    }

    fn is_closed(&self) -> bool {
        self.link.end().is_some()
    }

    fn queued_bytes(&self) -> usize {
        self.link.queues[self.side].queued_bytes()
    }

    /// From now on the remote takes this side's frames one at a time, so
    /// that a frame is confirmed exactly when the remote's stream yields it.
    fn retain_unconfirmed(&self) {
        self.link.retain[self.side].store(true, Ordering::Release);
    }

    /// The frames this side sent that the remote's stream has not yielded:
    /// taken out of the remote's queue.
    fn take_unconfirmed(&self) -> Vec<Frame> {
        self.link.queues[self.side].take_all()
    }
}

/// The receiving half of a [`pair`] side.
#[derive(Debug)]
struct MemoryStream {
    link: Arc<Link>,
    side: usize,
    batch: Vec<Frame>,
    next: usize,
    closed: Option<CloseReason>,
}

impl FrameStream for MemoryStream {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        loop {
            if let Some(reason) = &self.closed {
                return Poll::Ready(Inbound::Closed(reason.clone()));
            }
            if self.link.ended.load(Ordering::Acquire) == CUT {
                // Lost: what was not read yet is not read.
                self.batch = Vec::new();
                self.closed = Some(self.link.close_reason(self.side));
                continue;
            }
            if self.next < self.batch.len() {
                let frame = std::mem::replace(&mut self.batch[self.next], Frame::from_static(""));
                self.next += 1;
                return Poll::Ready(Inbound::Text(frame.into_bytes()));
            }
            self.batch.clear();
            self.next = 0;
            if self.link.stops_reading(self.side) {
                self.closed = Some(self.link.close_reason(self.side));
                continue;
            }
            let remote = 1 - self.side;
            // A remote that retains its frames has them taken one at a
            // time: each is confirmed when it is yielded.
            let max_bytes = if self.link.retain[remote].load(Ordering::Acquire) {
                0
            } else {
                usize::MAX
            };
            match ready!(self.link.queues[remote].poll_next(cx, &mut self.batch, max_bytes)) {
                Work::Frames => continue,
                Work::Close(..) | Work::Done => {
                    self.closed = Some(self.link.close_reason(self.side));
                }
            }
        }
    }
}
