//! The link to Redis: two connections (commands, and the subscriber that
//! receives other nodes' messages), the one task that writes every queued
//! command in order, and what happens when the link breaks: reconnect with
//! backoff, subscribe again, register every member again.
//!
//! Order: one task writes every command and publish of this node, in the
//! order they were queued, in pipelines on one connection; Redis runs a
//! connection's commands in order and delivers pub/sub messages in the
//! order it ran the PUBLISHes. So one sender's messages reach every node in
//! order, and a membership change reaches Redis before a broadcast queued
//! after it.
//!
//! Bounds: the queue is bounded in bytes (see [`RedisConfig::queue_limit`]).
//! On one server and Sentinel deliveries are not queued at all: the
//! subscriber connection hands each message to this node's peers' own
//! bounded queues as it reads it, so a node that cannot keep up stops
//! reading, and Redis, past its pub/sub output buffer limit for the
//! connection (32 MB by default), closes it: that is a broken link like any
//! other (counted, logged, made anew). On Redis Cluster the crate's cluster
//! client reads without backpressure, so messages go through a queue
//! bounded by the same limit (see `shared/inbound.rs`).

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protoo_queue::Popped;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use crate::conn::{Conn, Connector};
use crate::scripts::cmd;
use crate::shared::{Op, Shared, strings};

/// Bytes of queued commands sent in one pipeline, at most (about).
const BATCH_BYTES: usize = 256 << 10;

/// The first wait before reconnecting; it doubles up to
/// [`RedisConfig::max_reconnect_wait`].
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(50);

/// One link: both connections, and whether either has broken.
pub(crate) struct Link {
    commands: Conn,
    subscriber: Conn,
    /// The server's address (one server, or the master Sentinel named).
    address: String,
    /// On Sentinel: the subscription to `+switch-master` (kept with the
    /// link).
    _switch: Option<redis::aio::MultiplexedConnection>,
    broken: Arc<Broken>,
}

/// Set by either connection's driver when it loses its connection.
#[derive(Default)]
struct Broken {
    flag: AtomicBool,
    notify: Notify,
}

impl Broken {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Opens both connections.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    connector: &Connector,
) -> redis::RedisResult<Link> {
    let broken = Arc::new(Broken::default());
    let timeout = shared.config.response_timeout;
    let on_message = {
        let shared = Arc::downgrade(shared);
        let broken = broken.clone();
        move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                broken.set();
            } else if let Some(shared) = shared.upgrade() {
                if shared.sharded {
                    // Read without backpressure by the crate's cluster
                    // client: into the bounded inbound queue.
                    shared.receive(info);
                } else {
                    shared.on_push(info);
                }
            }
        }
    };
    let on_disconnect = {
        let broken = broken.clone();
        move |info: PushInfo| {
            if info.kind == PushKind::Disconnection {
                broken.set();
            }
        }
    };
    let (subscriber, address) = connector.open(timeout, on_message).await?;
    let (commands, _) = connector.open(timeout, on_disconnect).await?;
    let switch = {
        let broken = broken.clone();
        connector
            .watch_switch(move || {
                tracing::info!("the sentinels switched the master: making the link anew");
                broken.set();
            })
            .await
    };
    if matches!(commands, Conn::Single(_)) {
        shared.set_shards(vec![crate::ShardLink {
            address: address.clone(),
            connected: true,
        }]);
    }
    Ok(Link {
        commands,
        subscriber,
        address,
        _switch: switch,
        broken,
    })
}

