//! TLS (`wss://`) with rustls, behind the `tls` feature.
//!
//! Server side: accept TCP connections, run them through a
//! [`TlsAcceptor`] (built here from a certificate chain and its private
//! key), and hand the TLS stream to
//! [`read_upgrade_request`](super::read_upgrade_request) like a plain
//! socket. Client side: pass a rustls client configuration (built here
//! from the root certificates you trust) to
//! [`ClientOptions::with_tls_config`](super::ClientOptions::with_tls_config).
//!
//! Both use rustls's `ring` crypto provider explicitly, so they work
//! whatever process-wide default is (or is not) installed.
//!
//! ```
//! use protoo_transport::ws::{self, tls, ClientOptions, WsConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A self-signed certificate (use your real one in production).
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
//! let acceptor = tls::acceptor_from_pem(
//!     cert.cert.pem().as_bytes(),
//!     cert.signing_key.serialize_pem().as_bytes(),
//! )?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! tokio::spawn(async move {
//!     let (socket, _) = listener.accept().await?;
//!     socket.set_nodelay(true)?;
//!     let tls_stream = acceptor.accept(socket).await?;
//!     let request = ws::read_upgrade_request(tls_stream, &WsConfig::default()).await?;
//!     let config = WsConfig::default();
//!     let mut transport = ws::ServerTransport::builder(&config).accept(request).await?;
//!     while let protoo_transport::Inbound::Text(_) = transport.recv().await {}
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//!
//! let client_config = tls::client_config([cert.cert.der().clone()])?;
//! let options = ClientOptions::new(format!("wss://localhost:{port}/"))
//!     .with_tls_config(client_config);
//! let transport = ws::connect_with(options, &WsConfig::default()).await?;
//! transport.close();
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::rustls;
pub use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use rustls::pki_types::pem::PemObject;

use crate::TransportError;

fn tls_error(error: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(error.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor for a certificate chain and its private key, both in PEM
/// (the chain: the server's certificate first, then intermediates; the key:
/// PKCS#8, PKCS#1 or SEC1). Offers ALPN `http/1.1`.
///
/// # Errors
///
/// [`TransportError::Tls`] when the PEM holds no certificate or key, or
/// rustls refuses them.
pub fn acceptor_from_pem(
    cert_chain_pem: &[u8],
    private_key_pem: &[u8],
) -> Result<TlsAcceptor, TransportError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_error)?;
    if chain.is_empty() {
        return Err(TransportError::Tls("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem).map_err(tls_error)?;
    acceptor_from_der(chain, key)
}

/// A TLS acceptor for a certificate chain and its private key in DER.
/// Offers ALPN `http/1.1`.
///
/// # Errors
///
/// [`TransportError::Tls`] when rustls refuses the certificate or key.
pub fn acceptor_from_der(
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, TransportError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, private_key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client configuration trusting exactly `roots` (DER certificates: a
/// private CA, or a self-signed server certificate).
///
/// # Errors
///
/// [`TransportError::Tls`] when a certificate cannot be used as a root.
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(tls_error)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] with the root certificates in PEM.
///
/// # Errors
///
/// [`TransportError::Tls`] when the PEM holds no certificate, or one cannot
/// be used as a root.
pub fn client_config_from_pem(
    roots_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let roots = CertificateDer::pem_slice_iter(roots_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_error)?;
    if roots.is_empty() {
        return Err(TransportError::Tls("no certificate in the PEM".into()));
    }
    client_config(roots)
}
