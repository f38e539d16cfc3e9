//! Several processes per box: which scenarios run several processes of
//! our server on the machine, each serving its own rooms or one room
//! across them over Redis, with how many tokio workers each; the rows of
//! their table and the note that explains them. The load generator's side
//! is `--rooms` of `crates/protoo-bench/src/scenarios/broadcast.rs`; the
//! processes are started by `process.rs` (`Server::start`'s `workers`).

use super::*;

/// Several processes per box: S3 in two rooms of 100 on one process, then
/// on [`CLUSTER_NODES`] processes without Redis, each serving its own room
/// (the load generator's `--rooms 2`: room `r` on process `r % 2`), with
/// tokio's default runtime (a worker per core) in each and with one worker
/// each; and S10 (one room across the processes over Redis) with one
/// worker each, beside S10. Ours only (the anchor runs one thread anyway).
pub(super) const PROCS: [&str; 4] = ["s3-2rooms", "s3-2procs", "s3-2procs-w1", "s10-w1"];

/// The scenarios of [`PROCS`] on several processes without Redis, each
/// serving its own rooms.
pub(super) const OWN_ROOMS: [&str; 2] = ["s3-2procs", "s3-2procs-w1"];

/// The worker threads of each of our server processes in the `-w1`
/// scenarios (`TOKIO_WORKER_THREADS`, which the room example's
/// `#[tokio::main]` runtime honours).
pub(super) const ONE_WORKER: usize = 1;

/// The CPU row of the scenarios on several processes without Redis.
pub(super) const PROCS_CPU: &str =
    "CPU in the window, % of a core: processes 1+2 / client / other processes";

/// How the scenarios of several processes per box run.
pub(super) const PROCS_NOTE: &str = " The `s3-2rooms`, `s3-2procs`, `s3-2procs-w1` and \
`s10-w1` rows (ours only) measure several processes of the room example on the machine, \
as operators run one per core: S3 in two rooms of 100, each with a sender of its own, on \
one process (`s3-2rooms`: the same load in one process), then on two processes without \
Redis, each serving its own room (the load generator's `--rooms 2` puts room 2 wholly on \
the second process, as a deployment that routes each room to one process does), with \
tokio's default runtime in each (a worker per core: 2 + 2 workers on the machine's cores) \
and with one worker each (`TOKIO_WORKER_THREADS=1`, which the example's `#[tokio::main]` \
runtime honours); and S10 (one room across the two processes over Redis) with one worker \
each, beside S10. Server CPU is both processes together, compared with S3 (one process, \
one room) or S10 of the same run; the CPU row shows each process, the client and the rest \
(Redis too for `s10-w1`). The load generator shares the cores with the servers.";

