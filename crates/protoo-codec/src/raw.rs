//! Telling, before encoding, whether some data serialises as raw JSON text
//! (a [`Payload`](crate::Payload), a `serde_json` `RawValue`), how long
//! that text is, and copying it: the encoder sizes its buffer once and
//! copies the text, so forwarding a received payload costs a copy, not a
//! parse (nor a UTF-8 check: a payload hands its text over as bytes to a
//! serializer that is not human-readable, as this one says it is not).

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible, SerializeStruct, Serializer};

/// The name serde_json gives the one-field struct through which a
/// `RawValue` serialises: its serialisers (to text, and to a
/// `serde_json::Value`) take that field's string as JSON, as it is.
pub(crate) const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The length of `data`'s JSON text if it serialises as raw JSON; `None`
/// for any other data (found out at its first serializer call, before
/// anything is written).
pub(crate) fn raw_len<T: Serialize + ?Sized>(data: &T) -> Option<usize> {
    data.serialize(Probe(None)).ok()
}

/// Copies `data`'s JSON text at the end of `out` if it serialises as raw
/// JSON, returning whether it did (nothing is written otherwise).
pub(crate) fn write_raw<T: Serialize + ?Sized>(out: &mut Vec<u8>, data: &T) -> bool {
    data.serialize(Probe(Some(out))).is_ok()
}

/// Not raw JSON: the probe stops there.
#[derive(Debug)]
pub(crate) struct NotRaw;

impl fmt::Display for NotRaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not raw JSON")
    }
}

impl std::error::Error for NotRaw {}

impl ser::Error for NotRaw {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotRaw
    }
}

/// Refuses every serializer call but those listed.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ret, NotRaw> {
            Err(NotRaw)
        }
    )*};
}

/// The rest of a [`Serializer`] whose output is a length: every call is
/// refused.
macro_rules! refuse_all_but_str_and_struct {
    () => {
        refuse! {
            serialize_bytes(&[u8]) -> usize;
        }
        refuse_all_but_str_and_bytes!();
    };
}

/// As `refuse_all_but_str_and_struct`, for a serializer that also takes
/// bytes but refuses structs.
macro_rules! refuse_all_but_str_and_bytes {
    () => {
        refuse! {
            serialize_bool(bool) -> usize;
            serialize_i8(i8) -> usize;
            serialize_i16(i16) -> usize;
            serialize_i32(i32) -> usize;
            serialize_i64(i64) -> usize;
            serialize_u8(u8) -> usize;
            serialize_u16(u16) -> usize;
            serialize_u32(u32) -> usize;
            serialize_u64(u64) -> usize;
            serialize_f32(f32) -> usize;
            serialize_f64(f64) -> usize;
            serialize_char(char) -> usize;
            serialize_none() -> usize;
            serialize_unit() -> usize;
            serialize_unit_struct(&'static str) -> usize;
            serialize_unit_variant(&'static str, u32, &'static str) -> usize;
            serialize_seq(Option<usize>) -> Self::SerializeSeq;
            serialize_tuple(usize) -> Self::SerializeTuple;
            serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
            serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
            serialize_map(Option<usize>) -> Self::SerializeMap;
            serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
        }

        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<usize, NotRaw> {
            Err(NotRaw)
        }

        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<usize, NotRaw> {
            Err(NotRaw)
        }

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<usize, NotRaw> {
            Err(NotRaw)
        }

        fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<usize, NotRaw> {
            Err(NotRaw)
        }
    };
}

/// Accepts only serde_json's raw-value struct, and copies its text into
/// the buffer if there is one.
struct Probe<'a>(Option<&'a mut Vec<u8>>);

impl<'a> Serializer for Probe<'a> {
    type Ok = usize;
    type Error = NotRaw;
    type SerializeSeq = Impossible<usize, NotRaw>;
    type SerializeTuple = Impossible<usize, NotRaw>;
    type SerializeTupleStruct = Impossible<usize, NotRaw>;
    type SerializeTupleVariant = Impossible<usize, NotRaw>;
    type SerializeMap = Impossible<usize, NotRaw>;
    type SerializeStruct = RawField<'a>;
    type SerializeStructVariant = Impossible<usize, NotRaw>;

    refuse_all_but_str_and_struct!();

    fn serialize_str(self, _: &str) -> Result<usize, NotRaw> {
        Err(NotRaw)
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<RawField<'a>, NotRaw> {
        if name == RAW_VALUE_TOKEN && len == 1 {
            Ok(RawField {
                out: self.0,
                len: None,
            })
        } else {
            Err(NotRaw)
        }
    }
}

/// The raw-value struct's one field: the JSON text, as a string (or, from
/// a payload, as bytes).
struct RawField<'a> {
    out: Option<&'a mut Vec<u8>>,
    len: Option<usize>,
}

impl SerializeStruct for RawField<'_> {
    type Ok = usize;
    type Error = NotRaw;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), NotRaw> {
        if key != RAW_VALUE_TOKEN || self.len.is_some() {
            return Err(NotRaw);
        }
        self.len = Some(value.serialize(Text(self.out.take()))?);
        Ok(())
    }

    fn end(self) -> Result<usize, NotRaw> {
        self.len.ok_or(NotRaw)
    }
}

/// The text of a raw value: its length, copied into the buffer if there
/// is one.
struct Text<'a>(Option<&'a mut Vec<u8>>);

impl Text<'_> {
    fn take(self, text: &[u8]) -> usize {
        if let Some(out) = self.0 {
            out.extend_from_slice(text);
        }
        text.len()
    }
}

impl Serializer for Text<'_> {
    type Ok = usize;
    type Error = NotRaw;
    type SerializeSeq = Impossible<usize, NotRaw>;
    type SerializeTuple = Impossible<usize, NotRaw>;
    type SerializeTupleStruct = Impossible<usize, NotRaw>;
    type SerializeTupleVariant = Impossible<usize, NotRaw>;
    type SerializeMap = Impossible<usize, NotRaw>;
    type SerializeStruct = Impossible<usize, NotRaw>;
    type SerializeStructVariant = Impossible<usize, NotRaw>;

    refuse_all_but_str_and_bytes!();

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_str(self, text: &str) -> Result<usize, NotRaw> {
        Ok(self.take(text.as_bytes()))
    }

    fn serialize_bytes(self, text: &[u8]) -> Result<usize, NotRaw> {
        Ok(self.take(text))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotRaw> {
        Err(NotRaw)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::Payload;

    #[test]
    fn only_raw_json_has_a_raw_length() {
        let payload = Payload::from_json(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(raw_len(&payload), Some(payload.as_str().len()));
        assert_eq!(raw_len(&Payload::empty()), Some(2));
        let raw = RawValue::from_string("[1,2,3]".to_owned()).unwrap();
        assert_eq!(raw_len(&raw), Some(7));
        assert_eq!(raw_len(&serde_json::json!({"a": 1})), None);
        assert_eq!(raw_len("text"), None);
        assert_eq!(raw_len(&()), None);
        assert_eq!(raw_len(&Some(payload)), None);
        #[derive(serde::Serialize)]
        struct One {
            a: u8,
        }
        assert_eq!(raw_len(&One { a: 1 }), None);
    }
}