/// The link task: serves the link while it lasts, makes it anew when it
/// breaks, ends when the queue is closed (a shutdown) after telling Redis
/// this node left.
pub(crate) async fn run(shared: Arc<Shared>, connector: Connector, first: Link) {
    let mut next = Some(first);
    let mut wait = FIRST_RECONNECT_WAIT;
    let mut announce = false;
    loop {
        let link = match next.take() {
            Some(link) => link,
            None => match connect(&shared, &connector).await {
                Ok(link) => {
                    tracing::info!(node_id = %shared.node_id, "Redis link up again");
                    wait = FIRST_RECONNECT_WAIT;
                    link
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot reach Redis, retrying in {wait:?}");
                    if shared.queue.is_closed() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(shared.config.max_reconnect_wait);
                    continue;
                }
            },
        };
        match serve(&shared, link, announce).await {
            Served::Shutdown => return,
            Served::Broken(error) => {
                // Everything queued for the broken link is dropped (its
                // waiters fall back), and everything about membership is
                // registered again on the next link.
                shared.set_up(false);
                shared.resync.store(true, Ordering::Release);
                let dropped = drain(&shared);
                shared.stats.disconnected();
                announce = true;
                tracing::warn!(
                    node_id = %shared.node_id,
                    %error,
                    dropped,
                    "lost the Redis link: cross-node messages are dropped until it is back \
                     (messages other nodes publish meanwhile are lost for this node's peers)"
                );
            }
        }
    }
}

/// Drops what is queued; returns how many ops.
/// Publishes among them are counted as dropped while down.
fn drain(shared: &Shared) -> usize {
    let mut dropped = 0;
    let waker = std::task::Waker::noop();
    let cx = std::task::Context::from_waker(waker);
    let mut take = |op: Op| {
        dropped += 1;
        if let Op::Cmd { cmd, .. } = &op
            && is_publish(cmd)
        {
            shared.stats.publish_dropped(false);
        }
    };
    while let std::task::Poll::Ready(Popped::Items) =
        shared.queue.poll_take(&cx, usize::MAX, &mut take, |_| ())
    {}
    dropped
}

/// Whether `cmd` is a `PUBLISH` or `SPUBLISH`.
fn is_publish(cmd: &redis::Cmd) -> bool {
    matches!(
        cmd.args_iter().next(),
        Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"PUBLISH") || name.eq_ignore_ascii_case(b"SPUBLISH")
    )
}

enum Served {
    Shutdown,
    Broken(String),
}

/// Registers this node on the link, then writes what is queued until the
/// link breaks or the queue closes.
async fn serve(shared: &Arc<Shared>, mut link: Link, announce: bool) -> Served {
    shared.resync.store(false, Ordering::Release);
    if let Err(error) = resync(shared, &mut link, announce).await {
        return Served::Broken(error.to_string());
    }
    // Up once registered: what changes meanwhile is dropped and flags
    // another registration (below), which makes it good.
    shared.set_up(true);
    loop {
        let mut batch = Vec::new();
        let popped = tokio::select! {
            biased;
            () = link.broken.wait() => return Served::Broken("connection closed".into()),
            popped = poll_fn(|cx| shared.queue.poll_take(cx, BATCH_BYTES, |op| batch.push(op), |_| ())) => Some(popped),
            () = shared.wake.notified() => None,
        };
        if let Err(error) = execute(shared, &mut link, batch).await {
            return Served::Broken(error.to_string());
        }
        if let Some(Popped::Closed(())) = popped {
            leave(shared, &mut link).await;
            return Served::Shutdown;
        }
        if shared.resync.swap(false, Ordering::AcqRel)
            && let Err(error) = resync(shared, &mut link, false).await
        {
            return Served::Broken(error.to_string());
        }
    }
}

/// Sends a batch: commands in pipelines, subscriptions between them in
/// their place; hands each reply to whoever waits for it.
async fn execute(shared: &Arc<Shared>, link: &mut Link, batch: Vec<Op>) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::new();
    for op in batch {
        match op {
            Op::Cmd { cmd, reply, .. } => {
                pipe.add_command(cmd);
                replies.push(reply);
            }
            Op::Subscribe(room) => {
                flush(shared, link, &mut pipe, &mut replies).await?;
                link.subscriber
                    .subscribe_room(&shared.keys.room(&room))
                    .await?;
            }
            Op::Probe => {
                // On the side: a shard that does not answer holds nothing up.
                let mut conn = link.commands.clone();
                let address = link.address.clone();
                let shared = Arc::downgrade(shared);
                tokio::spawn(async move {
                    let shards = conn.probe(&address).await;
                    if let Some(shared) = shared.upgrade() {
                        shared.set_shards(shards);
                    }
                });
            }
            Op::Unsubscribe(room) => {
                flush(shared, link, &mut pipe, &mut replies).await?;
                link.subscriber
                    .unsubscribe_room(&shared.keys.room(&room))
                    .await?;
            }
        }
    }
    flush(shared, link, &mut pipe, &mut replies).await
}

