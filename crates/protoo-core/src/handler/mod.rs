//! Handlers: a [`Router`] of async functions by method, over a peer's
//! [`PeerEvents`](crate::PeerEvents).

mod extract;
mod impls;
mod responder;
mod router;

pub use extract::{Data, FromRequest, Parts, State};
pub use impls::{
    HandlerFuture, NotificationHandler, NotificationOutput, RequestHandler, RequestOutput,
};
pub use responder::Responder;
pub use router::{Router, UNKNOWN_METHOD_REASON};
