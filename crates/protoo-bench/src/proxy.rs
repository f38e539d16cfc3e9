//! A TCP proxy the harness controls (S12): it forwards every connection it
//! accepts to the server and can cut any one of them abruptly, as a network
//! blip would: both of its sockets are closed with `SO_LINGER` 0, so the
//! client and the server each get a TCP reset, and whatever was in flight
//! through the proxy is gone.
//!
//! A connection is named by the client's address as the proxy sees it (the
//! client socket's local address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The connections being forwarded, by client address: sending on one cuts it.
type Conns = Arc<Mutex<HashMap<SocketAddr, oneshot::Sender<()>>>>;

/// A running proxy; stops accepting when dropped (connections being
/// forwarded end with the runtime).
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    conns: Conns,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`
    /// (`HOST:PORT`).
    pub(crate) async fn start(upstream: &str) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("proxy: bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("proxy: local address: {e}"))?;
        let conns = Conns::default();
        let accept = tokio::spawn(accept_loop(listener, upstream.to_owned(), conns.clone()));
        Ok(Proxy {
            addr,
            conns,
            accept,
        })
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the connection of the client at `client` (reset on both sides);
    /// `false` when the proxy forwards no such connection (any more).
    pub(crate) fn cut(&self, client: SocketAddr) -> bool {
        let cut = (self.conns.lock().unwrap_or_else(PoisonError::into_inner)).remove(&client);
        cut.is_some_and(|tx| tx.send(()).is_ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, conns: Conns) {
    loop {
        let Ok((down, client)) = listener.accept().await else {
            continue;
        };
        // Registered before anything is forwarded: the client's handshake
        // cannot complete before it can be cut.
        let (tx, rx) = oneshot::channel();
        (conns.lock().unwrap_or_else(PoisonError::into_inner)).insert(client, tx);
        tokio::spawn(forward(down, client, upstream.clone(), rx, conns.clone()));
    }
}

/// Forwards one connection until either side ends it or it is cut.
async fn forward(
    mut down: TcpStream,
    client: SocketAddr,
    upstream: String,
    cut: oneshot::Receiver<()>,
    conns: Conns,
) {
    let _ = down.set_nodelay(true);
    if let Ok(mut up) = TcpStream::connect(&upstream).await {
        let _ = up.set_nodelay(true);
        let cut = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
            // Only `Proxy::cut` sends; the sender is dropped unsent only
            // below, once this connection is over.
            r = cut => r.is_ok(),
        };
        if cut {
            // Both sides at once: a reset each, nothing flushed.
            let _ = down.set_zero_linger();
            let _ = up.set_zero_linger();
        }
    }
    (conns.lock().unwrap_or_else(PoisonError::into_inner)).remove(&client);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Bytes go through both ways; a cut resets both sides.
    #[tokio::test]
    async fn forwards_and_cuts() {
        let server = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let upstream = server
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let proxy = Proxy::start(&upstream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut far, _) = server.accept().await.unwrap_or_else(|e| panic!("{e}"));
        client
            .write_all(b"ping")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 4];
        far.read_exact(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"ping");
        far.write_all(b"pong")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .read_exact(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"pong");

        let me = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert!(proxy.cut(me));
        assert!(!proxy.cut(me), "cut twice");
        let reset = |r: std::io::Result<usize>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(reset(client.read(&mut buf).await), "client not reset");
        assert!(reset(far.read(&mut buf).await), "server not reset");
    }
}
