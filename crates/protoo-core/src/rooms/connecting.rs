//! What [`Admit::join`] admits: a [`Connecting`] connection, either a
//! peer's [`Transport`] or a connection whose transport is made only once
//! the admission says yes (a server's WebSocket handshake).

use std::future::{self, Future};

use protoo_transport::Transport;
use tokio::time::Instant;

use crate::CoreError;
#[cfg(doc)]
use crate::rooms::Admit;

/// A connection on its way into a room, as [`Admit::join`] takes it.
///
/// A [`Transport`] is one: it exists already, and a refused admission
/// closes it. A server implements it for a handshake it has not answered
/// yet (`protoo_server`'s admission does), so that [`Admit::join`] waits
/// for the room's setup and checks the peer id *before* the connection is
/// accepted, and a refusal becomes an HTTP status instead of a WebSocket
/// that opens and closes.
///
/// The order [`Admit::join`] follows: [`deadline`](Connecting::deadline)
/// bounds the wait for the room; then either
/// [`refuse`](Connecting::refuse) (nothing else is called) or
/// [`accept`](Connecting::accept), the join, and
/// [`open`](Connecting::open) with what `accept` gave, whether the join
/// succeeded or not.
pub trait Connecting: Send + Sized {
    /// What a refused or failed admission returns: [`CoreError`], or the
    /// server's error that wraps it.
    type Error: From<CoreError> + Send;

    /// What [`accept`](Connecting::accept) gives besides the transport,
    /// handed back to [`open`](Connecting::open) once the peer is in its
    /// room: for a connection whose client must not see it open before
    /// that (so nothing sent to the room after the client's `open` misses
    /// it).
    type Opening: Send;

    /// When the wait for the room's setup gives up, failing the admission
    /// with [`CoreError::SetupTimedOut`]; `None` (the default): never.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The admission says yes: the peer's transport, and what opens it.
    fn accept(self)
    -> impl Future<Output = Result<(Transport, Self::Opening), Self::Error>> + Send;

    /// Lets the client see the connection open, after the join.
    fn open(opening: Self::Opening);

    /// The admission says no, for `error`: answer the connection (close
    /// it, or reject the handshake) and return what the join fails with.
    fn refuse(self, error: CoreError) -> Self::Error;
}

/// A transport is admitted as it is; a refusal closes it (with 4000, as
/// protoo does).
impl Connecting for Transport {
    type Error = CoreError;
    type Opening = ();

    fn accept(self) -> impl Future<Output = Result<(Transport, ()), CoreError>> + Send {
        future::ready(Ok((self, ())))
    }

    fn open((): ()) {}

    fn refuse(self, error: CoreError) -> CoreError {
        self.close();
        error
    }
}
