//! [`ServerError`]: what can go wrong between a connection request and a
//! peer.

use thiserror::Error;

/// What can go wrong between a connection request and a peer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The handshake timeout passed (or the server stopped) before the
    /// connection could be accepted.
    #[error("connection request timed out or the server stopped")]
    HandshakeTimeout,
    /// Completing the WebSocket upgrade failed.
    #[error(transparent)]
    Transport(#[from] protoo_transport::TransportError),
    /// The connection named no room or no peer (the query's `roomId` or
    /// `peerId`, or an empty one): rejected with 400 before the upgrade.
    /// Holds the missing parameter's name.
    #[error("missing or empty {0}")]
    MissingId(&'static str),
    /// The connection's identity does not give what it asks (its token is
    /// for another room or peer id, or the peer id belongs to another
    /// identity): rejected with the error's status before the upgrade.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Admitting the peer failed (room setup failed, duplicate id, room
    /// closed).
    #[error(transparent)]
    Core(#[from] protoo_core::CoreError),
    /// Binding or accepting failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
