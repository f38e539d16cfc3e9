//! Where the link's connections come from, by topology: one server, the
//! master Sentinel names now, or a Redis Cluster (its slots followed by the
//! `redis` crate: `MOVED`/`ASK`, topology refreshes, subscriptions moved
//! with their slots).

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo,
    RedisFuture, Value,
};

use crate::config::RedisTopology;
use crate::{Error, RedisConfig};

/// Makes connections to the configured Redis.
pub(crate) enum Connector {
    Single(Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        master: String,
        node: SentinelNodeConnectionInfo,
        /// The sentinels, to hear `+switch-master` from.
        sentinels: Vec<Client>,
    },
    Cluster(ClusterClient),
}

/// `HOST:PORT` as a URL; a URL as it is.
fn url_of(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("redis://{address}")
    }
}

fn resp3(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

impl Connector {
    /// A connector for `config`'s topology (nothing is connected yet).
    pub(crate) fn new(config: &RedisConfig) -> Result<Connector, Error> {
        match &config.topology {
            RedisTopology::Single { url } => {
                let info = url.as_str().into_connection_info().map_err(Error::Url)?;
                Ok(Connector::Single(
                    Client::open(resp3(info)).map_err(Error::Url)?,
                ))
            }
            RedisTopology::Sentinel { master, sentinels } => {
                let infos = sentinels
                    .iter()
                    .map(|address| url_of(address).as_str().into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Error::Url)?;
                // The master is reached with the sentinels' credentials.
                let settings = infos
                    .first()
                    .map(|info| info.redis_settings().clone())
                    .unwrap_or_default()
                    .set_protocol(ProtocolVersion::RESP3);
                let node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
                let clients = infos
                    .iter()
                    .map(|info| Client::open(resp3(info.clone())))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Error::Url)?;
                let sentinel = Sentinel::build(infos).map_err(Error::Url)?;
                Ok(Connector::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    master: master.clone(),
                    node,
                    sentinels: clients,
                })
            }
            RedisTopology::Cluster { seeds } => {
                let infos = seeds
                    .iter()
                    .map(|address| url_of(address).as_str().into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Error::Url)?;
                let client = ClusterClient::builder(infos)
                    .use_protocol(ProtocolVersion::RESP3)
                    .retries(3)
                    .build()
                    .map_err(Error::Url)?;
                Ok(Connector::Cluster(client))
            }
        }
    }

    /// Opens a connection whose pushes (messages, disconnections) go to
    /// `on_push`; with the address it reached (on a Redis Cluster, the
    /// seeds).
    pub(crate) async fn open(
        &self,
        timeout: Duration,
        on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> redis::RedisResult<(Conn, String)> {
        let sender = move |info: PushInfo| {
            on_push(info);
            Ok::<(), std::convert::Infallible>(())
        };
        match self {
            Connector::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(sender);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let address = client.get_connection_info().addr().to_string();
                Ok((Conn::Single(conn), address))
            }
            Connector::Sentinel {
                sentinel,
                master,
                node,
                ..
            } => {
                // Asked anew on every link: after a failover, the sentinels
                // name the promoted replica (checked to be a master).
                let client = sentinel
                    .lock()
                    .await
                    .async_master_for(master, Some(node))
                    .await?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(sender);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let address = client.get_connection_info().addr().to_string();
                Ok((Conn::Single(conn), address))
            }
            Connector::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(timeout)
                    .set_push_sender(sender);
                let conn = client.get_async_connection_with_config(config).await?;
                Ok((Conn::Cluster(conn), "cluster".to_owned()))
            }
        }
    }
}

impl Connector {
    /// On Sentinel: a connection to the first sentinel that answers,
    /// subscribed to `+switch-master`; `on_switch` runs when the sentinels
    /// switch this master (so that the link leaves an old master that
    /// still answers, before it is turned into a replica). `None`
    /// elsewhere, or if no sentinel answers (the link then finds out from
    /// a broken connection or a `READONLY` reply).
    pub(crate) async fn watch_switch(
        &self,
        on_switch: impl Fn() + Send + Sync + Clone + 'static,
    ) -> Option<MultiplexedConnection> {
        let Connector::Sentinel {
            master, sentinels, ..
        } = self
        else {
            return None;
        };
        for client in sentinels {
            let master = master.clone();
            let on_switch = on_switch.clone();
            let sender = move |info: PushInfo| {
                // `+switch-master`: "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT".
                let ours = info.kind == redis::PushKind::Message
                    && matches!(
                        info.data.get(1),
                        Some(Value::BulkString(text))
                            if text.split(|&b| b == b' ').next() == Some(master.as_bytes())
                    );
                if ours {
                    on_switch();
                }
                Ok::<(), std::convert::Infallible>(())
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_push_sender(sender);
            let Ok(mut conn) = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            else {
                continue;
            };
            if conn.subscribe("+switch-master").await.is_ok() {
                return Some(conn);
            }
        }
        tracing::debug!("no sentinel answers: a failover is noticed by the link itself");
        None
    }
}

/// One connection: to one server, or to every shard of a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Subscribes to a node channel (plain pub/sub: on Redis Cluster a
    /// `PUBLISH` reaches every shard's subscribers).
    pub(crate) async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn) => conn.subscribe(channel).await,
        }
    }

    /// Subscribes to a room channel: on Redis Cluster with `SSUBSCRIBE`,
    /// on the shard of the room's slot.
    pub(crate) async fn subscribe_room(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from a room channel.
    pub(crate) async fn unsubscribe_room(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channel).await,
            Conn::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// The hash tag of the key a command is routed by (the whole key without
/// one): commands of one tag share a slot. `None` for commands of no slot
/// (`PUBLISH` goes to any shard, `SCRIPT` to every master).
fn tag_of(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"PUBLISH" | b"SCRIPT" => return None,
        b"EVALSHA" | b"EVAL" => args.get(3)?,
        _ => args.get(1)?,
    };
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    Some(tag.to_vec())
}

