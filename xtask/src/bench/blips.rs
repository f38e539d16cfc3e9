//! S12 (blips): the rows of its table. The scenario itself is
//! `crates/protoo-bench/src/scenarios/blips.rs`; its settings (our server
//! with `--resume-window`, the metrics build read by the load generator,
//! `--expect-resume` against ours) are in `scenarios.rs` and `process.rs`.

use super::*;

/// S12's rows: deliveries lost (target 0 for those sent after the loss
/// was noticed), members seen leaving (target 0), the time to come back,
/// the server's CPU per member cut and the bytes held.
pub(super) fn rows() -> Vec<Row> {
    use Better::{Lower, Neither};
    let r = |metric, key, scale, decimals, better, target| Row {
        scenario: "",
        metric,
        key,
        scale,
        decimals,
        better,
        target,
        of: None,
        delta: false,
    };
    vec![
        r(
            "deliveries lost, sent after the loss was noticed",
            "lost_after_detect",
            1.0,
            0,
            Lower,
            Target::AtMost(0.0),
        ),
        r(
            "deliveries lost, sent before (in flight at the cut)",
            "lost_in_flight",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "deliveries lost while the member was away (cut to back)",
            "lost_away",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "deliveries lost in all",
            "lost_total",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "deliveries expected (broadcasts × members cut)",
            "deliveries_expected",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r("duplicates", "duplicates", 1.0, 0, Lower, Target::None),
        r(
            "members seen leaving (`peerClosed`), of those cut",
            "sessions_left",
            1.0,
            0,
            Lower,
            Target::AtMost(0.0),
        ),
        r(
            "`peerClosed` notifications heard",
            "peer_closed",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "deliveries on the new connection sent before it opened (held while away)",
            "replayed",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "cut → back (new connection open) p50 (ms)",
            "resume_p50_ms",
            1.0,
            2,
            Lower,
            Target::None,
        ),
        r(
            "cut → back p99 (ms)",
            "resume_p99_ms",
            1.0,
            2,
            Lower,
            Target::None,
        ),
        r(
            "server CPU per member cut (µs), blips less the steady rate",
            "srv_cpu_us_per_resume",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "bytes held for members away, peak (`protoo_session_held_bytes`, read every 20 ms)",
            "held_bytes_peak",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "sessions resumed (`protoo_sessions_total{outcome=\"resumed\"}`)",
            "srv_resumed",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "CPU during the blips, % of a core: server / client / other processes",
            "@cpu",
            1.0,
            0,
            Neither,
            Target::None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::tests::{args, assert_rows, parsed};

    #[test]
    fn blips_run_the_metrics_build_and_hold_ours_to_no_loss() {
        let smoke = Opts::parse(&args("--smoke --scenarios s12")).unwrap_or_else(|e| panic!("{e}"));
        let sc = scenarios(&smoke);
        assert_eq!(sc.len(), 1);
        assert!(sc[0].metrics && !sc[0].ours_only);
        assert_eq!(sc[0].ours_bench_args, ["--expect-resume"]);
        assert!(
            sc[0]
                .ours_args
                .windows(2)
                .any(|w| w == ["--resume-window", "15"]),
            "{:?}",
            sc[0].ours_args
        );
        let results = vec![
            Outcome {
                scenario: "s12",
                server: "ours",
                result: Ok(parsed(
                    "ops=99 lost_after_detect=0 lost_in_flight=1 sessions_left=0 \
                     held_bytes_peak=310 srv_cpu_us_per_resume=250.4",
                )),
            },
            Outcome {
                scenario: "s12",
                server: "anchor",
                result: Ok(parsed(
                    "ops=99 lost_after_detect=3 lost_in_flight=3 sessions_left=99",
                )),
            },
        ];
        let sc =
            scenarios(&Opts::parse(&args("--scenarios s12")).unwrap_or_else(|e| panic!("{e}")));
        assert_rows(
            &sc,
            ServerKind::OursObserved {
                bin: PathBuf::new(),
            },
            &results,
            &[
                "| deliveries lost, sent after the loss was noticed | 0 | 3 | – |",
                "| ≤ 0 | yes |",
                "| members seen leaving (`peerClosed`), of those cut | 0 | 99 | – |",
                "| 310 | – |",
                "| 250 | – |",
            ],
        );
    }
}
