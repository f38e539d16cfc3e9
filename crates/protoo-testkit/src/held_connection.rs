//! A connection whose admission a test holds between "room ready, place
//! held" and "accepted": the state a server's handshake is in while it
//! writes its `101`.

use protoo_core::transport::Transport;
use protoo_core::{Connecting, CoreError};
use tokio::sync::oneshot;

/// A [`Connecting`] transport whose [`accept`](Connecting::accept) tells
/// the receiver [`HeldConnection::new`] gave and then waits for [`Release`] (or for the
/// release to be dropped).
#[derive(Debug)]
pub struct HeldConnection {
    transport: Transport,
    held: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// Lets a [`HeldConnection`]'s admission go on.
#[derive(Debug)]
pub struct Release(oneshot::Sender<()>);

impl Release {
    /// Lets the held admission go on.
    pub fn release(self) {
        let _ = self.0.send(());
    }
}

impl HeldConnection {
    /// `transport`, held at its acceptance; the receiver fires once the
    /// admission holds its place in the ready room.
    pub fn new(transport: Transport) -> (HeldConnection, oneshot::Receiver<()>, Release) {
        let (held, held_rx) = oneshot::channel();
        let (release_tx, release) = oneshot::channel();
        let connection = HeldConnection {
            transport,
            held,
            release,
        };
        (connection, held_rx, Release(release_tx))
    }
}

impl Connecting for HeldConnection {
    type Error = CoreError;
    type Opening = ();

    async fn accept(self) -> Result<(Transport, ()), CoreError> {
        let _ = self.held.send(());
        let _ = self.release.await;
        Ok((self.transport, ()))
    }

    fn open((): ()) {}

    fn refuse(self, error: CoreError) -> CoreError {
        self.transport.refuse(error)
    }
}
