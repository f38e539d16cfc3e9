//! Frames kept until the remote confirms them
//! ([`FrameSink::retain_unconfirmed`], [`FrameSink::take_unconfirmed`]).
//!
//! The evidence of receipt is the pong: a WebSocket stack answers a ping
//! only after it has read every frame before it. Once a connection retains,
//! every text frame it takes from the queue is also kept in the [`Tail`]
//! (shared with the sink, so that it can be taken after the task ended),
//! numbered in the order written; the task counts the kept frames fully
//! written. While kept frames wait, a confirmation ping carrying the count
//! of kept frames written before it goes out; a pong with such a count `n`
//! (no more than were written) lets go of the first `n`.
//!
//! When the pings go ([`WsConfig::confirm_interval`], the interval):
//! - kept frames taken after a pause (nothing kept was taken for an
//!   interval) take a ping along in their own write: a message now and then
//!   is confirmed one round trip after it is written, at no extra write;
//! - frames that follow within the interval wait for the next ping, one
//!   interval after the last;
//! - while they keep following (a stream: several batches between two
//!   pings), each ping goes twice as long after the one before, up to
//!   [`STREAM_SPACING`] intervals: a connection
//!   under a steady stream answers 10 pings a second at the default instead
//!   of 40, and repeats at most that much more of a stream after a loss. The
//!   first pause brings the spacing back to one interval;
//! - whatever the spacing, 64 KiB of text held for this connection alone
//!   ([`CONFIRM_BYTES`]: answers, not broadcasts, whose memory is shared
//!   and held by the other connections anyway) make a ping due at once. A
//!   fast stream of large answers then holds about 64 KiB and a round trip
//!   instead of the spacing's worth (3 MiB for 16 KiB echoes at 2,000 a
//!   second), and the memory it writes into stays in the cache: S2 at
//!   16 KiB cost 1.1-1.2× the floor's server CPU without it, 1.0× with it.
//!
//! The tail is locked by the task around each batch it takes from the
//! queue (the queue's lock nested inside: a frame is always in the queue or
//! in the tail, never between), around each write call, and by
//! `take_unconfirmed`, which takes the tail and then the queue under it: a
//! frame taken is never written afterwards (the one being written is
//! finished, so that the close frame can follow). None of this runs for a
//! connection that does not retain: the task checks one pointer.

use std::collections::VecDeque;

use super::*;
use crate::FRAME_OVERHEAD;
use crate::sync::{Mutex, lock};

/// A drained tail whose buffer grew past this many frames gives it back.
const KEEP_CAPACITY: usize = 16;

/// Under a steady stream, confirmation pings space out to at most this many
/// intervals (see the module's docs).
pub(crate) const STREAM_SPACING: u8 = 4;

/// Bytes of text of the kept frames taken since the last ping, held by this
/// connection alone, that make the next one due at once (see the module's
/// docs).
const CONFIRM_BYTES: u32 = 64 * 1024;

/// Batches of kept frames between two pings that make a stream (fewer are
/// a burst: the spacing stays).
const STREAM_BATCHES: u8 = 4;

/// The frames taken from the queue and not confirmed by the remote: written
/// (`seq < written`) or in the task's write batch.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Oldest first; `frames[i]` is kept frame number `first + i`.
    frames: VecDeque<Frame>,
    first: u64,
    /// Kept frames fully written so far.
    written: u64,
    /// The frames' bytes, counted like the queue's (text plus
    /// [`FRAME_OVERHEAD`]).
    bytes: usize,
    /// Past this many bytes, the oldest written frames are let go.
    limit: usize,
    /// Written frames let go unconfirmed over the limit.
    released: u64,
    /// When the last confirmation ping was queued.
    pinged_at: Option<Instant>,
    /// How many intervals after it the next one is due: 1, doubled by each
    /// ping under a stream up to [`STREAM_SPACING`].
    spacing: u8,
    /// When kept frames were last taken from the queue.
    taken_at: Option<Instant>,
    /// Batches of kept frames taken since the last ping.
    batches: u8,
    /// Bytes of text of the kept frames taken since the last ping that this
    /// connection alone holds (not a broadcast shared with others).
    unpinged: u32,
    /// When the next one is due, while kept frames wait (the task's timer
    /// fires then; the task's `confirm_armed` mirrors it).
    confirm_at: Option<Instant>,
    /// [`WsConfig::confirm_interval`].
    interval: Duration,
    /// [`FrameSink::take_unconfirmed`] was called: nothing kept is written
    /// any more.
    taken: bool,
    /// Once taken: the first kept frame not fully written when it was (the
    /// one being written is finished; [`Kept::InTail`] wires read it here).
    finishing: Option<Frame>,
}

