//! S13 (rolling drain): the rows of its table. The scenario itself is
//! `crates/protoo-bench/src/scenarios/drain.rs`; its settings (two nodes on
//! one redis-server, our server with `--resume-window` and
//! `--drain-period`, `--expect-resume` against ours) are in `scenarios.rs`,
//! and node A's exit status is read in `process.rs`.

use super::*;

/// S13's rows: how long until every session of the drained node moved and
/// until that node exited, what the rooms lost, who was seen leaving and
/// what the other node spent taking the sessions over.
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
            "members on node A (drained)",
            "on_a",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "members of node A resumed on node B (`resumed`)",
            "resumed",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "SIGTERM → a member of A resumed on B, p50 (ms)",
            "resume_p50_ms",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "SIGTERM → every member of A resumed on B (ms)",
            "resume_last_ms",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "SIGTERM → node A's process exited (ms)",
            "a_exit_ms",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "node A's exit status",
            "a_exit_status",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "chat deliveries lost",
            "lost",
            1.0,
            0,
            Lower,
            Target::AtMost(0.0),
        ),
        r(
            "chat deliveries duplicated",
            "duplicates",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "chat deliveries expected (each chat × the other members of its room)",
            "deliveries_expected",
            1.0,
            0,
            Neither,
            Target::None,
        ),
        r(
            "chats lost with their sender (no answer, nobody got it)",
            "chats_unconfirmed",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "chats refused by node A while it drained (\"server shutting down\"), sent again from B",
            "chats_refused",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "members of node A seen leaving (`peerClosed`)",
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
            "members of node A closed for good (4000)",
            "a_gone",
            1.0,
            0,
            Lower,
            Target::None,
        ),
        r(
            "node B's CPU during the drain (SIGTERM until every member of A is back and A exited), % of a core",
            "b_cpu_drain_pct",
            1.0,
            1,
            Lower,
            Target::None,
        ),
        r(
            "node B's CPU over the 8 s after the SIGTERM, % of a core",
            "b_cpu_after_pct",
            1.0,
            1,
            Lower,
            Target::None,
        ),
        r(
            "node B's CPU in the steady phase before, % of a core",
            "b_cpu_steady_pct",
            1.0,
            1,
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
    fn drain_runs_two_nodes_and_holds_ours_to_no_loss() {
        for o in ["--smoke --scenarios s13", "--scenarios s13"] {
            let sc = scenarios(&Opts::parse(&args(o)).unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(sc.len(), 1);
            assert_eq!(sc[0].nodes, CLUSTER_NODES);
            assert_eq!(sc[0].topology, Topology::Single);
            assert!(!sc[0].ours_only && !sc[0].metrics);
            assert_eq!(sc[0].ours_bench_args, ["--expect-resume"]);
            for flag in ["--resume-window", "--drain-period"] {
                assert!(
                    sc[0].ours_args.iter().any(|a| a == flag),
                    "{flag}: {:?}",
                    sc[0].ours_args
                );
            }
        }
        let results = vec![
            Outcome {
                scenario: "s13",
                server: "ours",
                result: Ok(parsed(
                    "ops=1300 on_a=500 resumed=500 resume_last_ms=5100 a_exit_ms=5200 \
                     a_exit_status=0 lost=0 duplicates=0 sessions_left=0 errors=0",
                )),
            },
            Outcome {
                scenario: "s13",
                server: "anchor",
                result: Ok(parsed(
                    "ops=800 on_a=500 resumed=0 a_exit_ms=40 a_exit_status=0 lost=9000 \
                     sessions_left=500 a_gone=500 errors=0",
                )),
            },
        ];
        // The smoke passes for a server that resumes nothing too (the
        // anchor's losses are figures, not errors).
        for o in &results {
            assert!(o.result.as_ref().is_ok_and(smoke_ok), "{}", o.server);
        }
        let sc =
            scenarios(&Opts::parse(&args("--scenarios s13")).unwrap_or_else(|e| panic!("{e}")));
        assert_rows(
            &sc,
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            &results,
            &[
                "| chat deliveries lost | 0 | 9000 | – |",
                "| members of node A seen leaving (`peerClosed`) | 0 | 500 | – |",
                "| SIGTERM → every member of A resumed on B (ms) | 5100 | – |",
                "| node A's exit status | 0 | 0 |",
            ],
        );
    }
}
