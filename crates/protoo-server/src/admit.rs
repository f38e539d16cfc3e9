//! A connection request admitted into a room: [`ConnectionRequest::admit`]
//! gives a [`ServerAdmit`], which waits for the room (its setup), completes
//! the handshake, puts the peer in its room and only then lets the client
//! see its WebSocket open.

use std::fmt;
use std::future::Future;

use protoo_core::{
    Admit, Connecting, Context, CoreError, DuplicatePolicy, Joined, PeerConfig, Rooms,
};
use protoo_transport::Transport;
use tokio::time::Instant;

use crate::auth::AuthError;
use crate::request::{Decision, Opening};
use crate::{ConnectionRequest, ServerError};

/// The query parameter the room id comes from by default.
const ROOM_ID_PARAM: &str = "roomId";
/// The query parameter the peer id comes from by default.
const PEER_ID_PARAM: &str = "peerId";

impl ConnectionRequest {
    /// Admits the connection into a room of `rooms`: the room id and peer
    /// id come from the query's `roomId` and `peerId` (protoo's
    /// convention; [`ServerAdmit::room`] and [`ServerAdmit::peer`] give
    /// others), the room's setup sees the query's parameters as the
    /// admission's [`Context`] (unless [`ServerAdmit::context`] gives one),
    /// and the peer gets the registry's [`PeerConfig`] and
    /// [`DuplicatePolicy`] (unless overridden). [`ServerAdmit::join`] does it.
    ///
    /// ```no_run
    /// use protoo_server::{Rooms, ServerConfig, WebSocketServer};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let mut server = WebSocketServer::bind("127.0.0.1:4443", ServerConfig::default()).await?;
    /// let rooms: Rooms = Rooms::new();
    /// while let Some(request) = server.next_request().await {
    ///     let rooms = rooms.clone();
    ///     tokio::spawn(async move {
    ///         // 400 without `roomId` or `peerId`; the setup's error status
    ///         // if the room's setup fails.
    ///         let Ok(joined) = request.admit(&rooms).join(()).await else { return };
    ///         let mut events = joined.events;
    ///         while let Some(_event) = events.next().await { /* .. */ }
    ///     });
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn admit<D, R>(self, rooms: &Rooms<D, R>) -> ServerAdmit<'_, D, R>
    where
        D: Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        ServerAdmit {
            request: self,
            rooms,
            room_id: None,
            peer_id: None,
            config: None,
            policy: None,
            context: None,
        }
    }

    /// The query's parameters, percent-decoded, as an admission context.
    fn query_context(&self) -> Context {
        let Some(query) = self.query() else {
            return Context::new();
        };
        // The token stays out: a context is shown in logs and debug output.
        form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| name != crate::auth::TOKEN_PARAM)
            .fold(Context::new(), |context, (name, value)| {
                context.with_param(name, value)
            })
    }
}

/// A connection request on its way into a room: [`ConnectionRequest::admit`],
/// optional overrides, then [`join`](ServerAdmit::join).
#[must_use = "an admission does nothing until `join`"]
pub struct ServerAdmit<'a, D, R> {
    request: ConnectionRequest,
    rooms: &'a Rooms<D, R>,
    room_id: Option<String>,
    peer_id: Option<String>,
    config: Option<PeerConfig>,
    policy: Option<DuplicatePolicy>,
    context: Option<Context>,
}

