//! The process's file-descriptor budget, shared by the bound server and the
//! axum listener: the connection cap lowered to what the descriptor limit
//! allows, accept errors backed off and logged once per interval, and the
//! 503 answer for a connection over the cap.
//!
//! Past the cap a connection is still accepted, answered 503 and closed:
//! the cap stays [`RESERVE_MAX`] descriptors (at most a quarter of the
//! limit) below the usable descriptors, so that the 503 path, the
//! listeners, Redis and the logs always have descriptors, and a client
//! gets an answer instead of a connection that hangs in the backlog.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Descriptors kept out of the connection cap, at most (a quarter of the
/// limit when it is small): listeners, Redis, log files, and connections
/// being answered 503.
pub(crate) const RESERVE_MAX: usize = 64;

/// How long writing the 503 may take before the socket is dropped.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection answered 503 is read (and what it sends
/// discarded) before it is closed, so that closing with unread input does
/// not reset the connection before the client has read the answer.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Accept errors are logged at most once per this interval, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The first pause after an accept error that is not about one connection
/// (descriptors exhausted and the like); doubled on each further one.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest pause after accept errors.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The soft descriptor limit, after raising it to the hard limit where
/// allowed; `None` where there is none (or it cannot be read).
fn descriptor_limit() -> Option<usize> {
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    *LIMIT.get_or_init(read_limit)
}

#[cfg(unix)]
fn read_limit() -> Option<usize> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => Some(usize::try_from(soft).unwrap_or(usize::MAX)),
        Err(error) => {
            tracing::debug!(%error, "cannot read or raise RLIMIT_NOFILE");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        }
    }
}

#[cfg(not(unix))]
fn read_limit() -> Option<usize> {
    None
}

/// Descriptors kept out of the connection cap for a descriptor limit.
fn reserve(limit: usize) -> usize {
    RESERVE_MAX.min(limit / 4)
}

/// `max_connections`, lowered to fit the descriptor limit (minus the
/// reserve), with a warning when it is lowered.
pub(crate) fn connection_cap(max_connections: usize) -> usize {
    let Some(limit) = descriptor_limit() else {
        return max_connections;
    };
    let usable = limit.saturating_sub(reserve(limit)).max(1);
    if max_connections <= usable {
        return max_connections;
    }
    tracing::warn!(
        max_connections,
        lowered_to = usable,
        descriptor_limit = limit,
        "max_connections does not fit the file-descriptor limit (RLIMIT_NOFILE): lowered; \
         raise the limit (ulimit -n) to serve more"
    );
    usable
}

/// Connections being answered 503 now, across the process.
static REJECTING: AtomicUsize = AtomicUsize::new(0);

/// Counts a connection being answered 503 while it lives.
struct Rejecting;

impl Rejecting {
    /// A place among the connections being answered 503, if one is free
    /// (half the reserve): beyond, the connection is closed unanswered, so
    /// that a flood over the cap cannot take the reserve.
    fn enter() -> Option<Rejecting> {
        let most = descriptor_limit().map_or(RESERVE_MAX, reserve) / 2;
        let most = most.max(1);
        REJECTING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < most).then_some(now + 1)
            })
            .ok()
            .map(|_| Rejecting)
    }
}

impl Drop for Rejecting {
    fn drop(&mut self) {
        REJECTING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection over the cap with 503 `too many connections`
/// before reading its request, then lingers: the write side is shut down
/// (the client sees the answer, then the end) and input is discarded until
/// the client closes, for at most a second. Closing at once, with the
/// client's request unread or still arriving, would reset the connection
/// and the client could lose the answer. Past the places for such answers,
/// the connection is closed at once.
pub(crate) async fn answer_over_limit<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(_rejecting) = Rejecting::enter() else {
        return;
    };
    let answer = async {
        stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
                  Content-Type: text/plain; charset=utf-8\r\n\
                  X-WebSocket-Reject-Reason: too many connections\r\n\
                  Content-Length: 20\r\n\r\ntoo many connections",
            )
            .await?;
        stream.shutdown().await
    };
    if !matches!(
        tokio::time::timeout(REJECT_WRITE_TIMEOUT, answer).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let drain = async {
        let mut scratch = [0u8; 256];
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REJECT_LINGER, drain).await;
}

/// What an accept loop does with accept errors: errors about one
/// connection (reset or aborted before it was accepted) are skipped; the
/// others (descriptors exhausted, out of memory) pause the loop, longer
/// each time in a row, and are logged at most once per interval with how
/// many there were.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    /// Errors since the last line logged.
    unlogged: u64,
    /// When the last line was logged.
    logged_at: Option<Instant>,
    /// The next pause.
    backoff: Option<Duration>,
}

impl AcceptErrors {
    /// A connection was accepted: the next error pauses briefly again.
    pub(crate) fn accepted(&mut self) {
        self.backoff = None;
    }

    /// Handles an accept error: logs it when due, and pauses.
    pub(crate) async fn failed(&mut self, error: &io::Error) {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            tracing::debug!(%error, "connection lost before it was accepted");
            return;
        }
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL)
        {
            tracing::warn!(
                %error,
                failures = self.unlogged,
                "accept failed (out of file descriptors?); backing off"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        let pause = self.backoff.unwrap_or(BACKOFF_MIN);
        self.backoff = Some((pause * 2).min(BACKOFF_MAX));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_at_most_a_quarter() {
        assert_eq!(reserve(64), 16);
        assert_eq!(reserve(1024), RESERVE_MAX);
        assert_eq!(reserve(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_and_are_logged_once_per_interval() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let start = Instant::now();
        errors.failed(&emfile).await;
        assert_eq!(errors.unlogged, 0, "the first one is logged");
        for _ in 0..5 {
            errors.failed(&emfile).await;
        }
        assert_eq!(errors.unlogged, 5, "then not until the interval passed");
        assert_eq!(errors.backoff, Some(BACKOFF_MAX.min(BACKOFF_MIN * 64)));
        assert!(start.elapsed() >= BACKOFF_MIN * 63);
        errors.accepted();
        assert_eq!(errors.backoff, None);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        errors.failed(&reset).await;
        assert_eq!(
            errors.unlogged, 5,
            "errors about one connection are skipped"
        );
    }
}
