//! The JWT verifier in process: every algorithm (test-only keys in
//! `tests/keys`), the claims it requires, `exp` and `nbf` with the
//! clock-skew leeway, and the tokens it must refuse (another algorithm than
//! the key's, `alg: none`, a bad signature).

#![cfg(feature = "auth")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use protoo_server::auth::{AuthError, DEFAULT_LEEWAY, JwtVerifier, Verifier};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";
const RSA: &[u8] = include_bytes!("keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("keys/rsa.pub.pem");
const EC: &[u8] = include_bytes!("keys/ec.pem");
const EC_PUB: &[u8] = include_bytes!("keys/ec.pub.pem");
const ED: &[u8] = include_bytes!("keys/ed.pem");
const ED_PUB: &[u8] = include_bytes!("keys/ed.pub.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({ "sub": "alice", "room": "r", "exp": now() + 600 })
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(algorithm), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET).unwrap(),
        claims,
    )
}

fn verifier() -> JwtVerifier {
    JwtVerifier::hs256(SECRET).unwrap()
}

#[tokio::test]
async fn hs256_gives_the_identity_of_its_claims() {
    let claims = json!({
        "sub": "alice", "room": "r", "exp": now() + 600,
        "name": "Alice", "allow": ["join", "chat"],
    });
    let identity = verifier().verify(&hs256(&claims)).await.unwrap();
    assert_eq!((identity.subject(), identity.room()), ("alice", "r"));
    assert_eq!(identity.name(), Some("Alice"));
    assert!(identity.allows("chat") && !identity.allows("kick"));
    let exp = identity.expires_at().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(exp.as_secs(), now() + 600);
}

#[test]
fn every_public_key_algorithm() {
    let cases = [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA).unwrap(),
            RSA_PUB,
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC).unwrap(),
            EC_PUB,
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED).unwrap(),
            ED_PUB,
        ),
    ];
    for (algorithm, private, public) in cases {
        let token = sign(algorithm, &private, &claims());
        let explicit = match algorithm {
            Algorithm::RS256 => JwtVerifier::rs256_pem(public),
            Algorithm::ES256 => JwtVerifier::es256_pem(public),
            _ => JwtVerifier::eddsa_pem(public),
        }
        .unwrap();
        let identity = explicit.verify_now(&token).unwrap();
        assert_eq!(identity.subject(), "alice", "{algorithm:?}");
        // The kind of key found from the PEM, as `--auth-public-key` does.
        let detected = JwtVerifier::public_key_pem(public).unwrap();
        assert!(
            detected.verify_now(&token).is_ok(),
            "{algorithm:?} detected"
        );
        // A token of another algorithm (HS256) is refused.
        let forged = hs256(&claims());
        assert_eq!(
            explicit.verify_now(&forged).err(),
            Some(AuthError::BadSignature)
        );
    }
}

#[test]
fn another_algorithm_than_the_keys_is_refused() {
    // The classic confusion: an HS256 token whose "secret" is the RSA
    // public key, against the RS256 key.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUB).unwrap(),
        &claims(),
    );
    let rs256 = JwtVerifier::rs256_pem(RSA_PUB).unwrap();
    assert_eq!(
        rs256.verify_now(&confused).err(),
        Some(AuthError::BadSignature)
    );
    // An RS256 token against the HS256 secret.
    let rsa = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA).unwrap(),
        &claims(),
    );
    assert_eq!(
        verifier().verify_now(&rsa).err(),
        Some(AuthError::BadSignature)
    );
}

#[test]
fn alg_none_is_refused() {
    use base64_url as b64;
    let header = b64::encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64::encode(claims().to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let refused = verifier().verify_now(&token).unwrap_err();
        assert_eq!(refused.status(), 401, "{refused:?}");
    }
}

