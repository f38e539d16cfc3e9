//! The server's lifecycle: binding a listener (plain or TLS), the accept
//! loop that spawns one task per connection, [`WebSocketServer::serve`], and
//! the [`ServerHandle`] that stops the server and shuts it down; with the
//! state they share (the connection count, the queue of connection requests,
//! the live transports closed at shutdown). What happens on each connection,
//! from its first byte to the application's decision, is in `handshake.rs`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use protoo_transport::{FrameSink, Tracker, TrackerGuard, Transport, close_code};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::descriptors::{self, AcceptErrors};
use crate::handshake::connection;
use crate::{ConnectionRequest, ServerConfig};

/// The reason sent with 1012 to the connections a draining server closes
/// ([`ServerConfig::drain_period`]).
pub const DRAIN_REASON: &str = "service restart";

/// Closes `sinks` with 1012 [`DRAIN_REASON`], each at a random moment
/// within `period`: the clients come back spread over it.
async fn drain(sinks: Vec<Arc<dyn FrameSink>>, period: std::time::Duration) {
    let start = tokio::time::Instant::now();
    let mut timed: Vec<_> = sinks
        .into_iter()
        .map(|sink| (period.mul_f64(fastrand::f64()), sink))
        .collect();
    timed.sort_by_key(|(at, _)| *at);
    tracing::info!(
        connections = timed.len(),
        period_ms = period.as_millis() as u64,
        "draining: closing connections with 1012"
    );
    for (at, sink) in timed {
        tokio::time::sleep_until(start + at).await;
        sink.close(close_code::SERVICE_RESTART, DRAIN_REASON);
    }
}

/// The reason sent with 1001 when the server shuts down.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// A protoo WebSocket server: protoo-server's `WebSocketServer`.
///
/// [`bind`](WebSocketServer::bind) listens on a TCP address (or, with the
/// `tls` feature, [`bind_tls`](WebSocketServer::bind_tls) serves `wss://`);
/// the `axum` feature mounts the same server on a route of an existing axum
/// application instead. Every connection that passes the protocol checks
/// becomes a [`ConnectionRequest`]; [`serve`](WebSocketServer::serve) runs
/// the application's handler on each, in a task of its own, and the
/// handler accepts or rejects it.
///
/// ```
/// use protoo_server::{ConnectionRequest, Peer, PeerEvent, ServerConfig, WebSocketServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default()).await?;
/// println!("listening on ws://{}/", server.local_addr());
/// let handle = server.serve(|request: ConnectionRequest| async move {
///     let Some(peer_id) = request.query_param("peerId") else {
///         return request.reject(400, "missing peerId");
///     };
///     let Ok(transport) = request.accept().await else { return };
///     let Ok((_peer, mut events)) = Peer::new(peer_id, transport, (), Default::default()) else {
///         return;
///     };
///     while let Some(event) = events.next().await {
///         if let PeerEvent::Request(request) = event {
///             let data = request.payload().clone();
///             request.accept(&data); // an echo server
///         }
///     }
/// });
/// # handle.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// [`next_request`](WebSocketServer::next_request) (or the server as a
/// [`Stream`](futures_core::Stream)) takes the requests one by one instead,
/// for tests and applications that want their own loop. Dropping a server
/// that is not serving [stops](ServerHandle::stop) it: nobody is left to
/// take connection requests, so it stops accepting (and closes its
/// listener); connections already accepted go on.
pub struct WebSocketServer {
    local_addr: Option<SocketAddr>,
    requests: mpsc::Receiver<ConnectionRequest>,
    handle: ServerHandle,
}

/// Controls a running [`WebSocketServer`]: stop accepting, shut down
/// gracefully, wait until every connection has ended. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    /// Sender side of the connection requests (None once stopped).
    requests: Mutex<Option<mpsc::Sender<ConnectionRequest>>>,
    /// `true` once the server stops accepting.
    pub(crate) stop: watch::Sender<bool>,
    /// Set (under `live`'s lock) when the shutdown closes every peer.
    closing: AtomicBool,
    /// Every connection task, from TCP accept to the end of the WebSocket.
    connections: Tracker,
    /// Requests received from peers and not answered yet.
    in_flight: Tracker,
    /// The accepted connections, to close them at shutdown.
    live: Mutex<HashMap<u64, Option<Arc<dyn FrameSink>>>>,
    next_id: AtomicU64,
}

/// Locks a mutex whose every critical section leaves its data consistent
/// (a few field updates), so a poisoned lock is still usable: the crate's
/// one poison-tolerant lock.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn lock_live(&self) -> MutexGuard<'_, HashMap<u64, Option<Arc<dyn FrameSink>>>> {
        lock(&self.live)
    }

    pub(crate) fn request_sender(&self) -> Option<mpsc::Sender<ConnectionRequest>> {
        lock(&self.requests).clone()
    }
}

/// Held by a connection's task until the connection ends: counts it, and
/// forgets its transport at the end.
pub(crate) struct ConnectionGuard {
    shared: Arc<Shared>,
    pub(crate) id: u64,
    _counted: TrackerGuard,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.lock_live().remove(&self.id);
    }
}