fn weight(frame: &Frame) -> usize {
    frame.len() + FRAME_OVERHEAD
}

impl Tail {
    pub(super) fn new(limit: usize, interval: Duration) -> Self {
        Tail {
            confirm_at: None,
            interval,
            frames: VecDeque::new(),
            first: 0,
            written: 0,
            bytes: 0,
            limit,
            released: 0,
            pinged_at: None,
            spacing: 1,
            taken_at: None,
            batches: 0,
            unpinged: 0,
            taken: false,
            finishing: None,
        }
    }

    /// A frame taken into the write batch; `own`: held for this connection
    /// alone (not shared with other connections' queues).
    fn push(&mut self, frame: Frame, own: bool) {
        self.bytes += weight(&frame);
        if own {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            self.unpinged = self.unpinged.saturating_add(len);
        }
        self.frames.push_back(frame);
    }

    /// `count` more kept frames were fully written. Over the limit, the
    /// oldest written frames are let go.
    fn wrote(&mut self, count: usize) {
        self.written += count as u64;
        if count > 0 {
            // Taken, the frame being finished is out.
            self.finishing = None;
        }
        let mut released = 0;
        while self.bytes > self.limit && self.first < self.written {
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= weight(&frame);
            self.first += 1;
            released += 1;
        }
        if released > 0 {
            self.released += released;
            crate::metrics::unconfirmed_released(released);
        }
    }

    /// The remote confirmed the first `count` kept frames. Refused (false)
    /// when more than were written, or once taken.
    fn confirm(&mut self, count: u64) -> bool {
        if self.taken || count > self.written {
            return false;
        }
        while self.first < count {
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= weight(&frame);
            self.first += 1;
        }
        if self.frames.is_empty() && self.frames.capacity() > KEEP_CAPACITY {
            self.frames = VecDeque::new();
        }
        true
    }

    /// Every frame kept, in order; nothing kept is written afterwards.
    fn take(&mut self) -> Vec<Frame> {
        if !self.taken {
            // The frame being written, if any, is finished (its payload
            // read from here): a clone, on this rare path only.
            let next = usize::try_from(self.written - self.first).unwrap_or(usize::MAX);
            self.finishing = self.frames.get(next).cloned();
        }
        self.taken = true;
        self.bytes = 0;
        self.first += self.frames.len() as u64;
        Vec::from(std::mem::take(&mut self.frames))
    }

    /// The payload of the `k`-th kept frame not fully written yet (in the
    /// order of the write batch), for a [`Kept::InTail`] wire; once taken,
    /// only the one being finished. `None` if there is none.
    pub(super) fn unwritten(&self, k: usize) -> Option<&[u8]> {
        if self.taken {
            return self
                .finishing
                .as_ref()
                .filter(|_| k == 0)
                .map(Frame::as_bytes);
        }
        let next = usize::try_from(self.written - self.first).ok()?;
        self.frames.get(next.checked_add(k)?).map(Frame::as_bytes)
    }

    /// How long after the last confirmation ping the next one is due.
    fn spacing(&self) -> Duration {
        self.interval * u32::from(self.spacing)
    }

