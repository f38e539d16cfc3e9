//! Client side: connecting to a protoo server.

use std::fmt;
#[cfg(feature = "tls")]
use std::sync::Arc;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::handshake::headers::MAX_HEADERS;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{PROTOO_SUBPROTOCOL, WsConfig, conn};
use crate::{Transport, TransportError};

/// Where and how [`connect_with`] connects: the URL, extra request headers
/// (authentication, cookies, `Origin`), and for `wss://` the TLS client
/// configuration.
///
/// ```
/// use protoo_transport::ws::ClientOptions;
/// use protoo_transport::ws::http::{header, HeaderValue};
///
/// let options = ClientOptions::new("ws://127.0.0.1:4443/?roomId=r&peerId=p")
///     .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
/// assert_eq!(options.headers().len(), 1);
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    url: String,
    headers: HeaderMap,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    /// Options for `url` (`ws://` or `wss://`), with no extra header.
    pub fn new(url: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            headers: HeaderMap::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Adds a request header (a second value for a name already present is
    /// added, not replaced). Headers of the handshake itself (`Host`,
    /// `Upgrade`, `Connection`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`) replace the generated ones; `protoo` is
    /// always among the offered subprotocols.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The extra request headers, to change them in place.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The extra request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The rustls client configuration for `wss://` URLs (its root
    /// certificates decide which servers are trusted; see
    /// [`tls::client_config`](super::tls::client_config)). Required for
    /// `wss://`: this crate bundles no root certificates (the
    /// `protoo-client` crate's client defaults to Mozilla's).
    #[cfg(feature = "tls")]
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The rustls client configuration set by
    /// [`ClientOptions::with_tls_config`], if any.
    #[cfg(feature = "tls")]
    pub fn tls_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// Whether the URL's scheme is `wss` (any case).
    pub fn is_secure(&self) -> bool {
        self.url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("wss"))
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ClientOptions");
        s.field("url", &self.url);
        // Header values may be credentials: names only.
        s.field("headers", &self.headers.keys().collect::<Vec<_>>());
        #[cfg(feature = "tls")]
        s.field("tls", &self.tls.is_some());
        s.finish()
    }
}

/// Connects to a protoo server at `url` (`ws://host:port/path?query`, or
/// `wss://` with the `tls` feature and [`connect_with`]), offering the
/// `protoo` subprotocol, and starts the connection task on the current
/// tokio runtime. `TCP_NODELAY` is set.
///
/// The whole connection (TCP, TLS, handshake) is bounded by
/// [`WsConfig::handshake_timeout`].
///
/// # Errors
///
/// [`TransportError::InvalidUrl`], [`TransportError::Io`] (connection
/// refused...), [`TransportError::Rejected`] when the server answers the
/// upgrade with an HTTP error status, [`TransportError::NoSubprotocol`] when
/// it does not select `protoo`, [`TransportError::Handshake`] for other
/// handshake failures and the timeout, [`TransportError::Tls`].
///
/// ```
/// use protoo_transport::{ws, TransportError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = ws::connect("http://example.com/", &ws::WsConfig::default()).await.unwrap_err();
/// assert!(matches!(err, TransportError::InvalidUrl(_)));
/// # }
/// ```
pub async fn connect(url: &str, config: &WsConfig) -> Result<Transport, TransportError> {
    connect_with(ClientOptions::new(url), config).await
}

/// Like [`connect`], with extra request headers and, for `wss://`, a TLS
/// configuration.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with(
    options: ClientOptions,
    config: &WsConfig,
) -> Result<Transport, TransportError> {
    match tokio::time::timeout(config.handshake_timeout, connect_inner(options, config)).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Handshake(format!(
            "timed out after {:?}",
            config.handshake_timeout
        ))),
    }
}

async fn connect_inner(
    options: ClientOptions,
    config: &WsConfig,
) -> Result<Transport, TransportError> {
    let invalid = |why: &str| TransportError::InvalidUrl(format!("{}: {why}", options.url));
    let uri: Uri = options
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let secure = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("ws") => false,
        Some(s) if s.eq_ignore_ascii_case("wss") => true,
        _ => return Err(invalid("the scheme must be ws or wss")),
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let mut request = uri
        .into_client_request()
        .map_err(|e| invalid(&e.to_string()))?;
    add_headers(&mut request, options.headers);

    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    if !secure {
        return handshake(request, tcp, config).await;
    }
    #[cfg(feature = "tls")]
    {
        let tls = options.tls.ok_or_else(|| {
            TransportError::Tls("wss:// needs ClientOptions::with_tls_config".into())
        })?;
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        handshake(request, stream, config).await
    }
    #[cfg(not(feature = "tls"))]
    {
        drop(tcp);
        Err(invalid(
            "wss:// needs the `tls` feature of protoo-transport",
        ))
    }
}

