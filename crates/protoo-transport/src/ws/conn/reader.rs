//! The read side's decoder: bytes from the socket into whole messages and
//! control frames (RFC 6455 5.2-5.6, checks of 5.1-5.5, 7.4 and 8.1), with
//! a read buffer that exists only while the connection is busy.
//!
//! The buffer is allocated when a read starts ([`WsConfig::read_buffer_size`]
//! bytes, or [`CHUNK`] once a read filled it or the last burst was large),
//! grows to hold a frame larger than it, and is given back as soon as the
//! socket has nothing more and no partial frame is waiting: an idle
//! connection holds no read buffer. Payloads smaller than [`SPLIT`] are
//! copied out (an exact allocation, so a small message kept by the
//! application does not pin the whole buffer); larger ones are split off
//! without a copy.
//!
//! Why not a crate: tungstenite's reader allocates its buffer when the
//! connection starts and keeps it at the size of the largest message for as
//! long as the connection lives (its codec offers no way to release it);
//! tokio-websockets' reader starts every connection with an 8 KiB buffer
//! (`FramedRead::new`; the constructor taking a buffer is crate-private);
//! fastwebsockets allocates 8 KiB per connection. Frame headers are parsed
//! by tungstenite ([`parse_header`]); close codes are checked by
//! tungstenite's [`CloseCode`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::codec::{apply_mask, parse_header};
use crate::ws::WsConfig;

/// Bytes read at once while a connection is busy.
pub(crate) const CHUNK: usize = 32 * 1024;
/// Payloads at least this large are split off the read buffer without a
/// copy (they pin at most [`CHUNK`], four times their size, or their own
/// allocation); smaller ones are copied out.
const SPLIT: usize = CHUNK / 4;
/// A burst larger than this starts the next one with a [`CHUNK`] buffer.
const LARGE_BURST: usize = 1024;
/// A waiting partial frame of at most this many bytes is moved into an
/// allocation of its size when the connection goes idle.
const KEEP_PARTIAL: usize = 1024;
/// Less room than this left in the buffer: make room before reading.
const MIN_SPARE: usize = 512;
/// A control frame's payload is at most this long (RFC 6455 5.5).
const MAX_CONTROL: u64 = 125;
/// The close code a close frame with an invalid code is answered with,
/// and reported as (tungstenite does the same).
const PROTOCOL_ERROR: u16 = 1002;

/// A message or a control frame read from the socket.
#[derive(Debug)]
pub(super) enum Event {
    /// A text message (valid UTF-8).
    Text(Bytes),
    Binary(Bytes),
    /// A ping with its payload (to be answered with a pong).
    Ping(Bytes),
    /// A pong with its payload (at most 125 bytes, as every control frame).
    Pong(Bytes),
    /// The remote's close frame: its code and reason, `None` without a
    /// code.
    Close(Option<(u16, String)>),
}

/// Why reading stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    /// A frame or a message over the limits (close 1009).
    TooBig,
    /// Invalid UTF-8 in a text message or a close reason (close 1007).
    Utf8,
    /// Another protocol violation (close 1002).
    Protocol(&'static str),
    /// The stream ended (after the close handshake, or without one).
    Closed,
    /// The socket failed.
    Io(io::Error),
}

/// A message being assembled from fragments.
#[derive(Debug)]
struct Partial {
    binary: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text messages).
    checked: usize,
}

/// The read side's state: the buffer and the message being assembled.
#[derive(Debug)]
pub(super) struct Reader {
    /// Read from the socket, not decoded yet; no capacity while idle.
    buf: BytesMut,
    role: Role,
    max_frame: u64,
    max_message: usize,
    first_read: usize,
    partial: Option<Partial>,
    /// Bytes read since the socket last had nothing more.
    burst: usize,
    /// The last burst was larger than [`LARGE_BURST`].
    large: bool,
}

/// What decoding the buffer gave.
enum Step {
    Event(Event),
    /// The buffer must hold this many bytes for the next frame.
    Need(usize),
}

impl Reader {
    /// A reader that decodes `leftover` (bytes read past the handshake)
    /// first.
    pub(super) fn new(role: Role, config: &WsConfig, leftover: Vec<u8>) -> Self {
        Reader {
            buf: BytesMut::from(&leftover[..]),
            role,
            max_frame: config.max_frame_size.min(config.max_message_size) as u64,
            max_message: config.max_message_size,
            first_read: config.read_buffer_size.max(MAX_CONTROL as usize + 14),
            partial: None,
            burst: 0,
            large: false,
        }
    }

