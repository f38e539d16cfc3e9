//! [`Payload`]: the `data` of a message as raw JSON text, parsed only when the
//! application asks.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The bytes of `part` as a slice of `buf` when `part` lies inside it (no
/// copy), else a copy.
pub(crate) fn sub_bytes(buf: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if start <= buf.len() && end <= buf.len() => buf.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// JavaScript falsiness of one JSON value's text: `null`, `false`, `0` (in
/// any spelling) and `""`.
pub(crate) fn is_falsy(json: &[u8]) -> bool {
    match json.first() {
        Some(b'n' | b'f') => true,
        Some(b'"') => json == b"\"\"",
        Some(b'-' | b'0'..=b'9') => std::str::from_utf8(json)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|f| f == 0.0),
        _ => false,
    }
}

/// The `data` of a message as raw JSON text: a slice of the frame it came in,
/// or of a buffer the application built.
///
/// Nothing is parsed until the application asks: [`Payload::deserialize`]
/// into its own type, [`Payload::as_str`] for the text. A missing or falsy
/// `data` is the empty object `{}`, as in protoo. A payload serialises as the
/// JSON it holds, so it can be forwarded or nested inside other data
/// unchanged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload(Option<Bytes>);

const EMPTY: &str = "{}";

impl Payload {
    /// The empty object `{}`.
    pub const fn empty() -> Self {
        Payload(None)
    }

    /// Serialises `value` into a payload (falsy values become `{}`).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, crate::EncodeError> {
        let mut out = Vec::new();
        crate::encode::write_data(&mut out, value)?;
        Ok(Self::from_json_unchecked(Bytes::from(out)))
    }

    /// A payload over JSON text, after checking that it is one JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text: String = text.into();
        let raw: &RawValue = serde_json::from_str(&text)?;
        let trimmed = raw.get().len() == text.len();
        Ok(if trimmed {
            Self::from_json_unchecked(Bytes::from(text))
        } else {
            Self::from_json_unchecked(Bytes::copy_from_slice(raw.get().as_bytes()))
        })
    }

    /// `bytes` must hold one JSON value (the decoder and encoder guarantee
    /// it).
    pub(crate) fn from_json_unchecked(bytes: Bytes) -> Self {
        if is_falsy(&bytes) {
            Payload(None)
        } else {
            Payload(Some(bytes))
        }
    }

    /// The JSON text (`{}` for empty data).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            None => EMPTY,
            Some(b) => std::str::from_utf8(b).unwrap_or(EMPTY),
        }
    }

    /// The JSON text as bytes (`{}` for empty data).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            None => EMPTY.as_bytes(),
            Some(b) => b,
        }
    }

    /// Whether this is the empty data `{}` that protoo puts for missing data.
    pub fn is_empty_object(&self) -> bool {
        self.0.is_none() || self.as_bytes() == EMPTY.as_bytes()
    }

    /// Parses the JSON into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.as_bytes())
    }

    /// Parses the JSON into a [`serde_json::Value`] tree.
    pub fn to_value(&self) -> serde_json::Value {
        // The text is one JSON value by construction.
        self.deserialize().unwrap_or(serde_json::Value::Null)
    }
}

/// Serialises as the JSON it holds, exactly as a [`RawValue`] of its text
/// would, without scanning the text again (it is one JSON value by
/// construction): encoding a message whose data is a payload
/// ([`encode::success`](crate::encode::success)`(id, &payload)`) sizes its
/// buffer once and copies the text.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use crate::raw::RAW_VALUE_TOKEN;
        use serde::ser::SerializeStruct;
        let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, &Text(self))?;
        raw.end()
    }
}

