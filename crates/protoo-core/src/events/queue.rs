//! [`EventQueue`]: the bounded queue between a peer's reader task and its
//! [`PeerEvents`], whose bytes the peer's incoming budget counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use protoo_queue::{ByteQueue, Refused, Weigh};

use super::PeerEvent;
#[cfg(doc)]
use crate::PeerEvents;

/// The queue between a peer's reader task (the one producer) and its
/// [`PeerEvents`] (the one consumer), bounded by
/// [`PeerConfig::event_queue`](crate::PeerConfig::event_queue) events: a
/// [`ByteQueue`] whose bytes (each event's frame) are bounded by the peer's
/// incoming budget, which counts them from the moment they are read until
/// the application is done with them, here and after.
///
/// An empty queue holds no buffer: an idle peer pays only for this struct.
/// The lock is held for a few field updates, never across an `.await`, and
/// events are dropped (a dropped request answers 500) only after it is
/// released.
pub(crate) struct EventQueue {
    queue: ByteQueue<PeerEvent>,
    /// Every [`Peer`](crate::Peer) handle was dropped.
    handles_gone: AtomicBool,
}

impl Weigh for PeerEvent {
    fn weight(&self) -> usize {
        match self {
            PeerEvent::Request(request) => request._charge.bytes(),
            PeerEvent::Notification(notification) => notification
                ._charge
                .as_ref()
                .map_or(0, |charge| charge.bytes()),
            PeerEvent::Closed(_) | PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. } => 0,
        }
    }
}

