//! JSON shapes of messages and publish results.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use switchyard_model::Message;
use switchyard_router::{Appended, Gap, Published, Unavailable};

/// The JSON envelope of a message (`format=json` events and pull results).
/// The payload is text when it is valid UTF-8, else `payload_base64`; the
/// key likewise. Headers become an object; repeated names are joined with
/// ", " as HTTP does.
pub(crate) fn envelope(m: &Message) -> Value {
    let mut headers = Map::new();
    for h in &m.headers {
        match headers.get_mut(&h.name) {
            Some(Value::String(v)) => {
                v.push_str(", ");
                v.push_str(&h.value);
            }
            _ => {
                headers.insert(h.name.clone(), Value::String(h.value.clone()));
            }
        }
    }
    let mut obj = Map::new();
    obj.insert("topic".into(), json!(m.topic.as_str()));
    obj.insert("id".into(), json!(m.id.to_string()));
    obj.insert("origin".into(), json!(m.id.origin.to_string()));
    obj.insert("seq".into(), json!(m.stream_seq));
    obj.insert("timestamp".into(), json!(m.timestamp.to_rfc3339()));
    match m.key.as_deref().map(std::str::from_utf8) {
        None => obj.insert("key".into(), Value::Null),
        Some(Ok(k)) => obj.insert("key".into(), json!(k)),
        Some(Err(_)) => obj.insert(
            "key_base64".into(),
            json!(STANDARD.encode(m.key.as_deref().unwrap_or(&[]))),
        ),
    };
    obj.insert("headers".into(), Value::Object(headers));
    match std::str::from_utf8(&m.payload) {
        Ok(text) => obj.insert("payload".into(), json!(text)),
        Err(_) => obj.insert("payload_base64".into(), json!(STANDARD.encode(&m.payload))),
    };
    Value::Object(obj)
}

/// The answer for one published message, as JSON text: the stored
/// message's fields; when a route plugin rerouted it, also `routed_from`
/// and `routed` (every stored copy); when it was dropped, `dropped`,
/// `plugin` and `reason`; when a plugin failed on it, `plugin_error`;
/// `key_checked: false` when its idempotency key could not be checked
/// with every member that may hold a copy.
pub(crate) fn published(p: &Published) -> String {
    if let ([a], None, None, None, None) = (
        &p.results[..],
        &p.routed_from,
        &p.dropped,
        &p.plugin_error,
        &p.copies,
    ) && p.key_checked
    {
        return appended(a);
    }
    let mut obj = match p.results.first() {
        Some(a) => appended_json(a),
        None => Map::new(),
    };
    if let Some(from) = &p.routed_from {
        obj.insert("routed_from".into(), json!(from.as_str()));
        let all = p.results.iter().map(|a| Value::Object(appended_json(a)));
        obj.insert("routed".into(), Value::Array(all.collect()));
    }
    if let Some((plugin, reason)) = &p.dropped {
        obj.insert("dropped".into(), json!(true));
        obj.insert("plugin".into(), json!(plugin));
        obj.insert("reason".into(), json!(reason));
    }
    if let Some((plugin, error)) = &p.plugin_error {
        obj.insert(
            "plugin_error".into(),
            json!({"plugin": plugin, "error": error}),
        );
    }
    if let Some((acks, copies)) = &p.copies {
        obj.insert("acks".into(), json!(acks.to_string()));
        obj.insert("copies".into(), json!(copies));
    }
    if !p.key_checked {
        obj.insert("key_checked".into(), json!(false));
    }
    Value::Object(obj).to_string()
}

/// The fields of [`appended`] as a JSON object, for answers that add more.
fn appended_json(a: &Appended) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("topic".into(), json!(a.topic.as_str()));
    obj.insert("id".into(), json!(a.id.to_string()));
    obj.insert("origin".into(), json!(a.id.origin.to_string()));
    obj.insert("seq".into(), json!(a.stream_seq));
    obj.insert("timestamp".into(), json!(a.timestamp.to_rfc3339()));
    if a.duplicate {
        obj.insert("duplicate".into(), json!(true));
    }
    obj
}

/// One stored message, as JSON text. Written by hand because it is on the
/// publish hot path; every field is a topic name (no characters that need
/// escaping), a number or a fixed-format string.
fn appended(a: &Appended) -> String {
    use std::fmt::Write;
    let topic = a.topic.as_str();
    // The fixed text, two ids, a number and a timestamp: 150 bytes at most.
    let mut out = String::with_capacity(160 + topic.len());
    out.push_str(r#"{"topic":""#);
    out.push_str(topic);
    let _ = write!(
        out,
        r#"","id":"{}","origin":"{}","seq":{},"timestamp":""#,
        a.id, a.id.origin, a.stream_seq
    );
    a.timestamp.push_rfc3339(&mut out);
    out.push('"');
    if a.duplicate {
        out.push_str(r#","duplicate":true"#);
    }
    out.push('}');
    out
}

/// A removed range, as the `gap` event and pull results report it.
pub(crate) fn gap(g: &Gap) -> Value {
    json!({
        "topic": g.topic.as_str(),
        "origin": g.origin.to_string(),
        "after_origin_seq": g.after_origin_seq,
        "through_origin_seq": g.through_origin_seq,
        "through_seq": g.through_stream_seq,
    })
}

/// An origin whose messages a pull could not get, as a gap object with
/// `"reason": "unavailable"` (no topic: the node cannot tell which of the
/// pulled topics it misses).
pub(crate) fn unavailable(u: &Unavailable) -> Value {
    json!({
        "origin": u.origin.to_string(),
        "after_origin_seq": u.after_origin_seq,
        "through_origin_seq": u.through_origin_seq,
        "reason": "unavailable",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::{MessageId, NodeId, Timestamp};

    #[test]
    fn the_hand_written_answer_is_the_json_one() {
        for (seq, duplicate) in [(1, false), (u64::MAX, true)] {
            let a = Appended {
                id: MessageId {
                    origin: NodeId(0x0123_4567_89ab_cdef),
                    seq,
                },
                topic: "orders.eu-1".parse().unwrap(),
                stream_seq: seq / 2,
                timestamp: Timestamp::from_millis(1_796_000_000_123),
                duplicate,
            };
            let text = appended(&a);
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed, Value::Object(appended_json(&a)), "{text}");
            // date -u -d @1796000000
            assert_eq!(parsed["timestamp"], "2026-11-30T00:53:20.123Z", "{text}");
        }
    }
}
