//! Server side: the HTTP upgrade request, accepting or rejecting it, and
//! transports over streams upgraded elsewhere.

use std::fmt;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::WsConfig;
use super::upgrade::{offered_protocols, protoo_subprotocol, validate_upgrade};
use crate::TransportError;

mod builder;
mod opening;

pub use builder::{ServerTransport, ServerTransportBuilder};
pub use opening::PendingOpen;

/// Most headers an upgrade request may have (more: 431).
const MAX_HEADERS: usize = 64;
/// Bytes read from the socket per call while reading the request head.
const READ_CHUNK: usize = 2048;
/// How long a refused connection's input is discarded, at most, before it
/// is closed, so that closing with unread input does not reset the
/// connection before the client has read the answer.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Reads the HTTP/1.1 request head of a WebSocket upgrade from `stream`:
/// the first step of a server-side handshake, before the application
/// decides (possibly asynchronously) whether to accept it (with
/// [`ServerTransport::builder`]) or [reject](UpgradeRequest::reject) it.
///
/// Reads at most [`WsConfig::max_handshake_bytes`]; bytes read past the
/// head (a client may send its first frames without waiting for the answer)
/// are kept for the connection. `stream` is any byte stream: a
/// `tokio::net::TcpStream` (set `TCP_NODELAY` on it when you accept it:
/// `stream.set_nodelay(true)`), or a TLS stream. There is no timeout here:
/// wrap the call, and the decision, in
/// [`WsConfig::handshake_timeout`].
///
/// # Errors
///
/// A request that cannot be accepted is answered here and reported as
/// [`TransportError::Rejected`]: 431 when its head passes the limit or has
/// more than 64 headers, 400 when it is not valid HTTP/1.x. The connection
/// ending before the head is complete is [`TransportError::Handshake`]; a
/// socket error is [`TransportError::Io`].
pub async fn read_upgrade_request<S>(
    mut stream: S,
    config: &WsConfig,
) -> Result<UpgradeRequest<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = config.max_handshake_bytes;
    let mut buf = Vec::new();
    loop {
        // Read at most one byte past the limit: enough to know it was passed.
        let want = (limit + 1).saturating_sub(buf.len()).min(READ_CHUNK);
        buf.reserve(want);
        let n = (&mut stream).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(TransportError::Handshake(
                "connection closed before the upgrade request was complete".into(),
            ));
        }
        let failure = match parse_head(&buf) {
            Ok(Some((len, _))) if len > limit => Failure::too_large(limit),
            Ok(Some((len, head))) => {
                let leftover = buf.split_off(len);
                return Ok(UpgradeRequest {
                    stream,
                    head,
                    leftover,
                });
            }
            Ok(None) if buf.len() > limit => Failure::too_large(limit),
            Ok(None) => continue,
            Err(failure) => failure,
        };
        // Best effort: the request is refused either way. The client may
        // still be sending (a head over the limit): read what it sends for
        // a moment, so that closing with unread input does not reset the
        // connection before it has read the answer.
        if respond(&mut stream, failure.status, &failure.reason, &[])
            .await
            .is_ok()
        {
            linger(&mut stream).await;
        }
        return Err(TransportError::Rejected {
            status: failure.status,
            reason: failure.reason,
        });
    }
}

/// Why a request head could not be used, and the status to answer.
struct Failure {
    status: u16,
    reason: String,
}

impl Failure {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Failure {
            status,
            reason: reason.into(),
        }
    }

    fn too_large(limit: usize) -> Self {
        Failure::new(431, format!("request head larger than {limit} bytes"))
    }
}

/// The parsed request head.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// Parses a complete request head at the start of `buf`: its length and
/// content, `None` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Failure::new(431, "too many request headers"));
        }
        Err(error) => return Err(Failure::new(400, format!("malformed request: {error}"))),
    };
    let bad = |what: &str| Failure::new(400, format!("malformed request: invalid {what}"));
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("method"))?;
    let uri = Uri::try_from(request.path.unwrap_or_default()).map_err(|_| bad("request target"))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut map = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("header value"))?;
        map.append(name, value);
    }
    Ok(Some((
        len,
        Head {
            method,
            uri,
            version,
            headers: map,
        },
    )))
}

