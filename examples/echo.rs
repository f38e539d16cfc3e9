//! The quickstart: accept every connection and answer each request with its
//! own data.
//!
//! ```sh
//! cargo run --example echo -- 127.0.0.1:4444
//! ```
//!
//! Any protoo client connects to the printed URL; a request `{"a": 1}` comes
//! back as `{"a": 1}`.

use std::sync::atomic::{AtomicU64, Ordering};

use protoo_server::{Peer, PeerConfig, PeerEvent, ServerConfig, WebSocketServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4444".into());
    let server = WebSocketServer::bind(addr, ServerConfig::default()).await?;
    println!("listening on ws://{}/", server.local_addr());

    let next_id = AtomicU64::new(0);
    let handle = server.serve(move |request| {
        let peer_id = format!("peer-{}", next_id.fetch_add(1, Ordering::Relaxed) + 1);
        async move {
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
        }
    });
    handle.stopped().await;
    Ok(())
}
