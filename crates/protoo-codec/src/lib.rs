//! The protoo wire format: messages and their JSON text encoding.
//!
//! This is the bottom layer of protoo-rs. It knows the four protoo messages
//! and how they travel as JSON text, and nothing else: no sockets, no async
//! runtime (its only dependencies are `serde`, `serde_json`, `bytes` and
//! `thiserror`). Use it directly to speak protoo over a channel of your own;
//! `protoo-transport`, `protoo-core` and `protoo-server` build on it.
//!
//! | message | JSON |
//! | --- | --- |
//! | request | `{"request":true,"id":1,"method":"m","data":{}}` |
//! | success response | `{"response":true,"id":1,"ok":true,"data":{}}` |
//! | error response | `{"response":true,"id":1,"errorCode":500,"errorReason":"x"}` |
//! | notification | `{"notification":true,"method":"m","data":{}}` |
//!
//! # Decoding
//!
//! [`Message::decode`] takes the text of one frame as [`Bytes`] and agrees
//! with protoo-server 4.0.8's `Message.parse` on every input, including its
//! JavaScript truthiness rules (`"request": 1` is a request), a missing or
//! falsy `data` becoming `{}`, and the last of duplicate keys winning. Input
//! protoo drops (including `null`, which crashes the Node original) is a
//! [`DecodeError`] here; decoding never panics.
//!
//! Decoding builds no JSON tree: `method` and `data` are slices of the
//! frame's buffer (a reference count, not a copy), and `data` stays raw JSON
//! until the application asks for it as a type with [`Payload::deserialize`].
//!
//! ```
//! use bytes::Bytes;
//! use protoo_codec::Message;
//!
//! let frame = Bytes::from_static(br#"{"request":true,"id":7,"method":"join","data":{"name":"ann"}}"#);
//! let Message::Request(request) = Message::decode(frame)? else { unreachable!() };
//! assert_eq!(request.method.as_str(), "join");
//!
//! #[derive(serde::Deserialize)]
//! struct Join { name: String }
//! let join: Join = request.data.deserialize()?;
//! assert_eq!(join.name, "ann");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Encoding
//!
//! The functions in [`encode`] write a message straight into one buffer and
//! return it as a [`Frame`]: cheap to clone, so a notification encoded once
//! can be queued to a thousand peers without copying. The output is
//! byte-identical to what protoo-server sends (error responses carry no `ok`
//! field, exactly like protoo).
//!
//! ```
//! use protoo_codec::{encode, Id};
//!
//! let frame = encode::request(&Id::from(5u32), "hello", &serde_json::json!({"foo": "bar"}))?;
//! assert_eq!(frame.as_str(), r#"{"request":true,"id":5,"method":"hello","data":{"foo":"bar"}}"#);
//! let shared = frame.clone(); // the same bytes, not a copy
//! assert_eq!(shared.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
//! # Ok::<(), protoo_codec::EncodeError>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod decode;
pub mod encode;
mod error;
mod frame;
mod id;
mod payload;
mod raw;

pub use bytes::Bytes;
pub use decode::{Message, Notification, Request, Response};
pub use error::{DecodeError, EncodeError};
pub use frame::Frame;
pub use id::Id;
pub use payload::{ErrorData, Method, Payload};
