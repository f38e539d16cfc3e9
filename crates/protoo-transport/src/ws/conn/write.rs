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

use std::io::IoSlice;

use super::*;

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

    /// Writes the ping, the batch, the close frame, flushes once, and takes
    /// more from the queue, until the socket blocks or nothing is left.
    pub(super) fn write_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            self.place_control();
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
                State::Open => {}
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
            let role = self.role;
            let out = &mut self.out;
            let taken = self.shared.queue.poll_next_with(cx, BATCH_BYTES, |item| {
                out.push(match item {
                    Outbound::Text(frame) => Wire::text(role, frame.into_bytes()),
                    Outbound::Binary(data) => Wire::binary(role, data),
                })
            });
            match taken {
                Poll::Ready(Work::Frames) => progress = true,
                Poll::Ready(Work::Close(code, reason)) => {
                    self.begin_close(code, reason);
                    progress = true;
                }
                Poll::Ready(Work::Done) | Poll::Pending => return progress,
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

    /// Writes `out[head..]`, as many frames per call as fit in
    /// [`MAX_SLICES`]; `Yes` once all of it is written.
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Ready {
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            let mut skip = self.partial;
            for wire in &self.out[self.head..] {
                if n + 2 > MAX_SLICES {
                    break;
                }
                for part in [wire.header(), &wire.payload[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                    } else {
                        slices[n] = IoSlice::new(&part[skip..]);
                        skip = 0;
                        n += 1;
                    }
                }
            }
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Ready::Failed,
                Poll::Ready(Ok(written)) => written,
                Poll::Pending => return Ready::Blocked,
            };
            self.flush = true;
            self.advance(written);
            if self.head == self.out.len() {
                self.out.clear();
                self.head = 0;
                if self.out.capacity() > KEEP_BATCH {
                    self.out = Vec::new();
                }
                return Ready::Yes;
            }
        }
    }

    /// `written` more bytes of `out[head..]` went out.
    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let wire = &mut self.out[self.head];
            let left = wire.len() - self.partial;
            if written < left {
                self.partial += written;
                return;
            }
            written -= left;
            // Written: its payload (shared with other peers) is let go now.
            wire.payload = Bytes::new();
            self.head += 1;
            self.partial = 0;
        }
    }

    pub(super) fn begin_close(&mut self, code: u16, reason: String) {
        tracing::debug!(code, reason = %reason, "closing the WebSocket");
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
