//! The errors of protoo-core: [`CoreError`] (creating or admitting a peer),
//! [`PeerError`] (sending to one) and [`RequestError`] (a request to one).

use protoo_codec::{EncodeError, ErrorData};
use protoo_transport::TransportError;
use thiserror::Error;

/// Why a peer could not be created or admitted into a room.
///
/// Whenever one of these is returned, the transport that was handed in has
/// been closed (with 4000 `closed by protoo-server`, as protoo does).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The peer id is the empty string.
    #[error("peer id is empty")]
    EmptyId,
    /// The room id or the peer id is longer than the registry allows
    /// ([`RoomsBuilder::max_id_bytes`](crate::RoomsBuilder::max_id_bytes),
    /// [`DEFAULT_MAX_ID_BYTES`](crate::DEFAULT_MAX_ID_BYTES) by default).
    #[error("{what} is longer than {max} bytes")]
    IdTooLong {
        /// Which id: `"room id"` or `"peer id"`.
        what: &'static str,
        /// The longest the registry takes, in bytes.
        max: usize,
    },
    /// The room already has a peer with this id (and the policy was to
    /// refuse it).
    #[error("there is already a peer with id {0:?} in the room")]
    DuplicateId(String),
    /// The room is closed: it takes no new peers.
    #[error("room is closed")]
    RoomClosed,
    /// Called outside a Tokio runtime: a peer needs one to run its reader
    /// task.
    #[error("no Tokio runtime to run the peer on")]
    NoRuntime,
    /// The room's data setup ([`RoomsBuilder::setup`](crate::RoomsBuilder::setup))
    /// failed with this error; `protoo_server` rejects the connection with
    /// its code as the HTTP status (500 when it is not one).
    #[error("room setup failed: {0}")]
    RoomSetup(ErrorData),
    /// The room's setup outlasted the deadline of the connection being
    /// admitted ([`Connecting::deadline`](crate::Connecting::deadline):
    /// `protoo_server`'s handshake timeout, answered with 503).
    #[error("room setup timed out")]
    SetupTimedOut,
    /// The peer id is taken in the room by a peer of another identity (or
    /// one of the two has none): a connection may replace a peer only as
    /// the same subject in the same room
    /// ([`Identity`](crate::Identity)). Also what
    /// [`Peer::refresh_identity`](crate::Peer::refresh_identity) says of an
    /// identity of another subject or room.
    #[error("peer id {0:?} belongs to another identity")]
    IdentityMismatch(String),
    /// [`Peer::resume`](crate::Peer::resume) on a peer without a
    /// [resume window](crate::PeerConfig::resume_window), or whose session
    /// ended (the peer closed); the transport is closed.
    #[error("the peer's session cannot be resumed")]
    NotResumable,
}

/// Why a notification or a frame was not sent to a peer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer is closed.
    #[error("peer closed")]
    Closed,
    /// The data could not be encoded to JSON.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport refused the frame for another reason than being closed
    /// (its outbound queue overflowed: it has closed itself as a slow
    /// consumer).
    #[error(transparent)]
    Send(TransportError),
    /// The information given to [`Room::set_presence`](crate::Room::set_presence)
    /// is larger than the peer's [`PeerConfig::max_presence_bytes`](crate::PeerConfig::max_presence_bytes);
    /// nothing was changed. As a handler's error, 400 `presence too large`.
    #[error("presence too large: {bytes} bytes, at most {max}")]
    PresenceTooLarge {
        /// The encoded information's length.
        bytes: usize,
        /// The peer's cap.
        max: usize,
    },
    /// A broadcast on the peer's behalf was not sent: it owes fan-out bytes
    /// ([`PeerConfig::fan_out_rate`](crate::PeerConfig::fan_out_rate);
    /// [`BroadcastReport::within_rate`](crate::BroadcastReport::within_rate)).
    /// As a handler's error, 429 `rate limit exceeded`, what the incoming
    /// rate limits answer.
    #[error("fan-out rate exceeded")]
    RateLimited,
}

/// The reason of the 400 a handler's [`PeerError::PresenceTooLarge`]
/// answers.
pub const PRESENCE_TOO_LARGE_REASON: &str = "presence too large";

impl PeerError {
    pub(crate) fn from_transport(error: TransportError) -> Self {
        match error {
            TransportError::Closed(_) => PeerError::Closed,
            other => PeerError::Send(other),
        }
    }
}

/// Why [`Peer::request`](crate::Peer::request) did not give the response
/// data.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The remote answered with an error response; [`RequestError::code`] and
    /// [`RequestError::reason`] read it. Forward it unchanged with
    /// [`IncomingRequest::respond`](crate::IncomingRequest::respond)`(Err(error))`
    /// (the whole `RequestError`: a rejection is sent as it is).
    #[error("request rejected: {0}")]
    Rejected(ErrorData),
    /// No response came within the request timeout
    /// ([`PeerConfig::request_timeout`](crate::PeerConfig::request_timeout)).
    #[error("request timeout")]
    Timeout,
    /// The peer closed before the response came (or was already closed).
    #[error("peer closed")]
    PeerClosed,
    /// The request data could not be encoded to JSON; nothing was sent.
    #[error(transparent)]
    Encode(EncodeError),
    /// The transport refused the request frame for another reason than being
    /// closed (its outbound queue overflowed: it has closed itself as a slow
    /// consumer).
    #[error(transparent)]
    Send(TransportError),
    /// The response data did not deserialise into the requested type
    /// ([`Peer::request_as`](crate::Peer::request_as)).
    #[error("invalid response data: {0}")]
    InvalidResponse(#[source] serde_json::Error),
}

impl RequestError {
    /// The remote's `errorCode`, for [`RequestError::Rejected`] with an
    /// integer code that fits in `u16`.
    pub fn code(&self) -> Option<u16> {
        self.error_data().and_then(ErrorData::code)
    }

    /// The remote's `errorReason`, for [`RequestError::Rejected`] with a
    /// string reason.
    pub fn reason(&self) -> Option<String> {
        self.error_data().and_then(ErrorData::reason)
    }

    /// The remote's error as received, for [`RequestError::Rejected`].
    pub fn error_data(&self) -> Option<&ErrorData> {
        match self {
            RequestError::Rejected(error) => Some(error),
            _ => None,
        }
    }
}
