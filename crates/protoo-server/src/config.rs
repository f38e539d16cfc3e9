//! [`ServerConfig`]: how the server admits connections (origins, the
//! connection cap, the WebSocket limits, authentication) and its defaults.

use std::sync::Arc;
use std::time::Duration;

use protoo_transport::ws::WsConfig;

use crate::auth::{Auth, Verifier};

/// How a [`WebSocketServer`](crate::WebSocketServer) admits connections.
///
/// Every field has a default suited to a public signaling server; change
/// them with the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use protoo_server::{ServerConfig, WsConfig};
///
/// let config = ServerConfig::default()
///     .with_allowed_origins(["https://app.example.com"])
///     .with_max_connections(5_000)
///     .with_handshake_timeout(Duration::from_secs(5))
///     .with_ws(WsConfig::default().with_max_message_size(256 * 1024));
/// assert_eq!(config.max_connections, 5_000);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The WebSocket transport's limits (message size, outbound queue,
    /// keepalive, buffers). Default: [`WsConfig::default`].
    pub ws: WsConfig,
    /// Origins allowed to connect (the `Origin` header, compared exactly,
    /// e.g. `https://app.example.com`); others are refused with 403 before
    /// the application sees them, against cross-site WebSocket hijacking.
    /// A request without an `Origin` header (not a browser) is allowed.
    /// Default: `None`, any origin (protoo's behaviour).
    pub allowed_origins: Option<Vec<String>>,
    /// Connections at most, counting those still in their handshake; beyond
    /// it a new connection is answered 503. Default: 20,000 (one process
    /// holds that many peers in a few hundred MB).
    ///
    /// A server also fits it to the process's file-descriptor limit: at
    /// start the soft `RLIMIT_NOFILE` is raised to the hard limit where
    /// allowed, and a cap above the limit minus a reserve (64 descriptors,
    /// at most a quarter of the limit, for listeners, Redis, logs and the
    /// 503 answers) is lowered to fit, with a warning. Past the cap, a
    /// connection is answered 503 rather than left waiting for a
    /// descriptor.
    pub max_connections: usize,
    /// Connection requests waiting for the application's
    /// [`next_request`](crate::WebSocketServer::next_request); beyond it new
    /// ones are answered 503 at once. Default: 1024.
    pub request_backlog: usize,
    /// How long a graceful shutdown waits for requests already received to
    /// be answered before it closes every peer with 1001. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Over how long a graceful shutdown spreads the closing of its
    /// connections, each at a random moment within it, with 1012 `service
    /// restart` instead of 1001: a rolling deploy's drain. Default: zero,
    /// every connection closed at once with 1001.
    ///
    /// protoo-client reconnects at once after a 1012 (as after any code
    /// but 4000), so behind a load balancer each client lands on another
    /// node; spreading the closes spreads the reconnects. A peer with a
    /// [resume window](protoo_core::PeerConfig::resume_window) is not
    /// closed by it: its session waits, and moves to the node where its
    /// client comes back (rooms spanning processes, `protoo-redis`), so
    /// nobody in its room sees it leave. Await
    /// [`Rooms::drained`](protoo_core::Rooms::drained) after
    /// [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) to exit
    /// once every session was claimed or expired.
    pub drain_period: Duration,
    /// The verifier of connection tokens ([`ServerConfig::with_auth`]).
    pub(crate) auth: Option<Auth>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ws: WsConfig::default(),
            allowed_origins: None,
            max_connections: 20_000,
            request_backlog: 1024,
            shutdown_grace: Duration::from_secs(5),
            drain_period: Duration::ZERO,
            auth: None,
        }
    }
}

impl ServerConfig {
    /// Sets [`ServerConfig::ws`].
    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = ws;
        self
    }

    /// Sets [`ServerConfig::allowed_origins`].
    pub fn with_allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Sets [`ServerConfig::max_connections`].
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets the handshake timeout ([`WsConfig::handshake_timeout`]): the
    /// time from TCP accept to the end of the upgrade, including the
    /// application's decision.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.ws = self.ws.with_handshake_timeout(timeout);
        self
    }

    /// Sets [`ServerConfig::request_backlog`].
    pub fn with_request_backlog(mut self, backlog: usize) -> Self {
        self.request_backlog = backlog.max(1);
        self
    }

    /// Sets [`ServerConfig::drain_period`].
    pub fn with_drain_period(mut self, period: Duration) -> Self {
        self.drain_period = period;
        self
    }

    /// Sets [`ServerConfig::shutdown_grace`].
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Verifies every connection's token with `verifier` before the
    /// application sees the request (and so before the upgrade), on the
    /// bound server and the axum mount alike: see the [`auth`](crate::auth)
    /// module. The verified [`Identity`](crate::Identity) rides on the
    /// [`ConnectionRequest`](crate::ConnectionRequest) into the room.
    /// Default: none, anyone may connect as anyone.
    ///
    /// ```
    /// # #[cfg(feature = "auth")]
    /// # fn main() -> Result<(), protoo_server::auth::AuthError> {
    /// use protoo_server::ServerConfig;
    /// use protoo_server::auth::JwtVerifier;
    ///
    /// let config = ServerConfig::default().with_auth(JwtVerifier::hs256(b"a long random secret")?);
    /// assert!(config.auth().is_some());
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "auth"))]
    /// # fn main() {}
    /// ```
    pub fn with_auth(mut self, verifier: impl Verifier) -> Self {
        self.auth = Some(Auth(Arc::new(verifier)));
        self
    }

    /// The verifier of connection tokens, if [`ServerConfig::with_auth`]
    /// gave one (to [`refresh`](crate::auth::refresh) a peer's identity
    /// with).
    pub fn auth(&self) -> Option<&Arc<dyn Verifier>> {
        self.auth.as_ref().map(|auth| &auth.0)
    }

    pub(crate) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (Some(_), None) => true,
            (Some(allowed), Some(origin)) => allowed.iter().any(|a| a == origin),
        }
    }
}
