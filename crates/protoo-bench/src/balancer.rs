//! A round-robin TCP balancer the harness controls (S13): each connection
//! it accepts is forwarded to the next node still in its rotation; a node
//! taken out of the rotation gets no new connection (as a load balancer
//! deregisters a node being deployed), while the connections it already
//! has go on until either side ends them.
//!
//! It remembers which node each connection went to, by the client's
//! address as the balancer sees it (the client socket's local address).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the accept loop and the harness share.
#[derive(Debug)]
struct State {
    /// The nodes, `HOST:PORT`.
    upstreams: Vec<String>,
    /// Which nodes are in the rotation.
    live: Mutex<Vec<bool>>,
    /// The next turn.
    next: AtomicUsize,
    /// The node each client address was sent to.
    placed: Mutex<HashMap<SocketAddr, usize>>,
}

/// A running balancer; stops accepting when dropped (connections being
/// forwarded end with the runtime).
#[derive(Debug)]
pub(crate) struct Balancer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Balancer {
    /// Listens on 127.0.0.1 (a free port) and spreads over `upstreams`
    /// (`HOST:PORT` each), all in the rotation.
    pub(crate) async fn start(upstreams: Vec<String>) -> Result<Balancer, String> {
        if upstreams.is_empty() {
            return Err("balancer: no node".into());
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("balancer: bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("balancer: local address: {e}"))?;
        let state = Arc::new(State {
            live: Mutex::new(vec![true; upstreams.len()]),
            upstreams,
            next: AtomicUsize::new(0),
            placed: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Balancer {
            addr,
            state,
            accept,
        })
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes node `node` out of the rotation: no new connection goes to it.
    pub(crate) fn remove(&self, node: usize) {
        if let Some(l) = lock(&self.state.live).get_mut(node) {
            *l = false;
        }
    }

    /// The node the connection of the client at `client` went to.
    pub(crate) fn node_of(&self, client: SocketAddr) -> Option<usize> {
        lock(&self.state.placed).get(&client).copied()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// The next node in the rotation, if any is left.
    fn pick(&self) -> Option<usize> {
        let live = lock(&self.live);
        let n = live.len();
        (0..n)
            .map(|_| self.next.fetch_add(1, Ordering::Relaxed) % n)
            .find(|&i| live[i])
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((down, client)) = listener.accept().await else {
            continue;
        };
        // A connection with no node left is dropped: the client's
        // handshake fails and it tries again.
        let Some(node) = state.pick() else { continue };
        lock(&state.placed).insert(client, node);
        tokio::spawn(forward(down, state.upstreams[node].clone()));
    }
}

/// Forwards one connection until either side ends it.
async fn forward(mut down: TcpStream, upstream: String) {
    let _ = down.set_nodelay(true);
    if let Ok(mut up) = TcpStream::connect(&upstream).await {
        let _ = up.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections alternate between the nodes; a node taken out gets none.
    #[tokio::test]
    async fn round_robin_and_removal() {
        let a = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = |l: &TcpListener| l.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
        let lb = Balancer::start(vec![addr(&a), addr(&b)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut nodes, mut keep) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let c = TcpStream::connect(lb.addr())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let me = c.local_addr().unwrap_or_else(|e| panic!("{e}"));
            // Accepted by the node it went to.
            let node = loop {
                if let Some(n) = lb.node_of(me) {
                    break n;
                }
                tokio::task::yield_now().await;
            };
            let l = if node == 0 { &a } else { &b };
            l.accept().await.unwrap_or_else(|e| panic!("{e}"));
            nodes.push(node);
            keep.push(c);
        }
        assert_eq!(nodes, [0, 1, 0, 1]);
        lb.remove(0);
        for _ in 0..2 {
            let c = TcpStream::connect(lb.addr())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            b.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let me = c.local_addr().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(lb.node_of(me), Some(1));
            keep.push(c);
        }
    }
}