/// A payload's text: a string to a human-readable serializer (serde_json's
/// raw-value writers), its bytes otherwise (the encoder's own copy, which
/// so skips a UTF-8 check of text that is UTF-8 by construction).
struct Text<'a>(&'a Payload);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(self.0.as_str())
        } else {
            serializer.serialize_bytes(self.0.as_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// Keeps the value's JSON text as it was written (one copy, no tree), so
    /// a field of type `Payload` in a request's data can be forwarded as is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let text: Box<str> = raw.into();
        Ok(Self::from_json_unchecked(Bytes::from(String::from(text))))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method name, sliced from the frame it came in (or owned when it was
/// written with escapes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(Bytes);

impl Method {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Method(bytes)
    }

    /// The method name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl From<&str> for Method {
    fn from(s: &str) -> Self {
        Method(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure carried by an error response: `errorCode` and `errorReason`.
///
/// protoo sends a number and a string, but accepts any JSON (or nothing) in
/// either field; both are kept as raw JSON so a forwarded error travels on
/// unchanged. [`ErrorData::code`] and [`ErrorData::reason`] read the usual
/// shapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorData {
    code: Option<Bytes>,
    reason: Option<Bytes>,
}

impl ErrorData {
    /// An error with a numeric code and a text reason, as an application
    /// rejects a request.
    pub fn new(code: u16, reason: impl AsRef<str>) -> Self {
        let reason = serde_json::to_vec(reason.as_ref()).unwrap_or_else(|_| b"\"\"".to_vec());
        ErrorData {
            code: Some(Bytes::from(code.to_string())),
            reason: Some(Bytes::from(reason)),
        }
    }

    /// An error with a numeric code and no reason.
    pub fn with_code(code: u16) -> Self {
        ErrorData {
            code: Some(Bytes::from(code.to_string())),
            reason: None,
        }
    }

    /// An error from the raw JSON of its fields, as [`ErrorData::raw_code`]
    /// and [`ErrorData::raw_reason`] give them (what carries an error
    /// across processes unchanged), after checking each is one JSON value.
    pub fn from_raw_json(
        code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        let raw = |text: Option<&str>| -> Result<Option<Bytes>, serde_json::Error> {
            match text {
                None => Ok(None),
                Some(text) => {
                    let _: &RawValue = serde_json::from_str(text)?;
                    Ok(Some(Bytes::copy_from_slice(text.as_bytes())))
                }
            }
        };
        Ok(ErrorData {
            code: raw(code)?,
            reason: raw(reason)?,
        })
    }

    pub(crate) fn from_raw(code: Option<Bytes>, reason: Option<Bytes>) -> Self {
        ErrorData { code, reason }
    }

    /// The `errorCode` when it is an integer that fits in `u16` (HTTP-like
    /// codes, as protoo applications use).
    pub fn code(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.code.as_deref()?).ok()?;
        text.parse().ok()
    }

    /// The `errorReason` when it is a string.
    pub fn reason(&self) -> Option<String> {
        serde_json::from_slice(self.reason.as_deref()?).ok()
    }

    /// The raw JSON of `errorCode`, if the field was present.
    pub fn raw_code(&self) -> Option<&str> {
        self.code
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The raw JSON of `errorReason`, if the field was present.
    pub fn raw_reason(&self) -> Option<&str> {
        self.reason
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

impl fmt::Display for ErrorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{reason}")?,
            None => f.write_str(self.raw_reason().unwrap_or("request failed"))?,
        }
        if let Some(code) = self.raw_code() {
            write!(f, " (code {code})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falsy_values() {
        for s in ["null", "false", "0", "-0", "0.0", "0e5", "\"\""] {
            assert!(is_falsy(s.as_bytes()), "{s}");
        }
        for s in [
            "true", "1", "-1", "0.1", "\" \"", "{}", "[]", "\"0\"", "1e400", "",
        ] {
            assert!(!is_falsy(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn sub_bytes_slices_or_copies() {
        let buf = Bytes::from_static(b"hello world");
        let part = sub_bytes(&buf, &buf[6..]);
        assert_eq!(part, "world");
        assert_eq!(part.as_ptr(), buf[6..].as_ptr());
        let other = b"world".to_vec();
        assert_eq!(sub_bytes(&buf, &other), "world");
    }

    #[test]
    fn payload_and_error_data() {
        let p = Payload::from_json(" [1, 2] ").unwrap();
        assert_eq!(p.as_str(), "[1, 2]");
        assert_eq!(Payload::from_json("null").unwrap(), Payload::empty());
        assert!(Payload::from_json("{").is_err());
        assert_eq!(serde_json::to_string(&p).unwrap(), "[1, 2]");
        #[derive(serde::Deserialize)]
        struct Ask {
            data: Payload,
        }
        let ask: Ask = serde_json::from_str(r#"{"data": {"x": [1, "y"]}}"#).unwrap();
        assert_eq!(ask.data.as_str(), r#"{"x": [1, "y"]}"#);
        let e = ErrorData::new(403, "no \"way\"");
        assert_eq!(e.code(), Some(403));
        assert_eq!(e.reason().as_deref(), Some("no \"way\""));
        assert_eq!(e.to_string(), "no \"way\" (code 403)");
    }

    #[test]
    fn a_payload_serialises_as_its_raw_value_would() {
        #[derive(serde::Serialize)]
        struct Nested<'a, T: ?Sized> {
            id: u8,
            data: &'a T,
        }
        for text in [
            r#"{"b": [1,2], "a":"x", "u": "\u00e9 é"}"#,
            "[]",
            "\"text\"",
            "12.5e3",
            "null",
        ] {
            let payload = Payload::from_json(text).unwrap();
            let raw: Box<RawValue> = RawValue::from_string(payload.as_str().to_owned()).unwrap();
            assert_eq!(
                serde_json::to_string(&payload).unwrap(),
                serde_json::to_string(&raw).unwrap()
            );
            assert_eq!(
                serde_json::to_string_pretty(&Nested {
                    id: 1,
                    data: &payload
                })
                .unwrap(),
                serde_json::to_string_pretty(&Nested { id: 1, data: &raw }).unwrap()
            );
            assert_eq!(
                serde_json::to_value(&payload).unwrap(),
                serde_json::to_value(&raw).unwrap()
            );
            assert_eq!(
                serde_json::to_value(&payload).unwrap(),
                serde_json::from_str::<serde_json::Value>(payload.as_str()).unwrap()
            );
        }
    }
}
