//! Warnings a remote can trigger (invalid frames, responses to unknown ids,
//! binary messages, messages over budget or rate), limited per source
//! through [`protoo_transport::log`]: the peer's client address when its
//! transport names it ([`Transport::with_remote_addr`]), else the peer's
//! connection. A remote cannot flood the log, reconnecting or not.
//!
//! [`Transport::with_remote_addr`]: protoo_transport::Transport::with_remote_addr

/// Logs a remote-triggered warning of the peer `$core` within the budget of
/// its source: at WARN while within it (after the summaries due), at DEBUG
/// beyond it. The peer's id is a field of every line.
macro_rules! remote_warn {
    ($core:expr, $($arg:tt)+) => {{
        $core.warned.store(true, std::sync::atomic::Ordering::Relaxed);
        protoo_transport::remote_warn!(
            $core.source,
            peer_id = %protoo_transport::log::Remote(&$core.id),
            $($arg)+
        )
    }};
}
pub(crate) use remote_warn;
