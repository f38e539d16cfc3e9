//! The client's errors.

use protoo_core::{EncodeError, ErrorData, RequestError, TransportError};
use thiserror::Error;

/// Why a request or notification through a [`Client`](crate::Client) did
/// not succeed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection is open (connecting, or reconnecting after a loss), or
    /// the connection was lost while the request waited for its response.
    /// Nothing is queued for later: send again after the next
    /// [`ClientEvent::Open`](crate::ClientEvent::Open). With a resume window
    /// ([`ClientConfig::with_resume_window`](crate::ClientConfig::with_resume_window)):
    /// the window passed without a connection.
    #[error("disconnected")]
    Disconnected,
    /// The client is closed for good.
    #[error("client closed")]
    Closed,
    /// The server answered with an error response.
    #[error("request rejected: {0}")]
    Rejected(ErrorData),
    /// No response came within the request timeout.
    #[error("request timeout")]
    Timeout,
    /// The data could not be encoded to JSON; nothing was sent.
    #[error(transparent)]
    Encode(EncodeError),
    /// The transport refused the frame (its outbound queue overflowed).
    #[error(transparent)]
    Send(TransportError),
    /// The response data did not deserialise into the requested type.
    #[error("invalid response data: {0}")]
    InvalidResponse(#[source] serde_json::Error),
}

impl ClientError {
    /// The server's `errorCode`, for [`ClientError::Rejected`].
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Rejected(error) => error.code(),
            _ => None,
        }
    }

    /// The server's `errorReason`, for [`ClientError::Rejected`].
    pub fn reason(&self) -> Option<String> {
        match self {
            ClientError::Rejected(error) => error.reason(),
            _ => None,
        }
    }

    /// Maps a peer's request error; `closed` tells a lost connection from a
    /// client closed for good.
    pub(crate) fn from_request(error: RequestError, closed: bool) -> Self {
        match error {
            RequestError::Rejected(error) => ClientError::Rejected(error),
            RequestError::Timeout => ClientError::Timeout,
            RequestError::PeerClosed if closed => ClientError::Closed,
            RequestError::PeerClosed => ClientError::Disconnected,
            RequestError::Encode(error) => ClientError::Encode(error),
            RequestError::Send(error) => ClientError::Send(error),
            RequestError::InvalidResponse(error) => ClientError::InvalidResponse(error),
            // A variant added later: the nearest meaning.
            _ => ClientError::Disconnected,
        }
    }
}
