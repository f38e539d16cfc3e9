//! The client handle and its events; the task that connects and reconnects
//! is in `run.rs`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use protoo_core::{
    CloseReason, IncomingNotification, IncomingRequest, Payload, Peer, PeerError, Transport,
    TransportError, close_code,
};
use protoo_transport::ws::{self, ClientOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

use crate::run::run;
use crate::{ClientConfig, ClientError};

/// How many client events wait for the application before the client stops
/// reading its connection (the connection's own peer queue is bounded too).
const EVENT_CHANNEL: usize = 64;

/// The reason a locally closed client gives the server.
pub(crate) const LOCAL_CLOSE_REASON: &str = "closed by protoo-client";

/// What happens to a [`Client`], in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection is open: sent on the first open and on every reconnect,
    /// so the application joins (again) here. After a reconnect that
    /// resumed the client's session, [`ClientEvent::Resumed`] comes just
    /// before it.
    Open,
    /// The new connection resumed the client's session (only with
    /// [`ClientConfig::with_resume_window`](crate::ClientConfig::with_resume_window)):
    /// requests pending at the loss are still pending, and what was sent
    /// while disconnected (`missed` frames: requests, notifications,
    /// responses) was written to it first, in order. [`ClientEvent::Open`]
    /// follows at once. Whether the server resumed its side of the session
    /// too is for the application's protocol to say (the room example sends
    /// a `resumed` notification); a server that did not sees a new peer, and
    /// the pending requests then end with their timeout.
    Resumed {
        /// How many frames were written again on the new connection.
        missed: usize,
    },
    /// Attempt `n` of the current round failed before opening (1 for the
    /// first attempt of a round; a round starts at [`Client::connect`] and
    /// after each [`ClientEvent::Disconnected`]). A retry follows unless the
    /// retries are exhausted, in which case [`ClientEvent::Close`] follows.
    Failed(u32),
    /// An open connection was lost; the client reconnects at once with a
    /// fresh retry budget. Requests pending on it have failed with
    /// [`ClientError::Disconnected`], unless the client keeps its session
    /// ([`ClientConfig::with_resume_window`](crate::ClientConfig::with_resume_window)):
    /// then they stay pending, and requests and notifications sent until
    /// the next connection are held for it, for the window.
    Disconnected,
    /// The client is closed for good: the server closed with 4000, the
    /// retries ran out, or [`Client::close`] was called. The last event.
    /// Carries how the last connection ended, when one was open.
    Close(Option<CloseReason>),
    /// A request from the server: answer it (it answers 500 if dropped).
    Request(IncomingRequest),
    /// A notification from the server.
    Notification(IncomingNotification),
}

/// Where the client is.
#[derive(Debug)]
pub(crate) enum State {
    /// Connecting (the first round, or again after a loss), no session.
    Connecting,
    /// A connection is open: its peer.
    Open(Peer),
    /// The connection was lost and the session waits for the next one
    /// (resume window): its peer, which holds what is sent meanwhile.
    Resuming(Peer),
    /// Closed for good.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Woken by [`Client::close`].
    pub(crate) close: Notify,
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        matches!(*lock(&self.state), State::Closed)
    }

    /// The session's peer, or why there is none.
    fn peer(&self) -> Result<Peer, ClientError> {
        match &*lock(&self.state) {
            State::Open(peer) | State::Resuming(peer) => Ok(peer.clone()),
            State::Connecting => Err(ClientError::Disconnected),
            State::Closed => Err(ClientError::Closed),
        }
    }
}

/// Opens connections: the WebSocket connector of [`Client::connect`], or any
/// other for a custom transport (tests use in-memory pairs).
pub(crate) type Connector = Box<
    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<Transport, TransportError>> + Send>> + Send,
>;