    /// The capacity held for reading (0 when idle).
    #[cfg(test)]
    pub(super) fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next message or control frame.
    pub(super) fn poll_next<S>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Event, ReadError>>
    where
        S: AsyncRead + Unpin,
    {
        loop {
            let need = match self.decode() {
                Ok(Step::Event(event)) => return Poll::Ready(Ok(event)),
                Ok(Step::Need(need)) => need,
                Err(error) => return Poll::Ready(Err(self.fail(error))),
            };
            self.reserve(need);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.buf) {
                Poll::Pending => {
                    self.idle();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.fail(ReadError::Closed))),
                Poll::Ready(Ok(read)) => self.burst += read,
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(self.fail(ReadError::Io(error))));
                }
            }
        }
    }

    /// Reading is over: the buffers are given back.
    fn fail(&mut self, error: ReadError) -> ReadError {
        self.buf = BytesMut::new();
        self.partial = None;
        error
    }

    /// Room to read into: at least a read's worth ([`WsConfig::read_buffer_size`]
    /// at the start of a burst, [`CHUNK`] after), and the whole frame when
    /// it is larger.
    fn reserve(&mut self, need: usize) {
        let (len, capacity) = (self.buf.len(), self.buf.capacity());
        if need <= capacity && capacity - len >= MIN_SPARE {
            return;
        }
        let size = if self.large || self.burst > 0 {
            CHUNK
        } else {
            self.first_read
        };
        // Reuses the allocation (moving what is left to its start) when
        // nothing else holds it.
        self.buf.reserve(need.max(len + size) - len);
    }

    /// The socket has nothing more for now: an empty buffer is given back,
    /// a small partial frame moves to an allocation of its size.
    fn idle(&mut self) {
        self.large = self.burst > LARGE_BURST;
        self.burst = 0;
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        } else if self.buf.len() <= KEEP_PARTIAL && self.buf.capacity() > KEEP_PARTIAL {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    /// Decodes frames from the buffer until one makes an event or more
    /// bytes are needed.
    fn decode(&mut self) -> Result<Step, ReadError> {
        loop {
            let Some((header, header_len, len)) =
                parse_header(&self.buf).map_err(ReadError::Protocol)?
            else {
                return Ok(Step::Need(self.buf.len() + 1));
            };
            self.check(&header, len)?;
            // At most `max_frame`, a `usize`.
            let len = len as usize;
            if self.buf.len() < header_len + len {
                return Ok(Step::Need(header_len + len));
            }
            self.buf.advance(header_len);
            let mut payload = if len >= SPLIT {
                self.buf.split_to(len)
            } else {
                let copy = BytesMut::from(&self.buf[..len]);
                self.buf.advance(len);
                copy
            };
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(event) = self.on_frame(&header, payload)? {
                return Ok(Step::Event(event));
            }
        }
    }

    /// The checks a header allows before its payload is read.
    fn check(&self, header: &FrameHeader, len: u64) -> Result<(), ReadError> {
        if len > self.max_frame {
            return Err(ReadError::TooBig);
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ReadError::Protocol("unmasked client frame")),
            (Role::Client, true) => return Err(ReadError::Protocol("masked server frame")),
            _ => {}
        }
        if let OpCode::Control(_) = header.opcode {
            if !header.is_final {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if len > MAX_CONTROL {
                return Err(ReadError::Protocol("control frame too long"));
            }
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        header: &FrameHeader,
        payload: BytesMut,
    ) -> Result<Option<Event>, ReadError> {
        let fin = header.is_final;
        let binary = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Event::Ping(payload.freeze()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Event::Pong(payload.freeze()))),
            OpCode::Control(Control::Close) => return close_event(&payload).map(Some),
            OpCode::Data(Data::Continue) => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ReadError::Protocol("continuation frame without a message"));
                };
                if partial.data.len() + payload.len() > self.max_message {
                    return Err(ReadError::TooBig);
                }
                partial.data.extend_from_slice(&payload);
                if !partial.binary {
                    check_utf8(&partial.data, &mut partial.checked, fin)?;
                }
                if !fin {
                    return Ok(None);
                }
                let Some(Partial { binary, data, .. }) = self.partial.take() else {
                    return Ok(None);
                };
                let data = data.freeze();
                return Ok(Some(if binary {
                    Event::Binary(data)
                } else {
                    Event::Text(data)
                }));
            }
            OpCode::Data(Data::Text) => false,
            OpCode::Data(Data::Binary) => true,
            // The header parser refuses reserved opcodes.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(ReadError::Protocol("reserved opcode"));
            }
        };
        if self.partial.is_some() {
            return Err(ReadError::Protocol("new message inside a fragmented one"));
        }
        if fin {
            let data = payload.freeze();
            if binary {
                return Ok(Some(Event::Binary(data)));
            }
            simdutf8::basic::from_utf8(&data).map_err(|_| ReadError::Utf8)?;
            return Ok(Some(Event::Text(data)));
        }
        let mut partial = Partial {
            binary,
            data: payload,
            checked: 0,
        };
        if !binary {
            check_utf8(&partial.data, &mut partial.checked, false)?;
        }
        self.partial = Some(partial);
        Ok(None)
    }
}