impl<'a, D, R> ServerAdmit<'a, D, R>
where
    D: Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    /// The room id, instead of the query's `roomId`.
    pub fn room(mut self, room_id: impl Into<String>) -> Self {
        self.room_id = Some(room_id.into());
        self
    }

    /// The peer id, instead of the query's `peerId`.
    pub fn peer(mut self, peer_id: impl Into<String>) -> Self {
        self.peer_id = Some(peer_id.into());
        self
    }

    /// The peer's settings, instead of the registry's.
    pub fn config(mut self, config: PeerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// What to do with a peer of the same id already in the room, instead
    /// of the registry's policy.
    pub fn policy(mut self, policy: DuplicatePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The context the room's setup sees (if this admission starts it),
    /// instead of the query's parameters.
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Waits for the room (its setup, within the handshake timeout),
    /// accepts the connection, admits the peer with `data` into the room,
    /// and then lets the client see its WebSocket open: nothing broadcast
    /// in the room after the client's `open` misses it, as with
    /// protoo-server.
    ///
    /// With a verified identity ([`ConnectionRequest::identity`]), a
    /// missing room id or peer id is the token's `room` or `sub`.
    ///
    /// Rejected before the upgrade, with a readable reason: a missing or
    /// empty room id or peer id (400, [`ServerError::MissingId`]); a room
    /// or peer id that is not the identity's, or a peer id taken in the
    /// room by another identity (403, [`ServerError::Auth`]); a room
    /// whose setup fails (the setup error's code as the HTTP status, 500
    /// when it is not one; [`CoreError::RoomSetup`]); a setup that outlasts
    /// the handshake timeout (503, [`ServerError::HandshakeTimeout`]). A
    /// peer refused once the connection is open (a duplicate id under
    /// [`DuplicatePolicy::Refuse`]) is closed with 4000, as protoo does.
    ///
    /// Returns a boxed future: what the handshake holds is freed once it is
    /// done, instead of sizing the application's per-connection task for
    /// the peer's whole life.
    pub fn join(
        self,
        data: D,
    ) -> impl Future<Output = Result<Joined<D, R>, ServerError>> + Send + 'a {
        Box::pin(async move {
            let (admit, handshake) = self.admission()?;
            admit.join(handshake, data).await
        })
    }

    /// Checks the ids (rejecting the connection when one is missing or not
    /// the identity's) and builds the core's admission.
    fn admission(self) -> Result<(Admit<'a, D, R>, Handshake), ServerError> {
        let ServerAdmit {
            mut request,
            rooms,
            room_id,
            peer_id,
            config,
            policy,
            context,
        } = self;
        // The query is parsed once: its parameters are the context (unless
        // the application gave one) and the ids come from there.
        let query_context = match context {
            Some(_) => None,
            None => Some(request.query_context()),
        };
        let from_query = |name: &str| match &query_context {
            Some(params) => params.param(name).map(str::to_owned),
            None => request.query_param(name),
        };
        let room_id = room_id.or_else(|| from_query(ROOM_ID_PARAM));
        let peer_id = peer_id.or_else(|| from_query(PEER_ID_PARAM));
        let identity = request.identity().cloned();
        let (room_id, peer_id) = match &identity {
            None => (room_id, peer_id),
            Some(identity) => match (
                proved(room_id, identity.room()),
                proved(peer_id, identity.subject()),
            ) {
                (Some(room_id), Some(peer_id)) => (Some(room_id), Some(peer_id)),
                (room_id, _) => {
                    let reason = if room_id.is_none() {
                        "token is for another room"
                    } else {
                        "token is for another peer id"
                    };
                    tracing::debug!(reason, "connection refused: identity");
                    request.decide(Decision::Reject(403, reason.to_owned()));
                    return Err(ServerError::Auth(AuthError::Forbidden(reason.to_owned())));
                }
            },
        };
        let (room_id, peer_id) = match (room_id, peer_id) {
            (Some(room_id), Some(peer_id)) if !room_id.is_empty() && !peer_id.is_empty() => {
                (room_id, peer_id)
            }
            (room_id, _) => {
                let missing = if room_id.is_none_or(|id| id.is_empty()) {
                    ROOM_ID_PARAM
                } else {
                    PEER_ID_PARAM
                };
                tracing::debug!(missing, "connection without a room or peer id rejected");
                let reason = format!("missing or empty {missing}");
                request.decide(Decision::Reject(400, reason));
                return Err(ServerError::MissingId(missing));
            }
        };
        let mut context = context.or(query_context).unwrap_or_default();
        if let Some(identity) = &identity {
            context.insert(identity.clone());
        }
        let mut admit = rooms.admit(room_id, peer_id).context(context);
        if let Some(identity) = identity {
            admit = admit.identity(identity);
        }
        if let Some(config) = config {
            admit = admit.config(config);
        }
        if let Some(policy) = policy {
            admit = admit.policy(policy);
        }
        let handshake = Handshake {
            request,
            room_id: admit.room_id().to_owned(),
        };
        Ok((admit, handshake))
    }
}

/// A connection request as the core admits it: accepted (the upgrade
/// completes, the client sees it open once the peer is in its room) or
/// rejected with an HTTP status the client can read.
struct Handshake {
    request: ConnectionRequest,
    /// For the log of a failed room setup.
    room_id: String,
}

impl Connecting for Handshake {
    type Error = ServerError;
    type Opening = Opening;

    fn deadline(&self) -> Option<Instant> {
        Some(self.request.deadline())
    }

    fn accept(self) -> impl Future<Output = Result<(Transport, Opening), ServerError>> + Send {
        self.request.accept_pending()
    }

    fn open(opening: Opening) {
        opening.open();
    }

    fn refuse(mut self, error: CoreError) -> ServerError {
        let (status, reason, error) = match error {
            CoreError::IdentityMismatch(_) => {
                // Checked again when the peer joins; refused here with a
                // status the client can read.
                tracing::debug!("connection refused: peer id of another identity");
                let reason = "peer id belongs to another identity";
                let error = ServerError::Auth(AuthError::Forbidden(reason.to_owned()));
                (403, reason.to_owned(), error)
            }
            CoreError::RoomSetup(error) => {
                tracing::debug!(
                    room_id = %protoo_transport::log::Remote(&self.room_id),
                    error = %protoo_transport::log::Remote(&error),
                    "room setup failed: connection rejected"
                );
                let status = error.code().filter(|code| (400..600).contains(code));
                let reason = error.reason().unwrap_or_else(|| "room setup failed".into());
                let error = ServerError::Core(CoreError::RoomSetup(error));
                (status.unwrap_or(500), reason, error)
            }
            CoreError::SetupTimedOut => (
                503,
                "room setup timed out".to_owned(),
                ServerError::HandshakeTimeout,
            ),
            // An id over the registry's limit: the client's fault.
            error @ CoreError::IdTooLong { .. } => {
                (400, error.to_string(), ServerError::Core(error))
            }
            error => (500, error.to_string(), ServerError::Core(error)),
        };
        self.request.decide(Decision::Reject(status, reason));
        error
    }
}

/// The id a connection with a verified identity gets: the one it proves,
/// when the URL (or the application) asks for none or for that one; `None`
/// when it asks for another.
fn proved(asked: Option<String>, proved: &str) -> Option<String> {
    match asked {
        Some(asked) if !asked.is_empty() && asked != proved => None,
        _ => Some(proved.to_owned()),
    }
}

impl<D, R> fmt::Debug for ServerAdmit<'_, D, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAdmit")
            .field("request", &self.request)
            .field("room_id", &self.room_id)
            .field("peer_id", &self.peer_id)
            .field("policy", &self.policy)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}
