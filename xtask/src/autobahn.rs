//! The WebSocket conformance step: the Autobahn|Testsuite cases, run by
//! `kosoku` (a Python 3 runner of the Autobahn case files), against
//! `examples/autobahn_echo.rs`, an echo endpoint on our WebSocket transport.
//!
//! 1. creates a virtualenv under `target/autobahn/venv` if there is none, and
//!    installs the pinned `tests/autobahn/requirements.txt` into it;
//! 2. builds the example and starts it on a free port;
//! 3. runs every case but those `tests/autobahn/expected.json` excludes
//!    (12.* and 13.*: compression, which we do not offer), two at a time,
//!    writing the report to `target/autobahn/report`;
//! 4. compares each case's `behavior`, `behaviorClose` and
//!    `remoteCloseCode` with `tests/autobahn/expected.json`, and fails on
//!    any difference, any missing or new case, and any outcome other than
//!    OK, NON-STRICT or INFORMATIONAL;
//! 5. stops the server.
//!
//! The results of the run are also written in the format of
//! `expected.json` to `target/autobahn/observed.json`, to review and copy
//! when an intended change alters them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{cargo, root, run as step, target_dir};

/// Cases run in parallel.
const PARALLELISM: &str = "2";
/// The whole suite takes under 10 s on a laptop; this bounds a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the echo server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The outcomes a case may have.
const PASSING: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];

/// Runs the conformance suite and compares it with the expected results.
pub(crate) fn run() -> Result<(), String> {
    let root = root();
    let dir = root.join("tests/autobahn");
    let expected_text = std::fs::read_to_string(dir.join("expected.json"))
        .map_err(|e| format!("tests/autobahn/expected.json: {e}"))?;
    let expected = Expected::parse(&expected_text)?;

    let work = target_dir().join("autobahn");
    let kosoku = venv(&work, &dir.join("requirements.txt"))?;
    step(
        "build the autobahn_echo example",
        cargo().args([
            "build",
            "-p",
            "protoo-examples",
            "--example",
            "autobahn_echo",
        ]),
    )?;
    let server = EchoServer::start(&target_dir().join("debug/examples/autobahn_echo"))?;

    let report = work.join("report");
    if report.exists() {
        std::fs::remove_dir_all(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    }
    println!("\n==> Autobahn cases (kosoku) against {}", server.addr);
    let started = Instant::now();
    let mut cmd = Command::new(&kosoku);
    cmd.current_dir(&work)
        .args(["-p", PARALLELISM, "-o"])
        .arg(&report);
    for pattern in &expected.excluded {
        cmd.args(["-x", pattern]);
    }
    cmd.arg(&server.addr);
    let status = run_bounded(&mut cmd, SUITE_TIMEOUT)?;
    let elapsed = started.elapsed();
    drop(server);
    println!("<== kosoku: {status} in {:.1}s", elapsed.as_secs_f64());

    let index = report.join("index.json");
    let text = std::fs::read_to_string(&index)
        .map_err(|e| format!("no kosoku report ({}): {e}", index.display()))?;
    let observed = observed(&text)?;
    let observed_path = work.join("observed.json");
    std::fs::write(&observed_path, render(&observed, &expected.excluded))
        .map_err(|e| format!("{}: {e}", observed_path.display()))?;

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in observed.values() {
        *counts
            .entry(format!("{} / {}", outcome.behavior, outcome.behavior_close))
            .or_default() += 1;
    }
    println!("    {} cases (behavior / close):", observed.len());
    for (outcome, n) in &counts {
        println!("      {n:4}  {outcome}");
    }

    let differences = compare(&expected.cases, &observed);
    if !differences.is_empty() {
        return Err(format!(
            "Autobahn results differ from tests/autobahn/expected.json (this run: {}; \
             report: {}):\n  {}",
            observed_path.display(),
            report.join("index.html").display(),
            differences.join("\n  ")
        ));
    }
    if !status.success() {
        return Err(format!(
            "kosoku failed ({status}) although every case was as expected"
        ));
    }
    println!("<== ok: every case as expected");
    Ok(())
}

/// The virtualenv's `kosoku`, creating the virtualenv and installing the
/// pinned requirements first when needed.
fn venv(work: &Path, requirements: &Path) -> Result<PathBuf, String> {
    let venv = work.join("venv");
    let bin = venv.join(if cfg!(windows) { "Scripts" } else { "bin" });
    let exe = if cfg!(windows) { ".exe" } else { "" };
    let python = bin.join(format!("python{exe}"));
    if !python.exists() {
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let system_python = if cfg!(windows) { "python" } else { "python3" };
        step(
            "create the Autobahn virtualenv",
            Command::new(system_python).arg("-m").arg("venv").arg(&venv),
        )?;
    }
    // A no-op when the pinned version is installed.
    step(
        "pip install -r tests/autobahn/requirements.txt",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements),
    )?;
    Ok(bin.join(format!("kosoku{exe}")))
}