impl Conn {
    /// Runs a pipeline's commands (its errors in their places, as with
    /// `ignore_errors`); their replies, in order.
    ///
    /// On one server: one pipeline. On a Redis Cluster a pipeline must keep
    /// to one slot: the commands go as one pipeline per slot, side by side,
    /// each slot's in their order (what order means: a room's commands and
    /// its broadcasts are of one slot); a command of no slot waits for
    /// everything before it and goes alone, and what follows waits for it.
    pub(crate) async fn run(&mut self, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        let conn = match self {
            Conn::Single(conn) => {
                return match pipe.query_async::<Value>(conn).await? {
                    Value::Array(values) => Ok(values),
                    other => Ok(vec![other]),
                };
            }
            Conn::Cluster(conn) => conn,
        };
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut out = vec![Value::Nil; cmds.len()];
        let mut groups: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            match tag_of(cmd) {
                Some(tag) => match groups.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, group)) => group.push(i),
                    None => groups.push((tag, vec![i])),
                },
                None => {
                    run_groups(conn, &cmds, std::mem::take(&mut groups), &mut out).await?;
                    out[i] = match cmd.query_async::<Value>(conn).await {
                        Ok(value) => value,
                        Err(error) => match error.clone().try_into() {
                            Ok(server) => Value::ServerError(server),
                            Err(_) => return Err(error),
                        },
                    };
                }
            }
        }
        run_groups(conn, &cmds, groups, &mut out).await?;
        Ok(out)
    }
}

impl Conn {
    /// Whether each shard answers a `PING` now: the one server (`address`),
    /// or each master a Redis Cluster's `CLUSTER SLOTS` lists.
    pub(crate) async fn probe(&mut self, address: &str) -> Vec<crate::ShardLink> {
        let conn = match self {
            Conn::Single(conn) => {
                let connected = redis::cmd("PING").query_async::<Value>(conn).await.is_ok();
                return vec![crate::ShardLink {
                    address: address.to_owned(),
                    connected,
                }];
            }
            Conn::Cluster(conn) => conn,
        };
        let slots = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(conn)
            .await;
        let mut masters: Vec<(String, u16)> = Vec::new();
        if let Ok(Value::Array(ranges)) = slots {
            for range in ranges {
                let Value::Array(range) = range else { continue };
                let Some(Value::Array(master)) = range.get(2) else {
                    continue;
                };
                if let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
                    (master.first(), master.get(1))
                {
                    let host = String::from_utf8_lossy(host).into_owned();
                    let port = u16::try_from(*port).unwrap_or_default();
                    if !masters.contains(&(host.clone(), port)) {
                        masters.push((host, port));
                    }
                }
            }
        }
        masters.sort();
        let mut shards = Vec::with_capacity(masters.len());
        for (host, port) in masters {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let connected = conn
                .route_command(redis::cmd("PING"), routing)
                .await
                .is_ok();
            shards.push(crate::ShardLink {
                address: format!("{host}:{port}"),
                connected,
            });
        }
        shards
    }
}

/// One pipeline per slot, all at once; each reply in its place in `out`.
async fn run_groups(
    conn: &ClusterConnection,
    cmds: &[&Cmd],
    groups: Vec<(Vec<u8>, Vec<usize>)>,
    out: &mut [Value],
) -> redis::RedisResult<()> {
    let mut running = tokio::task::JoinSet::new();
    for (_, group) in groups {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &group {
            pipe.add_command((*cmds[i]).clone());
        }
        let mut conn = conn.clone();
        running.spawn(async move {
            let values = pipe.query_async::<Value>(&mut conn).await;
            (group, values)
        });
    }
    while let Some(done) = running.join_next().await {
        let Ok((group, values)) = done else {
            continue;
        };
        let values = match values? {
            Value::Array(values) => values,
            other => vec![other],
        };
        for (i, value) in group.into_iter().zip(values) {
            out[i] = value;
        }
    }
    Ok(())
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_group_by_the_slot_of_their_key() {
        let eval = redis::cmd("EVALSHA")
            .arg("sha")
            .arg(2)
            .arg("{p:room:r}")
            .arg("{p:room:r}:nodes")
            .clone();
        let publish = redis::cmd("SPUBLISH").arg("{p:room:r}").arg("x").clone();
        let sadd = redis::cmd("SADD").arg("{p:node:n}:rooms").arg("r").clone();
        assert_eq!(tag_of(&eval).as_deref(), Some(&b"p:room:r"[..]));
        assert_eq!(
            tag_of(&publish),
            tag_of(&eval),
            "a room's broadcasts go with its keys"
        );
        assert_eq!(tag_of(&sadd).as_deref(), Some(&b"p:node:n"[..]));
        // No slot: plain pub/sub and script loading.
        assert_eq!(
            tag_of(&redis::cmd("PUBLISH").arg("{p:node:n}").arg("x").clone()),
            None
        );
        assert_eq!(
            tag_of(&redis::cmd("SCRIPT").arg("LOAD").arg("x").clone()),
            None
        );
        // A key without a tag is its own.
        assert_eq!(
            tag_of(&redis::cmd("DEL").arg("k").clone()).as_deref(),
            Some(&b"k"[..])
        );
    }
}
