//! [`JwtVerifier`]: JWTs signed with an HS256 secret or an RS256, ES256 or
//! EdDSA public key, on the `jsonwebtoken` crate.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use protoo_core::Identity;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{AuthError, Verifier, VerifyFuture};

/// The default clock-skew leeway of a [`JwtVerifier`]: a token whose `nbf`
/// is at most this far ahead of this server's clock is accepted (the
/// issuer's clock runs a little ahead). `exp` gets none: the server closes
/// a peer at its `exp`, so a token is refused from the second it expires
/// by this server's clock.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The claims every token carries.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    room: Option<String>,
    exp: Option<u64>,
    name: Option<String>,
    allow: Option<Vec<String>>,
}

/// Reads the application's own claims into the identity.
type CustomClaims = fn(Identity, &str) -> Result<Identity, AuthError>;

/// Verifies JWTs (RFC 7519) signed with one key: an HS256 secret, or an
/// RS256, ES256 (P-256) or EdDSA (Ed25519) public key in PEM.
///
/// A token proves an [`Identity`] when its signature verifies with the
/// key's algorithm (any other `alg`, `none` included, is refused), and it
/// holds `sub` (the peer id), `room` (the room id) and `exp` (Unix
/// seconds, in the future by this server's clock), and, if it has an
/// `nbf`, that is past (with [`DEFAULT_LEEWAY`]). Optional: `name` (a
/// display name) and `allow` (the methods the peer may send; absent:
/// all). Further claims are the application's: [`JwtVerifier::with_claims`].
///
/// An application backend issues such tokens with any JWT library, e.g.
/// in Node: `jwt.sign({ sub: peerId, room: roomId, name }, secret,
/// { algorithm: 'HS256', expiresIn: '1h' })`.
///
/// ```
/// use protoo_server::ServerConfig;
/// use protoo_server::auth::JwtVerifier;
///
/// # fn main() -> Result<(), protoo_server::auth::AuthError> {
/// let config = ServerConfig::default().with_auth(JwtVerifier::hs256(b"a long random secret")?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    custom: Option<CustomClaims>,
}

impl JwtVerifier {
    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = DEFAULT_LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtVerifier {
            key,
            validation,
            custom: None,
        }
    }

    /// Tokens signed with HMAC-SHA256 and `secret` (at least 32 random
    /// bytes, shared with the application backend that issues them).
    /// Fails on an empty secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        let key = DecodingKey::from_secret(secret.as_ref()).map_err(key_error)?;
        Ok(Self::new(key, Algorithm::HS256))
    }

    /// Tokens signed with RSASSA-PKCS1-v1_5 SHA-256 and the private key of
    /// this RSA public key (PEM).
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(public_key).map_err(key_error)?;
        Ok(Self::new(key, Algorithm::RS256))
    }

    /// Tokens signed with ECDSA P-256 SHA-256 and the private key of this
    /// public key (PEM).
    pub fn es256_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ec_pem(public_key).map_err(key_error)?;
        Ok(Self::new(key, Algorithm::ES256))
    }

    /// Tokens signed with Ed25519 and the private key of this public key
    /// (PEM).
    pub fn eddsa_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ed_pem(public_key).map_err(key_error)?;
        Ok(Self::new(key, Algorithm::EdDSA))
    }

    /// A public key in PEM of any supported kind (RSA: RS256, P-256:
    /// ES256, Ed25519: EdDSA), as the room example's `--auth-public-key`
    /// takes it.
    pub fn public_key_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        Self::es256_pem(public_key)
            .or_else(|_| Self::eddsa_pem(public_key))
            .or_else(|_| Self::rs256_pem(public_key))
    }

    /// The clock-skew leeway for `nbf` (default [`DEFAULT_LEEWAY`]).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Also reads the token's claims as the application's own type `C`
    /// (which may ignore the standard ones), kept in the identity:
    /// [`Identity::custom`]. A token whose claims do not read as `C` is
    /// refused (401).
    ///
    /// ```
    /// # fn main() -> Result<(), protoo_server::auth::AuthError> {
    /// #[derive(serde::Deserialize)]
    /// struct Grants { can_publish: bool }
    ///
    /// let verifier = protoo_server::auth::JwtVerifier::hs256(b"secret")?.with_claims::<Grants>();
    /// // Later: peer.identity().and_then(|id| id.custom::<Grants>().map(|g| g.can_publish))
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_claims<C: DeserializeOwned + Send + Sync + 'static>(mut self) -> Self {
        self.custom = Some(|identity, token| {
            // The token verified already: only its claims are read again.
            let claims: C = jsonwebtoken::dangerous::insecure_decode_claims(token)
                .map_err(|_| AuthError::Claim("custom claims"))?;
            Ok(identity.with_custom(claims))
        });
        self
    }

    /// Verifies `token` now (what [`Verifier::verify`] does, without the
    /// future).
    pub fn verify_now(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| refusal(error.kind()))?;
        let claims = data.claims;
        let sub = claims.sub.filter(|sub| !sub.is_empty());
        let sub = sub.ok_or(AuthError::Claim("sub"))?;
        let room = claims.room.filter(|room| !room.is_empty());
        let room = room.ok_or(AuthError::Claim("room"))?;
        let exp = claims.exp.ok_or(AuthError::Claim("exp"))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(exp);
        if expires_at <= SystemTime::now() {
            return Err(AuthError::Expired);
        }
        let mut identity = Identity::new(sub, room, expires_at);
        if let Some(name) = claims.name {
            identity = identity.with_name(name);
        }
        if let Some(allow) = claims.allow {
            identity = identity.with_allow(allow);
        }
        match self.custom {
            Some(custom) => custom(identity, token),
            None => Ok(identity),
        }
    }
}

impl Verifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(self.verify_now(token)))
    }
}

impl fmt::Debug for JwtVerifier {
    /// The algorithm and leeway; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("leeway", &self.validation.leeway)
            .field("custom_claims", &self.custom.is_some())
            .finish_non_exhaustive()
    }
}

/// A key that does not load.
fn key_error(error: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Unauthorized(format!("invalid key: {error}"))
}

/// Why a token is refused, readable and without the token.
fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::UnsupportedAlgorithm => AuthError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Claim(match claim.as_str() {
                "exp" => "exp",
                "sub" => "sub",
                "nbf" => "nbf",
                _ => "a registered claim",
            })
        }
        _ => AuthError::Malformed,
    }
}
