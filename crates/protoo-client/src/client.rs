//! The client handle, its events, and the task that connects and reconnects.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;
use protoo_core::{
    CloseReason, IncomingNotification, IncomingRequest, Initiator, Payload, Peer, PeerError,
    PeerEvent, Transport, TransportError, close_code,
};
use protoo_transport::ws::{self, ClientOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

use crate::{ClientConfig, ClientError};

/// How many client events wait for the application before the client stops
/// reading its connection (the connection's own peer queue is bounded too).
const EVENT_CHANNEL: usize = 64;

/// The reason a locally closed client gives the server.
const LOCAL_CLOSE_REASON: &str = "closed by protoo-client";

/// What happens to a [`Client`], in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection is open: sent on the first open and on every reconnect,
    /// so the application joins (again) here.
    Open,
    /// Attempt `n` of the current round failed before opening (1 for the
    /// first attempt of a round; a round starts at [`Client::connect`] and
    /// after each [`ClientEvent::Disconnected`]). A retry follows unless the
    /// retries are exhausted, in which case [`ClientEvent::Close`] follows.
    Failed(u32),
    /// An open connection was lost; the client reconnects at once with a
    /// fresh retry budget. Requests pending on it have failed with
    /// [`ClientError::Disconnected`].
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
enum State {
    /// Connecting (the first round, or again after a loss).
    Connecting,
    /// A connection is open: its peer.
    Open(Peer),
    /// Closed for good.
    Closed,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken by [`Client::close`].
    close: Notify,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn is_closed(&self) -> bool {
        matches!(*lock(&self.state), State::Closed)
    }

    /// The open connection's peer, or why there is none.
    fn peer(&self) -> Result<Peer, ClientError> {
        match &*lock(&self.state) {
            State::Open(peer) => Ok(peer.clone()),
            State::Connecting => Err(ClientError::Disconnected),
            State::Closed => Err(ClientError::Closed),
        }
    }
}

/// Opens connections: the WebSocket connector of [`Client::connect`], or any
/// other for a custom transport (tests use in-memory pairs).
type Connector = Box<
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
    /// fails with [`ClientError::Disconnected`] (protoo-client throws).
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
        if let State::Open(peer) = previous {
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

/// How a connection ended.
enum Ended {
    /// Lost: reconnect.
    Lost,
    /// For good (4000, or closed locally).
    Final(Option<CloseReason>),
}

/// The client's task: rounds of attempts, each open connection served until
/// it ends.
async fn run(
    shared: Arc<Shared>,
    mut connect: Connector,
    config: ClientConfig,
    tx: mpsc::Sender<ClientEvent>,
) {
    let last = 'rounds: loop {
        let mut attempt: u32 = 1;
        loop {
            let result = tokio::select! {
                result = connect() => result,
                () = shared.close.notified() => break 'rounds None,
            };
            if shared.is_closed() {
                if let Ok(transport) = result {
                    transport.close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
                }
                break 'rounds None;
            }
            match result {
                Ok(transport) => match serve(&shared, transport, &config, &tx).await {
                    Ended::Lost => {
                        let _ = tx.send(ClientEvent::Disconnected).await;
                        continue 'rounds;
                    }
                    Ended::Final(reason) => break 'rounds reason,
                },
                Err(error) => {
                    tracing::debug!(
                        attempt,
                        error = %protoo_transport::log::Remote(&error),
                        "connection attempt failed"
                    );
                    let _ = tx.send(ClientEvent::Failed(attempt)).await;
                    if attempt > config.retry.retries {
                        break 'rounds None;
                    }
                    let wait = config.retry.delay(attempt - 1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shared.close.notified() => break 'rounds None,
                    }
                    attempt += 1;
                }
            }
        }
    };
    *lock(&shared.state) = State::Closed;
    let _ = tx.send(ClientEvent::Close(last)).await;
}

/// Serves one open connection until it ends.
async fn serve(
    shared: &Shared,
    transport: Transport,
    config: &ClientConfig,
    tx: &mpsc::Sender<ClientEvent>,
) -> Ended {
    let (peer, mut events) = match Peer::new("server", transport, (), config.peer.clone()) {
        Ok(pair) => pair,
        // Only without a runtime, and this task runs on one.
        Err(_) => return Ended::Final(None),
    };
    {
        let mut state = lock(&shared.state);
        if matches!(*state, State::Closed) {
            peer.close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
            return Ended::Final(None);
        }
        *state = State::Open(peer.clone());
    }
    let _ = tx.send(ClientEvent::Open).await;
    drop(peer);
    let reason = loop {
        let event = match events.next().await {
            Some(PeerEvent::Request(request)) => ClientEvent::Request(request),
            Some(PeerEvent::Notification(notification)) => ClientEvent::Notification(notification),
            Some(PeerEvent::Closed(reason)) => break Some(reason),
            // Only peers with a resume window see these.
            Some(PeerEvent::Disconnected(_) | PeerEvent::Resumed { .. }) => continue,
            None => break None,
        };
        // Events nobody reads are dropped (a request then answers 500).
        let _ = tx.send(event).await;
    };
    let mut state = lock(&shared.state);
    if matches!(*state, State::Closed) {
        return Ended::Final(reason);
    }
    let final_close = reason.as_ref().is_some_and(|reason| {
        reason.initiator == Initiator::Remote && reason.code == Some(close_code::PROTOO_CLOSED)
    });
    if final_close {
        *state = State::Closed;
        Ended::Final(reason)
    } else {
        *state = State::Connecting;
        Ended::Lost
    }
}
