//! Frames on the wire: an outgoing frame as its header and its payload
//! ([`Wire`], written with the payload it shares with every other peer of a
//! broadcast), the header parser and formatter (tungstenite's
//! [`FrameHeader`]), and masking.
//!
//! Why not tungstenite's connection (its `WebSocketContext`): it copies every
//! outgoing frame into a write buffer and writes each frame larger than that
//! buffer with its own call, and its read and write buffers are allocated
//! when the connection starts and keep the size of the largest message for
//! as long as it lives, with no way to release them. Headers are still
//! tungstenite's ([`FrameHeader::parse`] and [`FrameHeader::format`]); only
//! the masking is written here (tungstenite's is private).

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The largest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
pub(super) const MAX_HEADER: usize = 14;

/// An outgoing frame: its header, and its payload (already masked on the
/// client side; the server's payload is the queued frame itself, shared).
#[derive(Debug)]
pub(super) struct Wire {
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Whether the frame is also kept unconfirmed, and where its payload
    /// is. Fits in the header's padding.
    pub(super) kept: Kept,
    /// Empty for [`Kept::InTail`].
    pub(super) payload: Bytes,
}

/// Whether a [`Wire`] is kept unconfirmed ([`super::unconfirmed::Tail`]):
/// its write is then counted there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// Not kept.
    No,
    /// Kept, with a payload of its own (the client's, masked).
    Copy,
    /// Kept, and its payload is the tail's frame, read from there when it is
    /// written (the server's: one owner, no clone of the frame per write).
    InTail,
}

impl Kept {
    pub(super) fn is_kept(self) -> bool {
        self != Kept::No
    }
}

impl Wire {
    /// The frame `opcode` with `payload`, masked with a fresh random key
    /// on the client side (RFC 6455 5.3).
    pub(super) fn new(role: Role, opcode: OpCode, payload: Bytes) -> Wire {
        if role == Role::Server {
            return Wire::unmasked(opcode, payload);
        }
        let mask = rand::random::<[u8; 4]>();
        let header = FrameHeader {
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut bytes = [0u8; MAX_HEADER];
        let len = payload.len() as u64;
        let header_len = header.len(len);
        // A 14-byte slice holds any header: formatting cannot fail.
        let _ = header.format(len, &mut &mut bytes[..]);
        let mut masked = BytesMut::from(&payload[..]);
        apply_mask(&mut masked, mask);
        Wire {
            header: bytes,
            header_len: header_len as u8,
            kept: Kept::No,
            payload: masked.freeze(),
        }
    }

    /// A final, unmasked frame (RFC 6455 5.2): the server's. Written here
    /// rather than by [`FrameHeader::format`] (the same bytes, through
    /// `io::Write`; checked by a test): it runs for every frame to every
    /// peer, under the queue's lock, and took 3 % of the server's time in S3.
    fn unmasked(opcode: OpCode, payload: Bytes) -> Wire {
        Wire::unmasked_header(opcode, payload.len(), payload)
    }

    /// A server's text frame of `len` bytes kept in the tail
    /// ([`Kept::InTail`]): its payload is read from there when written.
    pub(super) fn text_in_tail(len: usize) -> Wire {
        let mut wire = Wire::unmasked_header(OpCode::Data(Data::Text), len, Bytes::new());
        wire.kept = Kept::InTail;
        wire
    }

    fn unmasked_header(opcode: OpCode, len: usize, payload: Bytes) -> Wire {
        let mut header = [0u8; MAX_HEADER];
        header[0] = 0x80 | u8::from(opcode);
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Wire {
            header,
            header_len,
            kept: Kept::No,
            payload,
        }
    }

    pub(super) fn text(role: Role, payload: Bytes) -> Wire {
        Wire::new(role, OpCode::Data(Data::Text), payload)
    }

    pub(super) fn binary(role: Role, payload: Bytes) -> Wire {
        Wire::new(role, OpCode::Data(Data::Binary), payload)
    }

    pub(super) fn ping(role: Role) -> Wire {
        Wire::new(role, OpCode::Control(Control::Ping), Bytes::new())
    }

    /// A confirmation ping: its payload is `count`, 8 bytes big-endian
    /// (keepalive pings are empty).
    pub(super) fn confirm_ping(role: Role, count: u64) -> Wire {
        let payload = Bytes::copy_from_slice(&count.to_be_bytes());
        Wire::new(role, OpCode::Control(Control::Ping), payload)
    }

    /// This data frame is also kept unconfirmed, with its own payload.
    pub(super) fn retained(mut self) -> Wire {
        self.kept = Kept::Copy;
        self
    }

    pub(super) fn pong(role: Role, payload: Bytes) -> Wire {
        Wire::new(role, OpCode::Control(Control::Pong), payload)
    }

    /// A close frame with `code` and `reason` (at most 123 bytes, cut by
    /// the caller); `None`: no status code.
    pub(super) fn close(role: Role, close: Option<(u16, &str)>) -> Wire {
        let payload = match close {
            None => Bytes::new(),
            Some((code, reason)) => {
                let mut payload = BytesMut::with_capacity(2 + reason.len());
                payload.extend_from_slice(&code.to_be_bytes());
                payload.extend_from_slice(reason.as_bytes());
                payload.freeze()
            }
        };
        Wire::new(role, OpCode::Control(Control::Close), payload)
    }

    pub(super) fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// Header and payload bytes.
    pub(super) fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload_len()
    }

