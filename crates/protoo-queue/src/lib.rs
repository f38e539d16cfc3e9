//! # protoo-queue
//!
//! The bottom of the protoo-rs stack, beside `protoo-codec`: [`ByteQueue`],
//! the one bounded queue of the workspace, counted in bytes. Every queue a
//! remote can fill is one: the transport's outbound queue and WebSocket
//! inbox (`protoo-transport`), a peer's event queue (`protoo-core`), and
//! `protoo-redis`'s command and inbound queues. No async runtime: a
//! `VecDeque` behind a mutex, with a close and one waker for its consumer
//! (and one for a producer that waits for room), driven by `poll_*`
//! methods any executor can call.
//!
//! Its wake-ups are checked by a loom model (`tests/loom_queue.rs`, built
//! with `--cfg protoo_loom`).
//!
//! ```
//! use std::task::{Context, Poll, Waker};
//! use protoo_queue::{ByteQueue, Refused, Weigh};
//!
//! #[derive(Debug)]
//! struct Frame(Vec<u8>);
//! impl Weigh for Frame {
//!     fn weight(&self) -> usize { self.0.len() }
//! }
//!
//! // At most 8 bytes (plus one item) before a producer that can wait must.
//! let queue: ByteQueue<Frame, &str> = ByteQueue::new(8, usize::MAX, 0);
//! queue.push(Frame(vec![0; 6])).unwrap();
//! assert!(matches!(queue.try_push(Frame(vec![0; 6])), Ok(())));
//! assert!(matches!(queue.try_push(Frame(vec![0; 1])), Err(Refused::Full(_))));
//! assert_eq!(queue.queued_bytes(), 12);
//!
//! let cx = Context::from_waker(Waker::noop());
//! let popped = queue.poll_pop(&cx, |close| *close);
//! assert!(matches!(popped, Poll::Ready(Ok(Frame(bytes))) if bytes.len() == 6));
//! // Closed, the queue still hands out what it held, then the close value.
//! queue.close("done");
//! assert!(matches!(queue.poll_pop(&cx, |close| *close), Poll::Ready(Ok(_))));
//! assert!(matches!(queue.poll_pop(&cx, |close| *close), Poll::Ready(Err("done"))));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll, Waker};

use sync::{Mutex, MutexGuard, lock};

/// The queue's lock: `std`'s, or loom's when built with `--cfg protoo_loom`
/// for the model tests (a cfg of our own rather than loom's customary
/// `--cfg loom`: `RUSTFLAGS` reaches every crate of the build, and tokio
/// built with `cfg(loom)` leaves out `tokio::net`).
mod sync {
    #[cfg(protoo_loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    #[cfg(not(protoo_loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard};

    /// Locks a mutex whose every critical section leaves its data
    /// consistent (a handful of field updates), so a poisoned lock is
    /// still usable.
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an item counts against a [`ByteQueue`]'s byte limit.
pub trait Weigh {
    /// The bytes this item is counted for, the same for as long as it is
    /// queued.
    fn weight(&self) -> usize;
}

/// Why [`ByteQueue::push`] refused an item, with the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The queue is closed, or its consumer is gone.
    Closed(T),
    /// The queue held its byte limit or more: it was closed (see
    /// [`ByteQueue::push`]).
    Full(T),
}

/// What the consumer took from a [`ByteQueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<R> {
    /// Items were handed out.
    Items,
    /// The queue is closed and drained; what the `on_close` closure made of
    /// the close value.
    Closed(R),
}

/// A bounded queue with any number of producers and one consumer, counted
/// in bytes ([`Weigh`]) and optionally in items.
///
/// - Pushing never waits. A producer that can wait asks for room first with
///   [`ByteQueue::poll_room`] (backpressure); one that cannot uses
///   [`ByteQueue::push_or_close`], which closes a queue that is already
///   over its limit (a consumer that fell behind).
/// - A queue under its limit takes an item of any size, so it holds at
///   most its limit plus one item.
/// - The consumer is woken only when it waits: on the push into an empty
///   queue, and on the close. A producer waiting in
///   [`ByteQueue::poll_room`] is woken by the pop that makes room, the
///   close, and [`ByteQueue::discard`].
/// - One lock per push and per pop, held for a few field updates, never
///   across an `.await`; wakers are woken and refused items dropped after
///   it is released. No allocation per item beyond the `VecDeque`'s growth.
/// - A drained buffer larger than `keep_capacity` items is given back, so
///   that an idle queue does not keep the memory of its last burst.
///
/// `C` is the close value (a close code and reason, say) handed to the
/// consumer once the queue is closed and drained.
pub struct ByteQueue<T, C = ()> {
    state: Mutex<State<T, C>>,
    max_bytes: usize,
    /// `u32`s, so that the queue of every idle peer stays small.
    max_items: u32,
    keep_capacity: u32,
}

struct State<T, C> {
    items: VecDeque<T>,
    bytes: usize,
    close: Option<C>,
    /// The consumer is gone: items are refused, none are kept.
    discarding: bool,
    /// The consumer waiting for items or for the close.
    consumer: Option<Waker>,
    /// A producer waiting for room.
    producer: Option<Waker>,
}