impl WebSocketServer {
    /// Listens on `addr` for `ws://` connections.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, config)
    }

    /// Serves `ws://` connections from a listener the application bound.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let mut server = Self::unbound(config);
        server.local_addr = Some(local_addr);
        let shared = server.handle.shared.clone();
        tokio::spawn(accept_loop(listener, shared, Acceptor::Plain).in_current_span());
        Ok(server)
    }

    /// Listens on `addr` for `wss://` connections, with the TLS settings of
    /// `acceptor` (see [`tls`](crate::tls) for building one from PEM files).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn bind_tls(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let mut server = Self::unbound(config);
        server.local_addr = Some(local_addr);
        let shared = server.handle.shared.clone();
        tokio::spawn(accept_loop(listener, shared, Acceptor::Tls(acceptor)).in_current_span());
        Ok(server)
    }

    /// A server with no listener of its own, fed by a mount on another HTTP
    /// server (the `axum` feature).
    pub(crate) fn unbound(mut config: ServerConfig) -> Self {
        // What the descriptor limit allows, said once here when lowered.
        config.max_connections = descriptors::connection_cap(config.max_connections);
        let (tx, rx) = mpsc::channel(config.request_backlog.max(1));
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            requests: Mutex::new(Some(tx)),
            stop,
            closing: AtomicBool::new(false),
            connections: Tracker::new(),
            in_flight: Tracker::new(),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        WebSocketServer {
            local_addr: None,
            requests: rx,
            handle: ServerHandle { shared },
        }
    }

    /// The address the server listens on (with port 0, the one the system
    /// chose). For a mounted server, the unspecified address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into())
    }

    /// Serves: runs `handler` on every connection request, each in a task
    /// of its own, until the server stops ([`ServerHandle::stop`] or
    /// [`ServerHandle::shutdown`] on the returned handle). The handler
    /// accepts or rejects its request (one left undecided is answered 500)
    /// and usually goes on to run the peer: its task lasts as long as it
    /// likes. Tasks run in the caller's tracing span.
    ///
    /// Must be called within a tokio runtime.
    pub fn serve<H, F>(mut self, handler: H) -> ServerHandle
    where
        H: Fn(ConnectionRequest) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.handle();
        let handler = Arc::new(handler);
        let requests = async move {
            while let Some(request) = self.requests.recv().await {
                // The task lasts as long as the peer: outside any enabled
                // span (a server's spans are at DEBUG) it carries none, 40
                // bytes less per connection (tokio rounds a task up to 128
                // bytes, so sometimes 128 less).
                let span = tracing::Span::current();
                if span.is_disabled() {
                    tokio::spawn(handler(request));
                } else {
                    tokio::spawn(handler(request).instrument(span));
                }
            }
        };
        tokio::spawn(requests.in_current_span());
        handle
    }

    /// The next connection request, or `None` once the server has stopped
    /// and every request was handed out. (Most applications
    /// [`serve`](WebSocketServer::serve) instead.)
    pub async fn next_request(&mut self) -> Option<ConnectionRequest> {
        self.requests.recv().await
    }

    /// A handle to stop or shut down the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.handle.shared.config
    }
}

/// The connection requests, as [`WebSocketServer::next_request`] yields
/// them.
impl futures_core::Stream for WebSocketServer {
    type Item = ConnectionRequest;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ConnectionRequest>> {
        self.get_mut().requests.poll_recv(cx)
    }
}

impl Drop for WebSocketServer {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

impl fmt::Debug for WebSocketServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketServer")
            .field("local_addr", &self.local_addr)
            .field("handle", &self.handle)
            .finish()
    }
}

