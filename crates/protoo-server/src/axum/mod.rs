//! Mounting a [`WebSocketServer`] on a route of an axum application: the
//! Rust counterpart of handing protoo an existing `http.Server`.
//!
//! [`WebSocketServer::mounted`] gives a server without a listener of its
//! own and a [`Mount`] to route to. Connection requests reach the
//! application's [`serve`](WebSocketServer::serve) handler exactly as with
//! a bound server, with the same checks and limits; the HTTP server stays
//! the application's. Serve it on [`Mount::listener`], which applies the
//! limits a bound server applies before the upgrade (connection cap, head
//! size, header timeout), and with
//! `into_make_service_with_connect_info::<SocketAddr>()` for
//! [`ConnectionRequest::remote_addr`](crate::ConnectionRequest::remote_addr)
//! to be the client's address.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use protoo_server::{ServerConfig, WebSocketServer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let (server, mount) = WebSocketServer::mounted(ServerConfig::default());
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .route("/protoo", mount.route());
//! let _handle = server.serve(|request| async move {
//!     // accept or reject, as with a bound server
//! #   drop(request);
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(
//!     mount.listener(listener),
//!     app.into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use protoo_transport::ws;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::request::{Decision, Opening, RequestHead};

mod listener;

use crate::handshake::{decide, hand_over};
use crate::server::Shared;
use crate::{ServerConfig, WebSocketServer};
pub use listener::{LimitedIo, LimitedListener, ServeListener, limited};

/// The route handler of a mounted [`WebSocketServer`]. Cheap to clone.
#[derive(Clone)]
pub struct Mount {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount").finish_non_exhaustive()
    }
}

impl WebSocketServer {
    /// A server without a listener, fed by the returned [`Mount`] on a route
    /// of an axum application.
    pub fn mounted(config: ServerConfig) -> (WebSocketServer, Mount) {
        let server = WebSocketServer::unbound(config);
        let mount = Mount {
            shared: server.handle().shared.clone(),
        };
        (server, mount)
    }
}

impl Mount {
    /// Wraps `listener` for `axum::serve` with this server's limits before
    /// the upgrade: its connection cap (503 beyond), head-size limit (431
    /// beyond) and header timeout, as a bound server applies them. See
    /// [`limited`].
    pub fn listener(&self, listener: tokio::net::TcpListener) -> ServeListener {
        limited(listener, &self.shared.config)
    }

    /// A `GET` route serving protoo WebSocket upgrades.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let mount = self.clone();
        get(move |request: Request| {
            let mount = mount.clone();
            async move { mount.upgrade(request).await }
        })
    }

    /// Answers one upgrade request.
    pub async fn upgrade(&self, mut request: Request) -> Response {
        let shared = &self.shared;
        if shared.is_stopped() {
            crate::metrics::upgrade_rejected(503);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "server shutting down");
        }
        let counted = shared.enter();
        if shared.over_limit() {
            crate::metrics::upgrade_rejected(503);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
        }
        let headers = request.headers();
        let key = match ws::validate_upgrade(request.method(), request.version(), headers) {
            Ok(key) => key.to_owned(),
            Err(invalid) => {
                crate::metrics::upgrade_rejected(invalid.status);
                let status =
                    StatusCode::from_u16(invalid.status).unwrap_or(StatusCode::BAD_REQUEST);
                let mut response = plain(status, invalid.reason);
                if status == StatusCode::UPGRADE_REQUIRED {
                    // RFC 6455 4.4: name the version this server speaks.
                    response.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }
                return response;
            }
        };
        let protoo = ws::protoo_subprotocol(headers).map(str::to_owned);
        let connect_info = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let remote_addr = connect_info.unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let head = RequestHead {
            target: request.uri().path_and_query().map_or_else(
                || request.uri().path().to_owned(),
                |pq| pq.as_str().to_owned(),
            ),
            headers: headers.clone(),
            remote_addr,
            tls: request.uri().scheme_str() == Some("https"),
            deadline: Instant::now() + shared.config.ws.handshake_timeout,
            identity: None,
        };
        let deadline = head.deadline;
        let give = match decide(shared, head, protoo.is_some(), deadline).await {
            Decision::Accept(give) => give,
            Decision::Reject(status, reason) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return plain(status, &reason);
            }
        };
        // The transport exists before the 101 goes out (hyper writes it once
        // this handler returns): the application puts the peer in its room
        // first, then opens, and only then does the client see the open.
        let on_upgrade = hyper::upgrade::on(&mut request);
        let upgraded = async move {
            match tokio::time::timeout_at(deadline, on_upgrade).await {
                Ok(Ok(upgraded)) => Ok(TokioIo::new(upgraded)),
                Ok(Err(error)) => Err(std::io::Error::other(error)),
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            }
        };
        let guard = shared.connection_guard(counted);
        let id = guard.id;
        let transport = ws::ServerTransport::builder(&shared.config.ws)
            .guard(guard)
            .upgrade(upgraded);
        let (opening, opened) = Opening::new();
        hand_over(
            give,
            Ok((shared.register(id, transport, connect_info), opening)),
        );
        let _ = tokio::time::timeout_at(deadline, opened).await;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(Ok(protocol)) = protoo.map(|p| HeaderValue::from_str(&p)) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// A refusal: `reason` as the body and, as protoo clients expect, in the
/// `X-WebSocket-Reject-Reason` header.
fn plain(status: StatusCode, reason: &str) -> Response {
    let mut response = Response::new(Body::from(reason.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(value) = HeaderValue::from_str(reason) {
        headers.insert("x-websocket-reject-reason", value);
    }
    response
}
