//! [`CutProxy`]: a TCP proxy between a test's client and its server that
//! the test can break on purpose.
//!
//! Each accepted connection is forwarded to the upstream address, bytes
//! copied both ways through one fixed buffer per direction. The controls:
//!
//! - [`CutProxy::cut_all`]: every live connection is reset on both sides
//!   (`SO_LINGER` 0, then the sockets are dropped): each side reads a
//!   reset, no WebSocket close frame, no FIN;
//! - [`CutProxy::blackhole_all`]: every live connection stops forwarding and
//!   stops reading in both directions, its sockets kept open: neither side
//!   notices, only a keepalive or a timeout can tell;
//!   [`CutProxy::heal_all`] makes them forward again (what the sides wrote
//!   meanwhile waited in the kernel's buffers and goes through);
//! - [`CutProxy::refuse`]: while on, new connections are accepted and reset
//!   at once (the client's attempt fails).
//!
//! Connections accepted later are forwarded normally, whatever happened to
//! the earlier ones. The controls are `async` and return once every
//! connection they touched has done it: a test never waits on time.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The copy buffer of each direction of a connection.
pub const COPY_BUFFER: usize = 16 * 1024;

/// A TCP proxy on 127.0.0.1 that a test can cut, black-hole and make refuse
/// connections. Dropping it resets every connection it still forwards.
///
/// ```
/// use protoo_testkit::proxy::CutProxy;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use tokio::net::{TcpListener, TcpStream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let proxy = CutProxy::start(server.local_addr().unwrap()).await;
/// let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
/// let (mut upstream, _) = server.accept().await.unwrap();
/// client.write_all(b"hi").await.unwrap();
/// let mut two = [0; 2];
/// upstream.read_exact(&mut two).await.unwrap();
/// assert_eq!(&two, b"hi");
///
/// proxy.cut_all().await;
/// // Both sides were reset.
/// assert!(client.read(&mut two).await.is_err());
/// assert!(upstream.read(&mut two).await.is_err());
/// # }
/// ```
pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    refuse: AtomicBool,
    next_id: AtomicU64,
    /// The live connections' control channels.
    links: Mutex<HashMap<u64, mpsc::UnboundedSender<Command>>>,
    /// How many connections are live (the size of `links`).
    live: watch::Sender<usize>,
    /// How many connections were accepted and forwarded (refused ones
    /// excluded), ever.
    accepted: watch::Sender<usize>,
    refused: AtomicUsize,
}

/// What a connection's task is told; each carries the acknowledgement,
/// sent once done.
enum Command {
    Cut(Option<oneshot::Sender<()>>),
    Blackhole(oneshot::Sender<()>),
    Heal(oneshot::Sender<()>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CutProxy {
    /// Binds 127.0.0.1:0 and forwards every connection to `upstream`.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound, or outside a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            refuse: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            links: Mutex::new(HashMap::new()),
            live: watch::Sender::new(0),
            accepted: watch::Sender::new(0),
            refused: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        CutProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live connections (forwarding or black-holed).
    pub fn connections(&self) -> usize {
        lock(&self.shared.links).len()
    }

    /// How many connections were accepted and forwarded so far (refused
    /// ones excluded).
    pub fn accepted(&self) -> usize {
        *self.shared.accepted.borrow()
    }

    /// How many connections were refused so far ([`CutProxy::refuse`]).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Waits until exactly `n` connections are live.
    pub async fn wait_connections(&self, n: usize) {
        let mut live = self.shared.live.subscribe();
        let _ = live.wait_for(|&count| count == n).await;
    }

    /// Waits until at least `n` connections were accepted and forwarded.
    pub async fn wait_accepted(&self, n: usize) {
        let mut accepted = self.shared.accepted.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = accepted.wait_for(|&count| count >= n).await;
    }

    /// Resets both sides of every live connection (`SO_LINGER` 0, then
    /// closed): each side reads a reset. Returns once they are all reset.
    pub async fn cut_all(&self) {
        self.each(|ack| Command::Cut(Some(ack))).await;
    }

    /// Stops forwarding and reading on every live connection, both ways,
    /// keeping its sockets open: neither side notices. Returns once none of
    /// them forwards any more.
    pub async fn blackhole_all(&self) {
        self.each(Command::Blackhole).await;
    }

    /// Makes every black-holed connection forward again.
    pub async fn heal_all(&self) {
        self.each(Command::Heal).await;
    }

    /// While `refuse` is true, new connections are accepted and reset at
    /// once, without a connection upstream.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    async fn each(&self, command: impl Fn(oneshot::Sender<()>) -> Command) {
        let links: Vec<_> = lock(&self.shared.links).values().cloned().collect();
        let mut acks = Vec::with_capacity(links.len());
        for link in links {
            let (ack, done) = oneshot::channel();
            if link.send(command(ack)).is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            // An error: the connection ended on its own meanwhile.
            let _ = done.await;
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in lock(&self.shared.links).values() {
            let _ = link.send(Command::Cut(None));
        }
    }
}

impl fmt::Debug for CutProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("connections", &self.connections())
            .field("refusing", &self.shared.refuse.load(Ordering::SeqCst))
            .finish()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::debug!(%error, "proxy accept failed");
                continue;
            }
        };
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            reset(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut links = lock(&shared.links);
            links.insert(id, tx);
            shared.live.send_replace(links.len());
        }
        shared.accepted.send_modify(|count| *count += 1);
        tokio::spawn(connection(id, client, rx, shared.clone()));
    }
}