/// Runs `cmd`, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start kosoku: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "kosoku still running after {} s: killed",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for kosoku: {e}")),
        }
    }
}

/// The echo example, stopped when dropped.
struct EchoServer {
    child: Child,
    addr: String,
}

impl EchoServer {
    fn start(bin: &Path) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take();
        let mut server = EchoServer {
            child,
            addr: String::new(),
        };
        let stdout = stdout.ok_or("no stdout from the echo server")?;
        // Read the first line on a thread so that a server that never
        // prints cannot hang the step.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| "the echo server did not start".to_owned())?;
        server.addr = line
            .trim()
            .strip_prefix("listening on ws://")
            .and_then(|rest| rest.strip_suffix('/'))
            .ok_or_else(|| format!("unexpected first line from the echo server: {line:?}"))?
            .to_owned();
        Ok(server)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One case's outcome in a run.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    behavior: String,
    behavior_close: String,
    remote_close_code: Option<u64>,
}

/// One case's expected outcome: the values each field may take.
#[derive(Debug)]
struct Allowed {
    behavior: Vec<String>,
    behavior_close: Vec<String>,
    remote_close_code: Option<u64>,
}

/// `tests/autobahn/expected.json`.
#[derive(Debug)]
struct Expected {
    excluded: Vec<String>,
    cases: BTreeMap<String, Allowed>,
}

impl Expected {
    fn parse(text: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("tests/autobahn/expected.json: {e}"))?;
        let bad = |what: &str| format!("tests/autobahn/expected.json: {what}");
        let excluded = json
            .get("excluded")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"excluded\" array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("\"excluded\" holds a non-string"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut cases = BTreeMap::new();
        for (id, case) in json
            .get("cases")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no \"cases\" object"))?
        {
            let strings = |field: &str| -> Result<Vec<String>, String> {
                let values = match case.get(field) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad(&format!("case {id}: {field} holds a non-string")))?,
                    _ => return Err(bad(&format!("case {id}: no {field}"))),
                };
                if let Some(v) = values.iter().find(|v| !PASSING.contains(&v.as_str())) {
                    return Err(bad(&format!(
                        "case {id}: {field} {v:?} is not a passing outcome"
                    )));
                }
                Ok(values)
            };
            let remote_close_code =
                match case.get("remoteCloseCode") {
                    Some(Value::Null) | None => None,
                    Some(code) => Some(code.as_u64().ok_or_else(|| {
                        bad(&format!("case {id}: remoteCloseCode is not a number"))
                    })?),
                };
            cases.insert(
                id.clone(),
                Allowed {
                    behavior: strings("behavior")?,
                    behavior_close: strings("behaviorClose")?,
                    remote_close_code,
                },
            );
        }
        Ok(Expected { excluded, cases })
    }
}

/// The outcomes in kosoku's `index.json` (`{agent: {case id: {...}}}`, one
/// agent).
fn observed(text: &str) -> Result<BTreeMap<String, Outcome>, String> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("kosoku's index.json: {e}"))?;
    let agents = json
        .as_object()
        .ok_or("kosoku's index.json is not an object")?;
    let (Some(cases), 1) = (agents.values().next(), agents.len()) else {
        return Err(format!(
            "kosoku's index.json holds {} agents, expected one",
            agents.len()
        ));
    };
    let mut outcomes = BTreeMap::new();
    for (id, case) in cases
        .as_object()
        .ok_or("kosoku's index.json: cases are not an object")?
    {
        let field = |name: &str| {
            case.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("kosoku's index.json: case {id} has no {name}"))
        };
        outcomes.insert(
            id.clone(),
            Outcome {
                behavior: field("behavior")?,
                behavior_close: field("behaviorClose")?,
                remote_close_code: case.get("remoteCloseCode").and_then(Value::as_u64),
            },
        );
    }
    Ok(outcomes)
}

