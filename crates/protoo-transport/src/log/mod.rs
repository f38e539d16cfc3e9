//! Logging what a remote sends or makes happen, safely.
//!
//! Two rules hold for every log line protoo-rs writes about a remote, and
//! applications logging about their peers can follow them with the same
//! tools:
//!
//! - **Nothing from the wire is written raw.** Identifiers, method names,
//!   close reasons, query strings, headers, and errors that may quote them
//!   are logged through [`Remote`], which escapes control characters and
//!   cuts the value at [`MAX_FIELD_BYTES`]: a remote cannot forge a log line
//!   of its own, write terminal escapes, or grow the log faster than it
//!   sends.
//! - **What a remote triggers is limited per source, not per connection.**
//!   Warnings a remote can cause (invalid messages, binary messages,
//!   requests over the rate limits, a refused connection) go through
//!   [`remote_warn!`](crate::remote_warn): each source (the client's
//!   address, see [`Source`]) gets [`SOURCE_BURST`] warnings per [`PERIOD`]
//!   at WARN and all sources together [`GLOBAL_BURST`]; the rest are logged
//!   at DEBUG and counted, and a summary line at WARN says how many were
//!   held back. Reconnecting does not reset an address's budget, and the
//!   table of sources is bounded ([`MAX_SOURCES`]).
//!
//! ```
//! use protoo_transport::log::{Remote, Source};
//! use protoo_transport::remote_warn;
//!
//! fn refused(addr: std::net::SocketAddr, peer_id: &str, error: &dyn std::error::Error) {
//!     // At WARN within the address's budget, at DEBUG beyond it.
//!     remote_warn!(Source::from(addr), peer_id = %Remote(peer_id), error = %Remote(error), "peer refused");
//! }
//! # refused("127.0.0.1:1".parse().unwrap(), "a\nb", &std::io::Error::other("x"));
//! ```

mod escape;
mod limit;

pub use escape::{MAX_FIELD_BYTES, Remote};
pub use limit::{GLOBAL_BURST, MAX_SOURCES, PERIOD, SOURCE_BURST, Source, allow_warn, closed};

/// What [`remote_warn!`](crate::remote_warn) expands to.
#[doc(hidden)]
pub use tracing as __tracing;

/// Logs a warning a remote caused, within the budget of its source: at
/// WARN while the source (and all sources together) are within their
/// budgets, after the summaries that are due; at DEBUG beyond them. See
/// [`log`](crate::log).
///
/// The first argument is the [`Source`](crate::log::Source); the rest is
/// what `tracing::warn!` takes (fields, then the message). Values from the
/// remote go through [`Remote`](crate::log::Remote).
///
/// ```
/// use protoo_transport::log::{Remote, Source};
/// use protoo_transport::remote_warn;
///
/// let source = Source::from("192.0.2.1:4000".parse::<std::net::SocketAddr>().unwrap());
/// remote_warn!(source, method = %Remote("join\n"), bytes = 12, "request refused");
/// ```
#[macro_export]
macro_rules! remote_warn {
    ($source:expr, $($arg:tt)+) => {
        if $crate::log::allow_warn($source) {
            $crate::log::__tracing::warn!($($arg)+)
        } else {
            $crate::log::__tracing::debug!($($arg)+)
        }
    };
}
