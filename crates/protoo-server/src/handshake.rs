//! One connection's handshake, from its first byte to the application's
//! decision: the connection cap, reading the upgrade request within the
//! handshake deadline, the checks every request passes (origin,
//! subprotocol, token), handing the [`ConnectionRequest`] to the
//! application and carrying out its answer (the 101 and the transport, or
//! an HTTP rejection). Shared by the server's own accept loop and the axum
//! mount.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protoo_transport::TrackerGuard;
use protoo_transport::ws::{ServerTransport, read_upgrade_request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::descriptors;
use crate::request::{Decision, Opening, Pending, RequestHead};
use crate::server::Shared;
use crate::{ConnectionRequest, ServerError};

/// How long writing an HTTP rejection may take before the socket is dropped.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection, from TCP accept to the application's decision; then the
/// WebSocket transport's own task carries it.
///
/// `deadline` bounds the whole handshake (TLS included). A connection still
/// sending its request when the server stops is dropped: a graceful
/// shutdown does not wait for handshakes that may never finish.
pub(crate) async fn connection<S>(
    stream: S,
    remote_addr: SocketAddr,
    tls: bool,
    deadline: Instant,
    shared: &Arc<Shared>,
    counted: TrackerGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    if shared.over_limit() {
        tracing::debug!("connection limit reached");
        crate::metrics::upgrade_rejected(503);
        // A stopping server does not wait for the linger.
        tokio::select! {
            () = descriptors::answer_over_limit(stream) => {}
            _ = shared.stopped_accepting() => {}
        }
        return;
    }
    let read = tokio::select! {
        read = timeout_at(deadline, read_upgrade_request(stream, &config.ws)) => read,
        _ = shared.stopped_accepting() => {
            tracing::debug!("server stopped while the upgrade request was being read");
            return;
        }
    };
    let upgrade = match read {
        Ok(Ok(upgrade)) => upgrade,
        Ok(Err(error)) => {
            tracing::debug!(error = %protoo_transport::log::Remote(&error), "bad upgrade request");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out reading the request");
            return;
        }
    };
    if !upgrade.is_websocket_upgrade() {
        tracing::debug!(reason = upgrade.upgrade_error(), "not a WebSocket upgrade");
        if let Err(invalid) = protoo_transport::ws::validate_upgrade(
            upgrade.method(),
            upgrade.version(),
            upgrade.headers(),
        ) {
            crate::metrics::upgrade_rejected(invalid.status);
        }
        // Answered by the transport (400, or 426 for another version).
        let refuse = ServerTransport::builder(&config.ws).accept(upgrade);
        let _ = timeout_at(deadline, refuse).await;
        return;
    }
    let head = RequestHead {
        target: upgrade.path_and_query().to_owned(),
        headers: upgrade.headers().clone(),
        remote_addr,
        tls,
        deadline,
        identity: None,
    };
    match decide(shared, head, upgrade.wants_protoo(), deadline).await {
        Decision::Accept(give) => {
            let guard = shared.connection_guard(counted);
            let id = guard.id;
            let accepted = ServerTransport::builder(&shared.config.ws)
                .guard(guard)
                .accept_pending(upgrade);
            let (pending, opened) = match timeout_at(deadline, accepted).await {
                Ok(Ok((transport, pending))) => {
                    let (opening, opened) = Opening::new();
                    hand_over(
                        give,
                        Ok((shared.register(id, transport, Some(remote_addr)), opening)),
                    );
                    (pending, opened)
                }
                Ok(Err(error)) => return hand_over(give, Err(ServerError::Transport(error))),
                Err(_) => return hand_over(give, Err(ServerError::HandshakeTimeout)),
            };
            // The application puts the peer in its room, then opens (or
            // drops the opening); at the deadline the client is answered
            // regardless.
            let _ = timeout_at(deadline, opened).await;
            let open = pending.open();
            if tokio::time::timeout(REJECT_WRITE_TIMEOUT, open)
                .await
                .is_err()
            {
                tracing::debug!("the client did not take the 101 in time");
            }
        }
        Decision::Reject(status, reason) => {
            tracing::debug!(status, reason = %protoo_transport::log::Remote(&reason), "connection request rejected");
            let _ =
                tokio::time::timeout(REJECT_WRITE_TIMEOUT, upgrade.reject(status, &reason)).await;
        }
    }
}

/// The checks every connection request passes (origin, subprotocol, server
/// state), then the application's decision, bounded by `deadline`; a
/// rejection is counted.
pub(crate) async fn decide(
    shared: &Shared,
    head: RequestHead,
    wants_protoo: bool,
    deadline: Instant,
) -> Decision {
    let decision = checks_and_decision(shared, head, wants_protoo, deadline).await;
    if let Decision::Reject(status, _) = &decision {
        crate::metrics::upgrade_rejected(*status);
    }
    decision
}

/// [`decide`] before counting.
async fn checks_and_decision(
    shared: &Shared,
    mut head: RequestHead,
    wants_protoo: bool,
    deadline: Instant,
) -> Decision {
    let reject = |status, reason: &str| Decision::Reject(status, reason.to_owned());
    let origin = head
        .headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if !shared.config.origin_allowed(origin) {
        tracing::debug!(origin = %protoo_transport::log::Remote(origin.unwrap_or_default()), "origin not allowed");
        return reject(403, "origin not allowed");
    }
    if !wants_protoo {
        // Remote-triggered, once per connection: not worth a warning.
        tracing::debug!("invalid/missing Sec-WebSocket-Protocol");
        return reject(403, "invalid/missing Sec-WebSocket-Protocol");
    }
    if let Some(auth) = &shared.config.auth {
        match verify(auth, &head, deadline).await {
            Ok(identity) => head.identity = Some(identity),
            Err(error) => {
                tracing::debug!(
                    target = %protoo_transport::log::Remote(crate::auth::masked(&head.target)),
                    error = %error,
                    "connection refused: token"
                );
                return Decision::Reject(error.status(), error.reason());
            }
        }
    }
    let Some(requests) = shared.request_sender() else {
        return reject(503, "server shutting down");
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let sent = requests.try_send(ConnectionRequest::new(head, reply_tx));
    drop(requests);
    if let Err(error) = sent {
        return match error {
            mpsc::error::TrySendError::Full(_) => reject(503, "server busy"),
            mpsc::error::TrySendError::Closed(_) => reject(503, "server shutting down"),
        };
    }
    let mut stop = shared.stop.subscribe();
    let decision = tokio::select! {
        decision = timeout_at(deadline, reply_rx) => decision,
        _ = stop.wait_for(|stopped| *stopped) => return reject(503, "server shutting down"),
    };
    match decision {
        Ok(Ok(Decision::Reject(status, reason))) => {
            // protoo's defaults: 403 `Rejected`.
            let status = if (400..600).contains(&status) {
                status
            } else {
                403
            };
            let reason = if reason.is_empty() {
                "Rejected".to_owned()
            } else {
                reason
            };
            Decision::Reject(status, reason)
        }
        Ok(Ok(accept)) => accept,
        Ok(Err(_)) => reject(500, "connection request not answered"),
        Err(_) => reject(503, "connection request timed out"),
    }
}

/// Verifies the request's token (within the handshake's deadline).
async fn verify(
    auth: &crate::auth::Auth,
    head: &RequestHead,
    deadline: Instant,
) -> Result<protoo_core::Identity, crate::auth::AuthError> {
    let query = head.target.split_once('?').map(|(_, query)| query);
    let token =
        crate::auth::token_of(query, &head.headers).ok_or(crate::auth::AuthError::Missing)?;
    match timeout_at(deadline, auth.0.verify(&token)).await {
        Ok(verified) => verified,
        Err(_) => Err(crate::auth::AuthError::Unavailable(
            "token verification timed out".to_owned(),
        )),
    }
}

/// Gives the application its transport; closes it if nobody waits for it.
pub(crate) fn hand_over(
    give: oneshot::Sender<Result<Pending, ServerError>>,
    result: Result<Pending, ServerError>,
) {
    if let Err(Ok((transport, _opening))) = give.send(result) {
        transport.close();
    }
}