/// Every difference between the expected and the observed outcomes.
fn compare(
    expected: &BTreeMap<String, Allowed>,
    observed: &BTreeMap<String, Outcome>,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (id, allowed) in expected {
        let Some(got) = observed.get(id) else {
            differences.push(format!("{id}: not run"));
            continue;
        };
        if !allowed.behavior.contains(&got.behavior)
            || !allowed.behavior_close.contains(&got.behavior_close)
            || allowed.remote_close_code != got.remote_close_code
        {
            differences.push(format!(
                "{id}: expected {} / {} / close code {:?}, got {} / {} / close code {:?}",
                allowed.behavior.join("|"),
                allowed.behavior_close.join("|"),
                allowed.remote_close_code,
                got.behavior,
                got.behavior_close,
                got.remote_close_code
            ));
        }
    }
    for (id, got) in observed {
        if !expected.contains_key(id) {
            differences.push(format!("{id}: not in expected.json (got {got:?})"));
        }
    }
    differences
}

/// `observed` in the format of `expected.json` (one value per field).
fn render(observed: &BTreeMap<String, Outcome>, excluded: &[String]) -> String {
    let mut out = String::from("{\n  \"excluded\": [");
    let quoted: Vec<String> = excluded
        .iter()
        .map(|e| Value::from(e.as_str()).to_string())
        .collect();
    out.push_str(&quoted.join(", "));
    out.push_str("],\n  \"cases\": {\n");
    let mut ids: Vec<&String> = observed.keys().collect();
    ids.sort_by_key(|id| case_order(id));
    for (i, id) in ids.iter().enumerate() {
        let o = &observed[*id];
        let code = o
            .remote_close_code
            .map_or_else(|| "null".to_owned(), |c| c.to_string());
        let _ = writeln!(
            out,
            "    {}: {{ \"behavior\": {}, \"behaviorClose\": {}, \"remoteCloseCode\": {code} }}{}",
            Value::from(id.as_str()),
            Value::from(o.behavior.as_str()),
            Value::from(o.behavior_close.as_str()),
            if i + 1 == ids.len() { "" } else { "," }
        );
    }
    out.push_str("  }\n}\n");
    out
}

/// A case id's numeric parts, to sort `1.2.10` after `1.2.9`.
fn case_order(id: &str) -> Vec<u64> {
    id.split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_with_alternatives() {
        let expected = Expected::parse(
            r#"{"excluded": ["12.*"], "cases": {
                "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "remoteCloseCode": 1000},
                "3.2": {"behavior": ["NON-STRICT", "OK"], "behaviorClose": "OK", "remoteCloseCode": 1002}
            }}"#,
        )
        .unwrap();
        assert_eq!(expected.excluded, ["12.*"]);
        let outcome = |b: &str, c: u64| Outcome {
            behavior: b.into(),
            behavior_close: "OK".into(),
            remote_close_code: Some(c),
        };
        let mut observed = BTreeMap::new();
        observed.insert("1.1.1".to_owned(), outcome("OK", 1000));
        observed.insert("3.2".to_owned(), outcome("OK", 1002));
        assert!(compare(&expected.cases, &observed).is_empty());
        observed.insert("3.2".to_owned(), outcome("NON-STRICT", 1002));
        assert!(compare(&expected.cases, &observed).is_empty());
        observed.insert("3.2".to_owned(), outcome("FAILED", 1002));
        assert_eq!(compare(&expected.cases, &observed).len(), 1);
        observed.insert("3.2".to_owned(), outcome("OK", 1000));
        assert_eq!(compare(&expected.cases, &observed).len(), 1);
        observed.remove("3.2");
        observed.insert("9.9.9".to_owned(), outcome("OK", 1000));
        assert_eq!(compare(&expected.cases, &observed).len(), 2);

        assert!(
            Expected::parse(
                r#"{"excluded": [], "cases": {"1": {"behavior": "FAILED", "behaviorClose": "OK"}}}"#
            )
            .is_err(),
            "a failing outcome cannot be expected"
        );
    }

    #[test]
    fn the_committed_expectations_parse() {
        let text = std::fs::read_to_string(root().join("tests/autobahn/expected.json")).unwrap();
        let expected = Expected::parse(&text).unwrap();
        assert!(expected.cases.len() > 250);
        assert!(expected.excluded.iter().any(|e| e == "12.*"));
        // Round trip through the observed format.
        let observed: BTreeMap<String, Outcome> = expected
            .cases
            .iter()
            .map(|(id, a)| {
                (
                    id.clone(),
                    Outcome {
                        behavior: a.behavior[0].clone(),
                        behavior_close: a.behavior_close[0].clone(),
                        remote_close_code: a.remote_close_code,
                    },
                )
            })
            .collect();
        let again = Expected::parse(&render(&observed, &expected.excluded)).unwrap();
        assert!(compare(&again.cases, &observed).is_empty());
    }
}
