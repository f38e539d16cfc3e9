//! The read side of the connection task: incoming messages into the inbox,
//! pings answered, the remote's close frame, read failures, and the drain
//! after a failure.

use super::*;

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn read_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..READ_BUDGET {
            // Room is asked for (a lock) only once a delivery said there
            // was none left: only this task's deliveries take it away.
            if self.state == State::Open && !self.room && !self.shared.has_room(cx) {
                // The reader is behind: stop reading (TCP backpressure).
                self.paused = true;
                return progress;
            }
            match self.reader.poll_next(&mut self.io, cx) {
                Poll::Pending => return progress,
                Poll::Ready(Ok(event)) => {
                    progress = true;
                    self.on_activity();
                    self.on_event(event);
                }
                Poll::Ready(Err(error)) => {
                    self.on_read_error(error);
                    return true;
                }
            }
            if !matches!(self.state, State::Open | State::Closing) || self.pong.is_some() {
                // Done reading, or a ping to answer before the next frame
                // is read (each ping gets its pong while the socket takes
                // them; only one waits while it does not).
                return true;
            }
        }
        progress
    }

    pub(super) fn on_activity(&mut self) {
        if let Keepalive::AwaitingPong { since } = self.keepalive {
            self.keepalive = Keepalive::Idle;
            if self.state == State::Open
                && !self.linger
                && let Some(interval) = self.ping_interval
            {
                self.arm(since + interval);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Text(text) => {
                if self.state == State::Open {
                    self.room = self.shared.deliver(false, text);
                }
            }
            Event::Binary(data) if self.shared.binary => {
                if self.state == State::Open {
                    self.room = self.shared.deliver(true, data);
                }
            }
            Event::Binary(data) => {
                if self.state == State::Open {
                    // Within the budget of the remote's address: it decides
                    // how many there are, and how many connections.
                    self.warned = true;
                    crate::remote_warn!(
                        self.shared.source(),
                        bytes = data.len(),
                        "binary WebSocket message dropped: protoo uses text messages"
                    );
                    crate::metrics::binary_dropped();
                }
            }
            Event::Ping(payload) => {
                // No pong once a close frame was sent.
                if self.state == State::Open {
                    self.pong = Some(payload);
                }
            }
            Event::Pong(payload) => self.on_pong(&payload),
            Event::Close(frame) => self.on_close_frame(frame),
        }
    }

    fn on_close_frame(&mut self, frame: Option<(u16, String)>) {
        match self.state {
            State::Open => {}
            // The reply to our close frame: the handshake is complete, and
            // the remote read everything written before our close.
            State::Closing => {
                self.on_close_reply();
                self.state = State::Done;
                return;
            }
            _ => return,
        }
        let (code, reason) = match &frame {
            Some((code, reason)) => (*code, reason.as_str()),
            None => (NO_STATUS, ""),
        };
        tracing::debug!(
            code,
            reason = %crate::log::Remote(reason),
            "WebSocket closed by the remote"
        );
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Remote));
        // Nothing more may be sent but the frame being written and our
        // reply, which echoes the remote's code and reason.
        self.abandon_writes();
        self.push_close(
            frame
                .as_ref()
                .map(|(code, reason)| (*code, reason.as_str())),
        );
        self.state = State::PeerClosed;
        self.arm_close();
    }

    fn on_read_error(&mut self, error: ReadError) {
        if self.state != State::Open {
            self.state = State::Done;
            return;
        }
        match error {
            ReadError::TooBig => {
                tracing::debug!("WebSocket message over the limit");
                self.fail(close_code::MESSAGE_TOO_BIG, "message too big");
            }
            ReadError::Utf8 => {
                tracing::debug!("invalid UTF-8 in a WebSocket text message");
                self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8");
            }
            ReadError::Protocol(error) => {
                tracing::debug!(error, "WebSocket protocol error");
                self.fail(close_code::PROTOCOL_ERROR, "protocol error");
            }
            ReadError::Io(error) => {
                tracing::debug!(%error, "WebSocket read failed");
                self.lost();
            }
            ReadError::Closed => self.lost(),
        }
    }

    /// Closes locally after a read failure: report it, write the close
    /// frame, then drain.
    pub(super) fn fail(&mut self, code: u16, reason: &'static str) {
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Local));
        self.abandon_writes();
        self.push_close(Some((code, reason)));
        self.state = State::Draining { shut: false };
        self.arm_close();
    }

    pub(super) fn drain_step(&mut self, cx: &mut Context<'_>) -> bool {
        if self.head < self.out.len() {
            match self.poll_write_out(cx) {
                Ready::Yes => {}
                Ready::Blocked => return false,
                Ready::Failed => return self.write_failed(),
            }
        }
        if self.flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(_)) => return self.write_failed(),
                Poll::Pending => return false,
            }
        }
        if self.state == (State::Draining { shut: false }) {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Pending => return false,
                Poll::Ready(_) => self.state = State::Draining { shut: true },
            }
        }
        // Read and discard until the remote closes, so that closing our
        // socket with unread input does not reset the connection before the
        // remote has read our close frame.
        let mut scratch = [0u8; 512];
        for _ in 0..16 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => return false,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.state = State::Done;
                    return true;
                }
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    self.state = State::Done;
                    return true;
                }
            }
        }
        cx.waker().wake_by_ref();
        false
    }
}
