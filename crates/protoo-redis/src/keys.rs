//! The names of the backend's keys and channels, all under the configured
//! prefix `P`:
//!
//! | name | kind | holds |
//! | --- | --- | --- |
//! | `P:room:{R}` | hash | peer id → `NODE:INCARNATION\|INFO` (`INFO` empty: not listed) |
//! | `P:node:{N}` | string, TTL `node_ttl` | node N's heartbeat |
//! | `P:node:{N}:rooms` | set, TTL `rooms_ttl` | the rooms with a member on N |
//! | `P:nodes` | set | the nodes (a dead one until it is swept) |
//! | `P:sweep:{N}` | string, `SET NX EX 60` | who sweeps dead node N |
//! | channel `P:room:{R}` | pub/sub | broadcasts in room R |
//! | channel `P:node:{N}` | pub/sub | messages for node N |

/// The key and channel names of one cluster (one prefix) and one node.
#[derive(Debug)]
pub(crate) struct Keys {
    /// `P:room:`: what room keys and channels start with.
    room: String,
    pub(crate) nodes: String,
    /// `P:node:{N}`: this node's heartbeat key, and its channel.
    pub(crate) node: String,
    pub(crate) node_rooms: String,
    /// `P:node:`: what the scripts prefix node ids with for heartbeat keys
    /// and node channels.
    pub(crate) node_prefix: String,
    /// `P:sweep:`: the same for sweep locks.
    pub(crate) sweep_prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, node_id: &str) -> Self {
        let node = format!("{prefix}:node:{node_id}");
        Keys {
            room: format!("{prefix}:room:"),
            nodes: format!("{prefix}:nodes"),
            node_rooms: format!("{node}:rooms"),
            node,
            node_prefix: format!("{prefix}:node:"),
            sweep_prefix: format!("{prefix}:sweep:"),
        }
    }

    /// `P:room:{R}`: the room's hash, and its channel.
    pub(crate) fn room(&self, room_id: &str) -> String {
        format!("{}{room_id}", self.room)
    }

    /// `P:room:`: what a room's key and channel start with.
    pub(crate) fn room_prefix(&self) -> &str {
        &self.room
    }

    /// The room id of a room channel's name, if it is one.
    pub(crate) fn room_of<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let id = channel.strip_prefix(self.room.as_bytes())?;
        std::str::from_utf8(id).ok()
    }

    /// `P:node:{N}`: another node's heartbeat key, and its channel.
    pub(crate) fn node_of(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.node_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let keys = Keys::new("p", "n1");
        assert_eq!(keys.room("r"), "p:room:r");
        assert_eq!(keys.node, "p:node:n1");
        assert_eq!(
            (keys.node_prefix.as_str(), keys.sweep_prefix.as_str()),
            ("p:node:", "p:sweep:")
        );
        assert_eq!(keys.node_rooms, "p:node:n1:rooms");
        assert_eq!(keys.node_of("n2"), "p:node:n2");
        assert_eq!(keys.room_of(b"p:room:a:b"), Some("a:b"));
        assert_eq!(keys.room_of(b"p:node:n1"), None);
    }
}
