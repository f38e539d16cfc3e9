//! What the connection task shares with the transport's two halves: the
//! outbound queue, the inbox of incoming messages and how the transport ended.

use std::sync::OnceLock;

use protoo_queue::{ByteQueue, Weigh};

use super::unconfirmed::Tail;
use super::*;
use crate::log::Source;
use crate::sync::Mutex;

/// State shared by the sink, the stream and the connection task.
pub(crate) struct Shared {
    /// Outbound frames, and the close request of the application.
    pub(super) queue: OutboundQueue,
    /// Incoming messages for the reader (the consumer; the connection task
    /// is the producer, waiting for room before it reads the socket), and
    /// how the transport ended (boxed: allocated once, when it ends, so
    /// that an open connection holds a pointer rather than the reason).
    pub(super) inbox: ByteQueue<Incoming, Box<CloseReason>>,
    /// The sink and the stream still alive (2, 1, 0): when both are gone
    /// nobody can use the connection, and it is closed.
    pub(super) handles: AtomicU8,
    /// [`WsConfig::binary_messages`].
    pub(super) binary: bool,
    /// Where the remote's warnings count: its address once told
    /// ([`FrameSink::set_remote_addr`]), or else this connection.
    source: OnceLock<Source>,
    /// The frames kept until the remote confirms them, once
    /// [`FrameSink::retain_unconfirmed`] was called (allocated then: a
    /// connection that never retains holds the empty cell).
    pub(super) tail: OnceLock<Box<Mutex<Tail>>>,
    /// [`WsConfig::confirm_interval`] in nanoseconds (saturated), for the
    /// tail: 8 bytes rather than a `Duration`'s 16 keep this struct (and
    /// its `Arc`) in the allocation size class it had before.
    confirm_nanos: u64,
}

/// An incoming message waiting for the reader.
pub(super) struct Incoming {
    pub(super) binary: bool,
    pub(super) data: Bytes,
}

impl Weigh for Incoming {
    fn weight(&self) -> usize {
        self.data.len()
    }
}

impl Shared {
    pub(super) fn new(config: &WsConfig) -> Self {
        Shared {
            queue: OutboundQueue::new(config.max_queued_bytes),
            // An idle connection keeps no inbox buffer.
            inbox: ByteQueue::new(config.max_message_size.max(1), INBOX_FRAMES, 0),
            handles: AtomicU8::new(2),
            binary: config.binary_messages,
            source: OnceLock::new(),
            tail: OnceLock::new(),
            confirm_nanos: u64::try_from(config.confirm_interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// [`WsConfig::confirm_interval`].
    pub(super) fn confirm_interval(&self) -> Duration {
        Duration::from_nanos(self.confirm_nanos)
    }

    /// Where the remote's warnings count.
    pub(super) fn source(&self) -> Source {
        *self.source.get_or_init(Source::connection)
    }

    /// The remote's address, told before the connection opens.
    pub(super) fn set_remote_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.source.set(Source::from(addr));
    }

    /// Whether the task may read another message; registers the task's
    /// waker when not.
    pub(super) fn has_room(&self, cx: &Context<'_>) -> bool {
        self.inbox.poll_room(cx).is_ready()
    }

    /// Queues a message for the stream; returns whether the inbox has
    /// room for another (it has when the message was refused: the
    /// transport ended or the stream was dropped, and the message with it).
    pub(super) fn deliver(&self, binary: bool, data: Bytes) -> bool {
        self.inbox
            .push_has_room(Incoming { binary, data })
            .unwrap_or(true)
    }

    /// Records how the transport ended (called once, by whoever closed the
    /// outbound queue first). A local end discards messages not read yet,
    /// like the memory transport; a remote one delivers them first.
    pub(super) fn set_closed(&self, reason: CloseReason) {
        if reason.initiator == Initiator::Local {
            self.inbox.close_and_clear(Box::new(reason));
        } else {
            self.inbox.close(Box::new(reason));
        }
    }

    /// Ends the transport from the task's side: closes the queue (freeing
    /// what it held) and reports `reason`, unless the application or an
    /// overflow closed it first.
    /// A connection that retains keeps its queued frames for
    /// [`FrameSink::take_unconfirmed`].
    pub(super) fn end(&self, reason: CloseReason) {
        let code = reason.code.unwrap_or(ABNORMAL);
        let closed = if self.tail.get().is_some() {
            self.queue.close(code, &reason.reason)
        } else {
            self.queue.close_and_clear(code, &reason.reason)
        };
        if closed {
            self.set_closed(reason);
        }
    }

    pub(super) fn poll_recv(&self, cx: &Context<'_>) -> Poll<Inbound> {
        self.inbox
            .poll_pop(cx, |reason| CloseReason::clone(reason))
            .map(|next| match next {
                Ok(Incoming { binary: true, data }) => Inbound::Binary(data),
                Ok(Incoming {
                    binary: false,
                    data,
                }) => Inbound::Text(data),
                Err(reason) => Inbound::Closed(reason),
            })
    }

    /// One of the two halves was dropped; the last one closes the
    /// connection (frames already queued are still sent).
    pub(super) fn handle_dropped(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            close(self, close_code::NORMAL, "");
        }
    }

    pub(super) fn reader_dropped(&self) {
        self.inbox.discard();
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("queue", &self.queue)
            .field("inbox", &self.inbox)
            .field("retains", &self.tail.get().is_some())
            .finish()
    }
}

/// A close code this side may send: the reserved ones (1005, 1006, 1015,
/// out of range) become 1000.
pub(super) fn sendable_code(code: u16) -> u16 {
    if CloseCode::from(code).is_allowed() {
        code
    } else {
        close_code::NORMAL
    }
}

/// `reason` cut to fit a close frame, at a character boundary.
pub(super) fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The application's close: see [`FrameSink::close`].
pub(super) fn close(shared: &Shared, code: u16, reason: &str) {
    let code = sendable_code(code);
    let reason = close_reason(reason);
    if shared.queue.close(code, reason) {
        shared.set_closed(CloseReason::new(Some(code), reason, Initiator::Local));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert!(cut.len() >= MAX_CLOSE_REASON - 1);
        assert_eq!(close_reason("bye"), "bye");
    }

    #[test]
    fn reserved_codes_are_not_sent() {
        assert_eq!(sendable_code(4000), 4000);
        assert_eq!(sendable_code(1008), 1008);
        assert_eq!(sendable_code(1005), close_code::NORMAL);
        assert_eq!(sendable_code(1006), close_code::NORMAL);
        assert_eq!(sendable_code(0), close_code::NORMAL);
        assert_eq!(sendable_code(5000), close_code::NORMAL);
    }
}
