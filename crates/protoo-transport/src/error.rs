//! [`TransportError`]: what can go wrong when sending on, or opening, a
//! transport.

use bytes::Bytes;
use thiserror::Error;

use crate::Frame;

/// Everything that can go wrong in a transport.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is closed; the frame was not sent.
    #[error("transport closed")]
    Closed(Frame),
    /// The frame would have taken the outbound queue past its byte limit;
    /// the transport has been closed as a slow consumer.
    #[error("outbound queue limit exceeded, transport closed")]
    QueueFull(Frame),
    /// A binary message was not sent ([`FrameSink::send_binary`](crate::FrameSink::send_binary)):
    /// the transport does not send binary messages (protoo uses text; a
    /// WebSocket transport does only with
    /// [`WsConfig::binary_messages`](crate::ws::WsConfig::binary_messages)),
    /// or it is closed, or the message would have taken its outbound queue
    /// past the limit (the transport has then been closed as a slow
    /// consumer). The data is given back.
    #[error("binary message not sent: {reason}")]
    BinaryNotSent {
        /// The unsent message.
        data: Bytes,
        /// Why.
        reason: &'static str,
    },
    /// The URL given to connect is not a `ws://` or `wss://` URL we can use.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The server did not agree to the `protoo` subprotocol.
    #[error("server did not accept the protoo subprotocol")]
    NoSubprotocol,
    /// Connecting or the WebSocket handshake failed (an HTTP rejection is
    /// [`TransportError::Rejected`] instead).
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The WebSocket handshake ended in an HTTP rejection with `status`. On
    /// the client: the server answered the upgrade request with this status
    /// (for example 403 when it refused the `protoo` subprotocol, 400, 503);
    /// `reason` is protoo's `X-WebSocket-Reject-Reason` header, else the
    /// response body, else the status's standard reason phrase. On the
    /// server: the request could not be accepted and was answered with this
    /// status (400 malformed, 431 head too large, 426 wrong WebSocket version).
    #[error("WebSocket upgrade rejected with HTTP {status}: {reason}")]
    Rejected {
        /// The HTTP status code.
        status: u16,
        /// Why.
        reason: String,
    },
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration or handshake failed.
    #[error("TLS error: {0}")]
    Tls(String),
}

impl TransportError {
    /// The unsent frame, for [`TransportError::Closed`] and
    /// [`TransportError::QueueFull`].
    pub fn into_frame(self) -> Option<Frame> {
        match self {
            TransportError::Closed(f) | TransportError::QueueFull(f) => Some(f),
            _ => None,
        }
    }
}
