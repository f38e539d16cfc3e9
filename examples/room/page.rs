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
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use protoo_server::axum::Mount;
use tokio::net::TcpListener;

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
