//! [`Id`]: a protoo request id, any JSON number, kept as the remote wrote it
//! and formatted without allocating.

use std::fmt;

use bytes::Bytes;

/// A request id: any JSON number, as protoo allows.
///
/// Ids this side creates are integers (protoo draws them from
/// `0..=10_000_000`). An id received from a remote is kept exactly as it was
/// written (`1e3`, `-5`, `1.5`, a 20-digit integer), so a response carries it
/// back unchanged.
#[derive(Clone)]
pub struct Id(Repr);

#[derive(Clone)]
enum Repr {
    Int(i64),
    /// The number's JSON text as received, when it is not a plain `i64`.
    Raw(Bytes),
}

impl Id {
    /// The id as an integer, when it is one that fits (`7`, `-5`, `1e3`,
    /// `7.0`).
    pub fn as_i64(&self) -> Option<i64> {
        match &self.0 {
            Repr::Int(n) => Some(*n),
            Repr::Raw(_) => {
                let f = self.as_f64();
                // The range check keeps the cast exact.
                (f.fract() == 0.0 && f >= -(2f64.powi(53)) && f <= 2f64.powi(53))
                    .then_some(f as i64)
            }
        }
    }

    /// The id as a JavaScript number would see it.
    pub fn as_f64(&self) -> f64 {
        match &self.0 {
            Repr::Int(n) => *n as f64,
            Repr::Raw(raw) => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN),
        }
    }

    /// The id's JSON text.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match &self.0 {
            Repr::Int(n) => out.extend_from_slice(itoa_i64(*n, &mut [0u8; 20])),
            Repr::Raw(raw) => out.extend_from_slice(raw),
        }
    }

    /// An id from the JSON text of a number (already checked to be one).
    pub(crate) fn from_json_number(text: &str, buf: &Bytes) -> Id {
        match text.parse::<i64>() {
            Ok(n) => Id(Repr::Int(n)),
            Err(_) => Id(Repr::Raw(crate::payload::sub_bytes(buf, text.as_bytes()))),
        }
    }
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn itoa_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

impl From<u32> for Id {
    fn from(n: u32) -> Self {
        Id(Repr::Int(n.into()))
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id(Repr::Int(n))
    }
}

impl PartialEq for Id {
    /// Ids are equal when JavaScript would find them equal (`1e3 == 1000`).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Int(a), Repr::Int(b)) => a == b,
            _ => self.as_f64() == other.as_f64(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(20);
        self.write(&mut out);
        f.write_str(std::str::from_utf8(&out).unwrap_or("?"))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &'static str) -> Id {
        Id::from_json_number(text, &Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn integers_and_raw_numbers() {
        assert_eq!(id("7").as_i64(), Some(7));
        assert_eq!(id("-5").as_i64(), Some(-5));
        assert_eq!(id("1e3").as_i64(), Some(1000));
        assert_eq!(id("1.5").as_i64(), None);
        assert_eq!(id("1.5").as_f64(), 1.5);
        assert_eq!(id("1e3"), Id::from(1000u32));
        assert_eq!(id("1e3").to_string(), "1e3");
        assert_eq!(Id::from(i64::MIN).to_string(), i64::MIN.to_string());
        assert_eq!(Id::from(0u32).to_string(), "0");
        assert_eq!(
            id("123456789012345678901234").to_string(),
            "123456789012345678901234"
        );
        assert_eq!(id("1e400").as_i64(), None);
    }
}
