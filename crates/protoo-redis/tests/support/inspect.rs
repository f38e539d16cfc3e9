//! What the tests read of Redis's state.

use super::TestConn;

/// Every key of `prefix` in Redis, with its value (hashes and sets as their
/// members), sorted.
pub async fn keys_of(redis: &mut TestConn, prefix: &str) -> Vec<String> {
    // `{P:...}` (a room's or a node's keys) and `{P}:...` (the cluster's).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}[:}}]*"))
        .query_async(redis)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(redis)
            .await
            .unwrap();
        let value = match kind.as_str() {
            "hash" => {
                let all: Vec<String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(redis)
                    .await
                    .unwrap();
                all.join(",")
            }
            "zset" => {
                let all: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(redis)
                    .await
                    .unwrap();
                all.join(",")
            }
            "set" => {
                let all: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(redis)
                    .await
                    .unwrap();
                all.join(",")
            }
            _ => redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(redis)
                .await
                .unwrap()
                .unwrap_or_default(),
        };
        out.push(format!("{key} = {value}"));
    }
    out.sort();
    out
}
