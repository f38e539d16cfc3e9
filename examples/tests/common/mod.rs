//! What the example tests share: the failure guard, the built example
//! binaries, and the room example started on a free port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The longest any single step may take: a failure guard only.
pub(crate) const GUARD: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`]
/// (the example processes take longer to start than in-process servers).
pub(crate) async fn guard<F: std::future::Future>(what: &str, future: F) -> F::Output {
    protoo_testkit::guard_for(GUARD, what, future).await
}

/// The example `name`, built by `cargo test` next to the test binaries
/// (`target/<profile>/deps/TEST-HASH` → `target/<profile>/examples/NAME`);
/// the environment variable `var` overrides the path.
pub(crate) fn example(name: &str, var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps")
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "the {name} example is not built at {}: run `cargo build -p protoo-examples --example \
         {name}` (add `--features metrics` for the metrics tests; a plain `cargo test -p \
         protoo-examples` builds it)",
        binary.display()
    );
    binary
}

/// The room example (`PROTOO_ROOM_BIN` overrides), checked to be newer than
/// its source.
pub(crate) fn room_binary() -> PathBuf {
    let binary = example("room", "PROTOO_ROOM_BIN");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("room/main.rs");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(edited)) = (modified(&binary), modified(&source)) {
        assert!(
            built >= edited,
            "{} is older than room/main.rs: run `cargo build -p protoo-examples --example room`",
            binary.display()
        );
    }
    binary
}

/// A running room example (killed when dropped), its address, and its
/// stdout after the `listening on` line.
pub(crate) struct RoomProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) stdout: Lines<BufReader<ChildStdout>>,
}

/// Starts the room example with `--listen listen` and `args`, and waits for
/// its `listening on ws://ADDR/` line.
pub(crate) async fn start_room(listen: &str, args: &[&str]) -> RoomProcess {
    let mut child = Command::new(room_binary())
        .args(["--listen", listen])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the room example");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = guard("the room example prints its address", stdout.next_line())
        .await
        .expect("read the room example's output")
        .expect("the room example exited without printing its address");
    let addr = line
        .strip_prefix("listening on ws://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "the example must print the bound port");
    RoomProcess {
        child,
        addr,
        stdout,
    }
}