/// A WebSocket upgrade request read by [`read_upgrade_request`], waiting to
/// be accepted ([`ServerTransportBuilder::accept`]) or
/// [rejected](UpgradeRequest::reject). Dropping it closes the connection
/// without an answer.
///
/// ```
/// use protoo_transport::ws::{self, WsConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let url = format!("ws://{}/?roomId=r1&peerId=ann%20b", listener.local_addr()?);
/// let client = tokio::spawn(async move { ws::connect(&url, &WsConfig::default()).await });
///
/// let (socket, _) = listener.accept().await?;
/// socket.set_nodelay(true)?;
/// let request = ws::read_upgrade_request(socket, &WsConfig::default()).await?;
/// assert!(request.is_websocket_upgrade() && request.wants_protoo());
/// assert_eq!(request.path(), "/");
/// assert_eq!(request.query_param("peerId").as_deref(), Some("ann b"));
/// if request.query_param("roomId").is_none() {
///     request.reject(400, "missing roomId").await?;
///     return Ok(());
/// }
/// let config = WsConfig::default();
/// let _server_side = ws::ServerTransport::builder(&config).accept(request).await?;
/// let _client_side = client.await??;
/// # Ok(())
/// # }
/// ```
pub struct UpgradeRequest<S> {
    stream: S,
    head: Head,
    leftover: Vec<u8>,
}

impl<S> UpgradeRequest<S> {
    /// The request method (`GET` for a valid upgrade).
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request target as a URI: usually a path and query
    /// (`/?roomId=r&peerId=p`).
    pub fn uri(&self) -> &Uri {
        &self.head.uri
    }

    /// The HTTP version of the request.
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The path of the request target (`/` for `/?roomId=r`).
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The query of the request target, without `?`, still percent-encoded.
    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// The path and query of the request target (`/?roomId=r&peerId=p`).
    pub fn path_and_query(&self) -> &str {
        self.head
            .uri
            .path_and_query()
            .map_or_else(|| self.head.uri.path(), |pq| pq.as_str())
    }

    /// The first value of the query parameter `name`, percent-decoded (`+`
    /// is a space, as in HTML forms and Node's `querystring`, which
    /// protoo-server applications use). Invalid UTF-8 is replaced by U+FFFD.
    /// `None` when absent; `Some("")` for `?name` or `?name=`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query()?, name)
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The `Origin` header: the web page's origin for a browser client (check
    /// it against an allow-list to prevent cross-site WebSocket hijacking).
    pub fn origin(&self) -> Option<&str> {
        self.header_str(header::ORIGIN)
    }

    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in
    /// order.
    pub fn protocols(&self) -> impl Iterator<Item = &str> + '_ {
        offered_protocols(&self.head.headers)
    }

    /// Whether the client offers the `protoo` subprotocol (compared without
    /// regard to case, like protoo-server). protoo-server rejects other
    /// clients with 403 `invalid/missing Sec-WebSocket-Protocol`.
    pub fn wants_protoo(&self) -> bool {
        self.protoo_token().is_some()
    }

    fn protoo_token(&self) -> Option<&str> {
        protoo_subprotocol(&self.head.headers)
    }

    /// Whether this is a valid WebSocket upgrade request: `GET`, HTTP/1.1,
    /// `Upgrade: websocket`, `Connection: upgrade`,
    /// `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.upgrade_error().is_none()
    }

    /// Why this is not a valid WebSocket upgrade request (for a 400 answer),
    /// or `None` when it is one.
    pub fn upgrade_error(&self) -> Option<&'static str> {
        self.check().map(|(_, reason)| reason)
    }

    /// The status and reason to refuse an invalid upgrade with.
    fn check(&self) -> Option<(u16, &'static str)> {
        validate_upgrade(&self.head.method, self.head.version, &self.head.headers)
            .err()
            .map(|invalid| (invalid.status, invalid.reason))
    }

    fn header_str(&self, name: HeaderName) -> Option<&str> {
        self.head.headers.get(name)?.to_str().ok()
    }

    /// The underlying stream (for example to read its peer address).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Bytes the client sent after the request head (usually none).
    pub fn leftover(&self) -> &[u8] {
        &self.leftover
    }
}