impl ServerHandle {
    /// Stops accepting connections (the listener is closed; new upgrades are
    /// refused). Connections already accepted go on; connection requests
    /// still being decided are answered 503, and connections still sending
    /// their upgrade request are dropped. Like protoo's `stop()`, this
    /// does not close existing peers: see [`ServerHandle::shutdown`].
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
        lock(&self.shared.requests).take();
    }

    /// Whether [`stop`](ServerHandle::stop) (or a shutdown) was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Graceful shutdown: stops accepting, waits (at most
    /// [`ServerConfig::shutdown_grace`]) until the requests peers had
    /// already sent when it started are answered, closes every peer with
    /// 1001 `server shutting down` (frames already queued go out first), and
    /// returns once every connection task has ended.
    ///
    /// With a [`ServerConfig::drain_period`], the connections are closed
    /// with 1012 [`DRAIN_REASON`] instead, each at a random moment within
    /// the period (a rolling deploy's drain: see there), and each is served
    /// as usual until then: no request is answered 503 and there is no
    /// grace to wait for (a peer with a resume window gets its answers on
    /// the node it comes back to).
    ///
    /// Requests that arrive after it started are not waited for: they are
    /// answered at once with 503
    /// [`SHUTTING_DOWN_REASON`](protoo_core::SHUTTING_DOWN_REASON), so a
    /// busy server does not spend the whole grace.
    pub async fn shutdown(&self) {
        self.stop();
        let period = self.shared.config.drain_period;
        if !period.is_zero() {
            // A drain: each connection is served as usual until it is
            // closed; what a peer with a resume window is answered after
            // goes with its session to where its client comes back.
            let sinks: Vec<Arc<dyn FrameSink>> = {
                let live = self.shared.lock_live();
                self.shared.closing.store(true, Ordering::Release);
                live.values().flatten().cloned().collect()
            };
            drain(sinks, period).await;
            self.shared.in_flight.close();
            self.stopped().await;
            return;
        }
        self.shared.in_flight.close();
        let grace = self.shared.config.shutdown_grace;
        if tokio::time::timeout(grace, self.shared.in_flight.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                unanswered = self.shared.in_flight.count(),
                "shutdown grace elapsed with requests unanswered"
            );
        }
        let sinks: Vec<Arc<dyn FrameSink>> = {
            let live = self.shared.lock_live();
            self.shared.closing.store(true, Ordering::Release);
            live.values().flatten().cloned().collect()
        };
        for sink in sinks {
            sink.close(close_code::GOING_AWAY, SHUTDOWN_REASON);
        }
        self.stopped().await;
    }

    /// Completes once the server has stopped and every connection task has
    /// ended.
    pub async fn stopped(&self) {
        let mut stop = self.shared.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
        self.shared.connections.idle().await;
    }

    /// Connections open now (including those in their handshake).
    pub fn connections(&self) -> usize {
        self.shared.connections.count()
    }

    /// Requests received from peers and not yet answered.
    pub fn requests_in_flight(&self) -> usize {
        self.shared.in_flight.count()
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("stopped", &self.is_stopped())
            .field("connections", &self.connections())
            .field("requests_in_flight", &self.requests_in_flight())
            .finish()
    }
}

enum Acceptor {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, acceptor: Acceptor) {
    let mut stop = shared.stop.subscribe();
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote_addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of
                // spinning, and log once in a while.
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    () = errors.failed(&error) => continue,
                }
            }
        };
        errors.accepted();
        let _ = stream.set_nodelay(true);
        let counted = shared.enter();
        let span = tracing::debug_span!("connection", remote = %remote_addr);
        match &acceptor {
            Acceptor::Plain => {
                let deadline = Instant::now() + shared.config.ws.handshake_timeout;
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        connection(stream, remote_addr, false, deadline, &shared, counted).await
                    }
                    .instrument(span),
                );
            }
            #[cfg(feature = "tls")]
            Acceptor::Tls(tls) => {
                let tls = tls.clone();
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        // One deadline for the TLS handshake and the upgrade.
                        let deadline = Instant::now() + shared.config.ws.handshake_timeout;
                        let accepted = tokio::select! {
                            accepted = tokio::time::timeout_at(deadline, tls.accept(stream)) => accepted,
                            _ = shared.stopped_accepting() => {
                                tracing::debug!("server stopped during the TLS handshake");
                                return;
                            }
                        };
                        match accepted {
                            Ok(Ok(stream)) => {
                                connection(stream, remote_addr, true, deadline, &shared, counted)
                                    .await
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
    tracing::debug!("stopped accepting connections");
}

impl Shared {
    /// Over the connection limit (counting the connection asking).
    pub(crate) fn over_limit(&self) -> bool {
        self.connections.count() > self.config.max_connections
    }

    /// The guard an accepted connection's task holds until it ends: it
    /// counts the connection, and reserves its place among the live
    /// connections (filled by [`Shared::register`]).
    pub(crate) fn connection_guard(self: &Arc<Self>, counted: TrackerGuard) -> ConnectionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_live().insert(id, None);
        ConnectionGuard {
            shared: self.clone(),
            id,
            _counted: counted,
        }
    }

    /// Registers the transport of the connection `id` to be closed with 1001
    /// at shutdown (at once if the shutdown already closed every peer), and
    /// has its requests counted for the grace period. A connection that has
    /// already ended (its guard dropped) is not registered.
    pub(crate) fn register(
        &self,
        id: u64,
        transport: Transport,
        remote_addr: Option<SocketAddr>,
    ) -> Transport {
        {
            let mut live = self.lock_live();
            let closing = self.closing.load(Ordering::Acquire);
            match live.get_mut(&id) {
                Some(slot) if !closing => *slot = Some(transport.sink().clone()),
                Some(_) => transport.close_with(close_code::GOING_AWAY, SHUTDOWN_REASON),
                None => {}
            }
        }
        let transport = transport.with_request_tracker(self.in_flight.clone());
        match remote_addr {
            Some(addr) => transport.with_remote_addr(addr),
            None => transport,
        }
    }

    /// Whether the server stopped accepting.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Completes once the server stops accepting.
    pub(crate) async fn stopped_accepting(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Counts a connection from its first byte.
    pub(crate) fn enter(&self) -> TrackerGuard {
        self.connections.enter()
    }
}