type Replies = Vec<Option<tokio::sync::oneshot::Sender<Value>>>;

async fn flush(
    shared: &Shared,
    link: &mut Link,
    pipe: &mut redis::Pipeline,
    replies: &mut Replies,
) -> redis::RedisResult<()> {
    if replies.is_empty() {
        return Ok(());
    }
    let values = match link.commands.run(pipe).await {
        Ok(values) => values,
        Err(error) => {
            // Lost with the link: counted as dropped while down.
            for _ in pipe.cmd_iter().filter(|cmd| is_publish(cmd)) {
                shared.stats.publish_dropped(false);
            }
            return Err(error);
        }
    };
    pipe.clear();
    let mut forgot_scripts = false;
    let mut not_master = false;
    for (reply, value) in replies.drain(..).zip(values) {
        if let Value::ServerError(error) = &value {
            forgot_scripts |= error.code() == "NOSCRIPT";
            // A master demoted under us (a Sentinel failover): the link
            // is made anew to the master the sentinels name now.
            not_master |= error.code() == "READONLY";
            tracing::warn!(%error, "a cluster command failed in Redis");
        }
        if let Some(reply) = reply {
            let _ = reply.send(value);
        }
    }
    if not_master {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "Redis is no longer a master",
        )));
    }
    if forgot_scripts {
        // Made anew, the link loads them again.
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "Redis forgot the cluster's scripts",
        )));
    }
    Ok(())
}

/// Makes Redis hold what this node has: its heartbeat, its subscriptions,
/// and each of its members' entries (the node's own state is the truth).
/// Entries of members it no longer has are removed, and, when `announce`
/// (after a lost link, when their departure could not reach the other
/// nodes), announced gone to the other nodes.
///
/// Two round trips: the first loads the scripts, beats and reads the
/// node's room set; the second removes what the node no longer has in the
/// rooms of that set and registers its members room by room (each room's
/// step in the room's slot, the room set's in the node's).
async fn resync(shared: &Shared, link: &mut Link, announce: bool) -> redis::RedisResult<()> {
    shared.stats.resynced();
    let keys = &shared.keys;
    let life = shared.life();
    let rooms = shared.local_rooms();
    let info = members_info(shared);

    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    // Loaded on every link (a restarted Redis has none), then named by hash.
    let loads = cmd::load_all().fold(0, |n, load| {
        pipe.add_command(load);
        n + 1
    });
    pipe.add_command(cmd::heartbeat(&keys.nodes, &shared.node_id, life));
    pipe.add_command(redis::cmd("SMEMBERS").arg(&keys.node_rooms).clone());
    let values = no_errors(link.commands.run(&pipe).await?)?;
    let known = values
        .into_iter()
        .nth(loads + 1)
        .and_then(strings)
        .unwrap_or_default();
    let here: std::collections::HashSet<&str> =
        rooms.iter().map(|(room, _)| room.as_str()).collect();
    let stale: Vec<String> = known
        .into_iter()
        .filter(|room| !here.contains(room.as_str()))
        .collect();

    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for room in &stale {
        let names = keys.room_names(room);
        pipe.add_command(cmd::sweep_room(names.keys(), &shared.node_id));
    }
    if !stale.is_empty() {
        pipe.add_command(redis::cmd("SREM").arg(&keys.node_rooms).arg(&stale).clone());
    }
    for (room, peers) in &rooms {
        let entries = peers.iter().map(|(peer, incarnation)| {
            let listed = info
                .get(&(room.clone(), peer.clone()))
                .map(|info| info.as_str())
                .unwrap_or("");
            (
                peer.as_str(),
                format!("{}{listed}", shared.entry_prefix(incarnation)),
            )
        });
        let names = keys.room_names(room);
        pipe.add_command(cmd::resync_room(
            names.keys(),
            &shared.node_id,
            life,
            entries,
        ));
    }
    if !rooms.is_empty() {
        let all: Vec<&str> = rooms.iter().map(|(room, _)| room.as_str()).collect();
        pipe.add_command(redis::cmd("SADD").arg(&keys.node_rooms).arg(all).clone());
        pipe.add_command(
            redis::cmd("EXPIRE")
                .arg(&keys.node_rooms)
                .arg(shared.config.rooms_ttl().as_secs())
                .clone(),
        );
    }
    let values = if pipe.is_empty() {
        Vec::new()
    } else {
        no_errors(link.commands.run(&pipe).await?)?
    };
    link.subscriber.subscribe(&keys.node).await?;
    for (room, _) in &rooms {
        link.subscriber.subscribe_room(&keys.room(room)).await?;
    }
    if !announce {
        return Ok(());
    }
    let mut values = values.into_iter();
    for room in &stale {
        let removed = values.next().and_then(strings).unwrap_or_default();
        for gone in removed.chunks_exact(2) {
            shared.announce_lost(room, &gone[0], &gone[1], false);
        }
    }
    if !stale.is_empty() {
        values.next();
    }
    for ((room, _), removed) in rooms.iter().zip(values) {
        for gone in strings(removed).unwrap_or_default().chunks_exact(2) {
            shared.announce_lost(room, &gone[0], &gone[1], false);
        }
    }
    tracing::debug!(node_id = %shared.node_id, rooms = rooms.len(), "members registered in Redis");
    Ok(())
}

