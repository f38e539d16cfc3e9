//! Who may be which peer: a connection's token, verified before the
//! upgrade, becomes the peer's [`Identity`].
//!
//! Switched on in one line, [`ServerConfig::with_auth`](crate::ServerConfig::with_auth):
//!
//! ```
//! # #[cfg(feature = "auth")]
//! # fn main() -> Result<(), protoo_server::auth::AuthError> {
//! use protoo_server::ServerConfig;
//! use protoo_server::auth::JwtVerifier;
//!
//! let config = ServerConfig::default().with_auth(JwtVerifier::hs256(b"a long random secret")?);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "auth"))]
//! # fn main() {}
//! ```
//!
//! Then, on the bound server and the axum mount alike, every connection
//! request is verified before the application sees it, and so before the
//! `101`:
//!
//! - the token comes from the query's `token` parameter (the unchanged
//!   protoo-client cannot set headers, and reconnects to the same URL), or
//!   else from a `protoo_token` cookie (a page on the same origin);
//! - no token, a malformed one, a bad signature, an expired one or one not
//!   valid yet: **401**, with the reason as the body (never the token);
//!   a verifier that cannot answer (a backend down): **503**;
//! - the verified claims are the connection's [`Identity`]
//!   ([`ConnectionRequest::identity`](crate::ConnectionRequest::identity));
//!   [`ConnectionRequest::admit`](crate::ConnectionRequest::admit) takes
//!   the room and peer ids from it when the URL has no `roomId`/`peerId`,
//!   answers **403** when they disagree, and **403** when the peer id is
//!   taken in the room by another identity (no takeover: see
//!   [`protoo_core::Identity`]);
//! - in the room, the peer sends only the methods its identity allows
//!   (others: 403 `method not allowed`, or dropped), and is closed with
//!   4000 `token expired` when its token expires, unless the application
//!   gave it a fresh one ([`refresh`]).
//!
//! The built-in verifier, [`JwtVerifier`] (feature `auth`), checks JWTs
//! signed with an HS256 secret or an RS256, ES256 or EdDSA public key; an
//! application with its own scheme (asking its backend) implements
//! [`Verifier`] and plugs in the same way.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use protoo_core::{CoreError, Identity, Peer};
use thiserror::Error;

#[cfg(feature = "auth")]
mod jwt;

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub use jwt::{DEFAULT_LEEWAY, JwtVerifier};

/// The query parameter a connection's token comes from.
pub const TOKEN_PARAM: &str = "token";

/// The cookie a connection's token comes from when the query has none.
pub const TOKEN_COOKIE: &str = "protoo_token";

/// What a [`Verifier`] returns.
pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

/// Verifies a connection's token and says who it is.
///
/// [`JwtVerifier`] (feature `auth`) is one; an application with its own
/// scheme implements this (it may ask its backend: the handshake timeout
/// bounds the wait) and gives it to
/// [`ServerConfig::with_auth`](crate::ServerConfig::with_auth):
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use protoo_server::auth::{AuthError, Verifier, VerifyFuture};
/// use protoo_server::{Identity, ServerConfig};
///
/// struct Sessions;
///
/// impl Verifier for Sessions {
///     fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
///         Box::pin(async move {
///             // Ask the application's backend here.
///             match token.split_once(':') {
///                 Some((room, peer)) => Ok(Identity::new(
///                     peer,
///                     room,
///                     SystemTime::now() + Duration::from_secs(3600),
///                 )),
///                 None => Err(AuthError::Malformed),
///             }
///         })
///     }
/// }
///
/// let config = ServerConfig::default().with_auth(Sessions);
/// ```
pub trait Verifier: Send + Sync + 'static {
    /// Verifies `token`: the identity it proves, or why it proves none.
    /// The error's reason is the HTTP body: it must not hold the token.
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a>;
}

