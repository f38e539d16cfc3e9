//! The Lua scripts the backend runs in Redis, each one atomic step, and the
//! commands that run them.
//!
//! Every script declares the keys it touches (`KEYS`), and they share one
//! hash slot: a room's keys carry the hash tag `{P:room:R}`, the cluster's
//! own keys `{P}`. So each runs as it is on Redis Cluster, and a room's
//! steps never cross shards. Whether another node is alive is read in the
//! room's own slot: `{P:room:R}:nodes` holds, for each node with a member
//! in the room, a deadline (ms, the shard's clock) that the node pushes
//! forward with its heartbeat. Scripts read the clock with `TIME` (allowed
//! since Redis 5: scripts replicate their effects).
//!
//! A member's entry in `{P:room:R}` is `NODE:INCARNATION|INFO`: the prefix
//! up to the `|` names one admission of a peer on one node (its
//! incarnation), `INFO` is its presence (empty: not listed). Node ids
//! never hold `:` or `|`. Each link loads every script once (`SCRIPT
//! LOAD`, in its first pipeline); commands then name them by hash
//! (`EVALSHA`), so a script's text is not sent, nor hashed again by Redis,
//! on every call. A Redis that forgot them (`NOSCRIPT`: flushed, or
//! another Redis behind the same address) breaks the link, and the next
//! one loads them again.

use std::sync::OnceLock;

use redis::Cmd;

/// A Lua script and its SHA-1, computed once.
pub(crate) struct Lua {
    text: &'static str,
    sha: OnceLock<String>,
}

impl Lua {
    const fn new(text: &'static str) -> Lua {
        Lua {
            text,
            sha: OnceLock::new(),
        }
    }

    fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| redis::Script::new(self.text).get_hash().to_owned())
    }
}

/// What every script that reads the clock starts with: `now`, in ms.
macro_rules! with_now {
    ($body:literal) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            $body
        )
    };
}

/// Registers a member: sets its entry (and pushes its node's deadline in
/// the room) and returns the one it replaced, with whether that entry's
/// node is alive; an entry of another live node is kept and the newcomer
/// refused under `refuse`, and under `replace` when the entry's identity
/// fingerprint (what follows `~` before `|`; none without an identity) is
/// not the newcomer's: no takeover of another's peer id, checked where the
/// entry is read, atomically. A newcomer that may resume the session of
/// the live entry it replaces (`keep`) is listed with that entry's info
/// meanwhile, so that the member's presence shows no gap.
///
/// KEYS: room, room nodes. ARGV: peer, entry, `replace`/`refuse`, node id,
/// node TTL (ms), how long the room nodes hash outlives it (ms),
/// `keep`/`new`.
static REGISTER: Lua = Lua::new(with_now!(
    r"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local status = 'new'
if prev then
  local node = string.match(prev, '^([^:]*):') or ''
  local deadline = tonumber(redis.call('HGET', KEYS[2], node) or '0')
  if node == ARGV[4] then status = 'self'
  elseif deadline > now then status = 'alive'
  else status = 'dead' end
  if status == 'alive' then
    if ARGV[3] == 'refuse' then return {'refused', prev} end
    local who = string.match(prev, '^[^|~]*~([^|]*)|') or ''
    local mine = string.match(ARGV[2], '^[^|~]*~([^|]*)|') or ''
    if who ~= mine then return {'refused', prev} end
  end
end
local entry = ARGV[2]
if status == 'alive' and ARGV[7] == 'keep' then
  entry = entry .. (string.match(prev, '^[^|]*|(.*)$') or '')
end
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('HSET', KEYS[2], ARGV[4], now + tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if prev then return {status, prev} end
return {status}
"
));

/// Whether a live member of this id on another node has another identity
/// fingerprint than the newcomer's (1) or not (0): what [`REGISTER`] would
/// refuse, asked before the newcomer is admitted.
///
/// KEYS: room, room nodes. ARGV: peer, the newcomer's fingerprint, node id.
static TAKEN: Lua = Lua::new(with_now!(
    r"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev then return 0 end
local node = string.match(prev, '^([^:]*):') or ''
if node == ARGV[3] then return 0 end
if tonumber(redis.call('HGET', KEYS[2], node) or '0') <= now then return 0 end
local who = string.match(prev, '^[^|~]*~([^|]*)|') or ''
if who == ARGV[2] then return 0 end
return 1
"
));

/// Lists a member with its info, if its entry is still this incarnation's.
///
/// KEYS: room. ARGV: peer, incarnation prefix, info.
static SET_INFO: Lua = Lua::new(
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ARGV[3])
  return 1
end
return 0
",
);

