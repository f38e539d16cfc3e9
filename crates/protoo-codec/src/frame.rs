//! [`Frame`]: one encoded protoo message, a shared buffer of UTF-8 JSON
//! text.

use std::fmt;

use bytes::Bytes;

/// Unused bytes an encoded frame keeps beyond an eighth of its length
/// ([`Frame::from_encoded`]).
const SLACK: usize = 64;

/// One encoded protoo message: the UTF-8 JSON text of a WebSocket text frame.
///
/// Cloning a `Frame` shares its buffer (a reference count), so a notification
/// encoded once can be queued to any number of peers without copying.
/// Frames are built by the functions in [`encode`](crate::encode) or from any
/// `String`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame(Bytes);

impl Frame {
    /// A frame holding `text` as it is (no check that it is protoo JSON).
    pub fn from_static(text: &'static str) -> Self {
        Frame(Bytes::from_static(text.as_bytes()))
    }

    /// The frame's text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The frame's text.
    pub fn as_str(&self) -> &str {
        // Every constructor takes valid UTF-8, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether no other `Frame` (or other handle) shares this frame's
    /// buffer: true for a message encoded for one peer, false for a
    /// broadcast queued to several. A transport that holds frames can tell
    /// memory held for this peer alone from memory shared with others.
    pub fn is_unique(&self) -> bool {
        self.0.is_unique()
    }

    /// The shared buffer, for a transport that writes it out.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// A frame over `bytes` if they are valid UTF-8, else the bytes back.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Frame(bytes)),
            Err(_) => Err(bytes),
        }
    }

    /// A frame over an encoder's buffer (valid UTF-8 by construction).
    ///
    /// A buffer with more than an eighth of its length (plus 64 bytes)
    /// unused is shrunk to its length first: a `Vec` that grew while the
    /// data was serialised can hold up to twice its length, and a frame
    /// queued to many slow peers must cost about what its byte count says.
    /// A buffer sized for its message up front (raw JSON data) is not: the
    /// few bytes saved would cost a call into the allocator (a copy for a
    /// small one) per message, for less than the allocator's own rounding.
    pub(crate) fn from_encoded(mut buf: Vec<u8>) -> Self {
        debug_assert!(std::str::from_utf8(&buf).is_ok());
        if buf.capacity() - buf.len() > buf.len() / 8 + SLACK {
            buf.shrink_to_fit();
        }
        Frame(Bytes::from(buf))
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame(Bytes::from(text))
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Frame::from_static(text)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
