//! Retry schedule and client configuration.

use std::time::Duration;

use protoo_core::PeerConfig;
use protoo_transport::ws::WsConfig;

/// When to retry a connection that failed before it opened: protoo-client's
/// `retry` options (the `retry` npm package, without randomisation).
///
/// The wait before retry `n` (0 for the first retry) is
/// `min(min_timeout × factor^n, max_timeout)`: with the defaults 1, 2, 4,
/// 8, 8, ... seconds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// How many retries after the first attempt of a round (default 10, as
    /// protoo-client). 0: a single attempt.
    pub retries: u32,
    /// Growth of the wait from one retry to the next (default 2).
    pub factor: f64,
    /// The wait before the first retry (default 1 s).
    pub min_timeout: Duration,
    /// The longest wait (default 8 s).
    pub max_timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retries: 10,
            factor: 2.0,
            min_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
        }
    }
}

impl RetryConfig {
    /// Sets [`RetryConfig::retries`].
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`RetryConfig::factor`].
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`RetryConfig::min_timeout`].
    pub fn with_min_timeout(mut self, timeout: Duration) -> Self {
        self.min_timeout = timeout;
        self
    }

    /// Sets [`RetryConfig::max_timeout`].
    pub fn with_max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = timeout;
        self
    }

    /// The wait before retry `n` (0 for the first retry).
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoo_client::RetryConfig;
    ///
    /// let retry = RetryConfig::default();
    /// let waits: Vec<u64> = (0..6).map(|n| retry.delay(n).as_secs()).collect();
    /// assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    /// ```
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let factor = if self.factor.is_finite() && self.factor > 0.0 {
            self.factor.powi(exponent)
        } else {
            1.0
        };
        let secs = self.min_timeout.as_secs_f64() * factor;
        let max = self.max_timeout.max(self.min_timeout);
        if secs.is_finite() && secs < max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            max
        }
    }
}

/// Configuration of a [`Client`](crate::Client).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The retry schedule of each round of attempts (default: protoo-client's).
    pub retry: RetryConfig,
    /// The WebSocket settings of each connection (default [`WsConfig`]'s).
    pub ws: WsConfig,
    /// The peer settings of the client's session: request timeout, event
    /// queue, and the resume window (default [`PeerConfig`]'s: none, a
    /// session per connection; see [`ClientConfig::with_resume_window`]).
    pub peer: PeerConfig,
}

impl ClientConfig {
    /// Sets [`ClientConfig::retry`].
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`ClientConfig::ws`].
    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = ws;
        self
    }

    /// Sets [`ClientConfig::peer`].
    pub fn with_peer(mut self, peer: PeerConfig) -> Self {
        self.peer = peer;
        self
    }

    /// Keeps the client's session across a lost connection for `window`
    /// (its peer's [`PeerConfig::resume_window`]; zero: none, the default):
    /// requests pending at the loss stay pending and what is sent while
    /// disconnected is held, for the next connection to resume (see the
    /// crate's docs). Match the server's window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoo_client::ClientConfig;
    ///
    /// let config = ClientConfig::default().with_resume_window(Duration::from_secs(15));
    /// assert_eq!(config.peer.resume_window, Some(Duration::from_secs(15)));
    /// assert_eq!(ClientConfig::default().peer.resume_window, None);
    /// ```
    pub fn with_resume_window(mut self, window: Duration) -> Self {
        self.peer = self.peer.with_resume_window(window);
        self
    }
}
