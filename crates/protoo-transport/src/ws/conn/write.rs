//! The write side of the connection task: control frames, a batch of
//! queued frames and the close frame, written with vectored writes (each
//! frame's header beside its payload, the payload shared with every other
//! peer it goes to: no write buffer, no copy), then flushed once; a slow
//! reader's overflow.
//!
//! Control frames (pongs, keepalive pings) go out between data frames,
//! never inside one; only the latest pong not yet started is kept (RFC 6455
//! 5.5.3 allows answering only the latest ping), so a remote that sends
//! pings and does not read holds at most one.

use std::cell::RefCell;
use std::io::IoSlice;

use super::unconfirmed::{self, Tail};
use super::*;

/// Payloads at least this large go to the socket from where they are (a
/// slice of their own); smaller frames are copied into the staging buffer.
const OWN_SLICE: usize = 1024;
/// A write of one frame stages a payload up to this large too: one slice,
/// so a plain `send` rather than a `writev` of header and payload (the copy
/// costs less than the vectored call at this size).
const ONE_FRAME_STAGE: usize = 8 * 1024;
/// Frames room is made for when a batch starts.
const KEEP_FRAMES: usize = 16;
/// Most bytes copied into the staging buffer for one vectored write.
const MAX_STAGE: usize = 16 * 1024;

/// At most this many frames to write (a peer's answer and a close, say)
/// take the small slice arrays of one write; more take [`MAX_SLICES`].
const FEW_FRAMES: usize = 8;

