//! The `redis-server` the cluster tests run against: Debian's package
//! (≥ 7), installed with apt-get when missing (as root; otherwise a message
//! says what to run), started on a free port for the run, stopped by pid.
//!
//! `cargo xtask ci` starts one and hands it to the tests as
//! `PROTOO_REDIS_URL`; tests that restart, pause or reconfigure Redis start
//! their own from `PROTOO_REDIS_SERVER` (the binary's path).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Result, apt_install};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// The oldest Redis the cluster backend supports.
const MIN_MAJOR: u32 = 7;

/// `redis-server`, installed if missing; its path.
pub(crate) fn ensure() -> Result<PathBuf> {
    let binary = which("redis-server").unwrap_or_else(|| PathBuf::from(REDIS_SERVER));
    if !binary.exists() {
        apt_install("redis-server", Path::new(REDIS_SERVER))?;
    }
    let binary = which("redis-server").unwrap_or_else(|| PathBuf::from(REDIS_SERVER));
    let out = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_MAJOR => Ok(binary),
        _ => Err(format!(
            "the cluster tests need redis-server ≥ {MIN_MAJOR}; {} says: {}",
            binary.display(),
            text.trim()
        )),
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A redis-server of this run, stopped (by pid) when dropped, so also when
/// the run fails.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    port: u16,
}

/// What redis-server prints once it accepts connections.
const READY: &str = "Ready to accept connections";

/// How long redis-server may take to be ready.
const READY_WAIT: Duration = Duration::from_secs(20);

impl Server {
    /// Starts `binary` on a free port of 127.0.0.1, without persistence
    /// (`--save "" --appendonly no`), and waits for its "Ready to accept
    /// connections" line (never a sleep); another port if the one picked
    /// was taken meanwhile. Its output goes to `log` when given (the
    /// benchmarks keep it with the run's logs), else nowhere.
    pub(crate) fn start(binary: &Path, log: Option<&Path>) -> Result<Server> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            match Self::start_on(binary, port, log) {
                Ok(server) => {
                    println!("redis-server (pid {}) on 127.0.0.1:{port}", server.pid());
                    return Ok(server);
                }
                Err(e) => last = e,
            }
        }
        Err(format!("redis-server did not start on a free port: {last}"))
    }

    fn start_on(binary: &Path, port: u16, log: Option<&Path>) -> Result<Server> {
        let args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", "no"])
            .chain(["--daemonize", "no", "--logfile", ""])
            .map(str::to_owned)
            .collect();
        Self::spawn(binary, &args, port, READY, log)
    }

    /// Starts `binary` with `args` (a server on `port`, or a sentinel) and
    /// waits for the line `ready` in its output (never a sleep).
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        port: u16,
        ready: &'static str,
        log: Option<&Path>,
    ) -> Result<Server> {
        let mut log_file = match log {
            Some(log) => {
                Some(std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?)
            }
            None => None,
        };
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("redis-server: no stdout".into());
        };
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        // Reads its output for its whole life (a full pipe would block it),
        // copies it to the log, and says when it is ready.
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok)
            {
                if let Some(file) = &mut log_file {
                    let _ = writeln!(file, "{line}");
                }
                if line.contains(ready) {
                    let _ = ready_tx.send(());
                }
            }
        });
        let server = Server { child, port };
        match ready_rx.recv_timeout(READY_WAIT) {
            Ok(()) => Ok(server),
            // Dropping it stops it.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "redis-server exited before it was ready on port {port}"
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("redis-server not ready within {READY_WAIT:?}"))
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (for its CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::stop_by_pid(&mut self.child);
    }
}
