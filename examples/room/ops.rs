//! Operations endpoints and logs of the room example.
//!
//! - `--metrics ADDR` (built with the `metrics` feature: `cargo run
//!   --release -p protoo-examples --features metrics --example room --
//!   --metrics 127.0.0.1:9090`) serves, on a listener of its own:
//!   - `GET /metrics`: every metric of protoo-rs in the Prometheus text
//!     format (`metrics-exporter-prometheus`);
//!   - `GET /healthz`: `200` and a small JSON of counts while serving,
//!     `503` (same JSON, `"status": "shutting down"`) once a shutdown has
//!     begun.
//!
//!   A listener of its own rather than the WebSocket port: operators keep
//!   scrape and health endpoints on an internal address, out of reach of
//!   the clients, and the public port's contract (the protoo upgrade and
//!   the room page) stays untouched.
//! - `--log-format json` logs one JSON object per line (tracing-subscriber's
//!   JSON format) instead of text, for log collectors; the level is set by
//!   `RUST_LOG` as before. Logs go to stderr,
//!   coloured only when it is a terminal.

use std::io::IsTerminal;

/// How the example logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber: `RUST_LOG` filters (default
/// `warn`), `format` formats; logs go to stderr (stdout carries the
/// addresses the example prints).
pub(crate) fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    // Colour only on a terminal: escape codes in a file or a collector are
    // noise (and what a remote sends is escaped: `protoo_server::log`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

/// `--metrics ADDR`: `GET /metrics` and `GET /healthz` on a listener of
/// its own.
#[cfg(feature = "metrics")]
pub(crate) mod metrics {
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    use protoo_server::{Rooms, ServerConfig, ServerHandle};
    use serde_json::json;

    use crate::cluster::Link;
    use crate::flags::Args;

    /// Connections the operations endpoints serve at a time (scrapers and
    /// health checks); beyond, 503. Small: these descriptors come out of the
    /// reserve the public port's cap leaves (see `ServerConfig::max_connections`).
    const CONNECTIONS: usize = 16;

    /// How long the cluster link may be down before `/healthz` answers
    /// 503: a Redis restart takes a few seconds, and meanwhile the node
    /// serves its own peers; past this, the operator should hear of it.
    const CLUSTER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

    /// Starts the operations endpoints on `--metrics`, when given, and
    /// prints where (`metrics on http://ADDR/metrics`). Called before the
    /// first peer is admitted: peers register their metrics when they are
    /// created.
    pub(crate) async fn start(
        args: &Args,
        server: ServerHandle,
        rooms: Rooms,
        cluster: Option<Link>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let Some(addr) = args.metrics else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| format!("cannot listen on {addr} for metrics: {error}"))?;
        let recorder = install_recorder()?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        let router = router(recorder, server, rooms, cluster);
        // The limits of the public port before a request is read: a header
        // timeout, a head-size limit, and a cap of its own on connections.
        let limits = ServerConfig::default().with_max_connections(CONNECTIONS);
        let listener = protoo_server::axum::limited(listener, &limits);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the metrics endpoint failed");
            }
        });
        Ok(())
    }

    /// The Prometheus recorder, installed as the global `metrics` recorder,
    /// with its histograms drained every few seconds (no scrape may come).
    fn install_recorder() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
        // Request durations as a histogram (not a summary), in seconds.
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(protoo_server::core::metrics::REQUEST_DURATION.to_owned()),
                &buckets,
            )?
            .install_recorder()?;
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(handle)
    }

    /// `GET /metrics` and `GET /healthz`.
    fn router(
        recorder: PrometheusHandle,
        server: ServerHandle,
        rooms: Rooms,
        cluster: Option<Link>,
    ) -> Router {
        let metrics = move || {
            // The per-thread counts first: the scrape is exact.
            protoo_server::core::metrics::flush();
            let text = recorder.render();
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            async move { ([(header::CONTENT_TYPE, content_type)], text) }
        };
        let health = move || {
            let answer = health(&server, &rooms, cluster.as_ref());
            async move { answer }
        };
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(health))
    }

    /// 200 while serving, 503 once the server stopped accepting (a
    /// shutdown has begun) or the cluster link has been down for longer
    /// than [`CLUSTER_GRACE`], with the counts.
    fn health(
        server: &ServerHandle,
        rooms: &Rooms,
        cluster: Option<&Link>,
    ) -> impl IntoResponse + use<> {
        let stopping = server.is_stopped();
        let link = cluster.map(|link| link());
        let down_for = link.as_ref().and_then(|link| link.down_for);
        let cut_off = down_for.is_some_and(|down| down > CLUSTER_GRACE);
        let room_list = rooms.rooms();
        let peers: usize = room_list.iter().map(|room| room.len()).sum();
        let status = match (stopping, cut_off) {
            (true, _) => "shutting down",
            (false, true) => "cluster unreachable",
            (false, false) => "serving",
        };
        let mut body = json!({
            "status": status,
            "connections": server.connections(),
            "requestsInFlight": server.requests_in_flight(),
            "rooms": room_list.len(),
            "peers": peers,
        });
        if let Some(link) = &link {
            // The link to every shard: the one server, the master Sentinel
            // names, or each master of a Redis Cluster.
            let shards: Vec<_> = link
                .shards
                .iter()
                .map(|(address, connected)| json!({ "address": address, "connected": connected }))
                .collect();
            body["cluster"] = json!({
                "connected": down_for.is_none(),
                "downForSeconds": down_for.map(|down| down.as_secs_f64()),
                "shards": shards,
            });
        }
        let status = match stopping || cut_off {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::OK,
        };
        let content_type = [(header::CONTENT_TYPE, "application/json")];
        (status, content_type, body.to_string())
    }
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
