//! The room example's HTTP side: one axum application on the listening
//! port that answers WebSocket upgrades (any path) through the protoo
//! mount, and serves the demo page at `/` to requests without an upgrade.
//!
//! The page's files are in `page/` and built into the binary, so the
//! example runs from any folder. `page/protoo-client.js` is the real
//! `protoo-client@4.0.8` bundled for the browser: `npm run bundle` in
//! `tests/browser` writes it, and `cargo xtask ci` checks that the committed
//! file is what that command produces.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use protoo_server::ServerConfig;
use protoo_server::axum::Mount;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Scripts, styles, images and connections from this server only; no
/// inline script or style, no plugin, no framing, no form posting.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("page/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("page/app.css"),
    },
    Asset {
        path: "/protoo-client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/protoo-client.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("page/favicon.svg"),
    },
];

/// Listens on `addr` and serves `mount` and the page there, in a task of
/// its own. Returns the bound address (the port the system chose for 0).
///
/// Each TCP connection is served by hyper (HTTP/1.1 with upgrades) under
/// the limits a bound server applies before the upgrade: a request head
/// must arrive within the WebSocket handshake timeout, and at most
/// `max_connections` connections wait for one at a time (an upgraded
/// connection is the mount's and counts against its own limit).
pub(crate) async fn serve(
    addr: SocketAddr,
    mount: Mount,
    config: &ServerConfig,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let app = Router::new().fallback(route).with_state(mount);
    let head_timeout = config.ws.handshake_timeout;
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off
                    // briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small protoo messages go out at once, as with a bound server.
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote_addr));
                app.clone().oneshot(request.map(Body::new))
            });
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(head_timeout)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                if let Err(error) = connection.await {
                    tracing::debug!(%error, %remote_addr, "HTTP connection ended");
                }
                drop(slot);
            });
        }
    });
    Ok(local_addr)
}

/// Every request: upgrades go to the protoo mount (which answers invalid
/// ones with the bound server's statuses), `GET`/`HEAD` of a page file get
/// the file, anything else is an upgrade error as with a bound server.
async fn route(State(mount): State<Mount>, request: Request) -> Response {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.path == request.uri().path());
    match asset {
        Some(asset)
            if !request.headers().contains_key(header::UPGRADE)
                && matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            page(asset)
        }
        _ => upgrade(&mount, request).await,
    }
}

/// The mount's answer. A refusal ends the connection, as a bound server's
/// does: a client that did not get its WebSocket has nothing more to say.
async fn upgrade(mount: &Mount, request: Request) -> Response {
    let mut response = mount.upgrade(request).await;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A page file with its content type and the page's security headers.
fn page(asset: &Asset) -> Response {
    let mut response = Response::new(Body::from(asset.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *response.status_mut() = StatusCode::OK;
    response
}
