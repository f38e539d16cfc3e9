//! The handler traits and their implementations for async functions of up
//! to eight extractor arguments: extraction, the call, and what the result
//! becomes (the request's answer, or a debug log for a notification).

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;

use protoo_codec::ErrorData;
use serde::Serialize;

use super::extract::{Event, FromRequest, Parts};
use super::responder::Slot;
use crate::{IncomingRequest, IntoErrorData, Peer, PeerEvent, Room};

/// The future of one handled event: the handler's, with the answer.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An async function that handles requests: its arguments are extractors
/// ([`FromRequest`]), its result a `Result<T: Serialize, E: IntoErrorData>`
/// ([`RequestOutput`]) that answers the request.
///
/// Implemented for every `Fn(T1, .., Tn) -> impl Future` with `n <= 8`,
/// `Clone + Send + Sync + 'static`, whose future is `Send + 'static`: an
/// `async fn` taking owned extractors.
pub trait RequestHandler<T, D, R, S>: Clone + Send + Sync + 'static {
    /// Extracts the arguments from `request`, and returns the future that
    /// runs the handler and answers the request. When an argument cannot be
    /// extracted, the request is answered with the extractor's error at
    /// once.
    fn call(
        &self,
        request: IncomingRequest,
        peer: &Peer<D>,
        room: &Room<D, R>,
        state: &S,
    ) -> HandlerFuture;
}

/// An async function that handles notifications, or a peer's close
/// ([`Router::on_close`](super::Router::on_close)): its arguments are
/// extractors ([`FromRequest`]), its result `()` or `Result<(), E>`
/// ([`NotificationOutput`]; an error is logged at debug level).
///
/// Implemented for the same functions as [`RequestHandler`].
pub trait NotificationHandler<T, D, R, S>: Clone + Send + Sync + 'static {
    /// Extracts the arguments from `event` (a notification or the close),
    /// and returns the future that runs the handler. When an argument cannot
    /// be extracted, the event is dropped (logged at debug level).
    fn call(&self, event: PeerEvent, peer: &Peer<D>, room: &Room<D, R>, state: &S)
    -> HandlerFuture;
}

/// What a request handler returns: `Result<T, E>`, answered as
/// [`IncomingRequest::respond`] does (`Ok` with `T` as the data, `Err`
/// with the error's [`IntoErrorData`] conversion).
pub trait RequestOutput {
    /// Answers `request` with this result.
    fn answer(self, request: IncomingRequest);

    /// The error, when the handler failed (for a handler that took a
    /// [`Responder`](super::Responder): its `Ok` value is not sent).
    fn into_error(self) -> Option<ErrorData>;
}

impl<T: Serialize, E: IntoErrorData> RequestOutput for Result<T, E> {
    fn answer(self, request: IncomingRequest) {
        request.respond(self);
    }

    fn into_error(self) -> Option<ErrorData> {
        self.err().map(IntoErrorData::into_error_data)
    }
}

/// A handler that cannot fail: `Result<T, Infallible>`.
impl IntoErrorData for std::convert::Infallible {
    fn into_error_data(self) -> ErrorData {
        match self {}
    }
}

/// What a notification handler returns: `()`, or `Result<(), E>` whose
/// error is logged at debug level (a notification has no answer).
pub trait NotificationOutput {
    /// The error, when the handler failed.
    fn into_error(self) -> Option<ErrorData>;
}

impl NotificationOutput for () {
    fn into_error(self) -> Option<ErrorData> {
        None
    }
}

impl<E: IntoErrorData> NotificationOutput for Result<(), E> {
    fn into_error(self) -> Option<ErrorData> {
        self.err().map(IntoErrorData::into_error_data)
    }
}

/// The event as the extractors see it.
fn event_parts<'a, D, R, S>(
    event: &'a PeerEvent,
    peer: &'a Peer<D>,
    room: &'a Room<D, R>,
    state: &'a S,
) -> Parts<'a, D, R, S> {
    let event = match event {
        PeerEvent::Request(request) => Event::Request(request),
        PeerEvent::Notification(notification) => Event::Notification(notification),
        PeerEvent::Closed(reason) => Event::Closed(reason),
        PeerEvent::Disconnected(reason) => Event::Disconnected(reason),
        PeerEvent::Resumed { missed } => Event::Resumed(*missed),
    };
    Parts::new(event, peer, room, state)
}