    /// Written frames let go unconfirmed over the limit.
    #[cfg(test)]
    pub(super) fn released(&self) -> u64 {
        self.released
    }
}

impl Shared {
    /// [`FrameSink::retain_unconfirmed`].
    pub(super) fn retain_unconfirmed(&self) {
        self.tail.get_or_init(|| {
            Box::new(Mutex::new(Tail::new(
                self.queue.limit(),
                self.confirm_interval(),
            )))
        });
    }

    /// [`FrameSink::take_unconfirmed`]: the tail, then the queue, taken
    /// under the tail's lock (the task moves frames from one to the other
    /// under it).
    pub(super) fn take_unconfirmed(&self) -> Vec<Frame> {
        let Some(tail) = self.tail.get() else {
            return self.queue.take_all();
        };
        let mut tail = lock(tail);
        let mut frames = tail.take();
        frames.extend(self.queue.take_all());
        frames
    }
}

/// Takes queued frames into `out` as [`Conn::write_step`] does, keeping the
/// text frames in `tail` too (the queue's lock nested in the tail's); a
/// confirmation ping due now is appended to the batch, so that it goes out
/// in the same write (`head`: the first frame of `out` not written yet).
pub(super) fn take_retained(
    queue: &OutboundQueue,
    tail: &Mutex<Tail>,
    out: &mut Vec<Wire>,
    head: usize,
    role: Role,
    cx: &mut Context<'_>,
    max_bytes: usize,
) -> Poll<Work> {
    let mut tail = lock(tail);
    let kept_before = tail.frames.len();
    let taken = queue.poll_next_with(cx, max_bytes, |item| {
        out.push(match item {
            // The server's payload is written from the tail: one owner.
            Outbound::Text(frame) if role == Role::Server => {
                let wire = Wire::text_in_tail(frame.len());
                let own = frame.is_unique();
                tail.push(frame, own);
                wire
            }
            Outbound::Text(frame) => {
                // The write's clone shares the buffer with the kept one.
                let own = frame.is_unique();
                tail.push(frame.clone(), own);
                Wire::text(role, frame.into_bytes()).retained()
            }
            Outbound::Binary(data) => Wire::binary(role, data),
        })
    });
    if tail.frames.len() > kept_before {
        ping_with_batch(&mut tail, out, head, role, Instant::now());
    }
    taken
}

/// Kept frames were just taken into the batch: a confirmation ping goes
/// with them when they come after a pause (nothing kept taken for an
/// interval; the spacing starts again from one interval) or when the next
/// ping is due anyway (and none waits in `out[head..]`). A peer that gets a
/// message now and then would otherwise pay a write call for the message
/// and another for its ping. After the write, [`Conn::confirm_check`] finds
/// the ping just sent and only arms the timer that asks again.
fn ping_with_batch(tail: &mut Tail, out: &mut Vec<Wire>, head: usize, role: Role, now: Instant) {
    let paused = tail.taken_at.is_none_or(|at| at + tail.interval <= now);
    tail.taken_at = Some(now);
    tail.batches = tail.batches.saturating_add(1);
    if tail.taken {
        return;
    }
    if paused {
        tail.spacing = 1;
        push_confirm_ping(tail, out, head, role, now);
    } else if tail.unpinged >= CONFIRM_BYTES
        || tail.pinged_at.is_none_or(|at| at + tail.spacing() <= now)
    {
        paced_ping(tail, out, head, role, now);
    }
}

/// A ping due by the spacing: under a stream (at least [`STREAM_BATCHES`]
/// batches of kept frames since the last ping, the last within an
/// interval), the next one goes twice as long after it, up to
/// [`STREAM_SPACING`] intervals.
fn paced_ping(tail: &mut Tail, out: &mut Vec<Wire>, head: usize, role: Role, now: Instant) {
    let stream =
        tail.batches >= STREAM_BATCHES && tail.taken_at.is_some_and(|at| at + tail.interval > now);
    if push_confirm_ping(tail, out, head, role, now) && stream {
        tail.spacing = (tail.spacing * 2).min(STREAM_SPACING);
    }
}

