use std::time::Duration;

/// Settings of one peer.
///
/// ```
/// use std::time::Duration;
/// use protoo_core::PeerConfig;
///
/// let config = PeerConfig::default()
///     .with_event_queue(64)
///     .with_request_timeout(Duration::from_secs(5));
/// assert_eq!(config.request_timeout_for(10), Duration::from_secs(5));
/// assert_eq!(PeerConfig::default().request_timeout_for(0), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerConfig {
    /// How many incoming requests and notifications wait for the application
    /// in [`PeerEvents`](crate::PeerEvents) before the peer stops reading
    /// its transport. Default: 256.
    ///
    /// When the application falls behind, the peer waits for room in this
    /// queue instead of buffering without limit: the remote is slowed down
    /// (TCP back-pressure on a WebSocket) and server memory stays bounded.
    /// Responses to this side's own requests are read by the same task, so
    /// they wait too: an application that awaits a request to a peer inside
    /// that peer's event loop should spawn it if the remote may send more
    /// than this many messages meanwhile. A value of 0 counts as 1.
    ///
    /// The queue takes memory only while events wait in it: a peer whose
    /// application keeps up (or an idle one) holds no buffer for it.
    pub event_queue: usize,
    /// How long [`Peer::request`](crate::Peer::request) waits for the
    /// response. Default: `None`, protoo's rule: `2000 × (15 + 0.1 ×
    /// pending)` milliseconds, where `pending` is the number of requests to
    /// that peer still waiting when this one is sent (30 s for the first,
    /// 200 ms more for each one pending), so that peers keep their JavaScript
    /// counterparts' behaviour. `Some(duration)` uses that fixed duration.
    pub request_timeout: Option<Duration>,
}

/// The default of [`PeerConfig::event_queue`].
pub const DEFAULT_EVENT_QUEUE: usize = 256;

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            event_queue: DEFAULT_EVENT_QUEUE,
            request_timeout: None,
        }
    }
}

impl PeerConfig {
    /// Sets [`PeerConfig::event_queue`].
    pub fn with_event_queue(mut self, events: usize) -> Self {
        self.event_queue = events;
        self
    }

    /// Sets a fixed [`PeerConfig::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Goes back to protoo's request timeout rule (the default).
    pub fn with_protoo_request_timeout(mut self) -> Self {
        self.request_timeout = None;
        self
    }

    /// The timeout of a request sent while `pending` other requests to the
    /// same peer wait for their response.
    pub fn request_timeout_for(&self, pending: usize) -> Duration {
        match self.request_timeout {
            Some(timeout) => timeout,
            // 2000 × (15 + 0.1 × pending) ms, in integers.
            None => Duration::from_millis(
                30_000u64.saturating_add(200u64.saturating_mul(pending as u64)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protoo_timeout_formula() {
        let config = PeerConfig::default();
        assert_eq!(config.request_timeout_for(0), Duration::from_millis(30_000));
        assert_eq!(config.request_timeout_for(1), Duration::from_millis(30_200));
        assert_eq!(config.request_timeout_for(5), Duration::from_millis(31_000));
        assert_eq!(
            config.request_timeout_for(100),
            Duration::from_millis(2000 * (15 + 10))
        );
        let fixed = config.with_request_timeout(Duration::from_secs(1));
        assert_eq!(fixed.request_timeout_for(1000), Duration::from_secs(1));
        assert_eq!(
            fixed.with_protoo_request_timeout().request_timeout_for(0),
            Duration::from_secs(30)
        );
    }
}
