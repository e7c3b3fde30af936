//! Test plugin (`route`): appends one configured header to every message.
//!
//! Configuration (JSON): `{"name": "x-tag", "value": "v"}`. The name must be
//! a lowercase HTTP token of 1 to 128 bytes, the value at most 4096 bytes
//! without control characters other than tab. Every message is stored with
//! its headers plus this one, appended last (`replace` with headers only),
//! even when it already has a header of that name. Used by the node's tests
//! for plugin chains and hot reload: reloading with another `value` shows
//! which version handled a message.

use serde::Deserialize;
use switchyard_plugin::{Header, Message, Route, RouteDecision, export_route};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    name: String,
    value: String,
}

/// The plugin state: the header to append.
#[derive(Debug)]
struct HeaderTagger {
    header: Header,
}

fn valid_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

impl Route for HeaderTagger {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = serde_json::from_str(config).map_err(|e| {
            format!("invalid header-tagger config (expected {{\"name\": \"x-tag\", \"value\": \"v\"}}): {e}")
        })?;
        if !valid_name(&c.name) {
            return Err(format!(
                "invalid header-tagger config: header name {:?} is not a lowercase HTTP token of 1 to 128 bytes",
                c.name
            ));
        }
        if c.value.len() > 4096 || c.value.chars().any(|ch| ch.is_control() && ch != '\t') {
            return Err(
                "invalid header-tagger config: the value must be at most 4096 bytes without control characters"
                    .into(),
            );
        }
        Ok(HeaderTagger {
            header: Header::new(c.name, c.value),
        })
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        let mut headers = msg.headers;
        headers.push(self.header.clone());
        RouteDecision::replace_headers(headers)
    }
}

export_route!(HeaderTagger);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_header() {
        let mut p = HeaderTagger::new(r#"{"name": "x-tag", "value": "v1"}"#).unwrap();
        let msg = Message {
            headers: vec![Header::new("a", "b")],
            payload: b"p".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            p.route(msg),
            RouteDecision::Replace {
                headers: Some(vec![Header::new("a", "b"), Header::new("x-tag", "v1")]),
                payload: None,
            }
        );
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "",
            r#"{"name": "x-tag"}"#,
            r#"{"name": "X-Tag", "value": "v"}"#,
            r#"{"name": "x tag", "value": "v"}"#,
            r#"{"name": "x", "value": "a\nb"}"#,
        ] {
            assert!(HeaderTagger::new(bad).is_err(), "{bad}");
        }
    }
}
