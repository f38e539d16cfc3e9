use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::{Frame, SLOW_CONSUMER_REASON, TransportError, close_code};

/// Bytes counted for each queued frame on top of its text: the bookkeeping a
/// queued frame costs, so that a flood of tiny frames is bounded too.
pub const FRAME_OVERHEAD: usize = 64;

/// A bounded queue of outbound frames with one consumer (a writer task),
/// counted in bytes.
///
/// Pushing never waits. A push that would take the queue past its byte limit
/// closes the queue as a slow consumer ([`close_code::POLICY_VIOLATION`]) and
/// drops every frame it held, so memory is released at once. The lock is
/// only ever held for a few instructions, never across an `.await`.
pub struct OutboundQueue {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    close: Option<(u16, String)>,
    close_taken: bool,
}

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

impl OutboundQueue {
    /// An empty queue holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        OutboundQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every critical section is a handful of field updates).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame; see [`FrameSink::send`](crate::FrameSink::send).
    pub fn push(&self, frame: Frame) -> Result<(), TransportError> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Err(TransportError::Closed(frame));
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        if state.bytes + cost > self.limit {
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.close = Some((
                close_code::POLICY_VIOLATION,
                SLOW_CONSUMER_REASON.to_owned(),
            ));
            drop(state);
            self.notify.notify_one();
            return Err(TransportError::QueueFull(frame));
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        state.bytes += cost;
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Closes the queue: frames already queued are still handed out, then the
    /// close. Returns whether this call closed it (false if already closed).
    pub fn close(&self, code: u16, reason: &str) -> bool {
        self.close_inner(code, reason, false)
    }

    /// Closes the queue and drops what it held. Returns whether this call
    /// closed it.
    pub fn close_and_clear(&self, code: u16, reason: &str) -> bool {
        self.close_inner(code, reason, true)
    }

    fn close_inner(&self, code: u16, reason: &str, clear: bool) -> bool {
        let mut state = self.lock();
        if clear {
            state.frames = VecDeque::new();
            state.bytes = 0;
        }
        if state.close.is_some() {
            return false;
        }
        state.close = Some((code, reason.to_owned()));
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().close.is_some()
    }

    /// The close code and reason, once closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.lock().close.clone()
    }

    /// Bytes queued (text plus [`FRAME_OVERHEAD`] per frame).
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes what is ready without waiting: frames into `batch`, or the close.
    /// `None` when there is nothing yet.
    pub fn try_next(&self, batch: &mut Vec<Frame>) -> Option<Work> {
        let mut state = self.lock();
        if !state.frames.is_empty() {
            batch.extend(state.frames.drain(..));
            state.bytes = 0;
            return Some(Work::Frames);
        }
        match &state.close {
            Some(_) if state.close_taken => Some(Work::Done),
            Some((code, reason)) => {
                let work = Work::Close(*code, reason.clone());
                state.close_taken = true;
                Some(work)
            }
            None => None,
        }
    }

    /// Waits for work: every queued frame moved into `batch`, or the close.
    /// Cancel-safe.
    pub async fn next(&self, batch: &mut Vec<Frame>) -> Work {
        loop {
            let notified = self.notify.notified();
            if let Some(work) = self.try_next(batch) {
                return work;
            }
            notified.await;
        }
    }

    /// Waits until the queue is closed. Meant for a writer blocked on a slow
    /// socket, to give up when the queue overflows.
    pub async fn closed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_closed() {
                // Leave a wake-up for `next`, which shares the notifier.
                self.notify.notify_one();
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("OutboundQueue")
            .field("frames", &state.frames.len())
            .field("bytes", &state.bytes)
            .field("limit", &self.limit)
            .field("close", &state.close)
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
