//! Reading a server's Prometheus endpoint (`--metrics-url`, the room
//! example's `--metrics`): one HTTP/1.0 `GET` per reading, on a plain
//! socket, so the harness needs no HTTP client.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Where the metrics are served: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    addr: String,
    path: String,
}

impl Endpoint {
    /// Parses `http://HOST:PORT[/PATH]` (default path `/metrics`).
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--metrics-url must start with http://, got {url}"))?;
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if addr.is_empty() {
            return Err(format!("--metrics-url has no HOST:PORT: {url}"));
        }
        Ok(Endpoint {
            addr: addr.to_owned(),
            path: if path == "/" { "/metrics" } else { path }.to_owned(),
        })
    }

    /// The exposition text, within `timeout`.
    pub(crate) async fn get(&self, timeout: Duration) -> Result<String, String> {
        let read = async {
            let mut s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("metrics: connect {}: {e}", self.addr))?;
            let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", self.path, self.addr);
            s.write_all(request.as_bytes())
                .await
                .map_err(|e| format!("metrics: write: {e}"))?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)
                .await
                .map_err(|e| format!("metrics: read: {e}"))?;
            let text = String::from_utf8_lossy(&out).into_owned();
            let (head, body) = text
                .split_once("\r\n\r\n")
                .ok_or_else(|| "metrics: no HTTP head".to_owned())?;
            let status = head.split(' ').nth(1);
            if !head.starts_with("HTTP/1.") || status != Some("200") {
                return Err(format!(
                    "metrics: {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
            Ok(body.to_owned())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("metrics: no answer within {timeout:?}"))?
    }
}

/// The sum of every sample of metric `name` whose labels contain every one
/// of `labels` (`key="value"`); `None` when there is none.
pub(crate) fn sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labelled, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if !labels.iter().all(|l| labelled.split(',').any(|x| x == *l)) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed() {
        let text = "# TYPE protoo_session_held_bytes gauge\n\
                    protoo_session_held_bytes 1200\n\
                    protoo_session_held_bytes_other 7\n\
                    protoo_sessions_total{outcome=\"resumed\"} 98\n\
                    protoo_sessions_total{outcome=\"expired\"} 1\n";
        assert_eq!(sum(text, "protoo_session_held_bytes", &[]), Some(1200.0));
        assert_eq!(
            sum(text, "protoo_sessions_total", &["outcome=\"resumed\""]),
            Some(98.0)
        );
        assert_eq!(sum(text, "protoo_sessions_total", &[]), Some(99.0));
        assert_eq!(sum(text, "protoo_sessions_waiting", &[]), None);
        let e = Endpoint::parse("http://127.0.0.1:9/").map(|e| (e.addr, e.path));
        assert_eq!(e, Ok(("127.0.0.1:9".to_owned(), "/metrics".to_owned())));
        assert!(Endpoint::parse("ws://x/").is_err());
    }
}
