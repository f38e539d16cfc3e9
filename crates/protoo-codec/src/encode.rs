//! Encoding messages into [`Frame`]s, byte-identical to protoo-server.
//!
//! Each function writes the whole message into one buffer, in protoo's key
//! order, and hands it back as a shareable [`Frame`]. `data` is anything
//! serde can serialise, including a received [`Payload`](crate::Payload)
//! (forwarded as it came). Data JavaScript finds falsy (`null`, `false`, `0`,
//! `""`) is sent as `{}`, as protoo does with `data || {}`.
//!
//! Data that is a received [`Payload`](crate::Payload) (or a serde_json `RawValue`) is
//! recognised before anything is written: the buffer is sized once for it
//! and its text copied as it is (it is one JSON value by construction), not
//! scanned again.

use serde::Serialize;

use crate::payload::is_falsy;
use crate::raw::{raw_len, write_raw};
use crate::{EncodeError, ErrorData, Frame, Id};

/// Room for the fixed parts of a message, so that small messages are written
/// with a single allocation.
const HEADROOM: usize = 64;

/// Serialises `data` at the end of `out`, writing `{}` for falsy data.
pub(crate) fn write_data<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    data: &T,
) -> Result<(), EncodeError> {
    let start = out.len();
    if !write_raw(out, data) {
        serde_json::to_writer(&mut *out, data).map_err(EncodeError::Data)?;
    }
    if is_falsy(&out[start..]) {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    Ok(())
}

/// The buffer for a message of `fixed` bytes around a method and data:
/// sized for the whole message when the data is raw JSON (its text, or
/// `{}`, room for escapes in the method, and the closing brace), else for
/// the fixed parts (serde_json grows it for the data).
fn buffer<T: Serialize + ?Sized>(fixed: usize, method: &str, data: &T) -> Vec<u8> {
    Vec::with_capacity(match raw_len(data) {
        Some(len) => fixed + 2 * method.len() + len.max(2) + 1,
        None => fixed + method.len(),
    })
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `{"request":true,"id":ID,"method":METHOD,"data":DATA}`
pub fn request<T: Serialize + ?Sized>(
    id: &Id,
    method: &str,
    data: &T,
) -> Result<Frame, EncodeError> {
    let mut out = buffer(HEADROOM, method, data);
    out.extend_from_slice(b"{\"request\":true,\"id\":");
    id.write(&mut out);
    out.extend_from_slice(b",\"method\":");
    write_str(&mut out, method);
    out.extend_from_slice(b",\"data\":");
    write_data(&mut out, data)?;
    out.push(b'}');
    Ok(Frame::from_encoded(out))
}

/// `{"response":true,"id":ID,"ok":true,"data":DATA}`
///
/// ```
/// use protoo_codec::{encode, Id, Payload};
///
/// // A received payload is copied as it is, not parsed and written again.
/// let data = Payload::from_json(r#"{"sdp": "v=0"}"#).unwrap();
/// let frame = encode::success(&Id::from(7u32), &data).unwrap();
/// assert_eq!(frame.as_str(), r#"{"response":true,"id":7,"ok":true,"data":{"sdp": "v=0"}}"#);
/// ```
pub fn success<T: Serialize + ?Sized>(id: &Id, data: &T) -> Result<Frame, EncodeError> {
    let mut out = buffer(HEADROOM, "", data);
    out.extend_from_slice(b"{\"response\":true,\"id\":");
    id.write(&mut out);
    out.extend_from_slice(b",\"ok\":true,\"data\":");
    write_data(&mut out, data)?;
    out.push(b'}');
    Ok(Frame::from_encoded(out))
}

/// `{"response":true,"id":ID,"errorCode":CODE,"errorReason":REASON}`, each
/// of the last two only when present (no `ok` field, as protoo sends it).
pub fn error(id: &Id, error: &ErrorData) -> Frame {
    let mut out = Vec::with_capacity(HEADROOM);
    out.extend_from_slice(b"{\"response\":true,\"id\":");
    id.write(&mut out);
    if let Some(code) = error.raw_code() {
        out.extend_from_slice(b",\"errorCode\":");
        out.extend_from_slice(code.as_bytes());
    }
    if let Some(reason) = error.raw_reason() {
        out.extend_from_slice(b",\"errorReason\":");
        out.extend_from_slice(reason.as_bytes());
    }
    out.push(b'}');
    Frame::from_encoded(out)
}

/// `{"notification":true,"method":METHOD,"data":DATA}`
pub fn notification<T: Serialize + ?Sized>(method: &str, data: &T) -> Result<Frame, EncodeError> {
    let mut out = buffer(HEADROOM, method, data);
    out.extend_from_slice(b"{\"notification\":true,\"method\":");
    write_str(&mut out, method);
    out.extend_from_slice(b",\"data\":");
    write_data(&mut out, data)?;
    out.push(b'}');
    Ok(Frame::from_encoded(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    #[test]
    fn falsy_data_becomes_empty_object() {
        for data in [
            serde_json::json!(null),
            serde_json::json!(0),
            serde_json::json!(""),
            serde_json::json!(false),
        ] {
            let f = notification("n", &data).unwrap();
            assert_eq!(
                f.as_str(),
                r#"{"notification":true,"method":"n","data":{}}"#
            );
        }
    }

    #[test]
    fn payload_is_forwarded_unchanged() {
        let p = Payload::from_json(r#"{"b": [1,2], "a":"x"}"#).unwrap();
        let f = success(&Id::from(3u32), &p).unwrap();
        assert_eq!(
            f.as_str(),
            r#"{"response":true,"id":3,"ok":true,"data":{"b": [1,2], "a":"x"}}"#
        );
    }

    #[test]
    fn a_payload_is_copied_into_a_buffer_sized_once() {
        let id = Id::from(42u32);
        for text in [
            r#"{"b": [1,2], "a":"x", "u": "\u00e9 é"}"#,
            "null",
            "0",
            "\"\"",
            "false",
            "[]",
            "\"text\"",
            "12.5e3",
        ] {
            let p = Payload::from_json(text).unwrap();
            let data = if p == Payload::empty() { "{}" } else { text };
            let method = "m\"é";
            let frames = [
                (
                    success(&id, &p).unwrap(),
                    format!(r#"{{"response":true,"id":42,"ok":true,"data":{data}}}"#),
                ),
                (
                    notification(method, &p).unwrap(),
                    format!(r#"{{"notification":true,"method":"m\"é","data":{data}}}"#),
                ),
                (
                    request(&id, method, &p).unwrap(),
                    format!(r#"{{"request":true,"id":42,"method":"m\"é","data":{data}}}"#),
                ),
            ];
            for (frame, expected) in frames {
                assert_eq!(frame.as_str(), expected, "{text}");
                let vec: Vec<u8> = frame.into_bytes().into();
                assert!(vec.capacity() <= vec.len() + vec.len() / 8 + 64);
            }
            // As the text, serde_json's own RawValue encodes the same.
            let raw = serde_json::value::RawValue::from_string(p.as_str().to_owned()).unwrap();
            assert_eq!(success(&id, &raw).unwrap(), success(&id, &p).unwrap());
        }
    }

    #[test]
    fn frames_hold_little_spare_capacity() {
        // A frame's buffer costs about its length, whatever the serialiser
        // grew it to on the way (the queue limits count frame lengths).
        let data = serde_json::json!({ "text": "x".repeat(1100) });
        let frame = notification("chat", &data).unwrap();
        // The only handle: the buffer comes back as it was allocated.
        let vec: Vec<u8> = frame.into_bytes().into();
        assert_eq!(vec.capacity(), vec.len());
        // Sized up front for raw data: kept as it is, a few bytes over.
        let raw = Payload::from_json(format!(r#"{{"text":"{}"}}"#, "x".repeat(4096))).unwrap();
        let vec: Vec<u8> = notification("chat", &raw).unwrap().into_bytes().into();
        assert!(vec.capacity() > vec.len() && vec.capacity() <= vec.len() + 64);
    }

    #[test]
    fn unserialisable_data_is_an_error() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(vec![1u8], 1);
        assert!(matches!(
            request(&Id::from(1u32), "m", &m),
            Err(EncodeError::Data(_))
        ));
    }
}
