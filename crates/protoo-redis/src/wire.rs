//! What nodes send each other on pub/sub channels, encoded with postcard
//! (a compact binary serde format; a frame is carried as raw bytes, and
//! borrowed back out of the received buffer without a copy).

use std::borrow::Cow;

use protoo_core::{ErrorData, Payload, RequestError, Target};
use serde::{Deserialize, Serialize};

/// A message on a room channel or a node channel.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Message<'a> {
    /// A broadcast in the room of the channel it came on.
    Broadcast {
        /// The sending node, which has delivered it to its own members.
        from: &'a str,
        /// Which peers it reaches, as the sender's core chose them.
        target: Cow<'a, Target>,
        #[serde(with = "serde_bytes")]
        frame: &'a [u8],
    },
    /// Close your peer `peer` of `room` (the incarnation `incarnation`):
    /// a peer with its id joined on node `reply_to`, which waits for
    /// `Done {token}`.
    Replace {
        room: &'a str,
        peer: &'a str,
        incarnation: &'a str,
        reply_to: &'a str,
        token: u64,
    },
    /// Something a node waits for is done (a replacement).
    Done { token: u64 },
    /// A replacement that moved a session (the replaced peer had a resume
    /// window): what its remote did not get, in order, and what it was
    /// listed with, for the node that waits with `token`.
    Handover {
        token: u64,
        #[serde(borrow)]
        frames: Vec<&'a serde_bytes::Bytes>,
        presence: Option<&'a str>,
    },
    /// For your peer `peer` of `room`.
    ToPeer {
        room: &'a str,
        peer: &'a str,
        #[serde(borrow)]
        message: ToPeer<'a>,
    },
    /// The answer to a [`ToPeer::Request`].
    Reply { token: u64, reply: Reply<'a> },
}

/// What [`Message::ToPeer`] carries.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum ToPeer<'a> {
    Notify(#[serde(with = "serde_bytes")] &'a [u8]),
    Close,
    Request {
        method: &'a str,
        data: &'a str,
        reply_to: &'a str,
        token: u64,
    },
}

/// A request's outcome, as [`Message::Reply`] carries it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Reply<'a> {
    Ok(&'a str),
    Rejected {
        code: Option<&'a str>,
        reason: Option<&'a str>,
    },
    Timeout,
    PeerClosed,
    Failed(&'a str),
}

impl Reply<'_> {
    /// The reply for a request's result (`data` kept borrowed).
    pub(crate) fn of(result: &Result<Option<Payload>, RequestError>) -> Reply<'_> {
        match result {
            Ok(Some(data)) => Reply::Ok(data.as_str()),
            Ok(None) => Reply::Ok("{}"),
            Err(RequestError::Rejected(error)) => Reply::Rejected {
                code: error.raw_code(),
                reason: error.raw_reason(),
            },
            Err(RequestError::Timeout) => Reply::Timeout,
            Err(RequestError::PeerClosed) => Reply::PeerClosed,
            Err(_) => Reply::Failed("request failed on the peer's node"),
        }
    }

    /// Back into a result.
    pub(crate) fn into_result(self) -> Result<Option<Payload>, RequestError> {
        match self {
            Reply::Ok(data) => Payload::from_json(data)
                .map(Some)
                .map_err(RequestError::InvalidResponse),
            Reply::Rejected { code, reason } => Err(RequestError::Rejected(
                ErrorData::from_raw_json(code, reason)
                    .unwrap_or_else(|_| ErrorData::new(500, "invalid error from another node")),
            )),
            Reply::Timeout => Err(RequestError::Timeout),
            Reply::PeerClosed => Err(RequestError::PeerClosed),
            Reply::Failed(reason) => Err(RequestError::Rejected(ErrorData::new(500, reason))),
        }
    }
}

/// Encodes a message.
pub(crate) fn encode(message: &Message<'_>) -> Vec<u8> {
    // Serialising these types into a Vec cannot fail.
    postcard::to_stdvec(message).unwrap_or_default()
}

/// Decodes a message borrowing from `bytes`; `None` if it is not one.
pub(crate) fn decode(bytes: &[u8]) -> Option<Message<'_>> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let frame = br#"{"notification":true,"method":"chat","data":{}}"#;
        let mut target = Target::default();
        target.except = vec!["a".into(), "b".into()];
        target.listed = true;
        let messages = [
            Message::Broadcast {
                from: "n1",
                target: Cow::Owned(target),
                frame,
            },
            Message::Replace {
                room: "r",
                peer: "p",
                incarnation: "n1:7",
                reply_to: "n2",
                token: 9,
            },
            Message::Done { token: 3 },
            Message::ToPeer {
                room: "r",
                peer: "p",
                message: ToPeer::Request {
                    method: "m",
                    data: "{\"x\":1}",
                    reply_to: "n2",
                    token: 4,
                },
            },
            Message::Reply {
                token: 4,
                reply: Reply::Rejected {
                    code: Some("403"),
                    reason: Some("no"),
                },
            },
        ];
        for message in messages {
            let bytes = encode(&message);
            assert_eq!(decode(&bytes), Some(message));
        }
        assert_eq!(decode(b"\xff\xff\xff"), None);
    }

    #[test]
    fn a_broadcast_target_travels_whole() {
        let frame = br#"{"notification":true,"method":"n","data":{}}"#;
        let mut targets = vec![Target::default()];
        let mut target = Target::default();
        target.except = vec!["alice".into(), "bob é".into()];
        targets.push(target.clone());
        target.listed = true;
        targets.push(target.clone());
        target.local = true;
        targets.push(target);
        for target in targets {
            let bytes = encode(&Message::Broadcast {
                from: "n1",
                target: Cow::Borrowed(&target),
                frame,
            });
            match decode(&bytes) {
                Some(Message::Broadcast {
                    from,
                    target: received,
                    frame: received_frame,
                }) => {
                    assert_eq!(from, "n1");
                    assert_eq!(*received, target);
                    assert_eq!(received_frame, frame);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_rejection_keeps_its_code_and_reason() {
        let error = Err(RequestError::Rejected(ErrorData::new(403, "denied")));
        let reply = Reply::of(&error);
        match reply.into_result() {
            Err(RequestError::Rejected(error)) => {
                assert_eq!(
                    (error.code(), error.reason().as_deref()),
                    (Some(403), Some("denied"))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
