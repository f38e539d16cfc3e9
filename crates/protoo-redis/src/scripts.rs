//! The Lua scripts the backend runs in Redis, each one atomic step, and the
//! commands that run them.
//!
//! A member's entry in `P:room:{R}` is `NODE:INCARNATION|INFO`: the prefix
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

/// Registers a member: sets its entry and returns the one it replaced, with
/// whether that entry's node is alive; under `refuse`, an entry of another
/// live node is kept and the newcomer refused.
static REGISTER: Lua = Lua::new(
    r"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local status = 'new'
if prev then
  local node = string.match(prev, '^([^:]*):') or ''
  if node == ARGV[6] then status = 'self'
  elseif redis.call('EXISTS', ARGV[5] .. node) == 1 then status = 'alive'
  else status = 'dead' end
  if status == 'alive' and ARGV[4] == 'refuse' then return {'refused', prev} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if prev then return {status, prev} end
return {status}
",
);

/// Lists a member with its info, if its entry is still this incarnation's.
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
/// room leaves the node's room set.
static REMOVE: Lua = Lua::new(
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
if ARGV[4] == '1' then redis.call('SREM', KEYS[2], ARGV[3]) end
return 0
",
);

/// The listed members of a room on live nodes, as `[peer, info, ...]`.
/// Entries of a node that is neither alive nor known (never to be swept:
/// its keys expired while no node was there to sweep) are deleted.
static PRESENCE: Lua = Lua::new(
    r"
local all = redis.call('HGETALL', KEYS[1])
local state = {}
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local node = string.match(v, '^([^:]*):') or ''
  local s = state[node]
  if s == nil then
    if node == ARGV[3] or redis.call('EXISTS', ARGV[1] .. node) == 1 then s = 1
    elseif redis.call('SISMEMBER', ARGV[2], node) == 1 then s = 0
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
return out
",
);

/// Publishes a message on the channel of the node that has the member;
/// returns how many received it (0: no such member, or its node is gone).
static ROUTE: Lua = Lua::new(
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local node = string.match(v, '^([^:]*):')
if not node then return 0 end
return redis.call('PUBLISH', ARGV[2] .. node, ARGV[3])
",
);

/// A node's heartbeat; returns 1 if the node was not in the node set (it
/// was swept, or Redis lost its data): its members must be registered
/// again.
static HEARTBEAT: Lua = Lua::new(
    r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return redis.call('SADD', KEYS[3], ARGV[1])
",
);

/// A dead node (in the node set, no heartbeat) this node now sweeps, if
/// any: the sweep lock is taken here, once cluster-wide.
static FIND_DEAD: Lua = Lua::new(
    r"
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if n ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. n) == 0 then
    if redis.call('SET', ARGV[2] .. n, ARGV[3], 'NX', 'EX', 60) then return n end
  end
end
return false
",
);

/// Removes a dead node's entries from a room; returns them, `[peer, entry,
/// ...]`, so that each is announced exactly once.
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
return out
",
);

/// After a dead node's rooms are swept: forgets the node (and the sweep
/// lock: the node is no longer in the node set, nobody sweeps it again).
static FORGET_NODE: Lua = Lua::new(
    r"
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
return 0
",
);

/// Makes a room's entries of this node what the node has: entries of
/// members it no longer has are removed (and returned, `[peer, entry,
/// ...]`), its members are set unless another node holds their id.
static RESYNC_ROOM: Lua = Lua::new(
    r"
local keep = {}
local any = false
for i = 4, #ARGV, 2 do keep[ARGV[i]] = ARGV[i + 1]; any = true end
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
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return removed
",
);