/// Appends a confirmation ping to `out` unless one waits in `out[head..]`
/// already (one waits at a time: on a socket that takes nothing, the next
/// goes when it did). Appended (true), it counts every kept frame in `out`.
fn push_confirm_ping(
    tail: &mut Tail,
    out: &mut Vec<Wire>,
    head: usize,
    role: Role,
    now: Instant,
) -> bool {
    let waiting = &out[head..];
    if waiting.iter().any(Wire::is_confirm_ping) {
        return false;
    }
    let count = tail.written + waiting.iter().filter(|wire| wire.kept.is_kept()).count() as u64;
    out.push(Wire::confirm_ping(role, count));
    tail.pinged_at = Some(now);
    tail.batches = 0;
    tail.unpinged = 0;
    true
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Writes `out[head..]` like [`Conn::poll_write_out`], under the tail's
    /// lock: drops what was taken, counts the kept frames written, and
    /// queues a confirmation ping when one is due.
    pub(super) fn poll_write_retained(&mut self, cx: &mut Context<'_>) -> Ready {
        let shared = Arc::clone(&self.shared);
        let Some(tail) = shared.tail.get() else {
            return self.write_loop(cx, None);
        };
        let mut tail = lock(tail);
        if tail.taken {
            self.drop_taken();
        }
        self.write_loop(cx, Some(&mut tail))
    }

    /// After `take_unconfirmed`: the kept frames not started yet are not
    /// written (the one being written is finished, so that the stream
    /// stays well-formed and a close frame can follow).
    fn drop_taken(&mut self) {
        let keep = self.head + usize::from(self.partial > 0);
        let mut index = 0;
        self.out.retain(|wire| {
            let kept = index < keep || !wire.kept.is_kept();
            index += 1;
            kept
        });
    }

    /// After a write or a pong: queues a confirmation ping when kept frames
    /// wait and the last ping is at least the spacing old, and keeps the
    /// confirmation timer on the next one due (off once nothing waits).
    pub(super) fn confirm_check(&mut self, tail: &mut Tail) {
        if tail.taken || self.state != State::Open || tail.frames.is_empty() {
            self.set_confirm_at(tail, None);
            return;
        }
        let now = Instant::now();
        if let Some(at) = tail.pinged_at {
            let due = at + tail.spacing();
            if due > now {
                self.set_confirm_at(tail, Some(due));
                return;
            }
        }
        paced_ping(tail, &mut self.out, self.head, self.role, now);
        // Unless the answer lets everything go first, ask again then (an
        // answer can be lost: a remote may answer only the latest of two
        // pings, RFC 6455 5.5.3).
        let next = now + tail.spacing();
        self.set_confirm_at(tail, Some(next));
    }

    fn set_confirm_at(&mut self, tail: &mut Tail, at: Option<Instant>) {
        if tail.confirm_at != at {
            tail.confirm_at = at;
            self.confirm_armed = at.is_some();
            self.rearm = true;
        }
    }

    /// When the next confirmation ping is due, if one is.
    pub(super) fn confirm_at(&self) -> Option<Instant> {
        self.shared
            .tail
            .get()
            .and_then(|tail| lock(tail).confirm_at)
    }

    /// The timer fired at `now` while a confirmation ping is due: checks
    /// again if it is.
    pub(super) fn on_confirm_timer(&mut self, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let Some(tail) = shared.tail.get() else {
            return;
        };
        let mut tail = lock(tail);
        if tail.confirm_at.is_some_and(|at| at <= now) {
            tail.confirm_at = None;
            self.confirm_armed = false;
            self.confirm_check(&mut tail);
        }
    }

    /// A pong: one carrying a count of kept frames written confirms them.
    pub(super) fn on_pong(&mut self, payload: &[u8]) {
        let Ok(count) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let Some(tail) = shared.tail.get() else {
            return;
        };
        let mut tail = lock(tail);
        if tail.confirm(u64::from_be_bytes(count)) {
            self.confirm_check(&mut tail);
        }
    }

    /// The remote answered our close frame: it read every frame written
    /// before it (a WebSocket reads in order), so every kept frame written
    /// is confirmed. A drain's close (1012) thus gives back nothing the
    /// client already has.
    pub(super) fn on_close_reply(&mut self) {
        let shared = Arc::clone(&self.shared);
        let Some(tail) = shared.tail.get() else {
            return;
        };
        let mut tail = lock(tail);
        let written = tail.written;
        if tail.confirm(written) {
            self.confirm_check(&mut tail);
        }
    }

    /// The kept frames written by the last write call: counted (and the
    /// limit applied), then a confirmation ping if one is due.
    pub(super) fn wrote_retained(&mut self, tail: &mut Tail, count: usize) {
        tail.wrote(count);
        self.confirm_check(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::from("x".repeat(n))
    }

    fn cost(n: usize) -> usize {
        n + FRAME_OVERHEAD
    }

    #[test]
    fn confirmed_frames_are_let_go_and_the_rest_taken_in_order() {
        let mut tail = Tail::new(1 << 20, Duration::from_secs(1));
        for i in 0..5 {
            tail.push(Frame::from(format!("{i}")), true);
        }
        tail.wrote(3);
        // More than were written: refused.
        assert!(!tail.confirm(4));
        assert_eq!(tail.frames.len(), 5);
        assert!(tail.confirm(2));
        assert_eq!(tail.bytes, 3 * cost(1));
        // An older count changes nothing.
        assert!(tail.confirm(1));
        assert_eq!(tail.frames.len(), 3);
        let taken = tail.take();
        let texts: Vec<&[u8]> = taken.iter().map(Frame::as_bytes).collect();
        assert_eq!(texts, [b"2", b"3", b"4"]);
        assert_eq!(tail.bytes, 0);
        // Nothing is confirmed once taken.
        tail.wrote(2);
        assert!(!tail.confirm(5));
    }

    #[test]
    fn over_the_limit_the_oldest_written_frames_are_released() {
        let limit = 10 * cost(100);
        let mut tail = Tail::new(limit, Duration::from_secs(1));
        for _ in 0..12 {
            tail.push(frame(100), true);
        }
        // Over the limit, but nothing written yet: frames in the write
        // batch are never let go.
        tail.wrote(0);
        assert_eq!((tail.frames.len(), tail.released()), (12, 0));
        tail.wrote(1);
        assert_eq!((tail.frames.len(), tail.released(), tail.first), (11, 1, 1));
        tail.wrote(5);
        // Down to the limit: two released in all.
        assert_eq!((tail.frames.len(), tail.released(), tail.first), (10, 2, 2));
        assert_eq!(tail.bytes, limit);
        // A confirmation of frames already released is fine.
        assert!(tail.confirm(1));
        assert!(tail.confirm(6));
        assert_eq!((tail.frames.len(), tail.first), (6, 6));
        assert_eq!(tail.bytes, 6 * cost(100));
    }

    #[test]
    fn one_large_frame_is_released_once_written() {
        let mut tail = Tail::new(1000, Duration::from_secs(1));
        tail.push(frame(5000), true);
        tail.push(frame(10), true);
        tail.wrote(1);
        assert_eq!((tail.frames.len(), tail.released()), (1, 1));
        assert_eq!(tail.bytes, cost(10));
        let taken = tail.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].len(), 10);
    }

    #[test]
    fn a_drained_large_buffer_is_given_back() {
        let mut tail = Tail::new(1 << 20, Duration::from_secs(1));
        for _ in 0..100 {
            tail.push(frame(1), true);
        }
        tail.wrote(100);
        assert!(tail.confirm(100));
        assert_eq!(tail.frames.capacity(), 0);
    }
}
