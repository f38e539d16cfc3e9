//! Developer commands for protoo-rs.
//!
//! - `cargo xtask ci`: everything CI checks, in order: formatting, clippy
//!   (warnings are errors), the workspace tests, the loom model of the byte
//!   queue, rustdoc (broken links are
//!   errors), `cargo package` of the library crates, the interop suites
//!   against the real npm protoo packages, the room example's page in
//!   headless Chromium (Debian's `chromium`, installed with apt-get when
//!   missing) with its protoo-client bundle checked, the WebSocket
//!   conformance suite, and a short smoke of the benchmarks.
//! - `cargo xtask browser`: the room example's page in headless Chromium
//!   only (part of `ci`).
//! - `cargo xtask redis-ha`: starts a Sentinel set-up and a Redis Cluster
//!   (as `ci` does for the cluster suite), prints their addresses, and
//!   stops them on Enter.
//! - `cargo xtask bench [--smoke]`: the benchmarks side by side with the Node
//!   protoo-server (see `BENCHMARKS.md`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod autobahn;
mod bench;
mod browser;
mod redis;
mod redis_ha;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("autobahn") => autobahn::run(),
        Some("redis-ha") => redis_ha_run(),
        Some("browser") => run(
            "build the room example",
            cargo().args(["build", "-p", "protoo-examples", "--example", "room"]),
        )
        .and_then(|()| browser::run_suites()),
        _ => {
            eprintln!("usage: cargo xtask <ci | bench [--smoke] | autobahn | browser | redis-ha>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask redis-ha`: both highly available topologies, until Enter.
fn redis_ha_run() -> Result {
    let binary = redis::ensure()?;
    let started = Instant::now();
    let topologies = redis_ha::start_in_background(binary)
        .join()
        .map_err(|_| "starting the Redis topologies panicked".to_owned())??;
    println!(
        "ready in {:.1}s:\n  PROTOO_REDIS_SENTINEL={} PROTOO_REDIS_MASTER={}\n  PROTOO_REDIS_CLUSTER={}\n\
         (room example: --redis-sentinel {} --redis-master {}, or --redis-cluster {})\n\
         Enter stops them.",
        started.elapsed().as_secs_f64(),
        topologies.sentinel.addresses(),
        redis_ha::MASTER,
        topologies.cluster.addresses(),
        topologies.sentinel.addresses(),
        redis_ha::MASTER,
        topologies.cluster.addresses(),
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// The workspace root (the parent of this crate's folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, failing with its description if it fails.
fn run(what: &str, cmd: &mut Command) -> Result {
    println!("\n==> {what}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    println!(
        "<== {what}: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn ci() -> Result {
    // The Sentinel set-up and the Redis Cluster start on a thread of their
    // own while fmt and clippy run; they are stopped (by pid) when `ci`
    // returns, however it returns.
    let redis_binary = redis::ensure()?;
    let topologies = redis_ha::start_in_background(redis_binary.clone());
    let checks = run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )
    .and_then(|()| {
        run(
            "clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]),
        )
    });
    // Joined whatever the checks said: what the thread started is then
    // ours to stop, also when a check failed (a process that exits while
    // the thread still runs would leave its servers behind).
    let topologies = topologies
        .join()
        .map_err(|_| "starting the Redis topologies panicked".to_owned())?;
    checks?;
    let topologies = topologies?;
    // One redis-server for the cluster tests, stopped (by pid) when `ci`
    // returns, however it returns.
    let redis_server = redis::Server::start(&redis_binary, None)?;
    run(
        "tests",
        cargo()
            .args(["test", "--workspace", "--all-features"])
            .env("PROTOO_REDIS_URL", redis_server.url())
            .env("PROTOO_REDIS_SERVER", &redis_binary),
    )?;
    // The cluster suite again over each highly available topology. (The
    // outage suite, which restarts, stops and reconfigures masters, ran in
    // the step above on set-ups of its own on each topology.)
    run(
        "protoo-redis cluster suite over Sentinel",
        cargo()
            .args(["test", "--workspace", "--all-features", "--test", "cluster"])
            .env("PROTOO_REDIS_SENTINEL", topologies.sentinel.addresses())
            .env("PROTOO_REDIS_MASTER", redis_ha::MASTER)
            .env("PROTOO_REDIS_SERVER", &redis_binary),
    )?;
    run(
        "protoo-redis cluster suite over Redis Cluster",
        cargo()
            .args(["test", "--workspace", "--all-features", "--test", "cluster"])
            .env("PROTOO_REDIS_CLUSTER", topologies.cluster.addresses())
            .env("PROTOO_REDIS_SERVER", &redis_binary),
    )?;
    // The topologies stay up for the interop suites (the cluster suite runs
    // over each of them too) and stop when `ci` returns.
    run(
        "loom model of the byte queue's wake-ups (tests/loom_queue.rs)",
        cargo()
            .args([
                "test",
                "-p",
                "protoo-queue",
                "--release",
                "--test",
                "loom_queue",
                "--target-dir",
            ])
            .arg(loom_target_dir())
            .env("RUSTFLAGS", "--cfg protoo_loom")
            .env("LOOM_MAX_PREEMPTIONS", LOOM_MAX_PREEMPTIONS),
    )?;
    run(
        "rustdoc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env(
                "RUSTDOCFLAGS",
                "-D warnings -D rustdoc::broken_intra_doc_links",
            ),
    )?;
    forget_packaged_sources();
    run(
        "cargo package (each library crate packages and builds from its package)",
        cargo()
            .args(["package", "--allow-dirty", "--target-dir"])
            .arg(package_target_dir())
            .args([
                "-p",
                "protoo-codec",
                "-p",
                "protoo-queue",
                "-p",
                "protoo-transport",
                "-p",
                "protoo-core",
                "-p",
                "protoo-server",
                "-p",
                "protoo-client",
                "-p",
                "protoo-redis",
            ]),
    )?;
    check_codec_has_no_runtime()?;
    check_no_metrics_without_the_feature()?;
    check_no_redis_without_the_feature()?;
    interop(&redis_binary, &topologies)?;
    drop(topologies);
    browser::run_suites()?;
    println!("\n==> WebSocket conformance (Autobahn cases through kosoku)");
    autobahn::run()?;
    println!("\n==> benchmark smoke (cargo xtask bench --smoke)");
    bench::run(&["--smoke".to_owned()])
}

/// The interop suites against the real npm protoo packages
/// (`tests/interop`): the JavaScript protoo-client against our room
/// example and the sfu_room example (mediasoup-demo's signalling), and our
/// Rust peer and our Rust client (the bot example) against
/// the Node protoo-server. The cluster suite runs over a redis-server of its
/// own, then over the Sentinel set-up and the Redis Cluster `topologies`.
fn interop(redis_server: &Path, topologies: &redis_ha::Topologies) -> Result {
    let dir = root().join("tests/interop");
    run(
        "npm ci (tests/interop)",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
    )?;
    run(
        "build the room (with its redis feature), sfu_room, rust_peer and bot examples",
        cargo().args([
            "build",
            "-p",
            "protoo-examples",
            "--features",
            "redis",
            "--example",
            "room",
            "--example",
            "sfu_room",
            "--example",
            "rust_peer",
            "--example",
            "bot",
        ]),
    )?;
    let examples = target_dir().join("debug/examples");
    run(
        "interop suites (node --test)",
        Command::new("node")
            .arg("--test")
            .current_dir(&dir)
            .env("PROTOO_INTEROP_REQUIRE", "1")
            .env("PROTOO_ROOM_BIN", examples.join("room"))
            .env("PROTOO_SFU_BIN", examples.join("sfu_room"))
            .env("PROTOO_RUST_PEER_BIN", examples.join("rust_peer"))
            .env("PROTOO_BOT_BIN", examples.join("bot"))
            .env("PROTOO_REDIS_SERVER", redis_server)
            .env("PROTOO_REDIS_SENTINEL", topologies.sentinel.addresses())
            .env("PROTOO_REDIS_MASTER", redis_ha::MASTER)
            .env("PROTOO_REDIS_CLUSTER", topologies.cluster.addresses()),
    )
}

/// Installs a Debian package with apt-get when `binary` is missing (as
/// root; otherwise says what to run). Never downloads a prebuilt binary.
fn apt_install(package: &str, binary: &Path) -> Result {
    if binary.exists() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{} is missing: run `sudo apt-get update && sudo apt-get install -y {package}` \
             (or run cargo xtask ci as root, which installs it)",
            binary.display()
        ));
    }
    run(
        &format!("apt-get update (for {package})"),
        Command::new("apt-get").args(["update", "-q"]),
    )?;
    run(
        &format!("apt-get install {package}"),
        Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if binary.exists() {
        Ok(())
    } else {
        Err(format!(
            "apt-get installed {package}, but {} is missing",
            binary.display()
        ))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Without the `redis` feature, nothing Redis-related is in the server,
/// the client or the examples' dependency trees.
fn check_no_redis_without_the_feature() -> Result {
    println!("\n==> without the redis feature, no Redis client in the dependency tree");
    let tree = dependency_tree(&["protoo-server", "protoo-client", "protoo-examples"], &[])?;
    if tree
        .lines()
        .any(|l| l.starts_with("redis ") || l.starts_with("protoo-redis "))
    {
        return Err(format!(
            "a Redis crate is built without the redis feature:\n{tree}"
        ));
    }
    println!("<== ok");
    Ok(())
}

/// `cargo package` builds each crate against the packages of the others
/// through a temporary local registry. Cargo takes registry crates to be
/// immutable: it reuses the sources it unpacked under
/// `$CARGO_HOME/registry/src/-HASH/` and what it built from them under
/// the packaging target directory ([`package_target_dir`]), by name and
/// version, so a second run would build
/// against the first run's code. Both are forgotten for our own crates
/// first (a local registry's folder name starts with `-`; crates.io's never
/// does).
fn forget_packaged_sources() {
    for profile in ["debug", "release"] {
        let fingerprints = package_target_dir().join(profile).join(".fingerprint");
        if let Ok(entries) = std::fs::read_dir(&fingerprints) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("protoo-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(src) else {
        return;
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for krate in crates.flatten() {
            if krate.file_name().to_string_lossy().starts_with("protoo-") {
                let _ = std::fs::remove_dir_all(krate.path());
            }
        }
    }
}

/// Where `cargo package` verifies the packages: apart from the workspace's
/// builds, so that forgetting what it built from earlier packages costs the
/// workspace nothing.
/// Loom builds the whole dependency tree with `--cfg protoo_loom`: in a target
/// directory of its own, so that the normal build cache stays valid.
fn loom_target_dir() -> PathBuf {
    target_dir().join("loom")
}

/// Preemptions loom explores per interleaving: enough for the races of the
/// queue (one push, pop or close against another), small enough to run in
/// seconds.
const LOOM_MAX_PREEMPTIONS: &str = "3";

fn package_target_dir() -> PathBuf {
    target_dir().join("package-check")
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Without the `metrics` feature no library crate depends on the
/// `metrics` facade (and none ever on an exporter).
fn check_no_metrics_without_the_feature() -> Result {
    println!("\n==> without the metrics feature, no metrics crate in the dependency tree");
    for (features, facade_allowed) in [(&[][..], false), (&["--features", "metrics"][..], true)] {
        let tree = dependency_tree(&["protoo-server", "protoo-client"], features)?;
        let facade = tree.lines().any(|l| l.starts_with("metrics "));
        let exporter = tree.lines().any(|l| l.starts_with("metrics-exporter"));
        if exporter || facade != facade_allowed {
            return Err(format!(
                "dependency tree with {features:?}: metrics facade {facade}, exporter {exporter}:\n{tree}"
            ));
        }
    }
    println!("<== ok: the facade only with the feature, never an exporter");
    Ok(())
}

/// protoo-codec must stay free of any async runtime.
fn check_codec_has_no_runtime() -> Result {
    println!("\n==> protoo-codec dependency tree has no tokio");
    let tree = dependency_tree(&["protoo-codec"], &[])?;
    if tree
        .lines()
        .any(|l| l.starts_with("tokio") || l.starts_with("async"))
    {
        return Err(format!("protoo-codec depends on an async runtime:\n{tree}"));
    }
    let crates: std::collections::BTreeSet<&str> =
        tree.lines().filter_map(|l| l.split(' ').next()).collect();
    println!(
        "<== ok: {}",
        crates.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The normal dependencies of `packages` with `features` (`cargo tree`
/// arguments), one crate per line.
fn dependency_tree(packages: &[&str], features: &[&str]) -> Result<String> {
    let mut cmd = cargo();
    cmd.arg("tree");
    for package in packages {
        cmd.args(["-p", package]);
    }
    let out = cmd
        .args(features)
        .args(["-e", "normal", "--prefix", "none"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree {packages:?} {features:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops a child of ours by its pid: SIGTERM, then SIGKILL after 5 s.
pub(crate) fn stop_by_pid(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
