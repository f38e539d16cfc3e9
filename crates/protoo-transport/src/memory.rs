//! A connected pair of transports inside one process.
//!
//! What one side sends, the other receives, through a bounded queue per
//! direction (the same byte limit and slow-consumer rule as the WebSocket
//! transport). Closing either side delivers the close code and reason to the
//! other after the frames sent before it, and each side's stream reports the
//! close exactly once.
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

#[derive(Debug)]
struct Link {
    /// Frames from side 0 to side 1, and from side 1 to side 0.
    queues: [OutboundQueue; 2],
    /// The side that closed the pair first.
    closer: Mutex<Option<usize>>,
}

impl Link {
    fn close(&self, side: usize, code: u16, reason: &str) {
        {
            let mut closer = lock(&self.closer);
            if closer.is_some() {
                return;
            }
            *closer = Some(side);
        }
        // The remote still gets what was sent before the close; this side
        // stops receiving at once.
        self.queues[side].close(code, reason);
        self.queues[1 - side].close_and_clear(code, reason);
    }

    fn closer(&self) -> Option<usize> {
        *lock(&self.closer)
    }
}

/// Two transports connected to each other, each direction's queue limited to
/// `queue_limit` bytes.
pub fn pair(queue_limit: usize) -> (Transport, Transport) {
    let link = Arc::new(Link {
        queues: [
            OutboundQueue::new(queue_limit),
            OutboundQueue::new(queue_limit),
        ],
        closer: Mutex::new(None),
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
    (side(0), side(1))
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
        self.link.closer().is_some()
    }

    fn queued_bytes(&self) -> usize {
        self.link.queues[self.side].queued_bytes()
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
            if self.next < self.batch.len() {
                let frame = std::mem::replace(&mut self.batch[self.next], Frame::from_static(""));
                self.next += 1;
                return Poll::Ready(Inbound::Text(frame.into_bytes()));
            }
            self.batch.clear();
            self.next = 0;
            let inbound = &self.link.queues[1 - self.side];
            match ready!(inbound.poll_next(cx, &mut self.batch, usize::MAX)) {
                Work::Frames => continue,
                Work::Close(..) | Work::Done => {
                    let (code, reason) = inbound
                        .close_reason()
                        .unwrap_or((close_code::NORMAL, String::new()));
                    let initiator = if self.link.closer() == Some(self.side) {
                        Initiator::Local
                    } else {
                        Initiator::Remote
                    };
                    self.closed = Some(CloseReason::new(Some(code), reason, initiator));
                }
            }
        }
    }
}
