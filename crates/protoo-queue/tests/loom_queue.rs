//! Model tests of [`ByteQueue`]'s wake-ups: every interleaving of a push,
//! a pop about to park and a close, explored by loom.
//!
//! ```sh
//! RUSTFLAGS="--cfg protoo_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p protoo-queue --release --target-dir target/loom --test loom_queue
//! ```
#![cfg(protoo_loom)]

use std::future::poll_fn;

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use protoo_queue::{ByteQueue, Refused, Weigh};

#[derive(Debug, PartialEq, Eq)]
struct Item(usize);

impl Weigh for Item {
    fn weight(&self) -> usize {
        self.0
    }
}

/// The close value: the code the consumer must see.
type Queue = ByteQueue<Item, u16>;

fn queue(max_bytes: usize, max_items: usize) -> Arc<Queue> {
    Arc::new(ByteQueue::new(max_bytes, max_items, 0))
}

/// The consumer's next item or close, parking until one comes.
fn pop(queue: &Queue) -> Result<Item, u16> {
    block_on(poll_fn(|cx| queue.poll_pop(cx, |code| *code)))
}

/// A push racing a pop that is about to park: the consumer is woken and
/// gets the item (no lost wake-up), whichever runs first.
#[test]
fn push_racing_a_parking_pop_is_not_lost() {
    loom::model(|| {
        let q = queue(1 << 20, usize::MAX);
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(Item(1)).unwrap())
        };
        assert_eq!(pop(&q), Ok(Item(1)));
        producer.join().unwrap();
        assert_eq!(q.queued_bytes(), 0);
    });
}

/// Two producers and a consumer that parks between them: both items are
/// delivered, in a push order.
#[test]
fn two_pushes_racing_two_pops() {
    loom::model(|| {
        let q = queue(1 << 20, usize::MAX);
        let producers: Vec<_> = (1..=2)
            .map(|n| {
                let q = q.clone();
                thread::spawn(move || q.push(Item(n)).unwrap())
            })
            .collect();
        let mut got = [pop(&q).unwrap().0, pop(&q).unwrap().0];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        for producer in producers {
            producer.join().unwrap();
        }
    });
}

/// A close racing a waiting pop: the consumer is woken and sees the close.
#[test]
fn close_racing_a_waiting_pop_is_seen() {
    loom::model(|| {
        let q = queue(1 << 20, usize::MAX);
        let closer = {
            let q = q.clone();
            thread::spawn(move || assert!(q.close(4000)))
        };
        assert_eq!(pop(&q), Err(4000));
        closer.join().unwrap();
    });
}

/// A push racing a close: the push is either queued before the close (and
/// handed out before it) or refused with its item back; never lost, never
/// after the close.
#[test]
fn push_racing_close_is_delivered_or_refused() {
    loom::model(|| {
        let q = queue(1 << 20, usize::MAX);
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(Item(7)))
        };
        let closer = {
            let q = q.clone();
            thread::spawn(move || q.close(1000))
        };
        let first = pop(&q);
        let pushed = producer.join().unwrap();
        assert!(closer.join().unwrap());
        match pushed {
            Ok(()) => {
                assert_eq!(first, Ok(Item(7)));
                assert_eq!(pop(&q), Err(1000));
            }
            Err(refused) => {
                assert_eq!(refused, Refused::Closed(Item(7)));
                assert_eq!(first, Err(1000));
            }
        }
        // After the close every push is refused.
        assert_eq!(q.push(Item(8)), Err(Refused::Closed(Item(8))));
    });
}

/// A producer waiting for room races the pop that makes it: it is woken
/// and its push goes through.
#[test]
fn producer_waiting_for_room_is_woken_by_the_pop() {
    loom::model(|| {
        let q = queue(1 << 20, 1);
        q.push(Item(1)).unwrap();
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                block_on(poll_fn(|cx| q.poll_room(cx)));
                q.push(Item(2)).unwrap();
            })
        };
        assert_eq!(pop(&q), Ok(Item(1)));
        assert_eq!(pop(&q), Ok(Item(2)));
        producer.join().unwrap();
    });
}

/// An overflow closes the queue and wakes a consumer parked on it.
#[test]
fn overflow_close_wakes_the_consumer() {
    loom::model(|| {
        let q = queue(10, usize::MAX);
        q.push(Item(10)).unwrap();
        let closed = {
            let q = q.clone();
            thread::spawn(move || block_on(poll_fn(|cx| q.poll_closed(cx))))
        };
        assert_eq!(
            q.push_or_close(Item(1), || 1008),
            Err(Refused::Full(Item(1)))
        );
        closed.join().unwrap();
        assert_eq!(pop(&q), Err(1008));
        assert_eq!(q.queued_bytes(), 0);
    });
}
