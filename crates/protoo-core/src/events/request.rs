//! [`IncomingRequest`], a request from the remote waiting for its one
//! answer (answering 500 by itself when dropped unanswered);
//! [`IntoErrorData`], what an error answers with; and
//! [`IncomingNotification`].

use crate::metrics::RequestEnd;
use std::fmt;
use std::sync::Arc;

use protoo_codec::{ErrorData, Id, Method, Notification, Payload, Request, encode};
use protoo_transport::TrackerGuard;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Answer;
use super::NOT_ANSWERED_REASON;
use crate::budget::Charge;

/// A request from the remote, waiting for its one answer.
///
/// Answer it with [`accept`](Self::accept), [`reject`](Self::reject) or
/// [`respond`](Self::respond): each consumes it, so it is answered at most
/// once. Dropped without an answer, it answers 500 `request not answered`
/// by itself: the remote never waits for a response that will not come. It can be moved to another task to be
/// answered later.
///
/// Answering a peer that has closed meanwhile does nothing (the failure is
/// logged at debug level).
#[must_use = "a request must be answered; dropping it answers 500 \"request not answered\""]
pub struct IncomingRequest {
    request: Request,
    /// `None` once answered.
    core: Option<Arc<dyn Answer>>,
    /// Counts this request as in flight until it is answered, when the
    /// transport has a request tracker.
    _in_flight: Option<TrackerGuard>,
    /// Its frame's bytes in its peer's incoming budget, until answered.
    pub(crate) _charge: Charge,
}

impl IncomingRequest {
    pub(crate) fn new(
        request: Request,
        core: Arc<dyn Answer>,
        in_flight: Option<TrackerGuard>,
        charge: Charge,
    ) -> Self {
        IncomingRequest {
            _in_flight: in_flight,
            _charge: charge,
            request,
            core: Some(core),
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.request.method.as_str()
    }

    /// The method name as decoded (a cheap handle to the frame's bytes).
    pub(crate) fn method_name(&self) -> &Method {
        &self.request.method
    }

    /// The request id, as the remote wrote it.
    pub fn id(&self) -> &Id {
        &self.request.id
    }

    /// The request data as raw JSON (`{}` when the remote sent none).
    pub fn payload(&self) -> &Payload {
        &self.request.data
    }

    /// The request data deserialised into `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.request.data.deserialize()
    }

    /// The id of the peer that sent the request.
    pub fn peer_id(&self) -> &str {
        self.core.as_ref().map_or("", |core| core.peer_id())
    }

    /// Answers with a success response carrying `data` (`&()` sends `{}`).
    /// If `data` cannot be encoded, answers 500 with the encoding error
    /// instead.
    ///
    /// A received [`Payload`] is sent as it is: its JSON text copied into a
    /// buffer sized once, not parsed and encoded again (an echo, or data
    /// forwarded from another peer).
    ///
    /// ```
    /// # use protoo_core::{PeerEvent, PeerEvents};
    /// # async fn echo(mut events: PeerEvents) {
    /// while let Some(PeerEvent::Request(mut request)) = events.next().await {
    ///     let data = request.take_payload();
    ///     request.accept(&data);
    /// }
    /// # }
    /// ```
    pub fn accept(mut self, data: &(impl Serialize + ?Sized)) {
        let (frame, outcome) = match encode::success(&self.request.id, data) {
            Ok(frame) => (frame, RequestEnd::Ok),
            Err(error) => {
                tracing::warn!(
                    method = %protoo_transport::log::Remote(self.method()),
                    %error,
                    "response data not encodable, answering 500"
                );
                let error = ErrorData::new(500, error.to_string());
                (
                    encode::error(&self.request.id, &error),
                    RequestEnd::Rejected(500),
                )
            }
        };
        self.answer(frame, outcome);
    }

    /// Answers with an error response: `errorCode` and `errorReason`.
    pub fn reject(self, code: u16, reason: impl AsRef<str>) {
        self.reject_data(ErrorData::new(code, reason));
    }

    /// Answers `Ok(data)` as [`accept`](Self::accept) and `Err(error)` with
    /// the error's [`IntoErrorData`] conversion: an [`ErrorData`] is sent as
    /// it is (for instance the error another peer answered,
    /// [`RequestError::error_data`](crate::RequestError::error_data)), a
    /// serde error (bad request data) is 400 with serde's message, a string
    /// or another error is 500 with its message, as protoo answers a
    /// request whose listener throws.
    ///
    /// ```
    /// # use protoo_core::{ErrorData, IncomingRequest, IntoErrorData};
    /// #[derive(serde::Deserialize)]
    /// struct Add { a: i64, b: i64 }
    ///
    /// fn add(request: &IncomingRequest) -> Result<i64, ErrorData> {
    ///     // Bad data: 400 with serde's message.
    ///     let add: Add = request.data().map_err(IntoErrorData::into_error_data)?;
    ///     add.a.checked_add(add.b).ok_or(ErrorData::new(422, "overflow"))
    /// }
    ///
    /// fn on_add(request: IncomingRequest) {
    ///     let result = add(&request);
    ///     request.respond(result);
    /// }
    /// ```
    pub fn respond<T: Serialize, E: IntoErrorData>(self, result: Result<T, E>) {
        match result {
            Ok(data) => self.accept(&data),
            Err(error) => self.reject_data(error.into_error_data()),
        }
    }