/// Adds the caller's headers (replacing generated ones of the same name)
/// and makes sure `protoo` is offered.
fn add_headers(request: &mut Request, extra: HeaderMap) {
    let headers = request.headers_mut();
    let mut current = None;
    for (name, value) in extra {
        if let Some(name) = name {
            headers.remove(&name);
            current = Some(name);
        }
        if let Some(name) = &current {
            headers.append(name.clone(), value);
        }
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if !offered
        .iter()
        .any(|p| p.eq_ignore_ascii_case(PROTOO_SUBPROTOCOL))
    {
        let mut all = offered;
        all.push(PROTOO_SUBPROTOCOL.to_owned());
        // Tokens are header-safe (they came from header values, or are ours).
        if let Ok(value) = HeaderValue::from_str(&all.join(", ")) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
}

/// The client handshake, by tokio-tungstenite; the connection then runs on
/// our connection task, from the bytes the handshake read past the
/// server's answer.
async fn handshake<S>(
    request: Request,
    stream: S,
    config: &WsConfig,
) -> Result<Transport, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // tungstenite allocates its read buffer for the stream it returns, which
    // is only taken apart here: the smallest it allows.
    let small = WebSocketConfig::default().read_buffer_size(0);
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, Recorded::new(stream), Some(small))
            .await
            .map_err(handshake_error)?;
    let selected = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !selected.is_some_and(|p| p.eq_ignore_ascii_case(PROTOO_SUBPROTOCOL)) {
        return Err(TransportError::NoSubprotocol);
    }
    let (stream, leftover) = ws.into_inner().finish()?;
    let (transport, conn) = conn::start(stream, leftover, Role::Client, config);
    conn::spawn(conn, ());
    Ok(transport)
}

/// A stream that keeps what was read from it during the handshake, so that
/// the bytes read past the server's answer (frames it sent right after its
/// `101`) are not lost with tungstenite's buffer.
struct Recorded<S> {
    io: S,
    read: Vec<u8>,
}

impl<S> Recorded<S> {
    fn new(io: S) -> Self {
        Recorded {
            io,
            read: Vec::new(),
        }
    }

    /// The stream, and what was read past the response head.
    fn finish(self) -> Result<(S, Vec<u8>), TransportError> {
        // As many headers as tungstenite's parser took.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Response::new(&mut headers).parse(&self.read) {
            Ok(httparse::Status::Complete(len)) => Ok((self.io, self.read[len..].to_vec())),
            _ => Err(TransportError::Handshake(
                "the handshake response could not be found again".into(),
            )),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        this.read.extend_from_slice(&buf.filled()[before..]);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn handshake_error(error: WsError) -> TransportError {
    match error {
        WsError::Http(response) => rejected(&response),
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
            TransportError::NoSubprotocol
        }
        WsError::Io(error) => TransportError::Io(error),
        WsError::Url(error) => TransportError::InvalidUrl(error.to_string()),
        error => TransportError::Handshake(error.to_string()),
    }
}

/// The status and reason of an HTTP rejection.
fn rejected(response: &Response) -> TransportError {
    const MAX_REASON: usize = 512;
    let status = response.status();
    let header = response
        .headers()
        .get("x-websocket-reject-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let body = || {
        let body = response.body().as_deref().unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_REASON)]);
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    };
    let reason = header
        .or_else(body)
        .unwrap_or_else(|| canonical(status).to_owned());
    TransportError::Rejected {
        status: status.as_u16(),
        reason,
    }
}

fn canonical(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        "ws://127.0.0.1:1/".into_client_request().unwrap()
    }

    #[test]
    fn protoo_is_always_offered() {
        let mut r = request();
        add_headers(&mut r, HeaderMap::new());
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], "protoo");

        let mut r = request();
        let mut extra = HeaderMap::new();
        extra.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v2"),
        );
        extra.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        add_headers(&mut r, extra);
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], "v2, protoo");
        assert_eq!(r.headers()[header::ORIGIN], "https://a.example");
    }

    #[test]
    fn handshake_headers_are_replaced_not_doubled() {
        let mut r = request();
        let mut extra = HeaderMap::new();
        extra.insert(header::HOST, HeaderValue::from_static("example.com"));
        add_headers(&mut r, extra);
        assert_eq!(r.headers().get_all(header::HOST).iter().count(), 1);
        assert_eq!(r.headers()[header::HOST], "example.com");
    }

    #[test]
    fn rejection_reason_sources() {
        let mut response = Response::new(Some(b"body reason".to_vec()));
        *response.status_mut() = StatusCode::FORBIDDEN;
        let TransportError::Rejected { status, reason } = rejected(&response) else {
            panic!()
        };
        assert_eq!((status, reason.as_str()), (403, "body reason"));

        response.headers_mut().insert(
            "x-websocket-reject-reason",
            HeaderValue::from_static("header reason"),
        );
        let TransportError::Rejected { reason, .. } = rejected(&response) else {
            panic!()
        };
        assert_eq!(reason, "header reason");

        let mut response = Response::new(None);
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let TransportError::Rejected { status, reason } = rejected(&response) else {
            panic!()
        };
        assert_eq!((status, reason.as_str()), (503, "Service Unavailable"));
    }
}