/// Checks the UTF-8 of a text message received so far: invalid bytes fail
/// it at once; a character cut at the end of a fragment waits for the
/// next one (and fails the final fragment).
fn check_utf8(data: &[u8], checked: &mut usize, fin: bool) -> Result<(), ReadError> {
    match simdutf8::compat::from_utf8(&data[*checked..]) {
        Ok(_) => {
            *checked = data.len();
            Ok(())
        }
        Err(error) if error.error_len().is_none() && !fin => {
            *checked += error.valid_up_to();
            Ok(())
        }
        Err(_) => Err(ReadError::Utf8),
    }
}

/// The remote's close frame (RFC 6455 5.5.1, 7.4): its code, checked, and
/// its reason, valid UTF-8.
fn close_event(payload: &[u8]) -> Result<Event, ReadError> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(ReadError::Protocol("close frame of one byte")),
        [a, b, reason @ ..] => {
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::Utf8)?;
            let code = u16::from_be_bytes([*a, *b]);
            if CloseCode::from(code).is_allowed() {
                Ok(Event::Close(Some((code, reason.to_owned()))))
            } else {
                Ok(Event::Close(Some((
                    PROTOCOL_ERROR,
                    "Protocol violation".to_owned(),
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::conn::codec::Wire;
    use tokio::io::AsyncWriteExt;

    fn frames(wires: &[Wire]) -> Vec<u8> {
        let mut out = Vec::new();
        for wire in wires {
            out.extend_from_slice(wire.header());
            out.extend_from_slice(&wire.payload);
        }
        out
    }

    async fn next<S: AsyncRead + Unpin>(
        reader: &mut Reader,
        io: &mut S,
    ) -> Result<Event, ReadError> {
        std::future::poll_fn(|cx| reader.poll_next(io, cx)).await
    }

    #[tokio::test]
    async fn messages_are_decoded_and_the_buffer_released_when_idle() {
        let (mut remote, mut local) = tokio::io::duplex(1 << 20);
        let config = WsConfig::default();
        let mut reader = Reader::new(Role::Server, &config, Vec::new());
        let big = Bytes::from(vec![b'a'; 40_000]);
        let bytes = frames(&[
            Wire::text(Role::Client, Bytes::from_static(b"hello")),
            Wire::ping(Role::Client),
            Wire::text(Role::Client, big.clone()),
        ]);
        remote.write_all(&bytes).await.unwrap();
        let Event::Text(text) = next(&mut reader, &mut local).await.unwrap() else {
            panic!()
        };
        assert_eq!(&text[..], b"hello");
        assert!(
            matches!(next(&mut reader, &mut local).await.unwrap(), Event::Ping(p) if p.is_empty())
        );
        let Event::Text(text) = next(&mut reader, &mut local).await.unwrap() else {
            panic!()
        };
        assert_eq!(text, big);

        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(reader.poll_next(&mut local, &mut cx).is_pending());
        assert_eq!(reader.buffered_capacity(), 0);

        drop(remote);
        assert!(matches!(
            next(&mut reader, &mut local).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn fragments_are_assembled_and_checked() {
        let (mut remote, mut local) = tokio::io::duplex(1 << 16);
        let config = WsConfig::default();
        let mut reader = Reader::new(Role::Server, &config, Vec::new());
        let euro = "€".as_bytes();
        let mut first = Wire::text(Role::Client, Bytes::copy_from_slice(&euro[..1]));
        // Not final.
        let mut raw = frames(std::slice::from_mut(&mut first));
        raw[0] &= 0x7F;
        let rest = Wire::new(
            Role::Client,
            OpCode::Data(Data::Continue),
            Bytes::copy_from_slice(&euro[1..]),
        );
        raw.extend(frames(&[rest]));
        remote.write_all(&raw).await.unwrap();
        let Event::Text(text) = next(&mut reader, &mut local).await.unwrap() else {
            panic!()
        };
        assert_eq!(&text[..], euro);

        remote
            .write_all(&frames(&[Wire::text(
                Role::Client,
                Bytes::from_static(b"\xff"),
            )]))
            .await
            .unwrap();
        assert!(matches!(
            next(&mut reader, &mut local).await,
            Err(ReadError::Utf8)
        ));
    }

    #[tokio::test]
    async fn unmasked_client_frames_and_oversized_frames_are_refused() {
        let (mut remote, mut local) = tokio::io::duplex(1 << 16);
        let config = WsConfig::default().with_max_message_size(10);
        let mut reader = Reader::new(Role::Server, &config, Vec::new());
        remote
            .write_all(&frames(&[Wire::text(
                Role::Server,
                Bytes::from_static(b"hi"),
            )]))
            .await
            .unwrap();
        assert!(matches!(
            next(&mut reader, &mut local).await,
            Err(ReadError::Protocol(_))
        ));

        let mut reader = Reader::new(Role::Server, &config, Vec::new());
        let header = frames(&[Wire::text(Role::Client, Bytes::from(vec![0; 11]))]);
        remote.write_all(&header[..6]).await.unwrap();
        assert!(matches!(
            next(&mut reader, &mut local).await,
            Err(ReadError::TooBig)
        ));
    }
}