/// A registration is all or nothing: a command Redis refused (a Redis
/// Cluster shard without a master yet, a script forgotten) fails it, and
/// the link is made anew.
fn no_errors(values: Vec<Value>) -> redis::RedisResult<Vec<Value>> {
    match values.iter().find_map(|value| match value {
        Value::ServerError(error) => Some(error.clone()),
        _ => None,
    }) {
        Some(error) => Err(error.into()),
        None => Ok(values),
    }
}

/// The presence of each member, by (room, peer), from the core.
fn members_info(
    shared: &Shared,
) -> std::collections::HashMap<(String, String), protoo_core::Payload> {
    shared
        .node()
        .map(|node| node.members())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|member| Some(((member.room_id, member.peer_id), member.info?)))
        .collect()
}

/// Tells Redis this node left in good order: members still registered
/// (the application did not close them first) are removed and announced
/// gone to the other nodes, then the node's own keys go.
async fn leave(shared: &Shared, link: &mut Link) {
    let keys = &shared.keys;
    let rooms = redis::cmd("SMEMBERS")
        .arg(&keys.node_rooms)
        .query_async::<Value>(&mut link.commands)
        .await
        .map(|rooms| strings(rooms).unwrap_or_default());
    match rooms {
        Ok(rooms) if !rooms.is_empty() => {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for room in &rooms {
                let names = keys.room_names(room);
                pipe.add_command(cmd::sweep_room(names.keys(), &shared.node_id));
            }
            let removed = link.commands.run(&pipe).await;
            let mut publish = redis::pipe();
            publish.ignore_errors();
            if let Ok(removed) = removed {
                for (room, removed) in rooms.iter().zip(removed) {
                    for gone in strings(removed).unwrap_or_default().chunks_exact(2) {
                        if let Some(cmd) = shared.lost_publication(room, &gone[0], &gone[1], false)
                        {
                            publish.add_command(cmd);
                        }
                    }
                }
            }
            if !publish.is_empty() {
                let _ = link.commands.run(&publish).await;
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not remove this node's members from Redis"),
    }
    // The node's keys (its slot), then its place in the node set (the
    // cluster's slot): two commands.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.add_command(redis::cmd("DEL").arg(&keys.node_rooms).clone());
    pipe.add_command(
        redis::cmd("ZREM")
            .arg(&keys.nodes)
            .arg(&*shared.node_id)
            .clone(),
    );
    if let Err(error) = link.commands.run(&pipe).await {
        tracing::warn!(%error, "could not tell Redis this node left");
    }
    shared.set_up(false);
}
