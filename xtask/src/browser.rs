//! The room example's page in headless Chromium (`tests/browser`): Debian's
//! `chromium` (installed here with apt-get when missing, as root),
//! puppeteer-core and esbuild pinned in the folder's lock file, the
//! committed protoo-client bundle checked against what `npm run bundle`
//! produces, and the `node --test` suites against the room example.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root, run, target_dir};

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The bundle the page serves, as committed.
const BUNDLE: &str = "examples/room/page/protoo-client.js";

/// Runs the browser suites (the room example must be built).
pub(crate) fn run_suites() -> Result {
    let dir = root().join("tests/browser");
    ensure_chromium()?;
    run(
        "npm ci (tests/browser)",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .env("PUPPETEER_SKIP_DOWNLOAD", "1"),
    )?;
    check_bundle(&dir)?;
    let screenshots = target_dir().join("browser");
    run(
        "browser suites: the room page in headless Chromium (node --test)",
        Command::new("node")
            .arg("--test")
            .current_dir(&dir)
            .env("PROTOO_BROWSER_REQUIRE", "1")
            .env("PROTOO_CHROMIUM", CHROMIUM)
            .env("PROTOO_ROOM_BIN", target_dir().join("debug/examples/room"))
            .env("PROTOO_SCREENSHOT_DIR", &screenshots)
            .env("PUPPETEER_SKIP_DOWNLOAD", "1"),
    )?;
    println!("screenshots of the page: {}", screenshots.display());
    Ok(())
}

/// The committed bundle must be byte for byte what `npm run bundle` writes.
fn check_bundle(dir: &Path) -> Result {
    let fresh = target_dir().join("browser/protoo-client.js");
    if let Some(parent) = fresh.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    run(
        "bundle protoo-client for the browser (npm run bundle, into target/)",
        Command::new("node")
            .arg("bundle.js")
            .arg(&fresh)
            .current_dir(dir),
    )?;
    let committed = root().join(BUNDLE);
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    if read(&committed)? != read(&fresh)? {
        return Err(format!(
            "{BUNDLE} is not what `npm run bundle` in tests/browser produces ({}): run it and commit \
             the result",
            fresh.display()
        ));
    }
    println!("<== {BUNDLE} is what `npm run bundle` produces");
    Ok(())
}

/// Installs Debian's `chromium` with apt-get when it is missing (as root;
/// otherwise says what to run). Never downloads a browser build.
fn ensure_chromium() -> Result {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    crate::apt_install("chromium", Path::new(CHROMIUM))
}
