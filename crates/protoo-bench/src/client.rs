//! A minimal protoo client: raw protoo JSON over tokio-tungstenite.
//!
//! Kept independent of the protoo-rs crates on purpose, so that the harness
//! measures the servers and nothing of ours sits on the client side.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A connected protoo client.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Nanoseconds since the first call in this process: the clock of every
/// timestamp the harness puts into messages.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `HOST:PORT`.
    addr: String,
    /// `ws://HOST:PORT/`.
    base: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/` (the path is ignored).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("--url must start with ws://, got {url}"))?;
        let addr = rest.split('/').next().unwrap_or_default().to_owned();
        if addr.is_empty() {
            return Err(format!("--url has no HOST:PORT: {url}"));
        }
        Ok(Self {
            base: format!("ws://{addr}/"),
            addr,
        })
    }

    /// `HOST:PORT`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }
}

/// Read buffer size of clients: small for the mostly idle ones (many
/// thousands of them in one process), larger for the busy ones. Not larger:
/// tungstenite zero-fills the whole free read buffer before every read
/// attempt (including the one that finds the socket empty), so a 64 KiB
/// buffer costs a 64 KiB memset per wake-up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Buffers {
    /// 1 KiB: the production shape's (S16) 100,000 mostly quiet members.
    Lean,
    /// 4 KiB.
    Idle,
    /// 8 KiB.
    Busy,
}

/// The key of the tokens every connection presents, if any
/// ([`set_auth_secret`]).
static AUTH_KEY: OnceLock<jsonwebtoken::EncodingKey> = OnceLock::new();

/// Makes every connection present an HS256 token signed with `secret`.
pub(crate) fn set_auth_secret(secret: &str) -> Result<(), String> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| format!("--auth-secret: {e}"))?;
    let _ = AUTH_KEY.set(key);
    Ok(())
}

/// `&token=…` for `room` and `peer`, valid for an hour; empty without a
/// secret.
fn token_param(room: &str, peer: &str) -> Result<String, String> {
    let Some(key) = AUTH_KEY.get() else {
        return Ok(String::new());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("clock: {e}"))?
        .as_secs();
    let claims = serde_json::json!({ "sub": peer, "room": room, "iat": now, "exp": now + 3600 });
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let token = jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("token: {e}"))?;
    Ok(format!("&token={token}"))
}

/// Connects as `peer` to `room` with subprotocol `protoo` (and a token,
/// see [`set_auth_secret`]).
pub(crate) async fn connect(
    target: &Target,
    room: &str,
    peer: &str,
    buffers: Buffers,
) -> Result<Ws, String> {
    connect_from(target, room, peer, buffers, None).await
}

/// [`connect`] from `source` (a local address the socket is bound to
/// first; port 0): one loopback address has about 28,000 ephemeral ports,
/// so the scenarios with more peers spread them over 127.0.0.2 and up.
pub(crate) async fn connect_from(
    target: &Target,
    room: &str,
    peer: &str,
    buffers: Buffers,
    source: Option<IpAddr>,
) -> Result<Ws, String> {
    let tcp = match source {
        None => TcpStream::connect(&target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", target.addr))?,
        Some(ip) => {
            let addr: SocketAddr = tokio::net::lookup_host(&target.addr)
                .await
                .map_err(|e| format!("resolve {}: {e}", target.addr))?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| format!("{}: no address of {ip}'s family", target.addr))?;
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect(addr)
                .await
                .map_err(|e| format!("connect {} from {ip}: {e}", target.addr))?
        }
    };
    tcp.set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    let token = token_param(room, peer)?;
    let mut request = format!("{}?roomId={room}&peerId={peer}{token}", target.base)
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("protoo"));
    let (ws, _response) = client_async_with_config(request, tcp, Some(config(buffers)))
        .await
        .map_err(|e| format!("handshake ({room}/{peer}): {e}"))?;
    Ok(ws)
}

/// The `Sec-WebSocket-Key` of every [`connect_lean`] connection (the
/// server only derives its answer from it).
const LEAN_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Longest response head [`connect_lean`] reads.
const LEAN_MAX_HEAD: usize = 8 * 1024;

/// Connects as [`connect`] does ([`Buffers::Idle`]), with the HTTP upgrade
/// written and checked here instead of by tungstenite's client handshake
/// (a URL parsed, a request built, a response parsed into header maps:
/// about a third of the load generator's work per S5 cycle). The request
/// is the same upgrade; the answer must be `101` with the accept key of
/// [`LEAN_KEY`] and subprotocol `protoo`. The frames are tungstenite's, as
/// for every other connection.
pub(crate) async fn connect_lean(target: &Target, room: &str, peer: &str) -> Result<Ws, String> {
    static ACCEPT: OnceLock<String> = OnceLock::new();
    let accept = ACCEPT.get_or_init(|| derive_accept_key(LEAN_KEY.as_bytes()));
    let mut tcp = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    let token = token_param(room, peer)?;
    let mut request = String::with_capacity(256 + token.len());
    let _ = write!(
        request,
        "GET /?roomId={room}&peerId={peer}{token} HTTP/1.1\r\nHost: {}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {LEAN_KEY}\r\nSec-WebSocket-Protocol: protoo\r\n\r\n",
        target.addr
    );
    let failed = |e: std::io::Error| format!("handshake ({room}/{peer}): {e}");
    tcp.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut buf = Vec::with_capacity(512);
    let end = loop {
        if tcp.read_buf(&mut buf).await.map_err(failed)? == 0 {
            return Err(format!(
                "handshake ({room}/{peer}): closed before the answer"
            ));
        }
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > LEAN_MAX_HEAD {
            return Err(format!("handshake ({room}/{peer}): answer head too long"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101 ") {
        return Err(format!("handshake ({room}/{peer}): {status}"));
    }
    let (mut accepted, mut protoo) = (false, false);
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accepted = value == accept;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protoo = value == "protoo";
        }
    }
    if !accepted || !protoo {
        return Err(format!(
            "handshake ({room}/{peer}): no valid accept key or subprotocol protoo in {head:?}"
        ));
    }
    let rest = buf.split_off(end);
    Ok(
        WebSocketStream::from_partially_read(tcp, rest, Role::Client, Some(config(Buffers::Idle)))
            .await,
    )
}

/// The WebSocket settings of the load generator's connections.
fn config(buffers: Buffers) -> WebSocketConfig {
    let read = match buffers {
        Buffers::Lean => 1024,
        Buffers::Idle => 4 * 1024,
        Buffers::Busy => 8 * 1024,
    };
    WebSocketConfig::default()
        .read_buffer_size(read)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(16 << 20))
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// `echo` request whose data carries the send time: `{"t":NS}`.
pub(crate) fn echo(id: u64) -> Message {
    echo_padded(id, "")
}

/// `echo` request with data `{"t":NS}`, and `pad` appended as `"p":"…"`
/// when not empty.
pub(crate) fn echo_padded(id: u64, pad: &str) -> Message {
    let mut s = String::with_capacity(80 + pad.len());
    let _ = write!(
        s,
        r#"{{"request":true,"id":{id},"method":"echo","data":{{"t":{}"#,
        now_ns()
    );
    if !pad.is_empty() {
        let _ = write!(s, r#","p":"{pad}""#);
    }
    s.push_str("}}");
    text(s)
}

/// Bytes of an echo's data without its padding (`{"t":` 13 digits `,"p":""}`).
pub(crate) const ECHO_FIXED: usize = 26;

/// Bytes of a broadcast's data without its padding (`{"t":` 13 digits
/// `,"s":` up to 8 digits `,"p":""}`).
pub(crate) const BROADCAST_FIXED: usize = 40;

/// The padding that makes the harness' data (`{"t":NS[,"s":SEQ],"p":"…"}`)
/// about `size` bytes: `size` minus `fixed`, the bytes of the rest (none
/// when `size` is not larger).
pub(crate) fn pad(size: usize, fixed: usize) -> String {
    "x".repeat(size.saturating_sub(fixed))
}

/// `broadcast` request with data `{"t":NS,"s":SEQ}` and `pad` appended as
/// `"p":"…"` when not empty.
pub(crate) fn broadcast(id: u64, seq: u64, pad: &str) -> Message {
    let mut s = String::with_capacity(96 + pad.len());
    let _ = write!(
        s,
        r#"{{"request":true,"id":{id},"method":"broadcast","data":{{"t":{},"s":{seq}"#,
        now_ns()
    );
    if !pad.is_empty() {
        let _ = write!(s, r#","p":"{pad}""#);
    }
    s.push_str("}}");
    text(s)
}

/// `join` request with data `{"displayName":NAME}` (`name`: no characters
/// to escape).
pub(crate) fn join(id: u64, name: &str) -> Message {
    text(format!(
        r#"{{"request":true,"id":{id},"method":"join","data":{{"displayName":"{name}"}}}}"#
    ))
}

/// Any protoo message, with `data` left as raw JSON.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(default)]
    pub(crate) response: bool,
    #[serde(default)]
    pub(crate) notification: bool,
    pub(crate) id: Option<u64>,
    pub(crate) ok: Option<bool>,
    #[serde(borrow)]
    pub(crate) method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) data: Option<&'a RawValue>,
    #[serde(rename = "errorReason", borrow)]
    pub(crate) error_reason: Option<Cow<'a, str>>,
}

impl<'a> Incoming<'a> {
    /// Parses a text frame.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The `t` (and `s`) of the harness' own data.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        serde_json::from_str(self.data?.get()).ok()
    }
}

/// The timestamp and sequence number the harness puts into data.
#[derive(Debug, Deserialize, Clone, Copy)]
pub(crate) struct Stamp {
    /// Send time, [`now_ns`].
    pub(crate) t: u64,
    /// Sequence number (broadcasts).
    #[serde(default)]
    pub(crate) s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_back() {
        let m = echo(7);
        let t = m.to_text().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "echo");
        let m = echo_padded(8, &pad(4096, ECHO_FIXED));
        let t = m.to_text().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        assert_eq!(v["id"], 8);
        let data = serde_json::to_string(&v["data"]).unwrap_or_default();
        // 13 digits of `t` counted; fewer this early in the process.
        assert!((4096 - 12..=4096).contains(&data.len()), "{}", data.len());
        let m = broadcast(9, 42, "xyz");
        let t = m.to_text().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        assert_eq!(v["data"]["s"], 42);
        assert_eq!(v["data"]["p"], "xyz");
        let m = join(4, "s1x2");
        let t = m.to_text().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        assert_eq!(
            (v["id"].as_u64(), v["method"].as_str()),
            (Some(4), Some("join"))
        );
        assert_eq!(v["data"]["displayName"], "s1x2");

        let n = r#"{"notification":true,"method":"chat","data":{"t":5,"s":3,"p":"aa"}}"#;
        let inc = Incoming::parse(n).map(|i| (i.notification, i.stamp().map(|s| (s.t, s.s))));
        assert_eq!(inc, Some((true, Some((5, 3)))));
        let r = r#"{"response":true,"id":3,"ok":true,"data":{"t":1}}"#;
        let inc = Incoming::parse(r).map(|i| (i.response, i.id, i.ok));
        assert_eq!(inc, Some((true, Some(3), Some(true))));
    }

    #[test]
    fn target() {
        let t = Target::parse("ws://127.0.0.1:9/").map(|t| (t.addr, t.base));
        assert_eq!(
            t,
            Ok(("127.0.0.1:9".to_owned(), "ws://127.0.0.1:9/".to_owned()))
        );
        assert!(Target::parse("http://x/").is_err());
    }
}
