//! protoo's request and notification cases (versatica/protoo
//! `test/__tests__/test-client-server.js`), in one direction at a time.

use protoo_core::{Payload, Peer, PeerEvents, RequestError};
use serde_json::json;

use crate::{expect_notification, expect_request};

/// How the side receiving a request answers it.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `accept({text: "hi!"})`.
    Accept,
    /// `reject(503, "WHO KNOWS!")`.
    Reject,
    /// A handler failing with an error: 500 with its message (`BOOM!!!`).
    Throw,
}

/// `requester` sends `hello {foo: "bar"}`, the other side (its `events`)
/// checks it and answers as told; returns what the requester got.
pub async fn exchange(
    requester: &Peer,
    events: &mut PeerEvents,
    answer: Answer,
) -> Result<Payload, RequestError> {
    let respond = async {
        let request = expect_request(events).await;
        assert_eq!(request.method(), "hello");
        assert_eq!(request.payload().to_value(), json!({"foo": "bar"}));
        match answer {
            Answer::Accept => request.accept(&json!({"text": "hi!"})),
            Answer::Reject => request.reject(503, "WHO KNOWS!"),
            Answer::Throw => {
                let handler =
                    || -> Result<(), std::io::Error> { Err(std::io::Error::other("BOOM!!!")) };
                request.respond(handler());
            }
        }
    };
    let data = json!({"foo": "bar"});
    tokio::join!(requester.request("hello", &data), respond).0
}

/// The requester got `{text: "hi!"}`.
pub fn assert_accepted(result: Result<Payload, RequestError>) {
    assert_eq!(result.unwrap().to_value(), json!({"text": "hi!"}));
}

/// The requester got the rejection, 503 `WHO KNOWS!`.
pub fn assert_rejected(result: Result<Payload, RequestError>) {
    let error = result.unwrap_err();
    assert!(matches!(error, RequestError::Rejected(_)));
    assert_eq!(error.code(), Some(503));
    assert_eq!(error.reason().as_deref(), Some("WHO KNOWS!"));
}

/// The requester got the handler's failure: 500 with its message.
pub fn assert_thrown(result: Result<Payload, RequestError>) {
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some(500));
    assert!(error.reason().unwrap_or_default().contains("BOOM!!!"));
}

/// `sender` notifies `hello {foo: "bar"}`; the other side gets it.
pub async fn notify(sender: &Peer, events: &mut PeerEvents) {
    sender.notify("hello", &json!({"foo": "bar"})).unwrap();
    let notification = expect_notification(events).await;
    assert_eq!(notification.method(), "hello");
    assert_eq!(notification.payload().to_value(), json!({"foo": "bar"}));
}