thread_local! {
    /// The staging buffer of the connections on this thread, filled and
    /// written within one call: at most [`MAX_STAGE`] plus one small frame,
    /// kept.
    static STAGE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Copies `bytes` into `stage`, extending the last segment when it ends
/// where they start.
fn copy<const N: usize>(
    stage: &mut Vec<u8>,
    bytes: &[u8],
    segments: &mut [Segment; N],
    n: &mut usize,
) {
    let start = stage.len();
    stage.extend_from_slice(bytes);
    match segments[..*n].last_mut() {
        Some(Segment::Staged { end, .. }) if *end == start => *end = stage.len(),
        _ => {
            segments[*n] = Segment::Staged {
                start,
                end: stage.len(),
            };
            *n += 1;
        }
    }
}

/// A slice of the next vectored write.
#[derive(Clone, Copy, Debug)]
enum Segment {
    /// `stage[start..end]`.
    Staged { start: usize, end: usize },
    /// `out[index].payload[from..]`.
    Payload { index: usize, from: usize },
    /// The tail's `k`-th kept frame not written yet, from `from`
    /// ([`Kept::InTail`]).
    Kept { k: usize, from: usize },
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Drops what is not being written yet (the frame being written is
    /// finished first, so that the stream stays well-formed).
    pub(super) fn abandon_writes(&mut self) {
        self.out.truncate(self.head + usize::from(self.partial > 0));
        self.ping = false;
        self.pong = None;
    }

    /// Queues our close frame after what is in `out`.
    pub(super) fn push_close(&mut self, close: Option<(u16, &str)>) {
        self.out.push(Wire::close(self.role, close));
    }

    /// Takes queued frames (topping up what is still to be written, so
    /// that one vectored write carries both), writes them with control
    /// frames and the close frame, flushes once, and goes on until the
    /// socket blocks or nothing is left.
    pub(super) fn write_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            self.place_control();
            let mut took = false;
            if self.state == State::Open {
                let pending =
                    self.out[self.head..].iter().map(Wire::len).sum::<usize>() - self.partial;
                if pending < BATCH_BYTES {
                    if self.out.capacity() == 0 {
                        // One allocation for a typical batch, not four.
                        self.out.reserve(KEEP_FRAMES);
                    }
                    let (role, head) = (self.role, self.head);
                    let out = &mut self.out;
                    let budget = BATCH_BYTES - pending;
                    let queue = &self.shared.queue;
                    let taken = match self.shared.tail.get() {
                        None => queue.poll_next_with(cx, budget, |item| {
                            out.push(match item {
                                Outbound::Text(frame) => Wire::text(role, frame.into_bytes()),
                                Outbound::Binary(data) => Wire::binary(role, data),
                            })
                        }),
                        Some(tail) => {
                            unconfirmed::take_retained(queue, tail, out, head, role, cx, budget)
                        }
                    };
                    match taken {
                        Poll::Ready(Work::Frames) => took = true,
                        Poll::Ready(Work::Close(code, reason)) => {
                            self.begin_close(code, reason);
                            took = true;
                        }
                        Poll::Ready(Work::Done) | Poll::Pending => {}
                    }
                }
            }
            if self.head < self.out.len() {
                match self.poll_write_out(cx) {
                    Ready::Yes => progress = true,
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
            }
            if self.flush {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush = false,
                    Poll::Ready(Err(_)) => return self.write_failed(),
                    Poll::Pending => return self.blocked(cx) || progress,
                }
            }
            match self.state {
                State::Open if took => progress = true,
                State::Open => return progress,
                State::Closing => {
                    if !self.close_flushed {
                        // What was queued and our close frame are out:
                        // now bound the wait for the remote's reply.
                        self.close_flushed = true;
                        self.arm(Instant::now() + self.close_timeout);
                    }
                    return progress;
                }
                State::PeerClosed => {
                    // Our reply is out: the handshake is complete.
                    self.state = State::Done;
                    return true;
                }
                State::Draining { .. } | State::Done => return progress,
            }
        }
    }

    /// At a frame boundary, puts the pending pong and ping next in line.
    fn place_control(&mut self) {
        if self.pong.is_none() && !self.ping {
            return;
        }
        let at = self.head + usize::from(self.partial > 0);
        if let Some(payload) = self.pong.take() {
            let pong = Wire::pong(self.role, payload);
            if self.out.get(at).is_some_and(Wire::is_pong) {
                // A pong not started yet: answer the latest ping only.
                self.out[at] = pong;
            } else {
                self.out.insert(at, pong);
            }
        }
        if std::mem::take(&mut self.ping) {
            self.out.insert(at, Wire::ping(self.role));
        }
    }

    /// Writes `out[head..]`; `Yes` once all of it is written. Each call
    /// passes up to [`MAX_SLICES`] slices: payloads of [`OWN_SLICE`] bytes
    /// or more as they are (shared, not copied), and everything else
    /// (headers, small frames) copied into a staging buffer, one slice per
    /// run.
    /// Many small slices cost the kernel far more than one contiguous one:
    /// with a slice per header and per payload, copying from them took 18 %
    /// of the server's time in S3 at 40 B (2 % for the floor's contiguous
    /// buffer).
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Ready {
        if self.shared.tail.get().is_some() {
            return self.poll_write_retained(cx);
        }
        self.write_loop(cx, None)
    }

    /// The loop of [`Conn::poll_write_out`]; with the tail of a connection
    /// that keeps unconfirmed frames (locked), the kept frames written are
    /// counted there.
    pub(super) fn write_loop(
        &mut self,
        cx: &mut Context<'_>,
        mut tail: Option<&mut Tail>,
    ) -> Ready {
        loop {
            if self.head == self.out.len() {
                self.out.clear();
                self.head = 0;
                return Ready::Yes;
            }
            // The staging buffer is the worker thread's (no connection holds
            // one); a stream that writes through another connection on the
            // same thread would find it taken and use one of its own.
            // A few frames (an answer, a close) take a few slices: their
            // arrays are laid out small, not at `MAX_SLICES`.
            let few = self.out.len() - self.head <= FEW_FRAMES;
            let kept = tail.as_deref();
            let written = STAGE.with(|stage| {
                let (mut taken, mut own) = (stage.try_borrow_mut().ok(), Vec::new());
                let stage = taken.as_deref_mut().unwrap_or(&mut own);
                if few {
                    self.write_staged::<{ 2 * FEW_FRAMES }>(cx, stage, kept)
                } else {
                    self.write_staged::<MAX_SLICES>(cx, stage, kept)
                }
            });
            let written = match written {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Ready::Failed,
                Poll::Ready(Ok(written)) => written,
                Poll::Pending => return Ready::Blocked,
            };
            self.flush = true;
            let retained = self.advance(written);
            if retained > 0
                && let Some(tail) = tail.as_deref_mut()
            {
                self.wrote_retained(tail, retained);
            }
            if self.head == self.out.len() {
                self.out.clear();
                self.head = 0;
                return Ready::Yes;
            }
        }
    }

    /// One vectored write of `out[head..]`, staged in `stage`; `tail`
    /// holds the payloads of [`Kept::InTail`] wires.
    fn write_staged<const N: usize>(
        &mut self,
        cx: &mut Context<'_>,
        stage: &mut Vec<u8>,
        tail: Option<&Tail>,
    ) -> Poll<std::io::Result<usize>> {
        let mut segments = [Segment::Staged { start: 0, end: 0 }; N];
        let Some(n) = self.stage_out(stage, &mut segments, tail) else {
            // A kept frame that is not in the tail: cannot happen (the
            // tail lets go of written frames only); the stream cannot go
            // on without it.
            return Poll::Ready(Ok(0));
        };
        let mut slices = [IoSlice::new(&[]); N];
        for (slice, segment) in slices.iter_mut().zip(&segments[..n]) {
            *slice = IoSlice::new(match *segment {
                Segment::Staged { start, end } => &stage[start..end],
                Segment::Payload { index, from } => &self.out[index].payload[from..],
                Segment::Kept { k, from } => match tail.and_then(|tail| tail.unwritten(k)) {
                    Some(payload) => &payload[from..],
                    None => return Poll::Ready(Ok(0)),
                },
            });
        }
        // One slice (a batch of small frames, all staged) goes as a plain
        // write: on a socket, `send` is cheaper in the kernel than `writev`
        // (no iovec import, no file position lock).
        match &slices[..n] {
            [one] => Pin::new(&mut self.io).poll_write(cx, one),
            all => Pin::new(&mut self.io).poll_write_vectored(cx, all),
        }
    }

    /// Lays out the next vectored write of `out[head..]` (skipping the
    /// `partial` bytes written already) in `segments`, copying into
    /// `stage`; returns how many segments, `None` when a [`Kept::InTail`]
    /// payload is missing from `tail`.
    fn stage_out<const N: usize>(
        &self,
        stage: &mut Vec<u8>,
        segments: &mut [Segment; N],
        tail: Option<&Tail>,
    ) -> Option<usize> {
        stage.clear();
        let mut n = 0;
        let mut skip = self.partial;
        // The kept frames of the tail not written yet, in `out`'s order.
        let mut k = 0;
        let own_slice = if self.out.len() - self.head == 1 {
            ONE_FRAME_STAGE
        } else {
            OWN_SLICE
        };
        for (index, wire) in self.out.iter().enumerate().skip(self.head) {
            if n + 2 > N || stage.len() >= MAX_STAGE {
                break;
            }
            let header = wire.header();
            if skip < header.len() {
                copy(stage, &header[skip..], segments, &mut n);
                skip = 0;
            } else {
                skip -= header.len();
            }
            let nth = k;
            k += usize::from(wire.kept.is_kept());
            let (payload, own) = match wire.kept {
                Kept::InTail => (tail?.unwritten(nth)?, Segment::Kept { k: nth, from: skip }),
                _ => (&wire.payload[..], Segment::Payload { index, from: skip }),
            };
            if skip < payload.len() {
                if payload.len() >= own_slice {
                    segments[n] = own;
                    n += 1;
                } else {
                    copy(stage, &payload[skip..], segments, &mut n);
                }
            }
            skip = 0;
        }
        Some(n)
    }

    /// `written` more bytes of `out[head..]` went out; returns how many
    /// kept frames ([`Wire::retained`]) that completed.
    fn advance(&mut self, mut written: usize) -> usize {
        let mut retained = 0;
        while written > 0 {
            let wire = &mut self.out[self.head];
            let left = wire.len() - self.partial;
            if written < left {
                self.partial += written;
                break;
            }
            written -= left;
            // Written: its payload (shared with other peers) is let go now.
            wire.payload = Bytes::new();
            retained += usize::from(wire.kept.is_kept());
            self.head += 1;
            self.partial = 0;
        }
        retained
    }

    pub(super) fn begin_close(&mut self, code: u16, reason: String) {
        tracing::debug!(code, reason = %crate::log::Remote(&reason), "closing the WebSocket");
        self.push_close(Some((code, &reason)));
        self.ping = false;
        self.keepalive = Keepalive::Idle;
        self.state = State::Closing;
        self.arm_close();
    }

    /// The socket takes nothing more for now (its waker is registered).
    /// Watches the queue meanwhile: when it overflowed the writer gives up
    /// at once (the task ends and drops the socket); when the application
    /// closed it, the close is bounded by the close timeout.
    pub(super) fn blocked(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != State::Open || self.shared.queue.poll_closed(cx).is_pending() {
            return false;
        }
        let overflow = matches!(
            self.shared.queue.close_reason(),
            Some((code, reason)) if code == close_code::POLICY_VIOLATION && reason == SLOW_CONSUMER_REASON
        );
        if overflow {
            tracing::debug!("outbound queue overflow on a blocked socket: dropping the connection");
            self.finish(CloseReason::new(
                Some(close_code::POLICY_VIOLATION),
                SLOW_CONSUMER_REASON,
                Initiator::Local,
            ));
            return true;
        }
        self.arm_close();
        false
    }

    pub(super) fn write_failed(&mut self) -> bool {
        self.lost();
        true
    }
}
