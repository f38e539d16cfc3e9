//! [`OutboundQueue`]: the transport's queue of outbound frames, between
//! every task that sends to a peer and the one writer task, counted in bytes
//! and closed as a slow consumer when it holds its limit.

use std::fmt;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::{Frame, SLOW_CONSUMER_REASON, TransportError, close_code};
use protoo_queue::{ByteQueue, Popped, Refused, Weigh};

/// One queued outbound message: a protoo text frame, or (only on a WebSocket
/// transport with [`WsConfig::binary_messages`](crate::ws::WsConfig::binary_messages))
/// a binary message.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Frame),
    Binary(Bytes),
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Text(frame) => frame.len(),
            Outbound::Binary(data) => data.len(),
        }
    }
}

/// Why an outbound message was not queued (the byte queue's
/// `byte_queue::Refused`, without the item).
enum NotQueued {
    Closed,
    Full,
}

fn binary_not_sent(data: Bytes, refused: NotQueued) -> TransportError {
    let reason = match refused {
        NotQueued::Closed => "transport closed",
        NotQueued::Full => "outbound queue limit exceeded, transport closed",
    };
    TransportError::BinaryNotSent { data, reason }
}

/// Bytes counted for each queued frame on top of its text: the bookkeeping a
/// queued frame costs, so that a flood of tiny frames is bounded too.
pub const FRAME_OVERHEAD: usize = 64;

/// A bounded queue of outbound frames with one consumer (a writer task),
/// counted in bytes: a [`ByteQueue`] of frames.
///
/// Pushing never waits. A push to a queue that already holds its byte limit
/// or more closes the queue as a slow consumer
/// ([`close_code::POLICY_VIOLATION`]) and drops every frame it held, so
/// memory is released at once. A queue under its limit takes a frame of any
/// size: the limit is about consumers that fall behind, not about the size
/// of one message, so a consumer that keeps up is never closed by it. The
/// queue therefore holds at most the limit plus one frame. The lock is
/// only ever held for a few instructions, never across an `.await`.
pub struct OutboundQueue {
    queue: ByteQueue<Outbound, Closing>,
}

/// The close of an [`OutboundQueue`]: handed to the consumer once.
#[derive(Clone, Debug)]
struct Closing {
    code: u16,
    reason: String,
    taken: bool,
}

impl Closing {
    fn new(code: u16, reason: &str) -> Self {
        Closing {
            code,
            reason: reason.to_owned(),
            taken: false,
        }
    }

    /// The close, the first time; [`Work::Done`] after.
    fn take(&mut self) -> Work {
        if std::mem::replace(&mut self.taken, true) {
            Work::Done
        } else {
            Work::Close(self.code, self.reason.clone())
        }
    }
}

impl Weigh for Outbound {
    fn weight(&self) -> usize {
        self.len() + FRAME_OVERHEAD
    }
}

/// Queues whose buffer grew past this many frames give the buffer back once
/// drained, so that an idle peer does not keep the memory of its last burst.
const KEEP_CAPACITY: usize = 16;

/// What the consumer of an [`OutboundQueue`] is to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Frames were moved into the batch: write them.
    Frames,
    /// The queue is closed and drained: send this close code and reason.
    /// Returned once.
    Close(u16, String),
    /// The close was already handed out: nothing more will come.
    Done,
}

impl From<Popped<Work>> for Work {
    fn from(popped: Popped<Work>) -> Work {
        match popped {
            Popped::Items => Work::Frames,
            Popped::Closed(work) => work,
        }
    }
}

