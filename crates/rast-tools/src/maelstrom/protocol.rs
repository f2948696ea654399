//! Maelstrom's wire protocol: one JSON object per line,
//! `{"src": .., "dest": .., "body": {"type": .., "msg_id": .., ..}}`.
//!
//! Bodies are kept as `serde_json::Value`: the node reads the few fields it
//! needs and refuses a request missing one with error 12 (malformed), never
//! a panic.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Maelstrom error codes the node uses (jepsen-io/maelstrom doc/protocol.md).
pub mod code {
    /// Indefinite: the operation may or may not have happened.
    pub const TIMEOUT: u64 = 0;
    /// Definite: the node does not handle this message type.
    pub const NOT_SUPPORTED: u64 = 10;
    /// Definite: not done, try again (no leader, not initialized, ...).
    pub const TEMPORARILY_UNAVAILABLE: u64 = 11;
    /// Definite: the request is malformed (or over a size limit).
    pub const MALFORMED_REQUEST: u64 = 12;
    /// Indefinite: the node failed while performing the operation (here: the
    /// state machine stopped after a panic).
    pub const CRASH: u64 = 13;
    /// Definite: a `read` or `cas` of a key that does not exist.
    pub const KEY_DOES_NOT_EXIST: u64 = 20;
    /// Definite: a `cas` whose `from` did not match.
    pub const PRECONDITION_FAILED: u64 = 22;
    /// Indefinite (ours, above Maelstrom's range of meanings): the client
    /// session expired, so a retry was not applied; an earlier attempt may
    /// have been.
    pub const SESSION_EXPIRED: u64 = 1000;
    /// Indefinite (ours): a request older than the session's last.
    pub const STALE_SEQUENCE: u64 = 1001;
}

/// One message as it travels on stdin/stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub src: String,
    /// Receiver.
    pub dest: String,
    /// The payload.
    pub body: Value,
}

impl Envelope {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The line for this message (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a JSON value always serializes")
    }

    /// `body.type`, or "" when missing.
    pub fn kind(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// `body.msg_id`.
    pub fn msg_id(&self) -> Option<u64> {
        self.body.get("msg_id").and_then(Value::as_u64)
    }

    /// `body.in_reply_to`.
    pub fn in_reply_to(&self) -> Option<u64> {
        self.body.get("in_reply_to").and_then(Value::as_u64)
    }
}

/// An error body (`in_reply_to` is added when it is sent).
pub fn error_body(code: u64, text: impl Into<String>) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), "error".into());
    body.insert("code".into(), code.into());
    body.insert("text".into(), text.into().into());
    Value::Object(body)
}

/// A body of `kind` with `fields`.
pub fn body(kind: &str, fields: &[(&str, Value)]) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), kind.into());
    for (name, value) in fields {
        body.insert((*name).into(), value.clone());
    }
    Value::Object(body)
}

/// The bytes the state machine stores for a JSON key or value: its compact
/// JSON text. serde_json sorts object keys, so equal values have equal
/// bytes (a cas compares bytes).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(&canonical(value)).expect("a JSON value always serializes")
}

/// `value` with every object's keys in sorted order, whatever order the
/// map type keeps (serde_json's `preserve_order`, enabled anywhere in the
/// build, keeps insertion order): equal values give equal bytes.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), canonical(&fields[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A stored key or value back as JSON (bytes that are not JSON, which this
/// node never writes, come back as a string).
pub fn from_bytes(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Whether a Maelstrom error code is definite (the operation certainly did
/// not happen): the harness records those as `fail`.
pub const fn is_definite(code: u64) -> bool {
    matches!(code, 1 | 10 | 11 | 12 | 14 | 20 | 21 | 22 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// JSON keys and values map to bytes canonically (object keys sorted)
    /// and back.
    #[test]
    fn values_round_trip_canonically() {
        for value in [json!(3), json!("x"), json!([1, 2]), json!({"b": 1, "a": 2})] {
            assert_eq!(from_bytes(&to_bytes(&value)), value);
        }
        assert_eq!(to_bytes(&json!({"b": 1, "a": 2})), br#"{"a":2,"b":1}"#);
        assert_eq!(
            to_bytes(&json!([{"z": {"y": 1, "x": 2}, "a": 0}])),
            br#"[{"a":0,"z":{"x":2,"y":1}}]"#
        );
    }

    /// An envelope parses and prints; missing fields read as absent.
    #[test]
    fn envelope_round_trips() {
        let line = r#"{"src":"c1","dest":"n1","body":{"type":"read","msg_id":7,"key":1}}"#;
        let envelope = Envelope::parse(line).unwrap();
        assert_eq!(envelope.kind(), "read");
        assert_eq!(envelope.msg_id(), Some(7));
        assert_eq!(envelope.in_reply_to(), None);
        assert_eq!(Envelope::parse(&envelope.to_line()).unwrap(), envelope);
        assert!(Envelope::parse("not json").is_err());
    }
}
