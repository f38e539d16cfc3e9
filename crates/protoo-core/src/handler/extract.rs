//! Extractors: what a handler takes as arguments ([`FromRequest`]), read
//! from the event being handled ([`Parts`]): typed data, the raw payload,
//! the peer, the room, the application state, the method name, the close
//! reason, a [`Responder`].

use std::fmt;
use std::sync::Arc;

use protoo_codec::{ErrorData, Method, Payload};
use protoo_transport::CloseReason;
use serde::de::DeserializeOwned;

use super::responder::{Responder, Slot};
use crate::{IncomingNotification, IncomingRequest, IntoErrorData, Peer, Room};

/// The event a handler runs for.
pub(crate) enum Event<'a> {
    Request(&'a IncomingRequest),
    Notification(&'a IncomingNotification),
    Closed(&'a CloseReason),
    Disconnected(&'a CloseReason),
    Resumed(usize),
}

/// What extractors read: the event being handled, its peer and room, and
/// the router's state.
pub struct Parts<'a, D, R, S> {
    event: Event<'a>,
    peer: &'a Peer<D>,
    room: &'a Room<D, R>,
    state: &'a S,
    /// Set when a [`Responder`] was extracted.
    pub(crate) responder: Option<Arc<Slot>>,
}

impl<'a, D, R, S> Parts<'a, D, R, S> {
    pub(crate) fn new(
        event: Event<'a>,
        peer: &'a Peer<D>,
        room: &'a Room<D, R>,
        state: &'a S,
    ) -> Self {
        Parts {
            event,
            peer,
            room,
            state,
            responder: None,
        }
    }

    /// The request or notification method (`None` for the close).
    pub fn method(&self) -> Option<&str> {
        self.method_name().map(Method::as_str)
    }

    fn method_name(&self) -> Option<&Method> {
        match self.event {
            Event::Request(request) => Some(request.method_name()),
            Event::Notification(notification) => Some(notification.method_name()),
            Event::Closed(_) | Event::Disconnected(_) | Event::Resumed(_) => None,
        }
    }

    /// The request or notification data (`None` for the close).
    pub fn payload(&self) -> Option<&Payload> {
        match self.event {
            Event::Request(request) => Some(request.payload()),
            Event::Notification(notification) => Some(notification.payload()),
            Event::Closed(_) | Event::Disconnected(_) | Event::Resumed(_) => None,
        }
    }

    /// Whether the event is a request (it is answered).
    pub fn is_request(&self) -> bool {
        matches!(self.event, Event::Request(_))
    }

    /// Why the peer closed, for the close handler
    /// ([`Router::on_close`](super::Router::on_close)), or why its
    /// transport was lost, for the disconnect handler
    /// ([`Router::on_disconnected`](super::Router::on_disconnected)).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match self.event {
            Event::Closed(reason) | Event::Disconnected(reason) => Some(reason),
            _ => None,
        }
    }

    /// How many frames a resume wrote again, for the resume handler
    /// ([`Router::on_resumed`](super::Router::on_resumed)).
    pub fn missed(&self) -> Option<usize> {
        match self.event {
            Event::Resumed(missed) => Some(missed),
            _ => None,
        }
    }

    /// The peer the event comes from.
    pub fn peer(&self) -> &Peer<D> {
        self.peer
    }

    /// The peer's room.
    pub fn room(&self) -> &Room<D, R> {
        self.room
    }

    /// The router's state ([`Router::with_state`](super::Router::with_state)).
    pub fn state(&self) -> &S {
        self.state
    }
}

impl<D, R, S> fmt::Debug for Parts<'_, D, R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parts")
            .field("method", &self.method())
            .field("peer_id", &self.peer.id())
            .finish_non_exhaustive()
    }
}

/// A handler argument, taken from the event being handled.
///
/// When it cannot be taken, the error is the request's answer (the handler
/// does not run); for a notification or a close, the event is dropped and
/// the error logged at debug level. Extraction is synchronous: it happens
/// as the event is read, before the handler's future starts.
///
/// ```
/// use protoo_core::ErrorData;
/// use protoo_core::handler::{FromRequest, Parts};
///
/// /// The peer id, as an extractor of its own.
/// struct PeerId(String);
///
/// impl<D, R, S> FromRequest<D, R, S> for PeerId {
///     fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
///         Ok(PeerId(parts.peer().id().to_owned()))
///     }
/// }
/// ```
pub trait FromRequest<D, R, S>: Sized {
    /// Takes the argument from `parts`.
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData>;
}

/// The event's data deserialised into `T`: when it does not fit, a request
/// is answered 400 with serde's message (the handler does not run) and a
/// notification is dropped (logged at debug level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned, D, R, S> FromRequest<D, R, S> for Data<T> {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        match parts.payload() {
            Some(payload) => payload
                .deserialize()
                .map(Data)
                .map_err(IntoErrorData::into_error_data),
            None => Err(ErrorData::new(500, "no data in a close")),
        }
    }
}

/// The router's state ([`Router::with_state`](super::Router::with_state)),
/// cloned: put it in an `Arc` if cloning it is not cheap.
#[derive(Clone, Copy, Debug, Default)]
pub struct State<S>(pub S);

impl<D, R, S: Clone> FromRequest<D, R, S> for State<S> {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        Ok(State(parts.state.clone()))
    }
}

/// The event's data as raw JSON (a cheap handle to the frame's bytes).
impl<D, R, S> FromRequest<D, R, S> for Payload {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        parts
            .payload()
            .cloned()
            .ok_or_else(|| ErrorData::new(500, "no data in a close"))
    }
}

/// The method name (a cheap handle to the frame's bytes), for a fallback.
impl<D, R, S> FromRequest<D, R, S> for Method {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        parts
            .method_name()
            .cloned()
            .ok_or_else(|| ErrorData::new(500, "no method in a close"))
    }
}

/// The peer the event comes from.
impl<D, R, S> FromRequest<D, R, S> for Peer<D> {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        Ok(parts.peer.clone())
    }
}

/// The peer's room.
impl<D, R, S> FromRequest<D, R, S> for Room<D, R> {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        Ok(parts.room.clone())
    }
}

/// How many frames the resume of a peer's session wrote again on its new
/// connection ([`PeerEvent::Resumed`](crate::PeerEvent::Resumed)): for the
/// resume handler ([`Router::on_resumed`](super::Router::on_resumed)) only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed(pub usize);

impl<D, R, S> FromRequest<D, R, S> for Missed {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        parts
            .missed()
            .map(Missed)
            .ok_or_else(|| ErrorData::new(500, "no resume outside the resume handler"))
    }
}

/// Why the peer closed, or why its transport was lost: for the close and
/// disconnect handlers only.
impl<D, R, S> FromRequest<D, R, S> for CloseReason {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        parts
            .close_reason()
            .cloned()
            .ok_or_else(|| ErrorData::new(500, "no close reason outside the close handler"))
    }
}

/// Answers the request from inside the handler: for request handlers only.
impl<D, R, S> FromRequest<D, R, S> for Responder {
    fn from_request(parts: &mut Parts<'_, D, R, S>) -> Result<Self, ErrorData> {
        if !parts.is_request() {
            return Err(ErrorData::new(500, "no responder outside a request"));
        }
        let slot = parts.responder.get_or_insert_with(Slot::new);
        Ok(Responder::new(slot.clone()))
    }
}
