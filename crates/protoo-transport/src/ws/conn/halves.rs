//! The two halves of a WebSocket transport the application holds: the sink
//! (queue frames, close) and the stream (incoming messages, then the close).

use super::*;

/// The sending half of a WebSocket transport.
#[derive(Debug)]
pub(super) struct WsSink {
    pub(super) shared: Arc<Shared>,
}

impl WsSink {
    /// After a refused push: when it overflowed the queue, the queue closed
    /// itself and dropped its frames; report the close (the task sees it
    /// and gives up on a socket that does not drain).
    fn after_push(&self, result: Result<(), TransportError>) -> Result<(), TransportError> {
        if matches!(
            &result,
            Err(TransportError::QueueFull(_)) | Err(TransportError::BinaryNotSent { .. })
        ) && self
            .shared
            .queue
            .close_reason()
            .is_some_and(|(code, reason)| {
                code == close_code::POLICY_VIOLATION && reason == SLOW_CONSUMER_REASON
            })
        {
            self.shared.set_closed(CloseReason::new(
                Some(close_code::POLICY_VIOLATION),
                SLOW_CONSUMER_REASON,
                Initiator::Local,
            ));
        }
        result
    }
}

impl FrameSink for WsSink {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        let result = self.shared.queue.push(frame);
        self.after_push(result)
    }

    fn send_binary(&self, data: Bytes) -> Result<(), TransportError> {
        if !self.shared.binary {
            return Err(TransportError::BinaryNotSent {
                data,
                reason: "binary messages are not enabled (WsConfig::binary_messages)",
            });
        }
        let result = self.shared.queue.push_binary(data);
        self.after_push(result)
    }

    fn close(&self, code: u16, reason: &str) {
        close(&self.shared, code, reason);
    }

    fn is_closed(&self) -> bool {
        self.shared.queue.is_closed()
    }

    fn queued_bytes(&self) -> usize {
        self.shared.queue.queued_bytes()
    }

    fn set_remote_addr(&self, addr: std::net::SocketAddr) {
        self.shared.set_remote_addr(addr);
    }

    /// Text frames written are kept until a pong confirms them (see the
    /// trait, and [`WsConfig::confirm_interval`]).
    fn retain_unconfirmed(&self) {
        self.shared.retain_unconfirmed();
    }

    fn take_unconfirmed(&self) -> Vec<Frame> {
        self.shared.take_unconfirmed()
    }
}

impl Drop for WsSink {
    fn drop(&mut self) {
        self.shared.handle_dropped();
    }
}

/// The receiving half of a WebSocket transport.
#[derive(Debug)]
pub(super) struct WsStream {
    pub(super) shared: Arc<Shared>,
}

impl FrameStream for WsStream {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        self.shared.poll_recv(cx)
    }
}

impl Drop for WsStream {
    /// Nobody reads any more: incoming messages are discarded from now on
    /// (the task keeps reading, so pings and the close handshake work).
    fn drop(&mut self) {
        self.shared.reader_dropped();
        self.shared.handle_dropped();
    }
}
