//! Who may be which peer: `--auth-secret SECRET` (HS256) or
//! `--auth-public-key FILE.pem` (RS256, ES256 or EdDSA) make the server
//! verify a token (the `token` query parameter) on every connection before
//! the upgrade; without either it runs open, and says so at startup.
//!
//! `room token --secret S --room R --peer P [--name N] [--ttl SECS]
//! [--allow m1,m2]` mints a token to try it with (what an application's
//! backend does for its users):
//!
//! ```sh
//! cargo run --example room -- --auth-secret s3cret
//! TOKEN=$(cargo run -q --example room -- token --secret s3cret --room lobby --peer alice --name Alice)
//! # open http://127.0.0.1:4443/?token=$TOKEN
//! ```

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use protoo_server::ServerConfig;
use protoo_server::auth::JwtVerifier;

/// The line an open server prints at startup.
const OPEN: &str = "no --auth-secret: anyone may join any room as any peer id";

/// The flags that switch tokens on.
#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    /// Verify HS256 tokens signed with this secret: every connection needs
    /// a `token` (query parameter or `protoo_token` cookie).
    #[arg(long, conflicts_with = "auth_public_key")]
    auth_secret: Option<String>,
    /// Verify tokens signed with the private key of this public key (PEM:
    /// RSA for RS256, P-256 for ES256, Ed25519 for EdDSA).
    #[arg(long)]
    auth_public_key: Option<PathBuf>,
}

/// The room example's subcommands (none: run the server).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a token (HS256) for `--room` and `--peer` on stdout.
    Token(TokenArgs),
}

/// What `room token` puts in the token.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The secret the server was started with (`--auth-secret`).
    #[arg(long)]
    secret: String,
    /// The room id (`room` claim).
    #[arg(long)]
    room: String,
    /// The peer id (`sub` claim).
    #[arg(long)]
    peer: String,
    /// A display name (`name` claim).
    #[arg(long)]
    name: Option<String>,
    /// Seconds the token is valid for.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// The only methods the peer may send, comma-separated (`allow`
    /// claim; default: all).
    #[arg(long, value_delimiter = ',')]
    allow: Option<Vec<String>>,
}

/// The server's settings with token verification, if the flags ask for it.
pub(crate) fn configure(
    args: &AuthArgs,
    config: ServerConfig,
) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let verifier = match (&args.auth_secret, &args.auth_public_key) {
        (Some(secret), _) => JwtVerifier::hs256(secret)?,
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            JwtVerifier::public_key_pem(&pem)
                .map_err(|error| format!("{}: {error}", path.display()))?
        }
        (None, None) => {
            // stderr: stdout carries only the addresses the example prints.
            eprintln!("{OPEN}");
            return Ok(config);
        }
    };
    Ok(config.with_auth(verifier))
}

/// Runs a subcommand.
pub(crate) fn run(command: &Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Token(args) => {
            println!("{}", mint(args)?);
            Ok(())
        }
    }
}

/// A token as an application backend issues one.
fn mint(args: &TokenArgs) -> Result<String, Box<dyn std::error::Error>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({
        "sub": args.peer,
        "room": args.room,
        "iat": now,
        "exp": now + args.ttl,
    });
    if let Some(name) = &args.name {
        claims["name"] = name.as_str().into();
    }
    if let Some(allow) = &args.allow {
        claims["allow"] = allow.clone().into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes())?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}
