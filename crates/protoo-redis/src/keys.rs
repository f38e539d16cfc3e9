//! The names of the backend's keys and channels, all under the configured
//! prefix `P`, each with a hash tag (`{...}`) that puts what belongs
//! together in one hash slot (one shard of a Redis Cluster):
//!
//! | name | kind | holds |
//! | --- | --- | --- |
//! | `{P:room:R}` | hash | peer id → `NODE:INCARNATION\|INFO` (`INFO` empty: not listed) |
//! | `{P:room:R}:nodes` | hash, TTL `rooms_ttl` | node id → deadline (ms) of each node with a member in R |
//! | `{P:node:N}:rooms` | set, TTL `rooms_ttl` | the rooms with a member on N |
//! | `{P}:nodes` | sorted set | node id → deadline (ms): the nodes (a dead one until it is swept) |
//! | `{P}:sweep:N` | string, `SET NX EX 60` | who sweeps dead node N |
//! | channel `{P:room:R}` | pub/sub | broadcasts in room R |
//! | channel `{P:node:N}` | pub/sub | messages for node N |

use crate::scripts::RoomKeys;

/// The key and channel names of one cluster (one prefix) and one node.
#[derive(Debug)]
pub(crate) struct Keys {
    /// `{P:room:`: what room keys and channels start with.
    room: String,
    /// `{P}:nodes`.
    pub(crate) nodes: String,
    /// `{P:node:N}`: this node's channel.
    pub(crate) node: String,
    /// `{P:node:N}:rooms`.
    pub(crate) node_rooms: String,
    /// `{P:node:`: what node channels start with (the scripts append
    /// `N}`).
    pub(crate) node_prefix: String,
    /// `{P}:sweep:`.
    sweep_prefix: String,
}

/// A room's key names.
#[derive(Debug, Clone)]
pub(crate) struct RoomNames {
    pub(crate) room: String,
    pub(crate) nodes: String,
}

impl RoomNames {
    pub(crate) fn keys(&self) -> RoomKeys<'_> {
        RoomKeys {
            room: &self.room,
            nodes: &self.nodes,
        }
    }
}

impl Keys {
    pub(crate) fn new(prefix: &str, node_id: &str) -> Self {
        let node = format!("{{{prefix}:node:{node_id}}}");
        Keys {
            room: format!("{{{prefix}:room:"),
            nodes: format!("{{{prefix}}}:nodes"),
            node_rooms: format!("{node}:rooms"),
            node,
            node_prefix: format!("{{{prefix}:node:"),
            sweep_prefix: format!("{{{prefix}}}:sweep:"),
        }
    }

    /// `{P:room:R}`: the room's hash, and its channel.
    pub(crate) fn room(&self, room_id: &str) -> String {
        format!("{}{room_id}}}", self.room)
    }

    /// The room's keys.
    pub(crate) fn room_names(&self, room_id: &str) -> RoomNames {
        let room = self.room(room_id);
        RoomNames {
            nodes: format!("{room}:nodes"),
            room,
        }
    }

    /// The room id of a room channel's name, if it is one.
    pub(crate) fn room_of<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let id = channel
            .strip_prefix(self.room.as_bytes())?
            .strip_suffix(b"}")?;
        std::str::from_utf8(id).ok()
    }

    /// `{P:node:N}`: another node's channel.
    pub(crate) fn node_of(&self, node_id: &str) -> String {
        format!("{}{node_id}}}", self.node_prefix)
    }

    /// `{P:node:N}:rooms`: another node's room set.
    pub(crate) fn rooms_of(&self, node_id: &str) -> String {
        format!("{}:rooms", self.node_of(node_id))
    }

    /// `{P}:sweep:N`: the lock on the sweep of node N.
    pub(crate) fn sweep_lock(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.sweep_prefix)
    }
}

/// The hash slot of a key, as Redis Cluster computes it (CRC16 of its hash
/// tag, or of the whole key without one, modulo 16384).
#[cfg(test)]
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let keys = Keys::new("p", "n1");
        assert_eq!(keys.room("r"), "{p:room:r}");
        assert_eq!(keys.room_names("r").nodes, "{p:room:r}:nodes");
        assert_eq!(keys.node, "{p:node:n1}");
        assert_eq!(keys.node_prefix, "{p:node:");
        assert_eq!(keys.node_rooms, "{p:node:n1}:rooms");
        assert_eq!(keys.node_of("n2"), "{p:node:n2}");
        assert_eq!(keys.rooms_of("n2"), "{p:node:n2}:rooms");
        assert_eq!(keys.nodes, "{p}:nodes");
        assert_eq!(keys.sweep_lock("n2"), "{p}:sweep:n2");
        assert_eq!(keys.room_of(b"{p:room:a:b}"), Some("a:b"));
        assert_eq!(keys.room_of(b"{p:room:a}b}"), Some("a}b"));
        assert_eq!(keys.room_of(b"{p:node:n1}"), None);
    }

    #[test]
    fn what_belongs_together_shares_a_slot() {
        // The reference values of the Redis Cluster specification.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        let keys = Keys::new("p", "n1");
        for room in ["r", "a}b", "", "{x}"] {
            let names = keys.room_names(room);
            assert_eq!(slot(&names.room), slot(&names.nodes), "{room}");
        }
        assert_eq!(slot(&keys.node), slot(&keys.node_rooms));
        assert_eq!(slot(&keys.nodes), slot(&keys.sweep_lock("n2")));
        // Rooms spread over the slots.
        assert_ne!(slot(&keys.room("a")), slot(&keys.room("b")));
    }

    #[test]
    fn a_thousand_rooms_spread_evenly_over_three_shards() {
        // `redis-cli --cluster create` with three masters gives each a third
        // of the slots; each room's load goes to its slot's shard.
        let keys = Keys::new("protoo", "n1");
        let mut per_shard = [0u32; 3];
        for i in 0..1000 {
            let slot = slot(&keys.room(&format!("room-{i}")));
            per_shard[usize::from(slot) * 3 / 16384] += 1;
        }
        for count in per_shard {
            assert!((250..=417).contains(&count), "within ±25 %: {per_shard:?}");
        }
    }
}
