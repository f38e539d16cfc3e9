//! Decoding arbitrary bytes never panics, and whatever decodes re-encodes to
//! something that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protoo_codec::{Bytes, Message, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let frame = match &message {
        Message::Request(r) => encode::request(&r.id, r.method.as_str(), &r.data),
        Message::Response(r) => match &r.result {
            Ok(data) => encode::success(&r.id, data),
            Err(e) => Ok(encode::error(&r.id, e)),
        },
        Message::Notification(n) => encode::notification(n.method.as_str(), &n.data),
    }
    .expect("decoded data re-encodes");
    let again = Message::decode(frame.into_bytes()).expect("encoded message decodes");
    assert_eq!(again, message);
});