    /// Answers with an error response carrying `error` as it is.
    fn reject_data(mut self, error: ErrorData) {
        let frame = encode::error(&self.request.id, &error);
        self.answer(frame, RequestEnd::Rejected(error.code().unwrap_or(0)));
    }

    /// Takes the request data out (leaving `{}`), to answer with it or move
    /// it elsewhere without a copy: `let data = request.take_payload();
    /// request.accept(&data)` echoes.
    pub fn take_payload(&mut self) -> Payload {
        std::mem::take(&mut self.request.data)
    }

    fn answer(&mut self, frame: protoo_codec::Frame, outcome: RequestEnd) {
        let Some(core) = self.core.take() else {
            return;
        };
        if let Err(error) = core.answer(frame, outcome) {
            tracing::debug!(
                peer_id = %protoo_transport::log::Remote(core.peer_id()),
                method = %protoo_transport::log::Remote(self.method()),
                %error,
                "response not sent"
            );
        }
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if self.core.is_some() {
            tracing::debug!(
                method = %protoo_transport::log::Remote(self.method()),
                "request dropped unanswered, answering 500"
            );
            let frame = encode::error(&self.request.id, &ErrorData::new(500, NOT_ANSWERED_REASON));
            self.answer(frame, RequestEnd::Rejected(500));
        }
    }
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("id", &self.request.id)
            .field("method", &self.request.method)
            .field("data", &self.request.data)
            .field("answered", &self.core.is_none())
            .finish()
    }
}

/// How an application error becomes the error response of a request
/// ([`IncomingRequest::respond`]): implement it for your error types so
/// that a handler returning `Result<T, YourError>` picks its code.
///
/// ```
/// use protoo_core::{ErrorData, IntoErrorData};
///
/// enum RoomError { NoSuchPeer, NotAllowed }
///
/// impl IntoErrorData for RoomError {
///     fn into_error_data(self) -> ErrorData {
///         match self {
///             RoomError::NoSuchPeer => ErrorData::new(404, "no such peer"),
///             RoomError::NotAllowed => ErrorData::new(403, "not allowed"),
///         }
///     }
/// }
/// assert_eq!(RoomError::NotAllowed.into_error_data().code(), Some(403));
/// ```
pub trait IntoErrorData {
    /// The error response's code and reason.
    fn into_error_data(self) -> ErrorData;
}

impl IntoErrorData for ErrorData {
    fn into_error_data(self) -> ErrorData {
        self
    }
}

/// Bad request data: 400 with serde's message.
impl IntoErrorData for serde_json::Error {
    fn into_error_data(self) -> ErrorData {
        ErrorData::new(400, self.to_string())
    }
}

/// A failed request to another peer: its error response as it is, or 500.
impl IntoErrorData for crate::RequestError {
    fn into_error_data(self) -> ErrorData {
        match self {
            crate::RequestError::Rejected(error) => error,
            other => ErrorData::new(500, other.to_string()),
        }
    }
}

/// Presence over its cap: 400 [`PRESENCE_TOO_LARGE_REASON`](crate::PRESENCE_TOO_LARGE_REASON);
/// a broadcast over the sender's fan-out rate: 429
/// [`RATE_LIMITED_REASON`](crate::RATE_LIMITED_REASON); anything else: 500
/// with the message.
impl IntoErrorData for crate::PeerError {
    fn into_error_data(self) -> ErrorData {
        match self {
            crate::PeerError::PresenceTooLarge { .. } => {
                ErrorData::new(400, crate::PRESENCE_TOO_LARGE_REASON)
            }
            crate::PeerError::RateLimited => {
                ErrorData::new(crate::RATE_LIMITED_CODE, crate::RATE_LIMITED_REASON)
            }
            other => ErrorData::new(500, other.to_string()),
        }
    }
}

macro_rules! internal_error {
    ($($ty:ty),*) => {$(
        /// 500 with the message.
        impl IntoErrorData for $ty {
            fn into_error_data(self) -> ErrorData {
                ErrorData::new(500, self.to_string())
            }
        }
    )*};
}

internal_error!(
    &str,
    String,
    protoo_codec::EncodeError,
    crate::CoreError,
    std::io::Error,
    Box<dyn std::error::Error + Send + Sync>
);

/// A notification from the remote.
///
/// It holds its frame's bytes in its peer's incoming budget
/// ([`PeerConfig::incoming_budget`](crate::PeerConfig::incoming_budget))
/// until it and its clones are dropped (or [`into_inner`](Self::into_inner)
/// takes the message out).
#[derive(Clone, Debug)]
pub struct IncomingNotification {
    notification: Notification,
    pub(crate) _charge: Option<Arc<Charge>>,
}

impl IncomingNotification {
    pub(crate) fn new(notification: Notification, charge: Option<Charge>) -> Self {
        IncomingNotification {
            notification,
            _charge: charge.map(Arc::new),
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        self.notification.method.as_str()
    }

    /// The method name as decoded (a cheap handle to the frame's bytes).
    pub(crate) fn method_name(&self) -> &Method {
        &self.notification.method
    }

    /// The notification data as raw JSON (`{}` when the remote sent none).
    pub fn payload(&self) -> &Payload {
        &self.notification.data
    }

    /// The notification data deserialised into `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.notification.data.deserialize()
    }

    /// The decoded message.
    pub fn into_inner(self) -> Notification {
        self.notification
    }
}