impl<S> UpgradeRequest<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Checks the upgrade (answering an invalid one: 400, or 426 for
    /// another WebSocket version) and gives the stream, the bytes read past
    /// the head, and the `101 Switching Protocols` to write.
    pub(super) async fn prepare(mut self) -> Result<(S, Vec<u8>, String), TransportError> {
        if let Some((status, reason)) = self.check() {
            let extra: &[(&str, &str)] = if status == 426 {
                &[("Sec-WebSocket-Version", "13")]
            } else {
                &[]
            };
            respond(&mut self.stream, status, reason, extra).await?;
            if !self.leftover.is_empty() {
                linger(&mut self.stream).await;
            }
            return Err(TransportError::Rejected {
                status,
                reason: reason.to_owned(),
            });
        }
        let key = self
            .head
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|key| key.as_bytes())
            .unwrap_or_default();
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            derive_accept_key(key.trim_ascii())
        );
        if let Some(token) = self.protoo_token() {
            // Echo the client's spelling: clients compare it exactly.
            response.push_str("Sec-WebSocket-Protocol: ");
            response.push_str(token);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        let UpgradeRequest {
            stream, leftover, ..
        } = self;
        Ok((stream, leftover, response))
    }

    /// Rejects the upgrade: answers `status` (the standard reason phrase in
    /// the status line, `reason` in protoo's `X-WebSocket-Reject-Reason`
    /// header and as a `text/plain` body), with `Connection: close`, then
    /// closes the connection. (When the client had sent bytes after its
    /// request, input is discarded for up to a second first, so that
    /// closing does not reset the connection before the client has read the
    /// answer.) A status outside 200..=999 is sent as 500.
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] when the answer could not be written.
    pub async fn reject(mut self, status: u16, reason: &str) -> Result<(), TransportError> {
        let status = if (200..=999).contains(&status) {
            status
        } else {
            500
        };
        respond(&mut self.stream, status, reason, &[]).await?;
        if !self.leftover.is_empty() {
            linger(&mut self.stream).await;
        }
        Ok(())
    }
}

impl<S> fmt::Debug for UpgradeRequest<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeRequest")
            .field("method", &self.head.method)
            .field("uri", &self.head.uri)
            .field("version", &self.head.version)
            .field("headers", &self.head.headers)
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

/// Writes a complete non-101 HTTP response and shuts the write side down.
async fn respond<S>(
    stream: &mut S,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
) -> Result<(), TransportError>
where
    S: AsyncWrite + Unpin,
{
    let phrase = StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Rejected");
    // No control characters in a header (no response splitting).
    let header_reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut response = format!(
        "HTTP/1.1 {status} {phrase}\r\n\
         Connection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n",
        reason.len()
    );
    if !header_reason.trim().is_empty() {
        response.push_str("X-WebSocket-Reject-Reason: ");
        response.push_str(header_reason.trim());
        response.push_str("\r\n");
    }
    for (name, value) in extra_headers {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(reason);
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

/// Discards input until the client closes, for at most [`REJECT_LINGER`].
async fn linger<S>(stream: &mut S)
where
    S: AsyncRead + Unpin,
{
    let drain = async {
        let mut scratch = [0u8; 256];
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REJECT_LINGER, drain).await;
}

/// The first value of the parameter `name` in a query string (without the
/// `?`), percent-decoded (`+` reads as a space, invalid escapes stay as they
/// are, invalid UTF-8 becomes U+FFFD), by `form_urlencoded`: the rules of
/// HTML forms and Node's `querystring`, which protoo-server applications use.
///
/// ```
/// use protoo_transport::ws::query_param;
///
/// assert_eq!(query_param("roomId=a%20b&peerId=p+1", "peerId").as_deref(), Some("p 1"));
/// assert_eq!(query_param("roomId=a", "peerId"), None);
/// ```
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let decode = |value: &str| query_param(&format!("v={value}"), "v").unwrap();
        assert_eq!(decode("ann%20b"), "ann b");
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("%E2%82%AC"), "€");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%FF"), "\u{FFFD}");
        assert_eq!(query_param("a%20b=1", "a b").as_deref(), Some("1"));
        assert_eq!(query_param("x&y=", "x").as_deref(), Some(""));
        assert_eq!(query_param("x=1&x=2", "x").as_deref(), Some("1"));
    }

    #[test]
    fn parses_a_head_and_keeps_what_follows() {
        let raw = b"GET /chat?roomId=r&x=%41 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Protocol: a, Protoo\r\n\r\nrest";
        let (len, head) = parse_head(raw).ok().flatten().expect("complete head");
        assert_eq!(&raw[len..], b"rest");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/chat");
        assert_eq!(head.headers.get("host").unwrap(), "h");
        assert!(
            parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n")
                .ok()
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_head(b"\x01\x02 nonsense\r\n\r\n")
                .err()
                .unwrap()
                .status,
            400
        );
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(raw.as_bytes()).err().unwrap().status, 431);
    }
}
