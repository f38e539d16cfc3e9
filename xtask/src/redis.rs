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

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A redis-server of this run, stopped (by pid) when dropped.
pub(crate) struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `binary` on a free port and waits for its "Ready to accept
    /// connections" line.
    pub(crate) fn start(binary: &Path) -> Result<Server> {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let mut child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let (ready_tx, ready_rx) = mpsc::channel();
            // Reads its output to the end, so that it never blocks on a
            // full pipe; says when it is ready.
            std::thread::spawn(move || {
                for line in BufReader::new(stdout)
                    .lines()
                    .map_while(std::io::Result::ok)
                {
                    if line.contains("Ready to accept connections") {
                        let _ = ready_tx.send(());
                    }
                }
            });
            if ready_rx.recv_timeout(Duration::from_secs(20)).is_ok() {
                println!("redis-server (pid {}) on 127.0.0.1:{port}", child.id());
                return Ok(Server { child, port });
            }
            // Its port was taken meanwhile (it exited), or it hangs.
            let _ = child.kill();
            let _ = child.wait();
        }
        Err("redis-server did not start on a free port".into())
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