/// Removes a member's entry if it is still this incarnation's (a newer one
/// elsewhere is left alone); for the node's last member of the room, the
/// node leaves the room's nodes; the room's last entry takes them along.
///
/// KEYS: room, room nodes. ARGV: peer, incarnation prefix, node id, `1`
/// if it was the node's last member there.
static REMOVE: Lua = Lua::new(
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
if ARGV[4] == '1' then redis.call('HDEL', KEYS[2], ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return 0
",
);

/// The listed members of a room on live nodes, as `[peer, info, ...]`.
/// Entries of a node whose deadline passed longer ago than a sweep can
/// take (nobody was there to sweep it), or that has none, are deleted.
///
/// KEYS: room, room nodes. ARGV: this node's id, how long a dead node's
/// entries wait for their sweep (ms).
static PRESENCE: Lua = Lua::new(with_now!(
    r"
local all = redis.call('HGETALL', KEYS[1])
local state = {}
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local node = string.match(v, '^([^:]*):') or ''
  local s = state[node]
  if s == nil then
    local deadline = tonumber(redis.call('HGET', KEYS[2], node) or '0')
    if node == ARGV[1] or deadline > now then s = 1
    elseif deadline + tonumber(ARGV[2]) > now then s = 0
    else s = -1 end
    state[node] = s
  end
  if s == 1 then
    local bar = string.find(v, '|', 1, true)
    if bar and bar < #v then
      out[#out + 1] = all[i]
      out[#out + 1] = string.sub(v, bar + 1)
    end
  elseif s == -1 then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
for node, s in pairs(state) do
  if s == -1 then redis.call('HDEL', KEYS[2], node) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return out
"
));

/// Publishes a message on the channel of the live node that has the
/// member (a channel has no slot for `PUBLISH`); returns how many
/// received it, or 1 if that count is not asked for (on Redis Cluster it
/// counts one shard only), 0 if there is no such member on a live node.
///
/// KEYS: room, room nodes. ARGV: peer, node channel prefix (`{P:node:`),
/// payload, `1` to return the count.
static ROUTE: Lua = Lua::new(with_now!(
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local node = string.match(v, '^([^:]*):')
if not node then return 0 end
if tonumber(redis.call('HGET', KEYS[2], node) or '0') <= now then return 0 end
local n = redis.call('PUBLISH', ARGV[2] .. node .. '}', ARGV[3])
if ARGV[4] == '1' then return n end
return 1
"
));

/// Pushes a node's deadline in the room forward (its heartbeat, per room),
/// if the room exists.
///
/// KEYS: room, room nodes. ARGV: node id, node TTL (ms), how long the
/// room nodes hash outlives it (ms).
static REFRESH_ROOM: Lua = Lua::new(with_now!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"
));

/// A node's heartbeat in the node set; returns 1 if the node was not in it
/// (it was swept, or Redis lost its data): its members must be registered
/// again.
///
/// KEYS: nodes. ARGV: node id, node TTL (ms).
static HEARTBEAT: Lua = Lua::new(with_now!(
    r"
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"
));

/// The dead nodes (in the node set, deadline passed), but this one.
///
/// KEYS: nodes. ARGV: node id.
static FIND_DEAD: Lua = Lua::new(with_now!(
    r"
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1)) do
  if n ~= ARGV[1] then out[#out + 1] = n end
end
return out
"
));

/// Removes a node's entries from a room, and the node from the room's
/// nodes; returns the entries, `[peer, entry, ...]`, so that each is
/// announced exactly once. For a dead node's sweep, and for a node's own
/// rooms it no longer has (after a lost link, or when it leaves).
///
/// KEYS: room, room nodes. ARGV: `NODE:`, node id.
static SWEEP_ROOM: Lua = Lua::new(
    r"
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return out
",
);

/// Makes a room's entries of this node what the node has: entries of
/// members it no longer has are removed (and returned, `[peer, entry,
/// ...]`), its members are set unless another node holds their id.
///
/// KEYS: room, room nodes. ARGV: `NODE:`, node id, node TTL (ms), how long
/// the room nodes hash outlives it (ms), then peer, entry, ...
static RESYNC_ROOM: Lua = Lua::new(with_now!(
    r"
local keep = {}
local any = false
for i = 5, #ARGV, 2 do keep[ARGV[i]] = ARGV[i + 1]; any = true end
local all = redis.call('HGETALL', KEYS[1])
local owner = {}
for i = 1, #all, 2 do owner[all[i]] = all[i + 1] end
local removed = {}
for f, v in pairs(owner) do
  if string.sub(v, 1, #ARGV[1]) == ARGV[1] and keep[f] == nil then
    redis.call('HDEL', KEYS[1], f)
    removed[#removed + 1] = f
    removed[#removed + 1] = v
  end
end
for f, v in pairs(keep) do
  local cur = owner[f]
  if cur == nil or string.sub(cur, 1, #ARGV[1]) == ARGV[1] then redis.call('HSET', KEYS[1], f, v) end
end
if any then
  redis.call('HSET', KEYS[2], ARGV[2], now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return removed
"
));

/// Every script, as each link loads them.
static ALL: [&Lua; 11] = [
    &REGISTER,
    &TAKEN,
    &SET_INFO,
    &REMOVE,
    &PRESENCE,
    &ROUTE,
    &REFRESH_ROOM,
    &HEARTBEAT,
    &FIND_DEAD,
    &SWEEP_ROOM,
    &RESYNC_ROOM,
];

fn eval(script: &Lua, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.sha()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// A room's two keys: its entries and its nodes' deadlines.
#[derive(Clone, Copy)]
pub(crate) struct RoomKeys<'a> {
    pub(crate) room: &'a str,
    pub(crate) nodes: &'a str,
}

/// How long things live, in ms: a node's deadline past its heartbeat
/// (`ttl`), and how long a room's nodes outlive theirs (`keep`).
#[derive(Clone, Copy)]
pub(crate) struct Lifetimes {
    pub(crate) ttl: u64,
    pub(crate) keep: u64,
}

/// The commands of the scripts above, with their arguments in order.
pub(crate) mod cmd {
    use super::*;

    fn room_eval(script: &Lua, keys: RoomKeys<'_>) -> Cmd {
        eval(script, &[keys.room, keys.nodes])
    }

    pub(crate) fn register(
        keys: RoomKeys<'_>,
        peer: &str,
        entry: &str,
        replace: bool,
        resume: bool,
        node_id: &str,
        life: Lifetimes,
    ) -> Cmd {
        let mut cmd = room_eval(&REGISTER, keys);
        cmd.arg(peer)
            .arg(entry)
            .arg(if replace { "replace" } else { "refuse" })
            .arg(node_id)
            .arg(life.ttl)
            .arg(life.keep)
            .arg(if resume { "keep" } else { "new" });
        cmd
    }

    pub(crate) fn taken(keys: RoomKeys<'_>, peer: &str, who: &str, node_id: &str) -> Cmd {
        let mut cmd = room_eval(&TAKEN, keys);
        cmd.arg(peer).arg(who).arg(node_id);
        cmd
    }

    pub(crate) fn set_info(room_key: &str, peer: &str, incarnation: &str, info: &[u8]) -> Cmd {
        let mut cmd = eval(&SET_INFO, &[room_key]);
        cmd.arg(peer).arg(incarnation).arg(info);
        cmd
    }

    pub(crate) fn remove(
        keys: RoomKeys<'_>,
        peer: &str,
        incarnation: &str,
        node_id: &str,
        last: bool,
    ) -> Cmd {
        let mut cmd = room_eval(&REMOVE, keys);
        cmd.arg(peer)
            .arg(incarnation)
            .arg(node_id)
            .arg(if last { "1" } else { "0" });
        cmd
    }

    pub(crate) fn presence(keys: RoomKeys<'_>, node_id: &str, life: Lifetimes) -> Cmd {
        let mut cmd = room_eval(&PRESENCE, keys);
        cmd.arg(node_id).arg(life.keep);
        cmd
    }

    pub(crate) fn route(
        keys: RoomKeys<'_>,
        peer: &str,
        node_channel_prefix: &str,
        payload: &[u8],
        count: bool,
    ) -> Cmd {
        let mut cmd = room_eval(&ROUTE, keys);
        cmd.arg(peer)
            .arg(node_channel_prefix)
            .arg(payload)
            .arg(if count { "1" } else { "0" });
        cmd
    }

    pub(crate) fn refresh_room(keys: RoomKeys<'_>, node_id: &str, life: Lifetimes) -> Cmd {
        let mut cmd = room_eval(&REFRESH_ROOM, keys);
        cmd.arg(node_id).arg(life.ttl).arg(life.keep);
        cmd
    }

    pub(crate) fn heartbeat(nodes: &str, node_id: &str, life: Lifetimes) -> Cmd {
        let mut cmd = eval(&HEARTBEAT, &[nodes]);
        cmd.arg(node_id).arg(life.ttl);
        cmd
    }

    pub(crate) fn find_dead(nodes: &str, node_id: &str) -> Cmd {
        let mut cmd = eval(&FIND_DEAD, &[nodes]);
        cmd.arg(node_id);
        cmd
    }

    pub(crate) fn sweep_room(keys: RoomKeys<'_>, node_id: &str) -> Cmd {
        let mut cmd = room_eval(&SWEEP_ROOM, keys);
        cmd.arg(format!("{node_id}:")).arg(node_id);
        cmd
    }

    pub(crate) fn resync_room<'a>(
        keys: RoomKeys<'_>,
        node_id: &str,
        life: Lifetimes,
        entries: impl Iterator<Item = (&'a str, String)>,
    ) -> Cmd {
        let mut cmd = room_eval(&RESYNC_ROOM, keys);
        cmd.arg(format!("{node_id}:"))
            .arg(node_id)
            .arg(life.ttl)
            .arg(life.keep);
        for (peer, entry) in entries {
            cmd.arg(peer).arg(entry);
        }
        cmd
    }

    /// `SCRIPT LOAD` of every script, for a new link's first pipeline.
    pub(crate) fn load_all() -> impl Iterator<Item = Cmd> {
        ALL.iter().map(|script| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(script.text);
            cmd
        })
    }

    /// The publish of a room's broadcast: on Redis Cluster `SPUBLISH`, to
    /// the shard of the room's slot only.
    pub(crate) fn publish_room(sharded: bool, channel: &str, payload: &[u8]) -> Cmd {
        let mut cmd = redis::cmd(if sharded { "SPUBLISH" } else { "PUBLISH" });
        cmd.arg(channel).arg(payload);
        cmd
    }

    pub(crate) fn publish(channel: &str, payload: &[u8]) -> Cmd {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        cmd
    }
}
