//! Example plugin (`route`): reroutes a message to a sub-topic named after a
//! payload field or a header, such as `orders` to `orders.eu`.
//!
//! Configuration (JSON), with exactly one of `field` and `header`:
//!
//! ```json
//! {"field": "/region", "prefix": "orders", "fallback": "deliver", "lowercase": true}
//! {"header": "region"}
//! ```
//!
//! * `field`: a JSON pointer (RFC 6901) into the payload. A string value is
//!   used as is; an integer is written in decimal; anything else is
//!   invalid.
//! * `header`: a header name (compared without regard to ASCII case).
//! * `prefix`: the topic to append the segment to (default: the message's
//!   own topic). The message goes to `<prefix>.<segment>`.
//! * `fallback`: `deliver` (default) stores the message on its own topic
//!   when the value is missing or invalid; `drop` refuses it.
//! * `lowercase`: lowercase the value before using it (default `false`).
//!
//! The segment must be a valid topic token: 1 or more ASCII letters, digits,
//! `-` or `_` (so no `.`, which separates tokens), and the whole topic at
//! most 255 bytes; otherwise the fallback applies. A payload that is not
//! JSON has no field.
//!
//! Bind the router to the parent topic only: if the rerouted topic is
//! routed again by the same binding, the segment is appended twice.
//!
//! Counters: `rerouted`, `fallback`.

use serde::Deserialize;
use serde_json::Value;
use switchyard_plugin::{Message, Route, RouteDecision, export_route, metrics};

/// The longest topic name the node accepts, in bytes.
const MAX_TOPIC_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Fallback {
    #[default]
    Deliver,
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    fallback: Fallback,
    #[serde(default)]
    lowercase: bool,
}

/// Where the segment comes from.
#[derive(Debug)]
enum Source {
    Field(String),
    Header(String),
}

/// The plugin state: the parsed configuration.
#[derive(Debug)]
struct FieldRouter {
    source: Source,
    prefix: Option<String>,
    fallback: Fallback,
    lowercase: bool,
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && t.split('.').all(valid_token)
}

impl FieldRouter {
    fn parse(config: &str) -> Result<Self, String> {
        let c: Config = serde_json::from_str(config)
            .map_err(|e| format!("invalid field-router config: {e}"))?;
        let source = match (c.field, c.header) {
            (Some(f), None) => {
                if !f.is_empty() && !f.starts_with('/') {
                    return Err(format!(
                        "invalid field-router config: field {f:?} is not a JSON pointer (it must start with '/')"
                    ));
                }
                Source::Field(f)
            }
            (None, Some(h)) => {
                if h.is_empty() {
                    return Err("invalid field-router config: header is empty".into());
                }
                Source::Header(h)
            }
            _ => {
                return Err(
                    "invalid field-router config: give exactly one of \"field\" (a JSON pointer) and \"header\""
                        .into(),
                );
            }
        };
        if let Some(p) = &c.prefix
            && (!valid_topic(p) || p.len() >= MAX_TOPIC_LEN - 1)
        {
            return Err(format!(
                "invalid field-router config: prefix {p:?} is not a topic name (dot-separated tokens of A-Z, a-z, 0-9, '_' and '-', not '$'-prefixed)"
            ));
        }
        Ok(FieldRouter {
            source,
            prefix: c.prefix,
            fallback: c.fallback,
            lowercase: c.lowercase,
        })
    }

    /// The raw routing value of `msg`, if present and of a usable type.
    fn value(&self, msg: &Message) -> Option<String> {
        match &self.source {
            Source::Header(name) => msg.header(name).map(str::to_owned),
            Source::Field(pointer) => {
                let doc: Value = serde_json::from_slice(&msg.payload).ok()?;
                match doc.pointer(pointer)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                    _ => None,
                }
            }
        }
    }

    fn decide(&self, msg: &Message) -> RouteDecision {
        let target = self.value(msg).and_then(|mut segment| {
            if self.lowercase {
                segment.make_ascii_lowercase();
            }
            if !valid_token(&segment) {
                return None;
            }
            let prefix = self.prefix.as_deref().unwrap_or(&msg.topic);
            let topic = format!("{prefix}.{segment}");
            (topic.len() <= MAX_TOPIC_LEN).then_some(topic)
        });
        match target {
            Some(topic) => {
                metrics::add("rerouted", 1);
                RouteDecision::Reroute(vec![topic])
            }
            None => {
                metrics::add("fallback", 1);
                match self.fallback {
                    Fallback::Deliver => RouteDecision::Deliver,
                    Fallback::Drop => RouteDecision::Drop(format!(
                        "no valid routing value in {}",
                        match &self.source {
                            Source::Field(f) => format!("payload field {f}"),
                            Source::Header(h) => format!("header {h}"),
                        }
                    )),
                }
            }
        }
    }
}

impl Route for FieldRouter {
    fn new(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            return Err(
                "field-router needs a configuration such as {\"field\": \"/region\"} or {\"header\": \"region\"}"
                    .into(),
            );
        }
        FieldRouter::parse(config)
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        self.decide(&msg)
    }
}

export_route!(FieldRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::Header;

    fn msg(topic: &str, payload: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
            ..Default::default()
        }
    }

    fn route(config: &str, m: &Message) -> RouteDecision {
        FieldRouter::new(config).unwrap().decide(m)
    }

    #[test]
    fn field_to_subtopic() {
        let c = r#"{"field": "/region"}"#;
        assert_eq!(
            route(c, &msg("orders", r#"{"region": "eu-1"}"#, &[])),
            RouteDecision::reroute_to("orders.eu-1")
        );
        assert_eq!(
            route(c, &msg("orders", r#"{"region": 7}"#, &[])),
            RouteDecision::reroute_to("orders.7")
        );
        let c = r#"{"field": "/r", "prefix": "by.region", "lowercase": true}"#;
        assert_eq!(
            route(c, &msg("orders", r#"{"r": "EU"}"#, &[])),
            RouteDecision::reroute_to("by.region.eu")
        );
    }

    #[test]
    fn header_source() {
        let c = r#"{"header": "Region"}"#;
        assert_eq!(
            route(c, &msg("orders", "", &[("region", "us")])),
            RouteDecision::reroute_to("orders.us")
        );
    }

    #[test]
    fn fallbacks() {
        let deliver = r#"{"field": "/region"}"#;
        let drop = r#"{"field": "/region", "fallback": "drop"}"#;
        for payload in [
            r#"{}"#,
            r#"{"region": "e.u"}"#,
            r#"{"region": "$sys"}"#,
            r#"{"region": ""}"#,
            r#"{"region": 1.5}"#,
            r#"{"region": ["eu"]}"#,
            "not json",
        ] {
            let m = msg("orders", payload, &[]);
            assert_eq!(route(deliver, &m), RouteDecision::Deliver, "{payload}");
            assert!(matches!(route(drop, &m), RouteDecision::Drop(r) if r.contains("/region")));
        }
        let long = format!(r#"{{"region": "{}"}}"#, "a".repeat(250));
        assert_eq!(
            route(deliver, &msg("orders", &long, &[])),
            RouteDecision::Deliver
        );
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "",
            "{}",
            r#"{"field": "/a", "header": "b"}"#,
            r#"{"field": "a"}"#,
            r#"{"header": ""}"#,
            r#"{"header": "h", "prefix": "$sys"}"#,
            r#"{"header": "h", "prefix": "a..b"}"#,
            r#"{"header": "h", "fallback": "reroute"}"#,
            r#"{"header": "h", "lowercase": "yes"}"#,
        ] {
            assert!(FieldRouter::new(bad).is_err(), "{bad}");
        }
    }
}
