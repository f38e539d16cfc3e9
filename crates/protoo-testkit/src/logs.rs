//! What a test logs, captured: a `tracing` subscriber for the current
//! thread writing every line (text or JSON) into a buffer the test reads.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Level;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

/// How the captured lines are formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// tracing-subscriber's text lines (without colour).
    Text,
    /// One JSON object per line.
    Json,
}

/// The lines logged on this thread at `level` and above, while the guard
/// lives. A `#[tokio::test]` runtime runs every task on the test's thread,
/// so the server's and the peers' lines are captured too.
pub fn capture(format: Format, level: Level) -> (DefaultGuard, Logs) {
    let logs = Logs::default();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(logs.clone());
    let guard = match format {
        Format::Text => tracing::subscriber::set_default(builder.finish()),
        Format::Json => tracing::subscriber::set_default(builder.json().finish()),
    };
    (guard, logs)
}

/// The captured output.
#[derive(Clone, Debug, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    /// The lines containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    }

    /// Forgets what was written so far.
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}