/// The future that runs a request handler and answers its result: directly,
/// or, when the handler took a [`Responder`](super::Responder), its error
/// only and only if the responder did not answer.
fn answered<F>(future: F, request: IncomingRequest, slot: Option<Arc<Slot>>) -> HandlerFuture
where
    F: Future + Send + 'static,
    F::Output: RequestOutput,
{
    match slot {
        None => Box::pin(async move { future.await.answer(request) }),
        Some(slot) => {
            slot.fill(request);
            Box::pin(async move {
                if let Some(error) = future.await.into_error() {
                    slot.answer_error(error);
                }
            })
        }
    }
}

/// The future that runs a notification (or close) handler and logs its
/// error. The event is kept until the handler is done: it holds its bytes
/// in the peer's incoming budget until then.
fn logged<F>(future: F, event: PeerEvent) -> HandlerFuture
where
    F: Future + Send + 'static,
    F::Output: NotificationOutput,
{
    Box::pin(async move {
        if let Some(error) = future.await.into_error() {
            log_dropped(&event, &error, "notification handler failed");
        }
    })
}

fn log_dropped(event: &PeerEvent, error: &ErrorData, message: &'static str) {
    match event {
        PeerEvent::Notification(notification) => {
            tracing::debug!(method = notification.method(), ?error, "{message}");
        }
        _ => tracing::debug!(?error, "{message}"),
    }
}

macro_rules! handlers {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, clippy::redundant_closure_call)]
        impl<F, Fut, D, R, S, $($ty,)*> RequestHandler<($($ty,)*), D, R, S> for F
        where
            F: Fn($($ty),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: RequestOutput,
            $($ty: FromRequest<D, R, S>,)*
        {
            fn call(
                &self,
                request: IncomingRequest,
                peer: &Peer<D>,
                room: &Room<D, R>,
                state: &S,
            ) -> HandlerFuture {
                let mut parts = Parts::new(Event::Request(&request), peer, room, state);
                let extracted = (|| -> Result<_, ErrorData> {
                    Ok(($($ty::from_request(&mut parts)?,)*))
                })();
                let slot = parts.responder.take();
                drop(parts);
                match extracted {
                    Ok(($($ty,)*)) => answered(self($($ty),*), request, slot),
                    Err(rejection) => {
                        request.respond(Err::<(), _>(rejection));
                        Box::pin(ready(()))
                    }
                }
            }
        }

        #[allow(non_snake_case, unused_mut, clippy::redundant_closure_call)]
        impl<F, Fut, D, R, S, $($ty,)*> NotificationHandler<($($ty,)*), D, R, S> for F
        where
            F: Fn($($ty),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: NotificationOutput,
            $($ty: FromRequest<D, R, S>,)*
        {
            fn call(
                &self,
                event: PeerEvent,
                peer: &Peer<D>,
                room: &Room<D, R>,
                state: &S,
            ) -> HandlerFuture {
                let mut parts = event_parts(&event, peer, room, state);
                let extracted = (|| -> Result<_, ErrorData> {
                    Ok(($($ty::from_request(&mut parts)?,)*))
                })();
                drop(parts);
                match extracted {
                    Ok(($($ty,)*)) => logged(self($($ty),*), event),
                    Err(rejection) => {
                        log_dropped(&event, &rejection, "event dropped: an argument did not extract");
                        Box::pin(ready(()))
                    }
                }
            }
        }
    };
}

handlers!();
handlers!(T1);
handlers!(T1, T2);
handlers!(T1, T2, T3);
handlers!(T1, T2, T3, T4);
handlers!(T1, T2, T3, T4, T5);
handlers!(T1, T2, T3, T4, T5, T6);
handlers!(T1, T2, T3, T4, T5, T6, T7);
handlers!(T1, T2, T3, T4, T5, T6, T7, T8);
