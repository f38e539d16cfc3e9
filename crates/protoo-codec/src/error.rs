//! [`DecodeError`] and [`EncodeError`]: why a frame is not a protoo message,
//! and why a message could not be encoded.

use thiserror::Error;

/// Why a frame is not a protoo message. protoo drops such frames; so do the
/// layers above, after logging this error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text is not JSON (or has trailing characters after the value).
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The JSON value is not an object (`null`, an array, a string, ...).
    #[error("not a JSON object")]
    NotAnObject,
    /// None of `request`, `response` or `notification` is truthy.
    #[error("not a request, response or notification")]
    UnknownKind,
    /// A request or response whose `id` is missing or not a number.
    #[error("{kind} without a numeric id")]
    InvalidId {
        /// `"request"` or `"response"`.
        kind: &'static str,
    },
    /// A request or notification whose `method` is missing or not a string.
    #[error("{kind} without a string method")]
    InvalidMethod {
        /// `"request"` or `"notification"`.
        kind: &'static str,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The application's data could not be serialised to JSON (a map with
    /// non-string keys, a failing `Serialize` impl, ...).
    #[error("data is not serialisable to JSON: {0}")]
    Data(#[source] serde_json::Error),
}