/// Why a connection's token proves no identity: the HTTP status of the
/// refusal ([`AuthError::status`]) and its body ([`AuthError::reason`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No token (401).
    #[error("missing token")]
    Missing,
    /// Not a token (401).
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify, or the algorithm is not the key's
    /// (401).
    #[error("invalid token signature")]
    BadSignature,
    /// Its `exp` is past (401).
    #[error("token expired")]
    Expired,
    /// Its `nbf` is still ahead (401).
    #[error("token not yet valid")]
    NotYetValid,
    /// A claim is missing or of the wrong type (401); holds its name.
    #[error("invalid token claim: {0}")]
    Claim(&'static str),
    /// Refused for another reason (401), with this reason.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that does not give this (403): its room or subject
    /// is not the URL's, or the peer id belongs to another identity.
    #[error("{0}")]
    Forbidden(String),
    /// The verifier could not answer (503): a backend down.
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden(_) => 403,
            AuthError::Unavailable(_) => 503,
            _ => 401,
        }
    }

    /// The refusal's body.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// The token of a connection request: the query's `token` parameter, or
/// else the `protoo_token` cookie.
pub(crate) fn token_of(query: Option<&str>, headers: &http::HeaderMap) -> Option<String> {
    if let Some(token) =
        query.and_then(|query| protoo_transport::ws::query_param(query, TOKEN_PARAM))
    {
        return Some(token);
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            let (name, value) = cookie.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| value.to_owned())
        })
}

/// `target` (a path and query) with the value of its `token` parameter
/// masked: what is logged of a request's target.
pub(crate) fn masked(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name == TOKEN_PARAM => format!("{name}=<masked>"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

/// Gives `peer` the identity a fresh `token` proves: verified by
/// `verifier`, it moves the peer's expiry (and its allowed methods);
/// refused when the token does not verify, or proves another subject or
/// room ([`AuthError::Forbidden`]), or the peer has no identity.
///
/// For an application that lets a connected peer renew its token with a
/// request of its own before it expires:
///
/// ```no_run
/// # async fn handle(peer: protoo_server::Peer, request: protoo_server::IncomingRequest,
/// #     verifier: &dyn protoo_server::auth::Verifier) {
/// // `verifier`: the one the server checks tokens with (`ServerConfig::auth`).
/// #[derive(serde::Deserialize)]
/// struct Refresh { token: String }
/// let Ok(Refresh { token }) = request.payload().deserialize() else {
///     return request.reject(400, "no token");
/// };
/// match protoo_server::auth::refresh(&peer, verifier, &token).await {
///     Ok(()) => request.accept(&()),
///     Err(error) => request.reject(error.status(), error.reason()),
/// }
/// # }
/// ```
pub async fn refresh<D>(
    peer: &Peer<D>,
    verifier: &(impl Verifier + ?Sized),
    token: &str,
) -> Result<(), AuthError> {
    let identity = verifier.verify(token).await?;
    peer.refresh_identity(identity)
        .map_err(|error| match error {
            CoreError::IdentityMismatch(_) => {
                AuthError::Forbidden("token is for another peer or room".to_owned())
            }
            other => AuthError::Unauthorized(other.to_string()),
        })
}

/// The verifier a server checks tokens with (shared by its connections).
#[derive(Clone)]
pub(crate) struct Auth(pub(crate) std::sync::Arc<dyn Verifier>);

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query_then_cookie() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(token_of(Some("roomId=r"), &headers), None);
        headers.insert(
            http::header::COOKIE,
            "a=b; protoo_token=from-cookie".parse().unwrap(),
        );
        assert_eq!(
            token_of(Some("roomId=r"), &headers).as_deref(),
            Some("from-cookie")
        );
        assert_eq!(
            token_of(Some("token=q%2Bx&roomId=r"), &headers).as_deref(),
            Some("q+x")
        );
    }

    #[test]
    fn masked_target() {
        assert_eq!(
            masked("/?roomId=r&token=secret.jwt.sig&peerId=p"),
            "/?roomId=r&token=<masked>&peerId=p"
        );
        assert_eq!(masked("/room"), "/room");
    }
}