/// Closes `stream` with a reset (`SO_LINGER` 0): the remote reads
/// `ECONNRESET`, unsent bytes are discarded.
fn reset(stream: TcpStream) {
    if let Err(error) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "SO_LINGER 0 failed");
    }
    drop(stream);
}

/// Removes a connection from the live ones when its task ends, however.
struct Live {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut links = lock(&self.shared.links);
        links.remove(&self.id);
        self.shared.live.send_replace(links.len());
    }
}

/// What a connection does now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Forward,
    Blackhole,
}

/// How a connection's forwarding ended.
enum End {
    /// Both directions ended cleanly (FIN both ways).
    Done,
    /// An I/O error on one side, or a cut: reset both.
    Reset(Option<oneshot::Sender<()>>),
}

async fn connection(
    id: u64,
    mut client: TcpStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let live = Live {
        id,
        shared: shared.clone(),
    };
    // Commands that come while the upstream connects wait in the channel.
    let mut upstream = match TcpStream::connect(shared.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(%error, "proxy: upstream connect failed");
            drop(live);
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let mut up = Direction::new();
        let mut down = Direction::new();
        let mut mode = Mode::Forward;
        loop {
            let command = match mode {
                Mode::Forward => {
                    let forward = async {
                        tokio::try_join!(
                            up.pump(&mut client_read, &mut upstream_write),
                            down.pump(&mut upstream_read, &mut client_write),
                        )
                    };
                    tokio::select! {
                        command = commands.recv() => command,
                        result = forward => match result {
                            Ok(_) => break End::Done,
                            Err(error) => {
                                tracing::debug!(%error, "proxy: connection failed");
                                break End::Reset(None);
                            }
                        },
                    }
                }
                Mode::Blackhole => commands.recv().await,
            };
            match command {
                // The proxy is gone without saying: reset.
                None => break End::Reset(None),
                Some(Command::Cut(ack)) => break End::Reset(ack),
                Some(Command::Blackhole(ack)) => {
                    mode = Mode::Blackhole;
                    let _ = ack.send(());
                }
                Some(Command::Heal(ack)) => {
                    mode = Mode::Forward;
                    let _ = ack.send(());
                }
            }
        }
    };
    drop(live);
    match end {
        End::Done => {}
        End::Reset(ack) => {
            reset(client);
            reset(upstream);
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
}

/// One direction of a connection: a fixed buffer, what it holds not yet
/// written, and whether the reading side ended.
struct Direction {
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    shut: bool,
}

impl Direction {
    fn new() -> Self {
        Direction {
            buffer: vec![0; COPY_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }

    /// Copies from `from` to `to` until `from` ends (then shuts `to`'s
    /// writing down). Cancel-safe: a read or write is taken into account
    /// only once it completed, so the copy goes on where it stopped.
    async fn pump(
        &mut self,
        from: &mut (impl AsyncReadExt + Unpin),
        to: &mut (impl AsyncWriteExt + Unpin),
    ) -> io::Result<()> {
        loop {
            if self.start < self.end {
                let n = to.write(&self.buffer[self.start..self.end]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.start += n;
            } else if self.eof {
                if !self.shut {
                    to.shutdown().await?;
                    self.shut = true;
                }
                return Ok(());
            } else {
                let n = from.read(&mut self.buffer).await?;
                (self.start, self.end) = (0, n);
                self.eof = n == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and hands them to the test.
    async fn upstream() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        (addr, rx)
    }

    async fn pair(
        proxy: &CutProxy,
        accepted: &mut mpsc::UnboundedReceiver<TcpStream>,
    ) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(proxy.addr()).await.unwrap();
        let server = crate::guard("upstream accept", accepted.recv())
            .await
            .unwrap();
        (client, server)
    }

    async fn roundtrip(a: &mut TcpStream, b: &mut TcpStream, bytes: &[u8]) {
        let mut got = vec![0; bytes.len()];
        // Written and read at once: more than the kernel's buffers holds.
        let (written, read) = crate::guard("forwarded", async {
            tokio::join!(a.write_all(bytes), b.read_exact(&mut got))
        })
        .await;
        written.unwrap();
        read.unwrap();
        assert_eq!(got, bytes);
    }

    fn is_reset(result: io::Result<usize>) -> bool {
        matches!(result, Err(error) if error.kind() == io::ErrorKind::ConnectionReset)
    }

    #[tokio::test]
    async fn forwards_both_ways_more_than_a_buffer() {
        let (addr, mut accepted) = upstream().await;
        let proxy = CutProxy::start(addr).await;
        let (mut client, mut server) = pair(&proxy, &mut accepted).await;
        let big: Vec<u8> = (0..COPY_BUFFER * 5 + 7).map(|i| (i % 251) as u8).collect();
        roundtrip(&mut client, &mut server, &big).await;
        roundtrip(&mut server, &mut client, b"pong").await;
        assert_eq!((proxy.connections(), proxy.accepted()), (1, 1));

        // A FIN goes through, each way, and the connection is gone once
        // both ended.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        crate::guard("eof upstream", server.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(rest.is_empty());
        server.write_all(b"last").await.unwrap();
        drop(server);
        crate::guard("eof downstream", client.read_to_end(&mut rest))
            .await
            .unwrap();
        assert_eq!(rest, b"last");
        crate::guard("no live connection", proxy.wait_connections(0)).await;
    }

    #[tokio::test]
    async fn cut_resets_both_sides() {
        let (addr, mut accepted) = upstream().await;
        let proxy = CutProxy::start(addr).await;
        let (mut c1, mut s1) = pair(&proxy, &mut accepted).await;
        let (mut c2, mut s2) = pair(&proxy, &mut accepted).await;
        roundtrip(&mut c1, &mut s1, b"one").await;
        roundtrip(&mut s2, &mut c2, b"two").await;
        assert_eq!(proxy.connections(), 2);
        proxy.cut_all().await;
        assert_eq!(proxy.connections(), 0);
        let mut buf = [0; 8];
        for stream in [&mut c1, &mut s1, &mut c2, &mut s2] {
            let read = crate::guard("reset", stream.read(&mut buf)).await;
            assert!(is_reset(read), "expected a reset");
        }
        // The proxy still forwards new connections.
        let (mut c3, mut s3) = pair(&proxy, &mut accepted).await;
        roundtrip(&mut c3, &mut s3, b"three").await;
        assert_eq!((proxy.connections(), proxy.accepted()), (1, 3));
    }

    #[tokio::test]
    async fn blackhole_holds_everything_until_healed() {
        let (addr, mut accepted) = upstream().await;
        let proxy = CutProxy::start(addr).await;
        let (mut client, mut server) = pair(&proxy, &mut accepted).await;
        roundtrip(&mut client, &mut server, b"before").await;
        proxy.blackhole_all().await;
        client.write_all(b"up").await.unwrap();
        server.write_all(b"down").await.unwrap();
        // Nothing goes through: both ends still open. A connection made
        // meanwhile forwards.
        let (mut c2, mut s2) = pair(&proxy, &mut accepted).await;
        roundtrip(&mut c2, &mut s2, b"fresh").await;
        let mut buf = [0; 8];
        assert!(matches!(
            server.try_read(&mut buf),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        ));
        assert!(matches!(
            client.try_read(&mut buf),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        ));
        assert_eq!(proxy.connections(), 2);
        // Healed: what waited goes through, in order.
        proxy.heal_all().await;
        let mut up = [0; 2];
        crate::guard("held bytes upstream", server.read_exact(&mut up))
            .await
            .unwrap();
        assert_eq!(&up, b"up");
        let mut down = [0; 4];
        crate::guard("held bytes downstream", client.read_exact(&mut down))
            .await
            .unwrap();
        assert_eq!(&down, b"down");
        roundtrip(&mut client, &mut server, b"after").await;
        // A black-holed connection can be cut too.
        proxy.blackhole_all().await;
        proxy.cut_all().await;
        assert!(is_reset(client.read(&mut buf).await));
        assert!(is_reset(server.read(&mut buf).await));
    }

    #[tokio::test]
    async fn refuse_resets_new_connections_only() {
        let (addr, mut accepted) = upstream().await;
        let proxy = CutProxy::start(addr).await;
        let (mut old, mut old_server) = pair(&proxy, &mut accepted).await;
        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0; 8];
        let read = crate::guard("refused", refused.read(&mut buf)).await;
        assert!(is_reset(read), "a refused connection is reset");
        assert_eq!((proxy.refused(), proxy.accepted()), (1, 1));
        roundtrip(&mut old, &mut old_server, b"still").await;
        proxy.refuse(false);
        let (mut c, mut s) = pair(&proxy, &mut accepted).await;
        roundtrip(&mut c, &mut s, b"again").await;
        proxy.wait_accepted(2).await;
        assert!(
            accepted.try_recv().is_err(),
            "no upstream for the refused one"
        );
    }

    #[tokio::test]
    async fn a_reset_on_one_side_resets_the_other_and_drop_resets_all() {
        let (addr, mut accepted) = upstream().await;
        let proxy = CutProxy::start(addr).await;
        let (client, mut server) = pair(&proxy, &mut accepted).await;
        reset(client);
        let mut buf = [0; 8];
        assert!(is_reset(
            crate::guard("reset passed on", server.read(&mut buf)).await
        ));
        let (mut client, _server) = pair(&proxy, &mut accepted).await;
        drop(proxy);
        assert!(is_reset(
            crate::guard("reset on drop", client.read(&mut buf)).await
        ));
    }
}