/// A protoo client: one logical peer (the server) behind a connection that
/// is re-established as protoo-client does.
///
/// A cheap handle; clone it into every task that sends. What happens
/// arrives in the [`ClientEvents`] returned next to it. Dropping every handle
/// does not close the client: call [`Client::close`].
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects to the protoo server at `options`' URL (subprotocol
    /// `protoo`, its extra headers, and for `wss://` its TLS configuration,
    /// by default Mozilla's roots: see the `tls` module)
    /// and keeps reconnecting as [`ClientConfig::retry`] says. Spawns one
    /// task on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn connect(options: ClientOptions, config: ClientConfig) -> (Client, ClientEvents) {
        let ws_config = config.ws.clone();
        // With the `tls` feature, `wss://` without a TLS configuration
        // trusts Mozilla's roots. If that configuration cannot be built,
        // every attempt fails with its error.
        #[cfg(feature = "tls")]
        let options = crate::tls::with_default_roots(options).map_err(|error| error.to_string());
        #[cfg(not(feature = "tls"))]
        let options = Ok::<_, String>(options);
        let connector: Connector = Box::new(move || {
            let options = options.clone();
            let ws_config = ws_config.clone();
            Box::pin(async move {
                let options = options.map_err(TransportError::Tls)?;
                ws::connect_with(options, &ws_config).await
            })
        });
        Self::with_connector(connector, config)
    }

    /// Like [`Client::connect`], opening each connection with `connect`
    /// instead of a WebSocket: for custom transports and tests.
    /// [`ClientConfig::ws`] is not used.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn with_connector<F, Fut>(mut connect: F, config: ClientConfig) -> (Client, ClientEvents)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Transport, TransportError>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Connecting),
            close: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
        let connector: Connector = Box::new(move || Box::pin(connect()));
        tokio::spawn(run(shared.clone(), connector, config, tx));
        (Client { shared }, ClientEvents { rx })
    }

    /// Whether a connection is open now.
    pub fn is_open(&self) -> bool {
        matches!(*lock(&self.shared.state), State::Open(_))
    }

    /// Whether the client is closed for good.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Sends a request to the server and waits for its response data.
    ///
    /// Better than protoo-client: while no connection is open this fails at
    /// once with [`ClientError::Disconnected`] (nothing is queued), and a
    /// request pending when the connection is lost fails at once with
    /// [`ClientError::Disconnected`] instead of waiting for its timeout.
    /// After [`ClientEvent::Close`] it fails with [`ClientError::Closed`].
    ///
    /// With a resume window ([`ClientConfig::with_resume_window`]) the
    /// session outlives a lost connection: a request pending at the loss
    /// stays pending (its timeout runs on) and is answered on the next
    /// connection; one sent while disconnected is held (up to the peer's
    /// `resume_buffer`) and written first on it. If no connection comes
    /// within the window, they fail with [`ClientError::Disconnected`].
    pub async fn request(
        &self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<Payload, ClientError> {
        let peer = self.shared.peer()?;
        peer.request(method, data)
            .await
            .map_err(|error| ClientError::from_request(error, self.shared.is_closed()))
    }

    /// [`Client::request`], with the response data deserialised into `R`.
    pub async fn request_as<R: DeserializeOwned>(
        &self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<R, ClientError> {
        self.request(method, data)
            .await?
            .deserialize()
            .map_err(ClientError::InvalidResponse)
    }

    /// Sends a notification to the server. While no connection is open,
    /// fails with [`ClientError::Disconnected`] (protoo-client throws),
    /// except within a resume window ([`ClientConfig::with_resume_window`]):
    /// then it is held and written first on the next connection.
    pub fn notify(
        &self,
        method: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<(), ClientError> {
        let peer = self.shared.peer()?;
        peer.notify(method, data).map_err(|error| match error {
            PeerError::Encode(error) => ClientError::Encode(error),
            PeerError::Send(error) => ClientError::Send(error),
            _ if self.shared.is_closed() => ClientError::Closed,
            _ => ClientError::Disconnected,
        })
    }

    /// Closes the client for good: the open connection (if any) is closed
    /// with 1000, pending requests fail with [`ClientError::Closed`], no
    /// reconnect follows, and [`ClientEvent::Close`] is the last event.
    pub fn close(&self) {
        let previous = std::mem::replace(&mut *lock(&self.shared.state), State::Closed);
        if let State::Open(peer) | State::Resuming(peer) = previous {
            peer.close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
        }
        self.shared.close.notify_one();
    }
}

/// The events of a [`Client`], in order; a [`Stream`], or read with
/// [`ClientEvents::next`]. Ends after [`ClientEvent::Close`].
pub struct ClientEvents {
    rx: mpsc::Receiver<ClientEvent>,
}

impl ClientEvents {
    /// The next event; `None` after [`ClientEvent::Close`].
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }
}

impl Stream for ClientEvents {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl fmt::Debug for ClientEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientEvents").finish_non_exhaustive()
    }
}
