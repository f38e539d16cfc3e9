//! [`Responder`]: the extractor that answers a request before its handler
//! returns, so the handler can keep working after the answer.

use std::fmt;
use std::sync::{Arc, Mutex};

use protoo_codec::ErrorData;
use serde::Serialize;

use crate::IncomingRequest;
use crate::sync::lock;

/// Where the request of a handler that took a [`Responder`] waits for its
/// answer: shared by the responder and the router, which answers the
/// handler's error when the responder has not answered yet.
pub(crate) struct Slot(Mutex<Option<IncomingRequest>>);

impl Slot {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Slot(Mutex::new(None)))
    }

    /// Puts the request in, once every extractor ran.
    pub(crate) fn fill(&self, request: IncomingRequest) {
        *lock(&self.0) = Some(request);
    }

    /// The request, if nobody answered it yet.
    fn take(&self) -> Option<IncomingRequest> {
        lock(&self.0).take()
    }

    /// The handler failed: answers its error unless the responder already
    /// answered.
    pub(crate) fn answer_error(&self, error: ErrorData) {
        match self.take() {
            Some(request) => request.respond(Err::<(), _>(error)),
            None => tracing::debug!(?error, "handler failed after answering"),
        }
    }
}

/// Answers a request from inside its handler, which then keeps working:
/// mediasoup-demo's `join` answers the peer list, then creates the
/// consumers for the newcomer.
///
/// It is an extractor of request handlers (in a notification handler it is
/// refused, and the notification dropped). Its methods consume it, so it
/// answers at most once. The handler's own result then decides what else
/// happens:
///
/// - the handler returns `Err` before the responder answered: the error
///   answers (as it would without a responder);
/// - it returns `Err` after the responder answered: the error is not sent
///   (the request has its answer) and is logged at debug level;
/// - it returns `Ok`: the `Ok` value is not sent (return `Ok(())`); a
///   responder dropped unanswered answers 500 `request not answered`, as a
///   dropped [`IncomingRequest`] does, and one moved to another task answers
///   from there.
///
/// ```
/// use protoo_core::handler::{Data, Responder};
/// use protoo_core::ErrorData;
///
/// #[derive(serde::Deserialize)]
/// struct Join { display_name: String }
///
/// async fn join(responder: Responder, Data(join): Data<Join>) -> Result<(), ErrorData> {
///     if join.display_name.is_empty() {
///         // Not answered yet: this error is the answer (403).
///         return Err(ErrorData::new(403, "a display name is required"));
///     }
///     responder.accept(&serde_json::json!({"peers": []}));
///     // The remote has its answer; work on (consumers, announcements).
///     Ok(())
/// }
/// ```
pub struct Responder {
    slot: Arc<Slot>,
}

impl Responder {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        Responder { slot }
    }

    /// Answers with a success response carrying `data`
    /// ([`IncomingRequest::accept`]).
    pub fn accept(self, data: &(impl Serialize + ?Sized)) {
        if let Some(request) = self.slot.take() {
            request.accept(data);
        }
    }

    /// Answers with an error response ([`IncomingRequest::reject`]).
    pub fn reject(self, code: u16, reason: impl AsRef<str>) {
        if let Some(request) = self.slot.take() {
            request.reject(code, reason);
        }
    }

    /// Answers `Ok(data)` or `Err(error)` ([`IncomingRequest::respond`]).
    pub fn respond<T: Serialize, E: crate::IntoErrorData>(self, result: Result<T, E>) {
        if let Some(request) = self.slot.take() {
            request.respond(result);
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("request", &*lock(&self.slot.0))
            .finish()
    }
}
