//! Decoding: a frame's text into a [`Message`] (request, response or
//! notification), reading only the top-level fields protoo uses.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::payload::{is_falsy, sub_bytes};
use crate::{DecodeError, ErrorData, Id, Method, Payload};

/// A decoded protoo message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request: the remote expects exactly one response with its id.
    Request(Request),
    /// A response to one of our requests.
    Response(Response),
    /// A notification: no response expected.
    Notification(Notification),
}

/// A protoo request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The id the response must carry back.
    pub id: Id,
    /// The method name.
    pub method: Method,
    /// The request data (`{}` when missing or falsy).
    pub data: Payload,
}

/// A protoo response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The id of the request it answers.
    pub id: Id,
    /// `Ok(data)` for a success response, `Err` for an error response.
    pub result: Result<Payload, ErrorData>,
}

/// A protoo notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The method name.
    pub method: Method,
    /// The notification data (`{}` when missing or falsy).
    pub data: Payload,
}

/// The top-level fields protoo reads, as raw JSON; the last duplicate wins.
#[derive(Default)]
struct Fields<'a> {
    request: Option<&'a RawValue>,
    response: Option<&'a RawValue>,
    notification: Option<&'a RawValue>,
    ok: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    method: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    error_code: Option<&'a RawValue>,
    error_reason: Option<&'a RawValue>,
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let slot = match key.0.as_ref() {
                "request" => &mut fields.request,
                "response" => &mut fields.response,
                "notification" => &mut fields.notification,
                "ok" => &mut fields.ok,
                "id" => &mut fields.id,
                "method" => &mut fields.method,
                "data" => &mut fields.data,
                "errorCode" => &mut fields.error_code,
                "errorReason" => &mut fields.error_reason,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(fields)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn truthy(v: Option<&RawValue>) -> bool {
    v.is_some_and(|raw| !is_falsy(raw.get().as_bytes()))
}

fn is_number(raw: &RawValue) -> bool {
    matches!(raw.get().as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

impl Message {
    /// Decodes the text of one frame, agreeing with protoo-server 4.0.8's
    /// `Message.parse` on which input is a message and what it holds.
    ///
    /// The returned message holds slices of `frame` (no copy).
    pub fn decode(frame: Bytes) -> Result<Message, DecodeError> {
        let fields = parse_fields(&frame)?;
        let id = |kind| match fields.id {
            Some(raw) if is_number(raw) => Ok(Id::from_json_number(raw.get(), &frame)),
            _ => Err(DecodeError::InvalidId { kind }),
        };
        let method = |kind| match fields.method {
            Some(raw) if raw.get().starts_with('"') => Ok(method_from_raw(raw, &frame)),
            _ => Err(DecodeError::InvalidMethod { kind }),
        };
        let payload = |raw: Option<&RawValue>| raw.map(|r| sub_bytes(&frame, r.get().as_bytes()));
        let data = || {
            payload(fields.data)
                .map(Payload::from_json_unchecked)
                .unwrap_or_default()
        };

        if truthy(fields.request) {
            // protoo checks the method before the id.
            let method = method("request")?;
            Ok(Message::Request(Request {
                id: id("request")?,
                method,
                data: data(),
            }))
        } else if truthy(fields.response) {
            let id = id("response")?;
            let result = if truthy(fields.ok) {
                Ok(data())
            } else {
                Err(ErrorData::from_raw(
                    payload(fields.error_code),
                    payload(fields.error_reason),
                ))
            };
            Ok(Message::Response(Response { id, result }))
        } else if truthy(fields.notification) {
            Ok(Message::Notification(Notification {
                method: method("notification")?,
                data: data(),
            }))
        } else {
            Err(DecodeError::UnknownKind)
        }
    }

    /// Decodes text that is not yet in a shared buffer (copies it once).
    pub fn decode_str(text: &str) -> Result<Message, DecodeError> {
        Self::decode(Bytes::copy_from_slice(text.as_bytes()))
    }
}

fn parse_fields(input: &[u8]) -> Result<Fields<'_>, DecodeError> {
    let first = input.iter().find(|b| !b" \t\r\n".contains(b));
    if first != Some(&b'{') {
        // Tell "valid JSON but not an object" from "not JSON" for the log.
        return Err(match serde_json::from_slice::<IgnoredAny>(input) {
            Ok(_) => DecodeError::NotAnObject,
            Err(e) => DecodeError::Json(e),
        });
    }
    // Checked as UTF-8 once, the text is parsed as a `str`: serde_json
    // then checks no string and no raw value again (from bytes, it checks
    // each of them). Text that is not UTF-8 fails the same way either way.
    match simdutf8::basic::from_utf8(input) {
        Ok(text) => fields_of(serde_json::Deserializer::from_str(text)),
        Err(_) => fields_of(serde_json::Deserializer::from_slice(input)),
    }
}

fn fields_of<'a, R: serde_json::de::Read<'a>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Fields<'a>, DecodeError> {
    let fields = de
        .deserialize_map(FieldsVisitor)
        .map_err(DecodeError::Json)?;
    de.end().map_err(DecodeError::Json)?;
    Ok(fields)
}

fn method_from_raw(raw: &RawValue, frame: &Bytes) -> Method {
    let text = raw.get();
    // Without escapes the name is the text between the quotes: slice it.
    if !text.contains('\\') && text.len() >= 2 {
        return Method::new(sub_bytes(frame, &text.as_bytes()[1..text.len() - 1]));
    }
    let owned: String = serde_json::from_str(text).unwrap_or_default();
    Method::new(Bytes::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &'static str) -> Result<Message, DecodeError> {
        Message::decode(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn request_borrows_from_the_frame() {
        let frame =
            Bytes::from_static(br#"{"request":true,"id":1,"method":"hello","data":{"a":1}}"#);
        let Ok(Message::Request(r)) = Message::decode(frame.clone()) else {
            panic!("not a request")
        };
        assert_eq!(r.method, "hello");
        assert_eq!(r.data.as_str(), r#"{"a":1}"#);
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(range.contains(&(r.data.as_bytes().as_ptr() as usize)));
        assert!(range.contains(&(r.method.as_str().as_ptr() as usize)));
    }

    #[test]
    fn escaped_method_and_keys() {
        let Ok(Message::Request(r)) = decode(r#"{"req\u0075est":1,"id":2,"method":"a\"b\u00e9"}"#)
        else {
            panic!("not a request")
        };
        assert_eq!(r.method, "a\"bé");
    }

    #[test]
    fn errors_say_why() {
        assert!(matches!(decode("null"), Err(DecodeError::NotAnObject)));
        assert!(matches!(decode("[]"), Err(DecodeError::NotAnObject)));
        assert!(matches!(decode("{"), Err(DecodeError::Json(_))));
        assert!(matches!(decode("{}"), Err(DecodeError::UnknownKind)));
        assert!(matches!(
            decode(r#"{"request":true,"id":"1","method":"a"}"#),
            Err(DecodeError::InvalidId { kind: "request" })
        ));
        assert!(matches!(
            decode(r#"{"notification":true}"#),
            Err(DecodeError::InvalidMethod {
                kind: "notification"
            })
        ));
        assert!(matches!(
            decode(r#"{"request":true} x"#),
            Err(DecodeError::Json(_))
        ));
    }
}
