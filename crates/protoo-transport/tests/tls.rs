//! `wss://` round trip with a self-signed certificate (feature `tls`).

#![cfg(feature = "tls")]

mod common;

use protoo_transport::ws::{self, ClientOptions, WsConfig, tls};
use protoo_transport::{CloseReason, Frame, Initiator, TransportError};

use common::{closed, listen, text};

struct Certified {
    cert_pem: String,
    key_pem: String,
    cert_der: tls::CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn self_signed() -> Certified {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Certified {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        cert_der: certified.cert.der().clone(),
        key_der: certified.signing_key.serialize_der(),
    }
}

#[tokio::test]
async fn wss_round_trip() {
    let cert = self_signed();
    let acceptor =
        tls::acceptor_from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let (listener, addr) = listen().await;
    let config = WsConfig::default();
    let server = tokio::spawn({
        let config = config.clone();
        async move {
            let (socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let stream = acceptor.accept(socket).await.unwrap();
            let request = ws::read_upgrade_request(stream, &config).await.unwrap();
            assert_eq!(request.query_param("peerId").as_deref(), Some("p1"));
            assert!(request.wants_protoo());
            ws::ServerTransport::builder(&config)
                .accept(request)
                .await
                .unwrap()
        }
    });

    let client_config = tls::client_config([cert.cert_der.clone()]).unwrap();
    let options = ClientOptions::new(format!("wss://127.0.0.1:{}/?peerId=p1", addr.port()))
        .with_tls_config(client_config);
    let mut client = ws::connect_with(options, &config).await.unwrap();
    let mut server = server.await.unwrap();

    client
        .send(Frame::from_static(
            r#"{"request":true,"id":1,"method":"echo","data":{}}"#,
        ))
        .unwrap();
    assert_eq!(
        text(&mut server).await,
        r#"{"request":true,"id":1,"method":"echo","data":{}}"#
    );
    let large = "L".repeat(100_000);
    server.send(Frame::from(large.clone())).unwrap();
    assert_eq!(text(&mut client).await, large);

    server.close_with(4000, "bye over tls");
    assert_eq!(
        closed(&mut client).await,
        CloseReason::new(Some(4000), "bye over tls", Initiator::Remote)
    );
    assert_eq!(closed(&mut server).await.initiator, Initiator::Local);
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let cert = self_signed();
    let key = tls::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
    let acceptor = tls::acceptor_from_der(vec![cert.cert_der.clone()], key).unwrap();
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(socket).await;
    });
    // Trusts another certificate only.
    let other = self_signed();
    let options = ClientOptions::new(format!("wss://localhost:{}/", addr.port()))
        .with_tls_config(tls::client_config_from_pem(other.cert_pem.as_bytes()).unwrap());
    let error = ws::connect_with(options, &WsConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Tls(_)), "{error:?}");
}

#[tokio::test]
async fn wss_without_a_tls_config_is_refused() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let _ = listener.accept().await;
    });
    let error = ws::connect(
        &format!("wss://127.0.0.1:{}/", addr.port()),
        &WsConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, TransportError::Tls(_)), "{error:?}");
}

#[test]
fn bad_pem_is_a_tls_error() {
    assert!(matches!(
        tls::acceptor_from_pem(b"nothing", b"nothing"),
        Err(TransportError::Tls(_))
    ));
    assert!(matches!(
        tls::client_config_from_pem(b"nothing"),
        Err(TransportError::Tls(_))
    ));
}