impl<T, C> State<T, C> {
    fn is_full(&self, max_bytes: usize, max_items: u32) -> bool {
        self.bytes >= max_bytes || self.items.len() >= max_items as usize
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl<T: Weigh, C> ByteQueue<T, C> {
    /// An empty queue holding at most `max_bytes` bytes (plus one item) and
    /// at most `max_items` items (at least one, at most `u32::MAX`) before
    /// [`ByteQueue::poll_room`] waits; a drained buffer of more than
    /// `keep_capacity` items is freed.
    pub fn new(max_bytes: usize, max_items: usize, keep_capacity: usize) -> Self {
        ByteQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                close: None,
                discarding: false,
                consumer: None,
                producer: None,
            }),
            max_bytes,
            max_items: u32::try_from(max_items).unwrap_or(u32::MAX).max(1),
            keep_capacity: u32::try_from(keep_capacity).unwrap_or(u32::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, C>> {
        lock(&self.state)
    }

    /// Queues `item`, refused only when the queue is closed (or its
    /// consumer gone): the limits are the producer's business
    /// ([`ByteQueue::poll_room`]).
    pub fn push(&self, item: T) -> Result<(), Refused<T>> {
        let state = self.lock();
        if state.close.is_some() || state.discarding {
            return Err(Refused::Closed(item));
        }
        Self::append(state, item);
        Ok(())
    }

    /// [`ByteQueue::push`] for the one producer that asks for room before
    /// each push ([`ByteQueue::poll_room`]): also says whether the queue
    /// still has room after the item, under the same lock. Only this
    /// producer's pushes take room away, so until a push says there is
    /// none it need not ask again.
    pub fn push_has_room(&self, item: T) -> Result<bool, Refused<T>> {
        let state = self.lock();
        if state.close.is_some() || state.discarding {
            return Err(Refused::Closed(item));
        }
        let full = state.bytes.saturating_add(item.weight()) >= self.max_bytes
            || state.items.len().saturating_add(1) >= self.max_items as usize;
        Self::append(state, item);
        Ok(!full)
    }

    /// Queues `item` if the queue has room (under both limits); refuses it
    /// as [`Refused::Full`] otherwise, leaving the queue open (the producer
    /// waits with [`ByteQueue::poll_room`], then [`ByteQueue::push`]es).
    pub fn try_push(&self, item: T) -> Result<(), Refused<T>> {
        let state = self.lock();
        if state.close.is_some() || state.discarding {
            return Err(Refused::Closed(item));
        }
        if state.is_full(self.max_bytes, self.max_items) {
            return Err(Refused::Full(item));
        }
        Self::append(state, item);
        Ok(())
    }

    /// Queues `item` unless the queue already holds its byte limit or
    /// more: then the queue drops everything it held (memory is released at
    /// once), closes with `close()`, and refuses the item as
    /// [`Refused::Full`].
    pub fn push_or_close(&self, item: T, close: impl FnOnce() -> C) -> Result<(), Refused<T>> {
        let mut state = self.lock();
        if state.close.is_some() || state.discarding {
            return Err(Refused::Closed(item));
        }
        if state.bytes >= self.max_bytes {
            let items = std::mem::take(&mut state.items);
            state.bytes = 0;
            Self::shut(state, close(), items);
            return Err(Refused::Full(item));
        }
        Self::append(state, item);
        Ok(())
    }

    fn append(mut state: MutexGuard<'_, State<T, C>>, item: T) {
        let was_empty = state.items.is_empty();
        state.bytes += item.weight();
        state.items.push_back(item);
        // A consumer registered its waker only after finding nothing: only
        // the push into an empty queue has somebody to wake.
        let consumer = if was_empty {
            state.consumer.take()
        } else {
            None
        };
        drop(state);
        wake(consumer);
    }

    /// Ready when the queue has room (under both limits), is closed, or its
    /// consumer is gone; otherwise registers `cx`'s waker as the one
    /// waiting producer's.
    pub fn poll_room(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.close.is_some()
            || state.discarding
            || !state.is_full(self.max_bytes, self.max_items)
        {
            return Poll::Ready(());
        }
        register(&mut state.producer, cx);
        Poll::Pending
    }

    /// Registers `cx`'s waker as the producer's (woken as in
    /// [`ByteQueue::poll_room`], and by [`ByteQueue::wake_producer`]) and
    /// returns whether the consumer is gone ([`ByteQueue::discard`]): for a
    /// producer that also waits for reasons of its own.
    pub fn register_producer(&self, cx: &Context<'_>) -> bool {
        let mut state = self.lock();
        register(&mut state.producer, cx);
        state.discarding
    }

    /// Wakes the producer waiting in [`ByteQueue::poll_room`] or
    /// registered with [`ByteQueue::register_producer`], if any.
    pub fn wake_producer(&self) {
        let producer = self.lock().producer.take();
        wake(producer);
    }

    /// Closes the queue with `close`: items already queued are still handed
    /// out, then the close. Returns whether this call closed it.
    pub fn close(&self, close: C) -> bool {
        self.close_inner(close, false)
    }

    /// Closes the queue and drops what it held. Returns whether this call
    /// closed it (the items are dropped either way).
    pub fn close_and_clear(&self, close: C) -> bool {
        self.close_inner(close, true)
    }

    fn close_inner(&self, close: C, clear: bool) -> bool {
        let mut state = self.lock();
        let items = if clear {
            state.bytes = 0;
            std::mem::take(&mut state.items)
        } else {
            VecDeque::new()
        };
        if state.close.is_some() {
            drop(state);
            drop(items);
            return false;
        }
        Self::shut(state, close, items);
        true
    }

    /// Records the close of a queue not closed yet, then, outside the
    /// lock, drops the `items` taken out of it and wakes both sides.
    fn shut(mut state: MutexGuard<'_, State<T, C>>, close: C, items: VecDeque<T>) {
        state.close = Some(close);
        let consumer = state.consumer.take();
        let producer = state.producer.take();
        drop(state);
        drop(items);
        wake(consumer);
        wake(producer);
    }

    /// The consumer is gone: drops what is queued and refuses every later
    /// push ([`Refused::Closed`]); a waiting producer is woken.
    pub fn discard(&self) {
        drop(self.take_and_discard());
    }

    /// Like [`ByteQueue::discard`], handing back what was queued, in
    /// order, instead of dropping it. The close still works afterwards
    /// (the consumer then gets the close value).
    pub fn take_and_discard(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.discarding = true;
        state.bytes = 0;
        let items = std::mem::take(&mut state.items);
        let producer = state.producer.take();
        drop(state);
        wake(producer);
        items
    }

    /// Consumer: the next item, or `on_close`'s view of the close value once
    /// the queue is closed and drained. Otherwise registers `cx`'s waker.
    pub fn poll_pop<R>(
        &self,
        cx: &Context<'_>,
        on_close: impl FnOnce(&mut C) -> R,
    ) -> Poll<Result<T, R>> {
        let mut item = None;
        self.poll_take(cx, 0, |taken| item = Some(taken), on_close)
            .map(|popped| match (popped, item) {
                (Popped::Closed(r), _) => Err(r),
                (Popped::Items, Some(item)) => Ok(item),
                // `poll_take` hands out at least one item when it says so.
                (Popped::Items, None) => unreachable!("items taken without an item"),
            })
    }

    /// Consumer: hands queued items to `take`, in order, until about
    /// `max_bytes` of them (at least one) are taken; or `on_close`'s view of
    /// the close value once the queue is closed and drained. Otherwise
    /// registers `cx`'s waker.
    pub fn poll_take<R>(
        &self,
        cx: &Context<'_>,
        max_bytes: usize,
        mut take: impl FnMut(T),
        on_close: impl FnOnce(&mut C) -> R,
    ) -> Poll<Popped<R>> {
        let mut state = self.lock();
        if !state.items.is_empty() {
            let was_full = state.is_full(self.max_bytes, self.max_items);
            let mut taken = 0;
            while let Some(item) = state.items.pop_front() {
                taken += item.weight();
                take(item);
                if taken >= max_bytes {
                    break;
                }
            }
            state.bytes = state.bytes.saturating_sub(taken);
            if state.items.is_empty() && state.items.capacity() > self.keep_capacity as usize {
                state.items = VecDeque::new();
            }
            let producer = if was_full && !state.is_full(self.max_bytes, self.max_items) {
                state.producer.take()
            } else {
                None
            };
            drop(state);
            wake(producer);
            return Poll::Ready(Popped::Items);
        }
        match &mut state.close {
            Some(close) => Poll::Ready(Popped::Closed(on_close(close))),
            None => {
                register(&mut state.consumer, cx);
                Poll::Pending
            }
        }
    }

    /// Ready once the queue is closed; otherwise registers `cx`'s waker
    /// (the consumer's, shared with [`ByteQueue::poll_take`]).
    pub fn poll_closed(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.close.is_some() {
            Poll::Ready(())
        } else {
            register(&mut state.consumer, cx);
            Poll::Pending
        }
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().close.is_some()
    }

    /// The close value, once closed.
    pub fn close_value(&self) -> Option<C>
    where
        C: Clone,
    {
        self.lock().close.clone()
    }

    /// Bytes queued (the sum of the queued items' [`Weigh::weight`]).
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// The byte limit.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Gives the buffer back if nothing is queued (whatever
    /// `keep_capacity`): for a consumer going idle, so that an idle queue
    /// holds no allocation.
    pub fn release_if_drained(&self) {
        let mut state = self.lock();
        if state.items.is_empty() && state.items.capacity() > 0 {
            state.items = VecDeque::new();
        }
    }

    /// The capacity of the buffer (in items), for tests of what an idle
    /// queue keeps.
    pub fn capacity(&self) -> usize {
        self.lock().items.capacity()
    }
}

impl<T, C: fmt::Debug> fmt::Debug for ByteQueue<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("ByteQueue")
            .field("items", &state.items.len())
            .field("bytes", &state.bytes)
            .field("max_bytes", &self.max_bytes)
            .field("close", &state.close)
            .finish()
    }
}
