//! Helpers shared by the integration tests: peers over in-memory pairs, raw
//! frames on the remote end, and a transport that records what it is sent.

#![allow(dead_code, unused_imports)]

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use protoo_core::{CloseReason, Peer, PeerConfig, PeerEvents};
pub(crate) use protoo_testkit::{
    HeldConnection, HeldRoom, expect_closed, expect_notification, expect_request, pair,
    until_closed,
};
use protoo_transport::{
    Frame, FrameSink, FrameStream, Inbound, Initiator, Transport, TransportError,
};

/// Two peers connected to each other: ("server", "client").
pub(crate) fn peers() -> ((Peer, PeerEvents), (Peer, PeerEvents)) {
    let (a, b) = pair();
    let server = Peer::new("client-A", a, (), PeerConfig::default()).expect("server peer");
    let client = Peer::new("server", b, (), PeerConfig::default()).expect("client peer");
    (server, client)
}

/// The next raw frame the remote end receives, as text.
pub(crate) async fn recv_text(transport: &mut Transport) -> String {
    match transport.recv().await {
        Inbound::Text(text) => String::from_utf8(text.to_vec()).expect("utf-8"),
        Inbound::Closed(reason) => panic!("expected a frame, transport closed: {reason}"),
        Inbound::Binary(data) => panic!("expected a text frame, got {} binary bytes", data.len()),
    }
}

/// The next raw frame the remote end receives, as JSON.
pub(crate) async fn recv_json(transport: &mut Transport) -> serde_json::Value {
    let text = recv_text(transport).await;
    serde_json::from_str(&text).expect("JSON frame")
}

/// Skips frames until the transport reports its close.
pub(crate) async fn recv_close(transport: &mut Transport) -> CloseReason {
    loop {
        if let Inbound::Closed(reason) = transport.recv().await {
            return reason;
        }
    }
}

/// Sends raw text from the remote end.
pub(crate) fn send_raw(transport: &Transport, text: &str) {
    transport
        .send(Frame::from(text.to_owned()))
        .expect("raw frame sent");
}

/// What a [`recording`] transport was sent, and its close.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    frames: Mutex<Vec<Frame>>,
    closed: Mutex<Option<(u16, String)>>,
    /// The reader waiting for the close.
    reader: Mutex<Option<Waker>>,
}

impl Recorder {
    pub(crate) fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }

    pub(crate) fn close_code(&self) -> Option<u16> {
        self.closed.lock().unwrap().as_ref().map(|(code, _)| *code)
    }
}

#[derive(Debug)]
struct RecordingSink(Arc<Recorder>);

impl FrameSink for RecordingSink {
    fn send(&self, frame: Frame) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed(frame));
        }
        self.0.frames.lock().unwrap().push(frame);
        Ok(())
    }

    fn close(&self, code: u16, reason: &str) {
        let mut closed = self.0.closed.lock().unwrap();
        if closed.is_none() {
            *closed = Some((code, reason.to_owned()));
            drop(closed);
            if let Some(reader) = self.0.reader.lock().unwrap().take() {
                reader.wake();
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.0.closed.lock().unwrap().is_some()
    }

    fn queued_bytes(&self) -> usize {
        0
    }
}

#[derive(Debug)]
struct RecordingStream(Arc<Recorder>);

impl FrameStream for RecordingStream {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        // Register before looking, so a close in between still wakes us.
        *self.0.reader.lock().unwrap() = Some(cx.waker().clone());
        match self.0.closed.lock().unwrap().clone() {
            Some((code, reason)) => Poll::Ready(Inbound::Closed(CloseReason::new(
                Some(code),
                reason,
                Initiator::Local,
            ))),
            None => Poll::Pending,
        }
    }
}

/// A transport that keeps every frame it is sent (the very `Frame` values,
/// so tests can compare buffers) and never receives anything.
pub(crate) fn recording() -> (Transport, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let transport = Transport::new(
        RecordingSink(recorder.clone()),
        RecordingStream(recorder.clone()),
    );
    (transport, recorder)
}
