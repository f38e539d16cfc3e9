//! The quickstart: accept every connection and answer each request with its
//! own data.
//!
//! ```sh
//! cargo run --example echo -- 127.0.0.1:4444
//! ```
//!
//! Any protoo client connects to the printed URL; a request `{"a": 1}` comes
//! back as `{"a": 1}`.

use protoo_server::{Peer, PeerConfig, PeerEvent, ServerConfig, WebSocketServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4444".into());
    let mut server = WebSocketServer::bind(addr, ServerConfig::default()).await?;
    println!("listening on ws://{}/", server.local_addr());

    let mut next_id = 0u64;
    while let Some(request) = server.next_request().await {
        next_id += 1;
        let peer_id = format!("peer-{next_id}");
        tokio::spawn(async move {
            let Ok(transport) = request.accept().await else {
                return;
            };
            let Ok((_peer, mut events)) = Peer::new(peer_id, transport, (), PeerConfig::default())
            else {
                return;
            };
            while let Some(event) = events.next().await {
                if let PeerEvent::Request(request) = event {
                    let data = request.payload().clone();
                    request.accept(&data);
                }
            }
        });
    }
    Ok(())
}