/// Forgets this node's entries in the rooms of its room set that it no
/// longer has; returns them, `[room, peer, entry, ...]`.
static FORGET_ROOMS: Lua = Lua::new(
    r"
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local removed = {}
for _, r in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not keep[r] then
    local key = ARGV[1] .. r
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      if string.sub(all[i + 1], 1, #ARGV[2]) == ARGV[2] then
        redis.call('HDEL', key, all[i])
        removed[#removed + 1] = r
        removed[#removed + 1] = all[i]
        removed[#removed + 1] = all[i + 1]
      end
    end
    redis.call('SREM', KEYS[1], r)
  end
end
return removed
",
);

/// A node leaving in good order: its heartbeat, its room set and its place
/// in the node set go (its members have been removed one by one).
static LEAVE: Lua = Lua::new(
    r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 0
",
);

/// Every script, as each link loads them.
static ALL: [&Lua; 12] = [
    &REGISTER,
    &SET_INFO,
    &REMOVE,
    &PRESENCE,
    &ROUTE,
    &HEARTBEAT,
    &FIND_DEAD,
    &SWEEP_ROOM,
    &FORGET_NODE,
    &RESYNC_ROOM,
    &FORGET_ROOMS,
    &LEAVE,
];

fn eval(script: &Lua, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.sha()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// The commands of the scripts above, with their arguments in order.
pub(crate) mod cmd {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        room_key: &str,
        node_rooms: &str,
        peer: &str,
        entry: &str,
        room: &str,
        replace: bool,
        node_prefix: &str,
        node_id: &str,
        rooms_ttl: u64,
    ) -> Cmd {
        let mut cmd = eval(&REGISTER, &[room_key, node_rooms]);
        cmd.arg(peer)
            .arg(entry)
            .arg(room)
            .arg(if replace { "replace" } else { "refuse" })
            .arg(node_prefix)
            .arg(node_id)
            .arg(rooms_ttl);
        cmd
    }

    pub(crate) fn set_info(room_key: &str, peer: &str, incarnation: &str, info: &[u8]) -> Cmd {
        let mut cmd = eval(&SET_INFO, &[room_key]);
        cmd.arg(peer).arg(incarnation).arg(info);
        cmd
    }

    pub(crate) fn remove(
        room_key: &str,
        node_rooms: &str,
        peer: &str,
        incarnation: &str,
        room: &str,
        last: bool,
    ) -> Cmd {
        let mut cmd = eval(&REMOVE, &[room_key, node_rooms]);
        cmd.arg(peer)
            .arg(incarnation)
            .arg(room)
            .arg(if last { "1" } else { "0" });
        cmd
    }

    pub(crate) fn presence(room_key: &str, node_prefix: &str, nodes: &str, node_id: &str) -> Cmd {
        let mut cmd = eval(&PRESENCE, &[room_key]);
        cmd.arg(node_prefix).arg(nodes).arg(node_id);
        cmd
    }

    pub(crate) fn route(room_key: &str, peer: &str, node_prefix: &str, payload: &[u8]) -> Cmd {
        let mut cmd = eval(&ROUTE, &[room_key]);
        cmd.arg(peer).arg(node_prefix).arg(payload);
        cmd
    }

    pub(crate) fn heartbeat(
        node_key: &str,
        node_rooms: &str,
        nodes: &str,
        node_id: &str,
        ttl_ms: u64,
        rooms_ttl: u64,
    ) -> Cmd {
        let mut cmd = eval(&HEARTBEAT, &[node_key, node_rooms, nodes]);
        cmd.arg(node_id).arg(ttl_ms).arg(rooms_ttl);
        cmd
    }

    pub(crate) fn find_dead(
        nodes: &str,
        node_prefix: &str,
        sweep_prefix: &str,
        node_id: &str,
    ) -> Cmd {
        let mut cmd = eval(&FIND_DEAD, &[nodes]);
        cmd.arg(node_prefix).arg(sweep_prefix).arg(node_id);
        cmd
    }

    pub(crate) fn sweep_room(room_key: &str, dead_prefix: &str) -> Cmd {
        let mut cmd = eval(&SWEEP_ROOM, &[room_key]);
        cmd.arg(dead_prefix);
        cmd
    }

    pub(crate) fn forget_node(dead_rooms: &str, nodes: &str, sweep_lock: &str, dead: &str) -> Cmd {
        let mut cmd = eval(&FORGET_NODE, &[dead_rooms, nodes, sweep_lock]);
        cmd.arg(dead);
        cmd
    }

    pub(crate) fn resync_room<'a>(
        room_key: &str,
        node_rooms: &str,
        own_prefix: &str,
        room: &str,
        rooms_ttl: u64,
        entries: impl Iterator<Item = (&'a str, String)>,
    ) -> Cmd {
        let mut cmd = eval(&RESYNC_ROOM, &[room_key, node_rooms]);
        cmd.arg(own_prefix).arg(room).arg(rooms_ttl);
        for (peer, entry) in entries {
            cmd.arg(peer).arg(entry);
        }
        cmd
    }

    pub(crate) fn forget_rooms<'a>(
        node_rooms: &str,
        room_prefix: &str,
        own_prefix: &str,
        rooms: impl Iterator<Item = &'a str>,
    ) -> Cmd {
        let mut cmd = eval(&FORGET_ROOMS, &[node_rooms]);
        cmd.arg(room_prefix).arg(own_prefix);
        for room in rooms {
            cmd.arg(room);
        }
        cmd
    }

    pub(crate) fn leave(node_key: &str, node_rooms: &str, nodes: &str, node_id: &str) -> Cmd {
        let mut cmd = eval(&LEAVE, &[node_key, node_rooms, nodes]);
        cmd.arg(node_id);
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

    pub(crate) fn publish(channel: &str, payload: &[u8]) -> Cmd {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        cmd
    }
}