impl OutboundQueue {
    /// An empty queue holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        OutboundQueue {
            queue: ByteQueue::new(limit, usize::MAX, KEEP_CAPACITY),
        }
    }

    /// Queues a frame; see [`FrameSink::send`](crate::FrameSink::send).
    pub fn push(&self, frame: Frame) -> Result<(), TransportError> {
        self.push_item(Outbound::Text(frame))
            .map_err(|(refused, item)| match item {
                Outbound::Text(frame) => match refused {
                    NotQueued::Closed => TransportError::Closed(frame),
                    NotQueued::Full => TransportError::QueueFull(frame),
                },
                Outbound::Binary(data) => binary_not_sent(data, refused),
            })
    }

    /// Queues a binary message, counted like a frame (see
    /// [`FrameSink::send_binary`](crate::FrameSink::send_binary)).
    pub(crate) fn push_binary(&self, data: Bytes) -> Result<(), TransportError> {
        self.push_item(Outbound::Binary(data))
            .map_err(|(refused, item)| match item {
                Outbound::Binary(data) => binary_not_sent(data, refused),
                Outbound::Text(frame) => binary_not_sent(frame.into_bytes(), refused),
            })
    }

    fn push_item(&self, item: Outbound) -> Result<(), (NotQueued, Outbound)> {
        // Only a consumer already behind by the whole limit is closed: one
        // frame, however large, never closes a consumer that keeps up.
        self.queue
            .push_or_close(item, || {
                Closing::new(close_code::POLICY_VIOLATION, SLOW_CONSUMER_REASON)
            })
            .map_err(|refused| match refused {
                Refused::Closed(item) => (NotQueued::Closed, item),
                Refused::Full(item) => {
                    crate::metrics::outbound_queue_closed();
                    (NotQueued::Full, item)
                }
            })
    }

    /// Closes the queue: frames already queued are still handed out, then the
    /// close. Returns whether this call closed it (false if already closed).
    pub fn close(&self, code: u16, reason: &str) -> bool {
        self.queue.close(Closing::new(code, reason))
    }

    /// Closes the queue and drops what it held. Returns whether this call
    /// closed it.
    pub fn close_and_clear(&self, code: u16, reason: &str) -> bool {
        self.queue.close_and_clear(Closing::new(code, reason))
    }

    /// Takes every queued text frame, in order, and refuses every later
    /// push as [`TransportError::Closed`] (binary messages queued are
    /// dropped). The close still works afterwards: the consumer gets it
    /// once the queue is closed.
    /// ([`FrameSink::take_unconfirmed`](crate::FrameSink::take_unconfirmed).)
    pub(crate) fn take_all(&self) -> Vec<Frame> {
        let items = self.queue.take_and_discard();
        let mut frames = Vec::with_capacity(items.len());
        frames.extend(items.into_iter().filter_map(|item| match item {
            Outbound::Text(frame) => Some(frame),
            Outbound::Binary(_) => None,
        }));
        frames
    }

    /// Gives the queue's buffer back if nothing is queued: for a writer
    /// going idle (see [`ByteQueue::release_if_drained`]).
    pub(crate) fn release_if_drained(&self) {
        self.queue.release_if_drained();
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// The close code and reason, once closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.queue
            .close_value()
            .map(|closing| (closing.code, closing.reason))
    }

    /// Bytes queued (text plus [`FRAME_OVERHEAD`] per frame).
    pub fn queued_bytes(&self) -> usize {
        self.queue.queued_bytes()
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.queue.max_bytes()
    }

    /// Takes what is ready without waiting: frames into `batch`, or the close.
    /// `None` when there is nothing yet.
    pub fn try_next(&self, batch: &mut Vec<Frame>) -> Option<Work> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_next(&mut cx, batch, usize::MAX) {
            Poll::Ready(work) => Some(work),
            Poll::Pending => None,
        }
    }

    /// The poll form of [`OutboundQueue::next`] for a consumer that is a
    /// hand-written future (the WebSocket connection task): moves queued
    /// frames into `batch` until about `max_bytes` (counted like
    /// [`OutboundQueue::queued_bytes`], at least one frame) are taken, or
    /// returns the close once the queue is drained. Frames left behind stay
    /// counted in [`OutboundQueue::queued_bytes`]. When there is nothing,
    /// registers `cx`'s waker, woken by the next push or by the close.
    pub fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Frame>,
        max_bytes: usize,
    ) -> Poll<Work> {
        self.queue
            .poll_take(
                cx,
                max_bytes,
                |item| match item {
                    Outbound::Text(frame) => batch.push(frame),
                    // Binary messages are only queued by WebSocket
                    // transports, whose connection task takes them with
                    // `poll_next_with`.
                    Outbound::Binary(_) => {}
                },
                Closing::take,
            )
            .map(Work::from)
    }

    /// [`OutboundQueue::poll_next`] with binary messages too, each item
    /// handed to `take`.
    pub(crate) fn poll_next_with(
        &self,
        cx: &mut Context<'_>,
        max_bytes: usize,
        take: impl FnMut(Outbound),
    ) -> Poll<Work> {
        self.queue
            .poll_take(cx, max_bytes, take, Closing::take)
            .map(Work::from)
    }

    /// Ready once the queue is closed; otherwise registers `cx`'s waker
    /// (shared with [`OutboundQueue::poll_next`]: one consumer). Meant for a
    /// writer blocked on a slow socket, to give up when the queue overflows.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.queue.poll_closed(cx)
    }

    /// Waits for work: every queued frame moved into `batch`, or the close.
    /// Cancel-safe.
    pub async fn next(&self, batch: &mut Vec<Frame>) -> Work {
        poll_fn(|cx| self.poll_next(cx, batch, usize::MAX)).await
    }

    /// Waits until the queue is closed: the async form of
    /// [`OutboundQueue::poll_closed`]. Meant for a writer blocked on a slow
    /// socket, to give up when the queue overflows.
    pub async fn closed(&self) {
        poll_fn(|cx| self.poll_closed(cx)).await
    }
}

