//! The wire facts recorded by running the reference codec (npm
//! protoo-server 4.0.8) under Node.js: `shared/vectors/{decode,encode}.json`
//! beside the checkout. Every vector must pass.

use std::path::PathBuf;

use protoo_codec::{ErrorData, Id, Message, Payload, encode};
use serde_json::{Value, json};

/// `shared/vectors`, beside the checkout (override with
/// `PROTOO_VECTORS_DIR`).
fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROTOO_VECTORS_DIR") {
        return dir.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn load(name: &str) -> Vec<Value> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (set PROTOO_VECTORS_DIR)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vector file is JSON")
}

/// What protoo hands the application for a decoded message, in the shape of
/// the vectors' `parsed` (ids as JavaScript numbers).
fn as_parsed(message: &Message) -> Value {
    let id = |id: &Id| json!(id.as_f64());
    match message {
        Message::Request(r) => json!({
            "request": true, "id": id(&r.id), "method": r.method.as_str(), "data": r.data.to_value(),
        }),
        Message::Notification(n) => json!({
            "notification": true, "method": n.method.as_str(), "data": n.data.to_value(),
        }),
        Message::Response(r) => match &r.result {
            Ok(data) => {
                json!({ "response": true, "id": id(&r.id), "ok": true, "data": data.to_value() })
            }
            Err(error) => {
                let mut v = json!({ "response": true, "id": id(&r.id), "ok": false });
                let raw = |s: Option<&str>| {
                    s.map(|s| serde_json::from_str::<Value>(s).expect("raw JSON"))
                };
                if let Some(code) = raw(error.raw_code()) {
                    v["errorCode"] = code;
                }
                if let Some(reason) = raw(error.raw_reason()) {
                    v["errorReason"] = reason;
                }
                v
            }
        },
    }
}

/// Ids compared as JavaScript numbers (`1e3` is `1000`).
fn normalise_id(mut v: Value) -> Value {
    if let Some(id) = v.get("id").and_then(Value::as_f64) {
        v["id"] = json!(id);
    }
    v
}

#[test]
fn every_decode_vector() {
    let vectors = load("decode.json");
    assert!(
        vectors.len() >= 50,
        "expected the full vector set, got {}",
        vectors.len()
    );
    for v in &vectors {
        let input = v["input"].as_str().expect("input is a string");
        let result = Message::decode_str(input);
        if v["valid"].as_bool().expect("valid is a bool") {
            let message = result.unwrap_or_else(|e| panic!("{input:?} must decode: {e}"));
            assert_eq!(
                as_parsed(&message),
                normalise_id(v["parsed"].clone()),
                "input {input:?}"
            );
        } else {
            assert!(result.is_err(), "{input:?} must be refused, got {result:?}");
        }
    }
}

/// JSON text without the whitespace between tokens, keys in their order.
fn minify(json: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if c.is_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// The `data` of each encode vector as the JSON text it was written with
/// (key order matters for byte-identical output).
fn raw_data(v: &Value) -> Payload {
    let text = std::fs::read_to_string(vectors_dir().join("encode.json")).expect("readable");
    #[derive(serde::Deserialize)]
    struct Vector<'a> {
        #[serde(borrow)]
        args: Args<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Args<'a> {
        #[serde(borrow)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    let all: Vec<Vector<'_>> = serde_json::from_str(&text).expect("vectors");
    let index = load("encode.json")
        .iter()
        .position(|x| x == v)
        .expect("vector present");
    match all[index].args.data {
        Some(raw) => Payload::from_json(minify(raw.get())).expect("JSON"),
        None => Payload::empty(),
    }
}

#[test]
fn every_encode_vector() {
    let vectors = load("encode.json");
    assert!(vectors.len() >= 12, "expected the full vector set");
    for v in &vectors {
        let args = &v["args"];
        let data = raw_data(v);
        let id = || Id::from(args["id"].as_i64().expect("integer id"));
        let frame = match args["kind"].as_str().expect("kind") {
            "request" => encode::request(&id(), args["method"].as_str().expect("method"), &data),
            "success" => encode::success(&id(), &data),
            "notification" => encode::notification(args["method"].as_str().expect("method"), &data),
            "error" => {
                let code =
                    u16::try_from(args["errorCode"].as_u64().expect("code")).expect("u16 code");
                Ok(encode::error(
                    &id(),
                    &match args["errorReason"].as_str() {
                        Some(reason) => ErrorData::new(code, reason),
                        None => ErrorData::with_code(code),
                    },
                ))
            }
            other => panic!("unknown kind {other}"),
        }
        .expect("encodes");
        assert_eq!(
            frame.as_str(),
            v["json"].as_str().expect("json"),
            "args {args}"
        );
    }
}

#[test]
fn response_carries_the_request_id_back_unchanged() {
    for id in ["1e3", "-5", "1.5", "12345678901234567890123", "0"] {
        let input = format!(r#"{{"request":true,"id":{id},"method":"m"}}"#);
        let Message::Request(request) = Message::decode_str(&input).expect("request") else {
            panic!("not a request")
        };
        let ok = encode::success(&request.id, &Payload::empty()).expect("encodes");
        assert_eq!(
            ok.as_str(),
            format!(r#"{{"response":true,"id":{id},"ok":true,"data":{{}}}}"#)
        );
        let err = encode::error(&request.id, &ErrorData::new(500, "x"));
        assert!(
            err.as_str()
                .starts_with(&format!(r#"{{"response":true,"id":{id},"#))
        );
    }
}
