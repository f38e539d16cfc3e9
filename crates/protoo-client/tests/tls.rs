//! `wss://` (feature `tls`): a given root store, and the default (Mozilla's
//! roots), which does not trust a self-signed certificate.

use protoo_client::{Client, ClientConfig, ClientEvent, ClientOptions, RetryConfig, tls};
use protoo_server::{PeerConfig, PeerEvent, ServerConfig, WebSocketServer};
use serde_json::json;

struct Server {
    url: String,
    cert_pem: String,
}

/// A wss room of one: answers every request with its data, as `echo`.
async fn wss_server() -> Server {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let acceptor = protoo_server::tls::acceptor_from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let mut server = WebSocketServer::bind_tls("127.0.0.1:0", ServerConfig::default(), acceptor)
        .await
        .unwrap();
    let url = format!(
        "wss://localhost:{}/?roomId=r&peerId=p",
        server.local_addr().port()
    );
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let Ok(transport) = request.accept().await else {
                continue;
            };
            let (_peer, mut events) =
                protoo_server::Peer::new("p", transport, (), PeerConfig::default()).unwrap();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    if let PeerEvent::Request(mut request) = event {
                        let data = request.take_payload();
                        request.accept(&data);
                    }
                }
            });
        }
    });
    Server {
        url,
        cert_pem: cert.cert.pem(),
    }
}

fn one_attempt() -> ClientConfig {
    ClientConfig::default().with_retry(RetryConfig::default().with_retries(0))
}

#[tokio::test]
async fn wss_with_a_given_root_store() {
    let server = wss_server().await;
    let options = ClientOptions::new(server.url)
        .with_tls_config(tls::client_config_from_pem(server.cert_pem.as_bytes()).unwrap());
    let (client, mut events) = Client::connect(options, one_attempt());
    assert!(matches!(events.next().await, Some(ClientEvent::Open)));
    let answer = client.request("echo", &json!({"a": "é"})).await.unwrap();
    assert_eq!(answer.as_str(), r#"{"a":"é"}"#);
    client.close();
    assert!(matches!(events.next().await, Some(ClientEvent::Close(_))));
}

#[tokio::test]
async fn wss_by_default_trusts_only_the_webpki_roots() {
    // The self-signed certificate is in no public root store: the attempt
    // reaches the TLS handshake and fails there.
    let server = wss_server().await;
    let webpki = ClientOptions::new(server.url.clone())
        .with_tls_config(tls::webpki_client_config().unwrap());
    let error = protoo_transport::ws::connect_with(webpki, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, protoo_transport::TransportError::Tls(why) if why.contains("certificate")),
        "{error}"
    );

    let (client, mut events) = Client::connect(ClientOptions::new(server.url), one_attempt());
    assert!(matches!(events.next().await, Some(ClientEvent::Failed(1))));
    assert!(matches!(
        events.next().await,
        Some(ClientEvent::Close(None))
    ));
    assert!(client.is_closed());
}
