//! What the connection task shares with the transport's two halves: the
//! outbound queue, the inbox of incoming messages and how the transport ended.

use super::*;

/// State shared by the sink, the stream and the connection task.
pub(crate) struct Shared {
    /// Outbound frames, and the close request of the application.
    pub(super) queue: OutboundQueue,
    /// Incoming messages for the reader, and how the transport ended.
    pub(super) inbox: Mutex<Inbox>,
    /// The inbox's byte limit.
    pub(super) inbox_bytes: usize,
    /// The sink and the stream still alive (2, 1, 0): when both are gone
    /// nobody can use the connection, and it is closed.
    pub(super) handles: AtomicU8,
    /// [`WsConfig::binary_messages`].
    pub(super) binary: bool,
}

/// An incoming message waiting for the reader.
pub(super) struct Incoming {
    pub(super) binary: bool,
    pub(super) data: Bytes,
}

#[derive(Default)]
pub(super) struct Inbox {
    pub(super) frames: VecDeque<Incoming>,
    pub(super) bytes: usize,
    pub(super) closed: Option<CloseReason>,
    /// The reader waiting for a message.
    pub(super) reader: Option<Waker>,
    /// The connection task waiting for room.
    pub(super) task: Option<Waker>,
    /// The stream was dropped: incoming messages are discarded.
    pub(super) reader_gone: bool,
}

pub(super) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

pub(super) fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Shared {
    pub(super) fn new(config: &WsConfig) -> Self {
        Shared {
            queue: OutboundQueue::new(config.max_queued_bytes),
            inbox: Mutex::new(Inbox::default()),
            inbox_bytes: config.max_message_size.max(1),
            handles: AtomicU8::new(2),
            binary: config.binary_messages,
        }
    }

    pub(super) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Every critical section is a few field updates: a panic cannot
        // leave the inbox inconsistent.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the task may read another message; registers the task's
    /// waker when not.
    pub(super) fn has_room(&self, cx: &Context<'_>) -> bool {
        let mut inbox = self.inbox();
        if inbox.frames.len() < INBOX_FRAMES && inbox.bytes < self.inbox_bytes {
            return true;
        }
        register(&mut inbox.task, cx);
        false
    }

    pub(super) fn deliver(&self, binary: bool, data: Bytes) {
        let mut inbox = self.inbox();
        if inbox.closed.is_some() || inbox.reader_gone {
            return;
        }
        inbox.bytes += data.len();
        inbox.frames.push_back(Incoming { binary, data });
        let reader = inbox.reader.take();
        drop(inbox);
        wake(reader);
    }

    /// Records how the transport ended (the first report wins). A local end
    /// discards messages not read yet, like the memory transport; a remote
    /// one delivers them first.
    pub(super) fn set_closed(&self, reason: CloseReason) {
        let mut inbox = self.inbox();
        if inbox.closed.is_some() {
            return;
        }
        if reason.initiator == Initiator::Local {
            inbox.frames = VecDeque::new();
            inbox.bytes = 0;
        }
        inbox.closed = Some(reason);
        let reader = inbox.reader.take();
        let task = inbox.task.take();
        drop(inbox);
        wake(reader);
        wake(task);
    }

    /// Ends the transport from the task's side: closes the queue (freeing
    /// what it held) and reports `reason`, unless the application or an
    /// overflow closed it first.
    pub(super) fn end(&self, reason: CloseReason) {
        let code = reason.code.unwrap_or(ABNORMAL);
        if self.queue.close_and_clear(code, &reason.reason) {
            self.set_closed(reason);
        }
    }

    pub(super) fn poll_recv(&self, cx: &Context<'_>) -> Poll<Inbound> {
        let mut inbox = self.inbox();
        if let Some(Incoming { binary, data }) = inbox.frames.pop_front() {
            inbox.bytes -= data.len();
            if inbox.frames.is_empty() && inbox.frames.capacity() > 8 {
                inbox.frames = VecDeque::new();
            }
            let task = inbox.task.take();
            drop(inbox);
            wake(task);
            return Poll::Ready(if binary {
                Inbound::Binary(data)
            } else {
                Inbound::Text(data)
            });
        }
        if let Some(reason) = &inbox.closed {
            return Poll::Ready(Inbound::Closed(reason.clone()));
        }
        // The reader goes idle: an idle connection keeps no inbox buffer.
        if inbox.frames.capacity() > 0 {
            inbox.frames = VecDeque::new();
        }
        register(&mut inbox.reader, cx);
        Poll::Pending
    }

    /// One of the two halves was dropped; the last one closes the
    /// connection (frames already queued are still sent).
    pub(super) fn handle_dropped(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            close(self, close_code::NORMAL, "");
        }
    }

    pub(super) fn reader_dropped(&self) {
        let mut inbox = self.inbox();
        inbox.reader_gone = true;
        inbox.frames = VecDeque::new();
        inbox.bytes = 0;
        let task = inbox.task.take();
        drop(inbox);
        wake(task);
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inbox = self.inbox();
        f.debug_struct("Shared")
            .field("queue", &self.queue)
            .field("inbox_frames", &inbox.frames.len())
            .field("inbox_bytes", &inbox.bytes)
            .field("closed", &inbox.closed)
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