/// Unpadded base64url, for hand-made tokens.
mod base64_url {
    pub(super) fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[test]
fn bad_signature_malformed_and_missing_claims() {
    let v = verifier();
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret").unwrap(),
        &claims(),
    );
    assert_eq!(v.verify_now(&other).err(), Some(AuthError::BadSignature));
    assert_eq!(
        v.verify_now("not a token").err(),
        Some(AuthError::Malformed)
    );
    assert_eq!(v.verify_now("a.b.c").err(), Some(AuthError::Malformed));
    let no_exp = json!({ "sub": "alice", "room": "r" });
    assert_eq!(
        v.verify_now(&hs256(&no_exp)).err(),
        Some(AuthError::Claim("exp"))
    );
    let no_sub = json!({ "room": "r", "exp": now() + 60 });
    assert_eq!(
        v.verify_now(&hs256(&no_sub)).err(),
        Some(AuthError::Claim("sub"))
    );
    let no_room = json!({ "sub": "alice", "exp": now() + 60 });
    assert_eq!(
        v.verify_now(&hs256(&no_room)).err(),
        Some(AuthError::Claim("room"))
    );
    for error in [
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::Claim("exp"),
    ] {
        assert_eq!(error.status(), 401);
    }
}

#[test]
fn exp_is_strict_and_nbf_gets_the_leeway() {
    let v = verifier();
    assert_eq!(DEFAULT_LEEWAY, Duration::from_secs(5));
    let expired = json!({ "sub": "alice", "room": "r", "exp": now() - 1 });
    assert_eq!(
        v.verify_now(&hs256(&expired)).err(),
        Some(AuthError::Expired)
    );
    let long_expired = json!({ "sub": "alice", "room": "r", "exp": now() - 3600 });
    assert_eq!(
        v.verify_now(&hs256(&long_expired)).err(),
        Some(AuthError::Expired)
    );

    // An issuer whose clock runs 3 s ahead: within the leeway.
    let skewed = json!({ "sub": "alice", "room": "r", "exp": now() + 60, "nbf": now() + 3 });
    assert!(v.verify_now(&hs256(&skewed)).is_ok());
    // Valid only in a minute: refused.
    let later = json!({ "sub": "alice", "room": "r", "exp": now() + 600, "nbf": now() + 60 });
    assert_eq!(
        v.verify_now(&hs256(&later)).err(),
        Some(AuthError::NotYetValid)
    );
    // Without leeway, 3 s ahead is too early.
    let strict = verifier().with_leeway(Duration::ZERO);
    assert_eq!(
        strict.verify_now(&hs256(&skewed)).err(),
        Some(AuthError::NotYetValid)
    );
}

#[test]
fn custom_claims_read_as_the_applications_type() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Grants {
        can_publish: bool,
    }
    let v = verifier().with_claims::<Grants>();
    let token = hs256(&json!({
        "sub": "alice", "room": "r", "exp": now() + 60, "can_publish": true,
    }));
    let identity = v.verify_now(&token).unwrap();
    assert_eq!(
        identity.custom::<Grants>(),
        Some(&Grants { can_publish: true })
    );
    // Claims that do not read as the type: refused.
    assert_eq!(
        v.verify_now(&hs256(&claims())).err(),
        Some(AuthError::Claim("custom claims"))
    );
}

#[test]
fn an_empty_secret_is_refused() {
    assert!(JwtVerifier::hs256(b"").is_err());
    assert!(JwtVerifier::public_key_pem(b"not a key").is_err());
}

/// What verification costs per connection, printed (run with `--release
/// -- --ignored --nocapture` for numbers worth reporting).
#[test]
#[ignore = "a measurement, not a check"]
fn verification_cost() {
    let cases = [
        ("HS256", hs256(&claims()), verifier()),
        (
            "RS256",
            sign(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA).unwrap(),
                &claims(),
            ),
            JwtVerifier::rs256_pem(RSA_PUB).unwrap(),
        ),
        (
            "ES256",
            sign(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC).unwrap(),
                &claims(),
            ),
            JwtVerifier::es256_pem(EC_PUB).unwrap(),
        ),
        (
            "EdDSA",
            sign(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(ED).unwrap(),
                &claims(),
            ),
            JwtVerifier::eddsa_pem(ED_PUB).unwrap(),
        ),
    ];
    for (name, token, verifier) in cases {
        let rounds = 2_000;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(verifier.verify_now(std::hint::black_box(&token)).unwrap());
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("{name}: {micros:.1} µs per verification");
    }
}