impl EventQueue {
    /// An empty queue holding at most `limit` events (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        EventQueue {
            // The budget bounds the bytes; the buffer is freed once drained.
            queue: ByteQueue::new(usize::MAX, limit, 0),
            handles_gone: AtomicBool::new(false),
        }
    }

    /// Events waiting for the application.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Reader: queues `event` if there is room, or drops it if nobody will
    /// take it (the peer closed, or its [`PeerEvents`] was dropped; a
    /// request dropped this way answers 500 by itself). Gives it back when
    /// the queue is full.
    pub(crate) fn try_push(&self, event: PeerEvent) -> Result<(), Box<PeerEvent>> {
        match self.queue.try_push(event) {
            Ok(()) => Ok(()),
            Err(Refused::Full(event)) => Err(Box::new(event)),
            Err(Refused::Closed(event)) => {
                drop(event);
                Ok(())
            }
        }
    }

    /// Reader: [`EventQueue::try_push`] once there is room, waiting (the
    /// peer stops reading its transport meanwhile). Ready once the event in
    /// `slot` is queued or dropped.
    pub(crate) fn poll_push(
        &self,
        slot: &mut Option<Box<PeerEvent>>,
        cx: &Context<'_>,
    ) -> Poll<()> {
        ready!(self.queue.poll_room(cx));
        if let Some(event) = slot.take() {
            // Refused (and dropped) when nobody will take it.
            let _ = self.queue.push(*event);
        }
        Poll::Ready(())
    }

    /// Reader: registers the task to be woken when the peer's handles or its
    /// events are dropped, or when the peer closes. Returns whether nobody
    /// can use the peer any more (every handle and its events dropped).
    pub(crate) fn watch(&self, cx: &Context<'_>) -> bool {
        let consumer_gone = self.queue.register_producer(cx);
        consumer_gone && self.handles_gone.load(Ordering::Acquire)
    }

    /// Reader, while frames arrive: whether every [`Peer`](crate::Peer)
    /// handle was dropped, without the queue's lock (only then can
    /// [`EventQueue::watch`] find that nobody can use the peer).
    pub(crate) fn handles_gone(&self) -> bool {
        self.handles_gone.load(Ordering::Acquire)
    }

    /// Consumer: the next event; `None` once the queue is closed and
    /// drained. Cancel-safe.
    pub(crate) fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<PeerEvent>> {
        self.queue.poll_pop(cx, |()| ()).map(Result::ok)
    }

    /// No more events: those queued are still handed out, then `None`.
    pub(crate) fn close(&self) {
        self.queue.close(());
    }

    /// The [`PeerEvents`] was dropped: the queued events are dropped (their
    /// requests answer 500) and so is every later one.
    pub(crate) fn consumer_dropped(&self) {
        self.queue.discard();
    }

    /// Every [`Peer`](crate::Peer) handle was dropped.
    pub(crate) fn handles_dropped(&self) {
        // Set before the wake-up: a reader that registered its waker before
        // the wake-up took it, or looks after the store.
        self.handles_gone.store(true, Ordering::Release);
        self.queue.wake_producer();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use protoo_codec::Message;

    use super::*;
    use crate::events::IncomingNotification;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn notification(n: u32) -> PeerEvent {
        let text = format!(r#"{{"notification":true,"method":"n","data":{{"n":{n}}}}}"#);
        match Message::decode_str(&text) {
            Ok(Message::Notification(notification)) => {
                PeerEvent::Notification(IncomingNotification::new(notification, None))
            }
            other => panic!("not a notification: {other:?}"),
        }
    }

    fn number(event: Option<PeerEvent>) -> u64 {
        match event {
            Some(PeerEvent::Notification(n)) => n.payload().to_value()["n"].as_u64().unwrap(),
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    fn capacity(queue: &EventQueue) -> usize {
        queue.queue.capacity()
    }

    #[test]
    fn bounded_in_order_and_wakes_the_waiting_reader() {
        let queue = EventQueue::new(2);
        let reader = Arc::new(Count::default());
        let reader_waker = Waker::from(reader.clone());
        let consumer_waker = Waker::from(Arc::new(Count::default()));
        let (rcx, ccx) = (
            Context::from_waker(&reader_waker),
            Context::from_waker(&consumer_waker),
        );
        assert!(queue.try_push(notification(0)).is_ok());
        assert!(queue.try_push(notification(1)).is_ok());
        let Err(third) = queue.try_push(notification(2)) else {
            panic!("a full queue took an event");
        };
        let mut slot = Some(third);
        assert!(queue.poll_push(&mut slot, &rcx).is_pending());
        assert!(slot.is_some());
        assert_eq!(queue.len(), 2);

        let Poll::Ready(first) = queue.poll_pop(&ccx) else {
            panic!("no event")
        };
        assert_eq!(number(first), 0);
        assert_eq!(reader.get(), 1, "room made: the reader is woken");
        assert!(queue.poll_push(&mut slot, &rcx).is_ready());
        assert!(slot.is_none());
        for n in 1..=2 {
            let Poll::Ready(event) = queue.poll_pop(&ccx) else {
                panic!("no event")
            };
            assert_eq!(number(event), n);
        }
        assert!(queue.poll_pop(&ccx).is_pending());
    }

    #[test]
    fn a_drained_queue_holds_no_buffer() {
        let queue = EventQueue::new(256);
        let waker = Waker::from(Arc::new(Count::default()));
        let cx = Context::from_waker(&waker);
        assert_eq!(capacity(&queue), 0);
        for n in 0..100u32 {
            assert!(queue.try_push(notification(n)).is_ok());
        }
        assert!(capacity(&queue) >= 100);
        for n in 0..100u64 {
            let Poll::Ready(event) = queue.poll_pop(&cx) else {
                panic!("no event")
            };
            assert_eq!(number(event), n);
        }
        assert_eq!(capacity(&queue), 0);
    }

    #[test]
    fn closed_hands_out_what_was_queued_then_ends() {
        let queue = EventQueue::new(4);
        let consumer = Arc::new(Count::default());
        let waker = Waker::from(consumer.clone());
        let cx = Context::from_waker(&waker);
        assert!(queue.poll_pop(&cx).is_pending());
        assert!(queue.try_push(notification(7)).is_ok());
        assert_eq!(consumer.get(), 1);
        queue.close();
        // Dropped: nobody will take it.
        assert!(queue.try_push(notification(8)).is_ok());
        let Poll::Ready(event) = queue.poll_pop(&cx) else {
            panic!("no event")
        };
        assert_eq!(number(event), 7);
        assert!(matches!(queue.poll_pop(&cx), Poll::Ready(None)));
        assert!(matches!(queue.poll_pop(&cx), Poll::Ready(None)));
    }

    #[test]
    fn a_dropped_consumer_frees_the_queue_and_releases_the_reader() {
        let queue = EventQueue::new(1);
        let reader = Arc::new(Count::default());
        let waker = Waker::from(reader.clone());
        let cx = Context::from_waker(&waker);
        assert!(queue.try_push(notification(0)).is_ok());
        let mut slot = queue.try_push(notification(1)).err();
        assert!(queue.poll_push(&mut slot, &cx).is_pending());
        queue.consumer_dropped();
        assert_eq!(reader.get(), 1);
        assert_eq!((queue.len(), capacity(&queue)), (0, 0));
        assert!(queue.poll_push(&mut slot, &cx).is_ready());
        assert!(slot.is_none());
        assert!(queue.try_push(notification(2)).is_ok());
        assert_eq!(queue.len(), 0);
        assert!(!queue.watch(&cx), "handles are still there");
        queue.handles_dropped();
        assert!(queue.watch(&cx));
    }
}
