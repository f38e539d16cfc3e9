//! The write side of the connection task: the ping, one batch of queued
//! frames and the close frame, flushed once; a slow reader's overflow.

use super::*;

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn abandon_writes(&mut self) {
        self.batch = Vec::new();
        self.sent = 0;
        self.ping = false;
        self.close = None;
    }

    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Ready {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => Ready::Yes,
            Poll::Ready(Err(_)) => Ready::Failed,
            Poll::Pending => Ready::Blocked,
        }
    }

    /// Feeds one message; `false` when the connection failed.
    pub(super) fn feed(&mut self, message: Message) -> bool {
        match Pin::new(&mut self.ws).start_send(message) {
            Ok(()) => {
                self.flush = true;
                true
            }
            Err(_) => false,
        }
    }

    /// Writes the ping, the batch, the close frame, flushes once, and takes
    /// more from the queue, until the socket blocks or nothing is left.
    pub(super) fn write_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            if self.ping {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                if !self.feed(Message::Ping(Bytes::new())) {
                    return self.write_failed();
                }
                self.ping = false;
                progress = true;
            }
            while self.sent < self.batch.len() {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                let item =
                    std::mem::replace(&mut self.batch[self.sent], Outbound::Binary(Bytes::new()));
                let message = match item {
                    // Frames are valid UTF-8 by construction: a raw text
                    // frame skips tungstenite's UTF-8 check of every copy
                    // of a broadcast.
                    Outbound::Text(frame) => Message::Frame(WsFrame::message(
                        frame.into_bytes(),
                        OpCode::Data(Data::Text),
                        true,
                    )),
                    Outbound::Binary(data) => Message::Binary(data),
                };
                if !self.feed(message) {
                    return self.write_failed();
                }
                self.sent += 1;
                progress = true;
            }
            if !self.batch.is_empty() {
                self.batch.clear();
                self.sent = 0;
                if self.batch.capacity() > KEEP_BATCH {
                    self.batch = Vec::new();
                }
            }
            if self.close.is_some() {
                match self.poll_ready(cx) {
                    Ready::Yes => {}
                    Ready::Blocked => return self.blocked(cx) || progress,
                    Ready::Failed => return self.write_failed(),
                }
                let frame = self.close.take();
                if !self.feed(Message::Close(frame)) {
                    return self.write_failed();
                }
                progress = true;
            }
            if self.flush {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush = false,
                    Poll::Ready(Err(_)) => return self.write_failed(),
                    Poll::Pending => return self.blocked(cx) || progress,
                }
            }
            if self.state != State::Open {
                if self.state == State::Closing && !self.close_flushed {
                    // What was queued and our close frame are out: now
                    // bound the wait for the remote's reply.
                    self.close_flushed = true;
                    self.arm(Instant::now() + self.close_timeout);
                }
                return progress;
            }
            match self
                .shared
                .queue
                .poll_next_items(cx, &mut self.batch, BATCH_BYTES)
            {
                Poll::Ready(Work::Frames) => progress = true,
                Poll::Ready(Work::Close(code, reason)) => {
                    self.begin_close(code, reason);
                    progress = true;
                }
                Poll::Ready(Work::Done) | Poll::Pending => return progress,
            }
        }
    }

    pub(super) fn begin_close(&mut self, code: u16, reason: String) {
        tracing::debug!(code, reason = %reason, "closing the WebSocket");
        self.close = Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        });
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