    /// The payload's bytes: for [`Kept::InTail`], the length in the header
    /// (a server's: no mask).
    fn payload_len(&self) -> usize {
        if self.kept != Kept::InTail {
            return self.payload.len();
        }
        let h = &self.header;
        match h[1] & 0x7F {
            126 => usize::from(u16::from_be_bytes([h[2], h[3]])),
            127 => {
                let len = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                usize::try_from(len).unwrap_or(usize::MAX)
            }
            len => usize::from(len),
        }
    }

    pub(super) fn is_pong(&self) -> bool {
        self.header[0] & 0x0F == u8::from(OpCode::Control(Control::Pong))
    }

    /// A confirmation ping ([`Wire::confirm_ping`]) not written yet (a
    /// written frame's payload is let go).
    pub(super) fn is_confirm_ping(&self) -> bool {
        self.header[0] & 0x0F == u8::from(OpCode::Control(Control::Ping)) && self.payload.len() == 8
    }
}

/// The header at the start of `buf` and its length in bytes, with the
/// payload length; `None` while incomplete.
pub(super) fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize, u64)>, &'static str> {
    let mut cursor = Cursor::new(buf);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, len))) => Ok(Some((header, cursor.position() as usize, len))),
        Ok(None) => Ok(None),
        // The only failure of a header is an opcode RFC 6455 reserves.
        Err(_) => Err("reserved opcode"),
    }
}

/// XORs `buf` with `mask` (RFC 6455 5.3), eight bytes at a time.
pub(super) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let key = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so of 4 too.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_matches_the_bytewise_definition() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 3, 7, 8, 9, 16, 31, 100] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[test]
    fn server_frames_are_headers_and_shared_payloads() {
        let payload = Bytes::from(vec![b'x'; 300]);
        let wire = Wire::text(Role::Server, payload.clone());
        assert_eq!(wire.header(), &[0x81, 126, 0x01, 0x2C]);
        // The same bytes as tungstenite's formatter, at every length format.
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let wire = Wire::binary(Role::Server, Bytes::from(vec![0; len]));
            let mut expected = Vec::new();
            FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                ..FrameHeader::default()
            }
            .format(len as u64, &mut expected)
            .unwrap();
            assert_eq!(wire.header(), &expected[..], "length {len}");
        }
        assert_eq!(wire.payload.as_ptr(), payload.as_ptr());
        assert_eq!(wire.len(), 304);
        let (header, header_len, len) = parse_header(wire.header()).unwrap().unwrap();
        assert_eq!((header.is_final, header_len, len), (true, 4, 300));
        assert!(Wire::pong(Role::Server, Bytes::new()).is_pong());
        assert!(!Wire::ping(Role::Server).is_pong());
        assert_eq!(
            &Wire::close(Role::Server, Some((1000, "bye"))).payload[..],
            b"\x03\xe8bye"
        );
    }

    #[test]
    fn a_frame_in_the_tail_has_the_header_and_length_of_its_payload() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let wire = Wire::text_in_tail(len);
            let full = Wire::text(Role::Server, Bytes::from(vec![0; len]));
            assert_eq!(wire.header(), full.header(), "length {len}");
            assert_eq!(wire.len(), full.len(), "length {len}");
            assert!(wire.payload.is_empty() && wire.kept.is_kept());
        }
    }

    #[test]
    fn client_frames_are_masked() {
        let wire = Wire::text(Role::Client, Bytes::from_static(b"hello"));
        let (header, header_len, len) = parse_header(wire.header()).unwrap().unwrap();
        assert_eq!((header_len, len), (6, 5));
        let mut payload = wire.payload.to_vec();
        apply_mask(&mut payload, header.mask.unwrap());
        assert_eq!(payload, b"hello");
    }
}
