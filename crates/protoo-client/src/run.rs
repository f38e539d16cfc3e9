//! The client's task: rounds of connection attempts, each open connection
//! served until it ends, and, with a resume window, the session kept across
//! a lost connection.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use protoo_core::{CloseReason, Initiator, Peer, PeerEvent, PeerEvents, close_code};
use tokio::sync::mpsc;

use crate::client::{Connector, LOCAL_CLOSE_REASON, Shared, State, lock};
use crate::{ClientConfig, ClientEvent};

/// The client's session: its peer (the server) and the peer's events. One
/// per connection without a resume window; with one, it goes on across
/// connections until the window passes without a connection.
struct Session {
    peer: Peer,
    events: PeerEvents,
}

/// How serving a connection ended.
enum Served {
    /// The connection was lost: reconnect. The session, when it waits for
    /// the next connection (resume window).
    Lost(Option<Session>),
    /// For good (4000, or closed locally).
    Final(Option<CloseReason>),
}

/// The client's task.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut connect: Connector,
    config: ClientConfig,
    tx: mpsc::Sender<ClientEvent>,
) {
    // A session whose connection was lost, within its window.
    let mut waiting: Option<Session> = None;
    let last = 'rounds: loop {
        let mut attempt: u32 = 1;
        loop {
            let Some(result) = meanwhile(connect(), &shared, &mut waiting).await else {
                break 'rounds None;
            };
            if shared.is_closed() {
                if let Ok(transport) = result {
                    transport.close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
                }
                break 'rounds None;
            }
            match result {
                Ok(transport) => {
                    let (session, resumed) = match waiting.take() {
                        Some(session) => match session.peer.resume(transport) {
                            Ok(()) => (session, true),
                            Err(error) => {
                                // The window passed as the connection
                                // opened (which closed it): the session is
                                // over, connect again for a new one.
                                tracing::debug!(%error, "session not resumed");
                                end_waiting(&shared, session);
                                continue;
                            }
                        },
                        None => match Peer::new("server", transport, (), config.peer.clone()) {
                            Ok((peer, events)) => (Session { peer, events }, false),
                            // Only without a runtime, and this task runs on one.
                            Err(_) => break 'rounds None,
                        },
                    };
                    match serve(&shared, session, resumed, &tx).await {
                        Served::Lost(session) => {
                            waiting = session;
                            let _ = tx.send(ClientEvent::Disconnected).await;
                            continue 'rounds;
                        }
                        Served::Final(reason) => break 'rounds reason,
                    }
                }
                Err(error) => {
                    tracing::debug!(
                        attempt,
                        error = %protoo_transport::log::Remote(&error),
                        "connection attempt failed"
                    );
                    let _ = tx.send(ClientEvent::Failed(attempt)).await;
                    if attempt > config.retry.retries {
                        break 'rounds None;
                    }
                    let wait = config.retry.delay(attempt - 1);
                    let slept = meanwhile(tokio::time::sleep(wait), &shared, &mut waiting).await;
                    if slept.is_none() {
                        break 'rounds None;
                    }
                    attempt += 1;
                }
            }
        }
    };
    *lock(&shared.state) = State::Closed;
    // The retries ran out within the window: the session ends with the
    // client (its pending requests fail with `Closed`).
    if let Some(session) = waiting {
        session
            .peer
            .close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
    }
    let _ = tx.send(ClientEvent::Close(last)).await;
}

/// Awaits `future` (an attempt, or the wait before the next), while a
/// waiting session's events are read: the end of its window ends it. `None`
/// when the client is closed meanwhile.
async fn meanwhile<F: Future>(
    future: F,
    shared: &Shared,
    waiting: &mut Option<Session>,
) -> Option<F::Output> {
    let mut future = pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return Some(output),
            () = shared.close.notified() => return None,
            () = session_over(waiting) => {
                if let Some(session) = waiting.take() {
                    tracing::debug!("resume window over: the session ended");
                    end_waiting(shared, session);
                }
            }
        }
    }
}

/// Completes when the waiting session (if any) is over: its window passed,
/// or its buffer overflowed. No event but the close comes while it waits.
async fn session_over(waiting: &mut Option<Session>) {
    let Some(session) = waiting else {
        return std::future::pending().await;
    };
    loop {
        match session.events.next().await {
            Some(PeerEvent::Closed(_)) | None => return,
            // Nothing else can come without a connection.
            Some(_) => {}
        }
    }
}

/// A waiting session is over: back to connecting without one.
fn end_waiting(shared: &Shared, session: Session) {
    let mut state = lock(&shared.state);
    if matches!(*state, State::Resuming(_)) {
        *state = State::Connecting;
    }
    drop(state);
    drop(session);
}

/// Serves one open connection of `session` (`resumed` on it) until it ends.
async fn serve(
    shared: &Shared,
    mut session: Session,
    resumed: bool,
    tx: &mpsc::Sender<ClientEvent>,
) -> Served {
    {
        let mut state = lock(&shared.state);
        if matches!(*state, State::Closed) {
            session
                .peer
                .close_with(close_code::NORMAL, LOCAL_CLOSE_REASON);
            return Served::Final(None);
        }
        *state = State::Open(session.peer.clone());
    }
    // A resumed session says so first (PeerEvent::Resumed, below).
    if !resumed {
        let _ = tx.send(ClientEvent::Open).await;
    }
    let reason = loop {
        let event = match session.events.next().await {
            Some(PeerEvent::Request(request)) => ClientEvent::Request(request),
            Some(PeerEvent::Notification(notification)) => ClientEvent::Notification(notification),
            Some(PeerEvent::Resumed { missed }) => {
                tracing::debug!(missed, "session resumed");
                let _ = tx.send(ClientEvent::Resumed { missed }).await;
                ClientEvent::Open
            }
            // The connection was lost, the session waits for the next.
            Some(PeerEvent::Disconnected(reason)) => {
                tracing::debug!(reason = %protoo_transport::log::Remote(&reason), "connection lost");
                let mut state = lock(&shared.state);
                if matches!(*state, State::Closed) {
                    return Served::Final(None);
                }
                *state = State::Resuming(session.peer.clone());
                return Served::Lost(Some(session));
            }
            Some(PeerEvent::Closed(reason)) => break Some(reason),
            None => break None,
        };
        // Events nobody reads are dropped (a request then answers 500).
        let _ = tx.send(event).await;
    };
    let mut state = lock(&shared.state);
    if matches!(*state, State::Closed) {
        return Served::Final(reason);
    }
    let final_close = reason.as_ref().is_some_and(|reason| {
        reason.initiator == Initiator::Remote && reason.code == Some(close_code::PROTOO_CLOSED)
    });
    if final_close {
        *state = State::Closed;
        Served::Final(reason)
    } else {
        *state = State::Connecting;
        Served::Lost(None)
    }
}
