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

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use protoo_server::axum::Mount;
use tokio::net::TcpListener;

/// Scripts, styles, images and connections from this server only; no
/// inline script or style, no plugin, no framing, no form posting.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's file at `path`: its content type and body.
fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let body: &[u8] = match path {
        "/" => include_bytes!("page/index.html"),
        "/app.js" => include_bytes!("page/app.js"),
        "/app.css" => include_bytes!("page/app.css"),
        "/protoo-client.js" => include_bytes!("page/protoo-client.js"),
        "/favicon.svg" => include_bytes!("page/favicon.svg"),
        _ => return None,
    };
    let content_type = match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/html; charset=utf-8",
    };
    Some((content_type, body))
}

/// The headers of every page file, beside its content type.
const HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-cache"),
];

/// Listens on `addr` and serves `mount` and the page there, in a task of
/// its own. Returns the bound address (the port the system chose for 0).
///
/// The mount's listener applies the limits a bound server applies before
/// the upgrade: a request head must arrive within the WebSocket handshake
/// timeout and be at most `max_handshake_bytes` long (431 beyond), and at
/// most `max_connections` connections are served at a time (503 beyond).
pub(crate) async fn serve(addr: SocketAddr, mount: Mount) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let listener = mount.listener(listener);
    let app = Router::new().fallback(route).with_state(mount);
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the HTTP server failed");
        }
    });
    Ok(local_addr)
}

/// Every request: upgrades go to the protoo mount (which answers invalid
/// ones with the bound server's statuses), `GET`/`HEAD` of a page file get
/// the file, anything else is an upgrade error as with a bound server.
async fn route(State(mount): State<Mount>, request: Request) -> Response {
    match asset(request.uri().path()) {
        Some((content_type, body))
            if !request.headers().contains_key(header::UPGRADE)
                && matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            let mut response = Response::new(Body::from(body));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            for (name, value) in HEADERS {
                headers.insert(name, HeaderValue::from_static(value));
            }
            response
        }
        _ => upgrade(&mount, request).await,
    }
}

/// The mount's answer. A refusal ends the connection, as a bound server's
/// does: a client that did not get its WebSocket has nothing more to say.
async fn upgrade(mount: &Mount, request: Request) -> Response {
    let mut response = mount.upgrade(request).await;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    response
}