/// Several processes per box (see [`PROCS`]): what S3 (or S10) shows, the
/// server CPU per delivery of the processes together against the same
/// run's S3 (S10 for `s10-w1`), and each process's CPU.
pub(super) fn rows(key: &str) -> Vec<Row> {
    use Better::{Higher, Lower, Neither};
    let r = |metric, key, decimals, better, target| Row {
        scenario: "",
        metric,
        key,
        scale: 1.0,
        decimals,
        better,
        target,
        of: None,
        delta: false,
    };
    let (base, cpu_of) = if key == "s10-w1" {
        (
            ("s10", "S10"),
            "server CPU per delivery, ours / S10 (a worker per core each, same run)",
        )
    } else {
        (
            ("s3", "S3"),
            "server CPU per delivery, ours / S3 (one process, one room, same run)",
        )
    };
    let mut vs = r(cpu_of, "srv_cpu_us_per_op", 2, Neither, Target::None);
    vs.of = Some(base);
    let (per_delivery, split) = match key {
        "s3-2rooms" => (
            "server CPU per delivery (µs)",
            r(
                "CPU in the window, % of a core: server / client / other processes",
                "@cpu",
                0,
                Neither,
                Target::None,
            ),
        ),
        "s10-w1" => (
            "server CPU per delivery, both processes (µs)",
            r(CLUSTER_CPU, "@cpu", 0, Neither, Target::None),
        ),
        _ => (
            "server CPU per delivery, both processes (µs)",
            r(PROCS_CPU, "@procs-cpu", 0, Neither, Target::None),
        ),
    };
    let mut rows = vec![
        r("deliveries/s", "rate", 0, Higher, Target::None),
        r("send→receive p50 (µs)", "p50_us", 0, Lower, Target::None),
        r("send→receive p99 (µs)", "p99_us", 0, Lower, Target::None),
        r(per_delivery, "srv_cpu_us_per_op", 2, Lower, Target::None),
        vs,
        r(
            "delivered to every receiver (%)",
            "delivered_pct",
            2,
            Higher,
            Target::AtLeast(100.0),
        ),
        split,
    ];
    if key == "s10-w1" {
        rows.insert(
            5,
            r(
                "Redis CPU per broadcast (µs)",
                "redis_cpu_us_per_broadcast",
                2,
                Lower,
                Target::None,
            ),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::tests::{args, assert_rows, parsed};

    #[test]
    fn two_processes_serve_their_own_rooms_with_the_workers_asked() {
        let o = Opts::parse(&args(
            "--scenarios s3,s10,s3-2rooms,s3-2procs,s3-2procs-w1,s10-w1",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let sc = scenarios(&o);
        assert_eq!(
            sc.iter()
                .map(|s| (s.key, s.nodes, s.redis, s.workers, s.ours_only))
                .collect::<Vec<_>>(),
            [
                ("s3", 1, false, None, false),
                ("s10", 2, true, None, false),
                ("s3-2rooms", 1, false, None, true),
                ("s3-2procs", 2, false, None, true),
                ("s3-2procs-w1", 2, false, Some(1), true),
                ("s10-w1", 2, true, Some(1), true),
            ]
        );
        for s in &sc[2..5] {
            assert!(
                s.args.windows(2).any(|w| w == ["--rooms", "2"])
                    && s.args.windows(2).any(|w| w == ["--peers", "100"]),
                "{:?}",
                s.args
            );
            // As S3: no rate limits, S3's queue.
            assert!(
                s.ours_args
                    .windows(2)
                    .any(|w| w == ["--max-queue", &S3_QUEUE.to_string()])
            );
        }
        // The smoke runs one of them, cheaply.
        let smoke = scenarios(&Opts::parse(&args("--smoke")).unwrap_or_else(|e| panic!("{e}")));
        let procs: Vec<_> = smoke.iter().filter(|s| PROCS.contains(&s.key)).collect();
        assert_eq!(procs.len(), 1);
        assert_eq!(
            (
                procs[0].key,
                procs[0].nodes,
                procs[0].redis,
                procs[0].workers
            ),
            ("s3-2procs-w1", 2, false, Some(1))
        );
    }

    #[test]
    fn rows_compare_with_one_process_and_split_the_cpu() {
        let ok = |scenario, line: &str| Outcome {
            scenario,
            server: "ours",
            result: Ok(parsed(line)),
        };
        let results = vec![
            ok("s3", "rate=1000000 srv_cpu_us_per_op=1.7"),
            ok("s10", "rate=800000 srv_cpu_us_per_op=3.3"),
            ok(
                "s3-2rooms",
                "rate=1100000 srv_cpu_us_per_op=1.87 srv_cpu_pct=150 cli_cpu_pct=45 \
                 other_cpu_pct=3 delivered_pct=100.00",
            ),
            ok(
                "s3-2procs",
                "rate=700000 p50_us=9000 p99_us=30000 srv_cpu_us_per_op=2.55 \
                 node_cpu_pct=90.4+59.6 cli_cpu_pct=40 other_cpu_pct=2 delivered_pct=100.00",
            ),
            ok(
                "s10-w1",
                "rate=900000 srv_cpu_us_per_op=1.98 redis_cpu_us_per_broadcast=9.5 \
                 node_cpu_pct=80+70 cli_cpu_pct=40 redis_cpu_pct=20 other_cpu_pct=1",
            ),
        ];
        let o = Opts::parse(&args("--scenarios s3,s10,s3-2rooms,s3-2procs,s10-w1"))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = assert_rows(
            &scenarios(&o),
            ServerKind::Ours {
                bin: PathBuf::new(),
            },
            &results,
            &[
                "| S3 on 2 processes, default runtime (a worker per core) each, a room of 100 on \
                 each | deliveries/s | 700000 | not run |",
                "| send→receive p99 (µs) | 30000 |  |",
                "| server CPU per delivery, both processes (µs) | 2.55 |  |",
                "| server CPU per delivery, ours / S3 (one process, one room, same run) | 1.50× |",
                "| server CPU per delivery (µs) | 1.87 |",
                "| server CPU per delivery, ours / S3 (one process, one room, same run) | 1.10× |",
                &format!("| {PROCS_CPU} | 90+60 / 40 / 2 |"),
                "| CPU in the window, % of a core: server / client / other processes | 150 / 45 / 3 |",
                "| server CPU per delivery, ours / S10 (a worker per core each, same run) | 0.60× |",
                "| Redis CPU per broadcast (µs) | 9.50 |",
                &format!("| {CLUSTER_CPU} | 80+70 / 40 / 20 / 1 |"),
            ],
        );
        // No anchor targets: ours only.
        let procs = t.split_once("| S3 on 1 process").map_or("", |(_, p)| p);
        assert!(!procs.is_empty() && !procs.contains("anchor"), "{t}");
    }

    /// The servers of a `-w1` scenario get `TOKIO_WORKER_THREADS=1`; the
    /// others tokio's default (the variable removed).
    #[test]
    fn servers_get_the_worker_threads_asked() {
        let dir = std::env::temp_dir().join(format!("bench-workers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let bin = dir.join("server.sh");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho \"listening on ws://workers/${TOKIO_WORKER_THREADS:-default}\"\n\
             exec sleep 60\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let made_executable = Command::new("chmod")
            .arg("+x")
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made_executable);
        let kind = ServerKind::Ours { bin };
        let log = dir.join("server.log");
        let urls: Vec<Result<String>> = [Some(ONE_WORKER), None]
            .into_iter()
            .map(|workers| Server::start(&kind, &[], None, workers, &log).map(|s| s.url.clone()))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            urls,
            [
                Ok("ws://workers/1".to_owned()),
                Ok("ws://workers/default".to_owned())
            ]
        );
    }
}
