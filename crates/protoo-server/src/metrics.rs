//! What the server reports through the `metrics` facade (the `metrics`
//! feature, which also turns on the metrics of `protoo-core` and
//! `protoo-transport`: see [`core::metrics`](crate::core::metrics) and
//! [`transport::metrics`](crate::transport::metrics)). Without the feature
//! every item here is empty and compiles to nothing.
//!
//! The metrics of every layer are listed, with their labels, in the README.
//! The application picks the exporter and installs it; what every message
//! touches reaches it every second, and at once on
//! [`core::metrics::flush`](crate::core::metrics::flush), which a `/metrics`
//! handler calls before it renders:
//!
//! ```no_run
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use protoo_server::{ServerConfig, WebSocketServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let prometheus = PrometheusBuilder::new().install_recorder()?;
//! let mut server = WebSocketServer::bind("127.0.0.1:4443", ServerConfig::default()).await?;
//! // Serve `GET /metrics` on an internal address (the room example's
//! // ops.rs does) as `protoo_server::core::metrics::flush()` then
//! // `prometheus.render()`, and call `prometheus.run_upkeep()` every few
//! // seconds.
//! # drop((prometheus, server.next_request()));
//! # Ok(())
//! # }
//! ```

/// WebSocket upgrades answered with an HTTP error instead of a WebSocket
/// (counter, label `status`: a status of [`KNOWN_STATUSES`], else its class,
/// `4xx` or `5xx`).
pub const UPGRADES_REJECTED: &str = "protoo_upgrades_rejected_total";

/// The HTTP statuses labelled as themselves; any other is labelled by its
/// class.
pub const KNOWN_STATUSES: [u16; 9] = [400, 401, 403, 404, 409, 426, 429, 500, 503];

/// The `status` label of an HTTP status.
pub fn status_label(status: u16) -> &'static str {
    const LABELS: [&str; 9] = [
        "400", "401", "403", "404", "409", "426", "429", "500", "503",
    ];
    match KNOWN_STATUSES.iter().position(|known| *known == status) {
        Some(at) => LABELS[at],
        None if (400..500).contains(&status) => "4xx",
        None if (500..600).contains(&status) => "5xx",
        None => "other",
    }
}

/// An upgrade was answered with `status`.
#[inline]
pub(crate) fn upgrade_rejected(_status: u16) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(UPGRADES_REJECTED, "status" => status_label(_status)).increment(1);
}
