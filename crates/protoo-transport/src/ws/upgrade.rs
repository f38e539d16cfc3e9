//! What makes an HTTP request a valid protoo WebSocket upgrade, written once
//! for every server side: the bound server ([`UpgradeRequest`]) and a
//! server mounted on an HTTP framework (`protoo-server`'s axum mount) both
//! check requests with these functions, so they refuse the same requests
//! with the same status and reason.
//!
//! [`UpgradeRequest`]: super::UpgradeRequest

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Version};

use super::PROTOO_SUBPROTOCOL;

/// Why a request is not a valid WebSocket upgrade: the HTTP status to
/// refuse it with (400, or 426 for another WebSocket version, which also
/// calls for a `Sec-WebSocket-Version: 13` header) and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUpgrade {
    /// The HTTP status: 400 or 426.
    pub status: u16,
    /// What is wrong, for the response body.
    pub reason: &'static str,
}

/// Checks a WebSocket upgrade request (RFC 6455 4.2.1): `GET`, HTTP/1.1,
/// `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13`
/// and a `Sec-WebSocket-Key`, which it returns (trimmed).
///
/// ```
/// use protoo_transport::ws::{http, validate_upgrade};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("upgrade", "websocket".parse().unwrap());
/// headers.insert("connection", "keep-alive, Upgrade".parse().unwrap());
/// headers.insert("sec-websocket-version", "13".parse().unwrap());
/// headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
/// let key = validate_upgrade(&http::Method::GET, http::Version::HTTP_11, &headers);
/// assert_eq!(key, Ok("dGhlIHNhbXBsZSBub25jZQ=="));
///
/// headers.insert("sec-websocket-version", "8".parse().unwrap());
/// let refused = validate_upgrade(&http::Method::GET, http::Version::HTTP_11, &headers);
/// assert_eq!(refused.unwrap_err().status, 426);
/// ```
pub fn validate_upgrade<'h>(
    method: &Method,
    version: Version,
    headers: &'h HeaderMap,
) -> Result<&'h str, InvalidUpgrade> {
    let refuse = |status, reason| Err(InvalidUpgrade { status, reason });
    if method != Method::GET {
        return refuse(400, "WebSocket upgrade must be a GET request");
    }
    if version != Version::HTTP_11 {
        return refuse(400, "WebSocket upgrade must be HTTP/1.1");
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return refuse(400, "missing Upgrade: websocket");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return refuse(400, "missing Connection: upgrade");
    }
    if header_str(headers, header::SEC_WEBSOCKET_VERSION).map(str::trim) != Some("13") {
        return refuse(426, "Sec-WebSocket-Version must be 13");
    }
    match header_str(headers, header::SEC_WEBSOCKET_KEY).map(str::trim) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => refuse(400, "missing Sec-WebSocket-Key"),
    }
}

/// The subprotocols a client offers (`Sec-WebSocket-Protocol`), in order.
pub fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
}

/// The client's own spelling of the `protoo` subprotocol (compared without
/// regard to case, like protoo-server), to echo in the 101 response; `None`
/// when it does not offer it (protoo-server then refuses with 403
/// `invalid/missing Sec-WebSocket-Protocol`).
pub fn protoo_subprotocol(headers: &HeaderMap) -> Option<&str> {
    offered_protocols(headers).find(|protocol| protocol.eq_ignore_ascii_case(PROTOO_SUBPROTOCOL))
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
