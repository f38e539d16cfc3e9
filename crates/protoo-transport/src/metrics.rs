//! What the transport reports through the `metrics` facade (the `metrics`
//! feature): WebSocket connections open, outbound queues closed on overflow,
//! binary messages dropped, unconfirmed frames let go. Without the feature every item here is empty
//! and compiles to nothing.
//!
//! No label comes from anything a remote sends: the label values are the
//! fixed strings written here.

/// WebSocket connections open (gauge): from the end of the upgrade to the
/// end of the connection task.
pub const CONNECTIONS: &str = "protoo_connections";
/// Outbound queues closed because the peer did not read fast enough
/// (counter): the queue overflowed and the peer was closed with 1008.
pub const OUTBOUND_QUEUE_CLOSES: &str = "protoo_outbound_queue_closes_total";
/// Incoming messages dropped as invalid (counter, label `reason`). The
/// transport reports `reason="binary"` for binary WebSocket messages it was
/// not asked to deliver; `protoo-core` reports the others.
pub const INVALID_MESSAGES: &str = "protoo_invalid_messages_total";
/// Frames written to a remote and kept unconfirmed
/// ([`FrameSink::retain_unconfirmed`](crate::FrameSink::retain_unconfirmed))
/// that were let go before the remote confirmed them, because the
/// connection's unconfirmed frames passed its outbound queue limit
/// (counter): after a loss, these can no longer be given back (at most
/// once for them).
pub const UNCONFIRMED_RELEASED: &str = "protoo_transport_unconfirmed_released_total";

/// Counts one WebSocket connection as open while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    #[cfg(feature = "metrics")]
    gauge: ::metrics::Gauge,
}

impl OpenConnection {
    /// Counts a connection that starts now.
    #[inline]
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            let gauge = ::metrics::gauge!(CONNECTIONS);
            gauge.increment(1.0);
            OpenConnection { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        OpenConnection {}
    }
}

#[cfg(feature = "metrics")]
impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// An outbound queue overflowed (at most once per queue).
#[inline]
pub(crate) fn outbound_queue_closed() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(OUTBOUND_QUEUE_CLOSES).increment(1);
}

/// A binary WebSocket message was dropped (protoo uses text).
#[inline]
pub(crate) fn binary_dropped() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(INVALID_MESSAGES, "reason" => "binary").increment(1);
}

/// `frames` unconfirmed frames were let go over the limit.
#[inline]
pub(crate) fn unconfirmed_released(frames: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(UNCONFIRMED_RELEASED).increment(frames);
    #[cfg(not(feature = "metrics"))]
    let _ = frames;
}
