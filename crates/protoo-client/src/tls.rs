//! `wss://` with rustls, behind the `tls` feature.
//!
//! Everything of [`protoo_transport::ws::tls`] (a client configuration
//! trusting given roots, [`client_config`] and [`client_config_from_pem`];
//! the server side's acceptors), plus Mozilla's root certificates from the
//! [`webpki_roots`] crate: [`webpki_client_config`].
//!
//! [`Client::connect`](crate::Client::connect) uses the configuration given
//! with [`ClientOptions::with_tls_config`](crate::ClientOptions::with_tls_config)
//! and, for a `wss://` URL without one, [`webpki_client_config`]: public
//! servers are trusted as a browser would trust them, with no setup.
//!
//! ```
//! use protoo_client::{ClientOptions, tls};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The default: Mozilla's roots, nothing to write.
//! let public = ClientOptions::new("wss://example.com/?roomId=r&peerId=p");
//! // A private CA (or a self-signed server certificate) instead.
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
//! # let ca_pem = cert.cert.pem();
//! let private = ClientOptions::new("wss://localhost:4443/?roomId=r&peerId=p")
//!     .with_tls_config(tls::client_config_from_pem(ca_pem.as_bytes())?);
//! # drop((public, private));
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, OnceLock};

pub use protoo_transport::ws::tls::*;

use protoo_transport::TransportError;

/// Mozilla's root certificates (the [`webpki_roots`] crate) as a rustls
/// root store.
pub fn webpki_root_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client configuration trusting [`webpki_root_store`], with rustls's
/// `ring` provider like [`client_config`]. Built once, then shared.
///
/// # Errors
///
/// [`TransportError::Tls`] if rustls refuses the configuration (it does not
/// with the `ring` provider's defaults).
pub fn webpki_client_config() -> Result<Arc<rustls::ClientConfig>, TransportError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| {
                Arc::new(
                    builder
                        .with_root_certificates(webpki_root_store())
                        .with_no_client_auth(),
                )
            })
            .map_err(|error| error.to_string())
        })
        .clone()
        .map_err(TransportError::Tls)
}

/// `options` as [`Client::connect`](crate::Client::connect) uses them: a
/// `wss://` URL without a TLS configuration gets [`webpki_client_config`].
pub(crate) fn with_default_roots(
    options: protoo_transport::ws::ClientOptions,
) -> Result<protoo_transport::ws::ClientOptions, TransportError> {
    if options.is_secure() && options.tls_config().is_none() {
        Ok(options.with_tls_config(webpki_client_config()?))
    } else {
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use protoo_transport::ws::ClientOptions;

    use super::*;

    #[test]
    fn the_webpki_store_holds_every_mozilla_root() {
        let store = webpki_root_store();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(store.len() > 100, "{} roots", store.len());
    }

    #[test]
    fn wss_without_a_store_gets_the_webpki_config() {
        let options =
            with_default_roots(ClientOptions::new("wss://example.com/?roomId=r&peerId=p")).unwrap();
        let given = options.tls_config().expect("a TLS configuration");
        let webpki = webpki_client_config().unwrap();
        assert!(Arc::ptr_eq(given, &webpki));
        // Built with the ring provider and the safe protocol versions.
        assert!(!webpki.crypto_provider().cipher_suites.is_empty());

        let upper = with_default_roots(ClientOptions::new("WSS://example.com/")).unwrap();
        assert!(upper.tls_config().is_some());
    }

    #[test]
    fn a_given_store_is_kept_and_ws_gets_none() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let mine = client_config([cert.cert.der().clone()]).unwrap();
        let options = with_default_roots(
            ClientOptions::new("wss://localhost/").with_tls_config(mine.clone()),
        )
        .unwrap();
        assert!(Arc::ptr_eq(options.tls_config().unwrap(), &mine));

        let plain = with_default_roots(ClientOptions::new("ws://localhost/")).unwrap();
        assert!(plain.tls_config().is_none());
    }
}
