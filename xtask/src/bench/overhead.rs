//! The overhead of the `metrics` feature: S2 and S3 against the room example
//! built with the feature and run with `--metrics` (the Prometheus recorder
//! installed, `/metrics` served), right after the same scenario against the
//! plain build, in the same run, [`PAIRS`] times interleaved; the table
//! compares the medians. Target: at most 5% fewer requests or
//! deliveries per second, at most 5% more server CPU per message.
//!
//! The plain build is also checked to carry no metrics code: none of the
//! metric names, nor the exporter, appear in its bytes (they do in the
//! metrics build, which checks the check).

use super::*;

/// The scenarios measured with and without the feature.
pub(super) const MEASURED: [&str; 2] = ["s2", "s3"];

/// Runs of each build per measured scenario (the first plain run is also
/// the one in the main table).
pub(super) const PAIRS: usize = 3;

/// Largest loss of rate and largest gain of server CPU per message, in %.
const TARGET_PCT: f64 = 5.0;

/// Strings only a build with the `metrics` feature holds.
const METRICS_MARKERS: [&str; 2] = [
    "protoo_messages_received_total",
    "metrics_exporter_prometheus",
];

/// Builds the room example with the `metrics` feature and keeps a copy of
/// it apart (`examples/room-metrics`): the plain build that follows
/// overwrites `examples/room`. Both have the `redis` feature (the bench's
/// room example has it for S10 and S11), so they differ in `metrics` alone.
pub(super) fn build_metrics_room(profile: &[&str], profile_dir: &str) -> Result<PathBuf> {
    super::super::run(
        "build the room example with the metrics (and redis) features",
        super::super::cargo()
            .args([
                "build",
                "-p",
                "protoo-examples",
                "--features",
                "metrics,redis",
                "--example",
                "room",
            ])
            .args(profile),
    )?;
    let dir = super::super::target_dir()
        .join(profile_dir)
        .join("examples");
    let copy = dir.join("room-metrics");
    std::fs::copy(dir.join("room"), &copy)
        .map_err(|e| format!("copy the metrics build to {}: {e}", copy.display()))?;
    Ok(copy)
}

/// Fails unless the plain build has no metrics code and the metrics build
/// has it.
pub(super) fn check_builds(plain: &Path, metrics: &Path) -> Result<()> {
    for marker in METRICS_MARKERS {
        if holds(plain, marker)? {
            return Err(format!(
                "{} was built without the metrics feature but holds `{marker}`",
                plain.display()
            ));
        }
        if !holds(metrics, marker)? {
            return Err(format!(
                "{} was built with the metrics feature but lacks `{marker}`: the check is stale",
                metrics.display()
            ));
        }
    }
    println!("bench: the room example built without the metrics feature holds no metrics code");
    Ok(())
}

/// Whether the file at `path` holds `marker`: `grep -qaF` (a second for the
/// debug builds of the smoke, which a byte-by-byte search in this
/// unoptimised program takes several seconds over), else read and searched
/// here when grep cannot say.
fn holds(path: &Path, marker: &str) -> Result<bool> {
    let grep = Command::new("grep")
        .args(["-qaF", "--", marker])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match grep.ok().and_then(|s| s.code()) {
        Some(0) => return Ok(true),
        Some(1) => return Ok(false),
        _ => {}
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes
        .windows(marker.len())
        .any(|window| window == marker.as_bytes()))
}

/// The overhead table: plain against metrics for each measured scenario
/// that ran.
pub(super) fn table(scenarios: &[Scenario], results: &[Outcome]) -> String {
    // The median of a field over the runs of one build.
    let median = |sc: &str, server: &str, key: &str| {
        let mut values: Vec<f64> = results
            .iter()
            .filter(|o| o.scenario == sc && o.server == server)
            .filter_map(|o| o.result.as_ref().ok()?.num(key))
            .collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    };
    let runs = |sc: &str, server: &str| {
        results
            .iter()
            .filter(|o| o.scenario == sc && o.server == server && o.result.is_ok())
            .count()
    };
    let mut out = String::from(
        "### Overhead of the `metrics` feature\n\n\
         The room example built with the `metrics` feature and run with `--metrics` \
         (Prometheus recorder installed, `/metrics` served, not scraped during the \
         window), interleaved with the plain build in the same run; medians of the \
         runs (count in the Metric column). Target: at most 5% fewer \
         requests/deliveries per second and at most 5% more server CPU per \
         message.\n\n\
         | Scenario | Metric | plain | with metrics | change | Target | Met |\n\
         |---|---|---:|---:|---:|---|---|\n",
    );
    let mut any = false;
    for sc in scenarios.iter().filter(|sc| MEASURED.contains(&sc.key)) {
        let counts = (runs(sc.key, "ours"), runs(sc.key, "metrics"));
        if counts.0 == 0 || counts.1 == 0 {
            continue;
        }
        any = true;
        let rate_name = if sc.key == "s2" {
            "requests/s"
        } else {
            "deliveries/s"
        };
        let lines = [
            (rate_name, "rate", 0, true),
            ("server CPU per message (µs)", "srv_cpu_us_per_op", 2, false),
        ];
        for (i, (metric, key, decimals, higher_better)) in lines.into_iter().enumerate() {
            let (Some(p), Some(m)) = (median(sc.key, "ours", key), median(sc.key, "metrics", key))
            else {
                continue;
            };
            let change = if p == 0.0 { 0.0 } else { (m - p) / p * 100.0 };
            let (target, met) = if higher_better {
                (format!("≥ −{TARGET_PCT}%"), change >= -TARGET_PCT)
            } else {
                (format!("≤ +{TARGET_PCT}%"), change <= TARGET_PCT)
            };
            out.push_str(&format!(
                "| {} | {metric}, median of {} / {} | {p:.decimals$} | {m:.decimals$} | {change:+.1}% | {target} | {} |\n",
                if i == 0 { sc.title } else { "" },
                counts.0,
                counts.1,
                if met { "yes" } else { "**no**" },
            ));
        }
    }
    if any { out } else { String::new() }
}