impl fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundQueue")
            .field("queue", &self.queue)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::from("x".repeat(n))
    }

    #[test]
    fn overflow_closes_and_frees() {
        let q = OutboundQueue::new(1000);
        q.push(frame(400)).unwrap();
        q.push(frame(400)).unwrap();
        assert_eq!(q.queued_bytes(), 2 * (400 + FRAME_OVERHEAD));
        // Under the limit: taken, even past it (limit + one frame).
        q.push(frame(400)).unwrap();
        assert_eq!(q.queued_bytes(), 3 * (400 + FRAME_OVERHEAD));
        let err = q.push(frame(400)).unwrap_err();
        assert!(matches!(err, TransportError::QueueFull(_)));
        assert_eq!(q.queued_bytes(), 0);
        assert!(matches!(q.push(frame(1)), Err(TransportError::Closed(_))));
        let mut batch = Vec::new();
        assert_eq!(
            q.try_next(&mut batch),
            Some(Work::Close(
                close_code::POLICY_VIOLATION,
                SLOW_CONSUMER_REASON.into()
            ))
        );
        assert!(batch.is_empty());
        assert_eq!(q.try_next(&mut batch), Some(Work::Done));
    }

    /// A consumer that keeps up is never closed by one message, whatever its
    /// size: a frame larger than the whole limit is taken by a queue that
    /// is under it, and only a consumer still behind is closed.
    #[test]
    fn one_frame_larger_than_the_limit_is_taken_by_a_consumer_that_keeps_up() {
        let q = OutboundQueue::new(64 * 1024);
        for _ in 0..3 {
            q.push(frame(70 * 1024)).unwrap();
            let mut batch = Vec::new();
            assert_eq!(q.try_next(&mut batch), Some(Work::Frames));
            assert_eq!(batch.len(), 1);
            assert_eq!(q.queued_bytes(), 0);
        }
        // Behind: the first is still queued, over the limit.
        q.push(frame(70 * 1024)).unwrap();
        assert!(matches!(
            q.push(frame(10)),
            Err(TransportError::QueueFull(_))
        ));
    }

    #[test]
    fn poll_next_takes_a_bounded_batch_and_wakes_on_push_and_close() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);

        let q = OutboundQueue::new(1 << 20);
        let mut batch = Vec::new();
        assert_eq!(q.poll_next(&mut cx, &mut batch, 1000), Poll::Pending);
        assert_eq!(q.poll_closed(&mut cx), Poll::Pending);
        for _ in 0..100 {
            q.push(frame(100)).unwrap();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the first push");
        let cost = 100 + FRAME_OVERHEAD;
        assert_eq!(
            q.poll_next(&mut cx, &mut batch, 3 * cost),
            Poll::Ready(Work::Frames)
        );
        assert_eq!(batch.len(), 3);
        assert_eq!(q.queued_bytes(), 97 * cost);
        batch.clear();
        // At least one frame, even past the bound.
        assert_eq!(
            q.poll_next(&mut cx, &mut batch, 1),
            Poll::Ready(Work::Frames)
        );
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert_eq!(
            q.poll_next(&mut cx, &mut batch, usize::MAX),
            Poll::Ready(Work::Frames)
        );
        assert_eq!(batch.len(), 96);
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(q.queue.capacity(), 0, "a drained large buffer is freed");
        assert_eq!(q.poll_next(&mut cx, &mut batch, 1), Poll::Pending);
        q.close(4000, "bye");
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "woken by the close");
        assert_eq!(q.poll_closed(&mut cx), Poll::Ready(()));
        assert_eq!(
            q.poll_next(&mut cx, &mut batch, 1),
            Poll::Ready(Work::Close(4000, "bye".into()))
        );
        assert_eq!(q.poll_next(&mut cx, &mut batch, 1), Poll::Ready(Work::Done));
    }

    #[tokio::test]
    async fn frames_then_close() {
        let q = OutboundQueue::new(1 << 20);
        let mut batch = Vec::new();
        assert_eq!(q.try_next(&mut batch), None);
        q.push(frame(1)).unwrap();
        q.push(frame(2)).unwrap();
        assert!(q.close(4000, "bye"));
        assert!(!q.close(1000, "again"));
        assert_eq!(q.next(&mut batch).await, Work::Frames);
        assert_eq!(batch.len(), 2);
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(q.next(&mut batch).await, Work::Close(4000, "bye".into()));
        assert_eq!(q.next(&mut batch).await, Work::Done);
    }
}
