//! The read side of the connection task: incoming messages into the inbox,
//! the remote's close frame, read failures, and the drain after a failure.

use super::*;

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn read_step(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..READ_BUDGET {
            if self.state == State::Open && !self.shared.has_room(cx) {
                // The reader is behind: stop reading (TCP backpressure).
                self.paused = true;
                return progress;
            }
            let held = self.held.take();
            let next = Pin::new(&mut self.ws).poll_next(cx);
            drop(held);
            match next {
                Poll::Pending => return progress,
                Poll::Ready(Some(Ok(message))) => {
                    progress = true;
                    self.on_activity();
                    self.on_message(message);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.on_read_error(error);
                    return true;
                }
                Poll::Ready(None) => {
                    // The close handshake is complete, or the stream ended.
                    self.lost();
                    return true;
                }
            }
            if !matches!(self.state, State::Open | State::Closing | State::PeerClosed) {
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

    pub(super) fn on_message(&mut self, message: Message) {
        match message {
            Message::Text(text) => {
                if self.state == State::Open {
                    self.shared.deliver(false, Bytes::from(text));
                }
            }
            Message::Binary(data) if self.shared.binary => {
                if self.state == State::Open {
                    self.shared.deliver(true, data);
                }
            }
            Message::Binary(data) => {
                if self.state == State::Open {
                    // The first at WARN, the rest at DEBUG: the remote
                    // decides how many there are.
                    if std::mem::replace(&mut self.binary_warned, true) {
                        tracing::debug!(
                            bytes = data.len(),
                            "binary WebSocket message dropped: protoo uses text messages"
                        );
                    } else {
                        tracing::warn!(
                            bytes = data.len(),
                            "binary WebSocket message dropped: protoo uses text messages \
                             (further ones on this connection are logged at debug level)"
                        );
                    }
                    crate::metrics::binary_dropped();
                }
                self.held = Some(data);
            }
            Message::Close(frame) => self.on_close_frame(frame),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    pub(super) fn on_close_frame(&mut self, frame: Option<CloseFrame>) {
        // In `Closing` this is the reply to our close frame: the stream ends
        // next.
        if self.state != State::Open {
            return;
        }
        let (code, reason) = match frame {
            Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
            None => (NO_STATUS, String::new()),
        };
        tracing::debug!(code, reason = %reason, "WebSocket closed by the remote");
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Remote));
        // Nothing more may be sent; tungstenite writes its close reply.
        self.abandon_writes();
        self.state = State::PeerClosed;
        self.arm_close();
    }

    pub(super) fn on_read_error(&mut self, error: WsError) {
        if self.state != State::Open {
            self.state = State::Done;
            return;
        }
        match error {
            WsError::Capacity(error) => {
                tracing::debug!(%error, "WebSocket message over the limit");
                self.fail(close_code::MESSAGE_TOO_BIG, "message too big");
            }
            WsError::Utf8(_) => {
                tracing::debug!("invalid UTF-8 in a WebSocket text message");
                self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8");
            }
            WsError::Io(_)
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed => self.lost(),
            error => {
                tracing::debug!(%error, "WebSocket protocol error");
                self.fail(close_code::PROTOCOL_ERROR, "protocol error");
            }
        }
    }

    /// Closes locally after a read failure: report it, write the close
    /// frame, then drain.
    pub(super) fn fail(&mut self, code: u16, reason: &'static str) {
        self.shared
            .end(CloseReason::new(Some(code), reason, Initiator::Local));
        self.abandon_writes();
        self.close = Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        });
        self.state = State::Draining { shut: false };
        self.arm_close();
    }

    pub(super) fn drain_step(&mut self, cx: &mut Context<'_>) -> bool {
        if self.close.is_some() {
            match self.poll_ready(cx) {
                Ready::Yes => {}
                Ready::Blocked => return false,
                Ready::Failed => return self.write_failed(),
            }
            let frame = self.close.take();
            if !self.feed(Message::Close(frame)) {
                return self.write_failed();
            }
        }
        if self.flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(_)) => return self.write_failed(),
                Poll::Pending => return false,
            }
        }
        if self.state == (State::Draining { shut: false }) {
            match Pin::new(self.ws.get_mut()).poll_shutdown(cx) {
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
            match Pin::new(self.ws.get_mut()).poll_read(cx, &mut buf) {
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
