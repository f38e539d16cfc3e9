//! Property tests: encode then decode gives the message back, and decoding
//! arbitrary input never panics.

use proptest::prelude::*;
use protoo_codec::{ErrorData, Id, Message, Payload, encode};
use serde_json::Value;

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What protoo makes of data: falsy becomes `{}`.
fn protoo_data(v: &Value) -> Value {
    let falsy = match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if falsy {
        serde_json::json!({})
    } else {
        v.clone()
    }
}

proptest! {
    #[test]
    fn request_round_trip(id in 0u32..=10_000_000, method in any::<String>(), data in json()) {
        let frame = encode::request(&Id::from(id), &method, &data).unwrap();
        let Message::Request(r) = Message::decode(frame.into_bytes()).unwrap() else { panic!("kind") };
        prop_assert_eq!(r.id, Id::from(id));
        prop_assert_eq!(r.method.as_str(), method.as_str());
        prop_assert_eq!(r.data.to_value(), protoo_data(&data));
    }

    #[test]
    fn notification_round_trip(method in any::<String>(), data in json()) {
        let frame = encode::notification(&method, &data).unwrap();
        let Message::Notification(n) = Message::decode(frame.into_bytes()).unwrap() else { panic!("kind") };
        prop_assert_eq!(n.method.as_str(), method.as_str());
        prop_assert_eq!(n.data.to_value(), protoo_data(&data));
    }

    #[test]
    fn response_round_trip(id in any::<i64>(), data in json(), code in any::<u16>(), reason in any::<String>()) {
        let frame = encode::success(&Id::from(id), &data).unwrap();
        let Message::Response(r) = Message::decode(frame.into_bytes()).unwrap() else { panic!("kind") };
        prop_assert_eq!(&r.id, &Id::from(id));
        prop_assert_eq!(r.result.unwrap().to_value(), protoo_data(&data));

        let frame = encode::error(&Id::from(id), &ErrorData::new(code, &reason));
        let Message::Response(r) = Message::decode(frame.into_bytes()).unwrap() else { panic!("kind") };
        let error = r.result.unwrap_err();
        prop_assert_eq!(error.code(), Some(code));
        prop_assert_eq!(error.reason(), Some(reason));
    }

    #[test]
    fn payload_forwarding_is_verbatim(data in json()) {
        let payload = Payload::from_serialize(&data).unwrap();
        let frame = encode::notification("m", &payload).unwrap();
        let Message::Notification(n) = Message::decode(frame.into_bytes()).unwrap() else { panic!("kind") };
        prop_assert_eq!(n.data.as_str(), payload.as_str());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::decode(bytes.into());
    }

    #[test]
    fn decoding_arbitrary_json_never_panics(v in json(), flag in prop_oneof![Just("request"), Just("response"), Just("notification")]) {
        let mut object = serde_json::Map::new();
        object.insert(flag.to_owned(), v.clone());
        object.insert("id".into(), v.clone());
        object.insert("method".into(), v.clone());
        object.insert("data".into(), v.clone());
        object.insert("ok".into(), v.clone());
        object.insert("errorCode".into(), v);
        let _ = Message::decode_str(&Value::Object(object).to_string());
    }
}
