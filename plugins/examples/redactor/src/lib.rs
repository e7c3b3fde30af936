//! Example plugin (`route`): masks configured fields of a JSON payload
//! before the message is stored.
//!
//! Configuration (JSON):
//!
//! ```json
//! {"fields": ["/card/number", "/email", "/items/*/iban"], "mask": "***", "keep_last": 4}
//! ```
//!
//! * `fields` (required, at least one): JSON pointers (RFC 6901) to the
//!   values to mask. A token that is exactly `*` stands for every element of
//!   an array or every member of an object at that level.
//! * `mask`: the replacement text (default `"***"`).
//! * `keep_last`: keep the last N characters of string values, written after
//!   the mask (`"***1234"`). Strings of N characters or fewer are masked
//!   whole. Default 0.
//!
//! Every value found at a configured pointer is replaced by a JSON string:
//! the mask, plus the kept characters for strings. When at least one value
//! was masked the message is stored with the new payload (`replace`; the
//! JSON is re-serialised compactly, keeping key order); otherwise it is
//! delivered unchanged. A payload that is not JSON is delivered unchanged.
//!
//! Counters: `redacted` (messages changed), `not_json`.

use serde::Deserialize;
use serde_json::Value;
use switchyard_plugin::{Message, Route, RouteDecision, export_route, metrics};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<String>,
    #[serde(default = "default_mask")]
    mask: String,
    #[serde(default)]
    keep_last: usize,
}

fn default_mask() -> String {
    "***".into()
}

/// The plugin state: the parsed pointers and the masking rule.
#[derive(Debug)]
struct Redactor {
    /// Each pointer split into unescaped reference tokens.
    fields: Vec<Vec<String>>,
    mask: String,
    keep_last: usize,
}

/// Splits a JSON pointer into its reference tokens, undoing `~1` and `~0`.
fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "invalid redactor config: field {p:?} is not a JSON pointer (it must start with '/')"
        ));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

impl Redactor {
    fn parse(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            return Err(
                "redactor needs a configuration such as {\"fields\": [\"/card/number\"], \"mask\": \"***\"}"
                    .into(),
            );
        }
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("invalid redactor config: {e}"))?;
        if c.fields.is_empty() {
            return Err("invalid redactor config: fields is empty".into());
        }
        let fields = c
            .fields
            .iter()
            .map(|f| parse_pointer(f))
            .collect::<Result<_, _>>()?;
        Ok(Redactor {
            fields,
            mask: c.mask,
            keep_last: c.keep_last,
        })
    }

    /// The masked form of `value`.
    fn masked(&self, value: &Value) -> Value {
        if self.keep_last > 0
            && let Value::String(s) = value
        {
            let chars = s.chars().count();
            if chars > self.keep_last {
                let tail: String = s.chars().skip(chars - self.keep_last).collect();
                return Value::String(format!("{}{tail}", self.mask));
            }
        }
        Value::String(self.mask.clone())
    }

    /// Masks every value under `tokens` in `v`; returns how many it masked.
    fn redact(&self, v: &mut Value, tokens: &[String]) -> usize {
        let Some((first, rest)) = tokens.split_first() else {
            *v = self.masked(v);
            return 1;
        };
        match v {
            Value::Object(map) if first == "*" => {
                map.values_mut().map(|child| self.redact(child, rest)).sum()
            }
            Value::Array(items) if first == "*" => {
                items.iter_mut().map(|child| self.redact(child, rest)).sum()
            }
            Value::Object(map) => map
                .get_mut(first.as_str())
                .map_or(0, |child| self.redact(child, rest)),
            Value::Array(items) => array_index(first)
                .and_then(|i| items.get_mut(i))
                .map_or(0, |child| self.redact(child, rest)),
            _ => 0,
        }
    }

    fn decide(&self, payload: &[u8]) -> RouteDecision {
        let Ok(mut doc) = serde_json::from_slice::<Value>(payload) else {
            metrics::add("not_json", 1);
            return RouteDecision::Deliver;
        };
        let count: usize = self.fields.iter().map(|f| self.redact(&mut doc, f)).sum();
        if count == 0 {
            return RouteDecision::Deliver;
        }
        metrics::add("redacted", 1);
        match serde_json::to_vec(&doc) {
            Ok(bytes) => RouteDecision::replace_payload(bytes),
            // Serialising a `Value` only fails on non-string map keys, which
            // a parsed document cannot hold; refuse rather than leak.
            Err(e) => RouteDecision::Drop(format!("redactor could not re-encode the payload: {e}")),
        }
    }
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    token.parse().ok()
}

impl Route for Redactor {
    fn new(config: &str) -> Result<Self, String> {
        Redactor::parse(config)
    }

    fn route(&mut self, msg: Message) -> RouteDecision {
        self.decide(&msg.payload)
    }
}

export_route!(Redactor);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::testing;

    fn redact(config: &str, payload: &str) -> RouteDecision {
        Redactor::parse(config).unwrap().decide(payload.as_bytes())
    }

    fn replaced(config: &str, payload: &str) -> String {
        match redact(config, payload) {
            RouteDecision::Replace {
                headers: None,
                payload: Some(p),
            } => String::from_utf8(p).unwrap(),
            other => panic!("expected a payload replacement, got {other:?}"),
        }
    }

    #[test]
    fn masks_fields_and_keeps_order() {
        let c = r#"{"fields": ["/card/number", "/email"], "mask": "***"}"#;
        assert_eq!(
            replaced(
                c,
                r#"{"z": 1, "card": {"number": "4111111111111111", "cvc": 1}, "email": "a@b.c"}"#
            ),
            r#"{"z":1,"card":{"number":"***","cvc":1},"email":"***"}"#
        );
        assert_eq!(testing::metric("redacted"), 1);
    }

    #[test]
    fn keep_last_and_non_strings() {
        let c = r#"{"fields": ["/n", "/short", "/num", "/obj"], "keep_last": 4}"#;
        assert_eq!(
            replaced(
                c,
                r#"{"n": "4111111111111111", "short": "1234", "num": 42, "obj": {"a": 1}}"#
            ),
            r#"{"n":"***1111","short":"***","num":"***","obj":"***"}"#
        );
        let c = r##"{"fields": ["/n"], "mask": "#", "keep_last": 2}"##;
        assert_eq!(replaced(c, r#"{"n": "héllo"}"#), r##"{"n":"#lo"}"##);
    }

    #[test]
    fn wildcards_and_indexes() {
        let c = r#"{"fields": ["/items/*/iban", "/list/1", "/a~1b"]}"#;
        assert_eq!(
            replaced(
                c,
                r#"{"items": [{"iban": "X"}, {"other": 1}, {"iban": "Y"}], "list": [0, 1], "a/b": 2}"#
            ),
            r#"{"items":[{"iban":"***"},{"other":1},{"iban":"***"}],"list":[0,"***"],"a/b":"***"}"#
        );
    }

    #[test]
    fn unchanged_payloads() {
        let c = r#"{"fields": ["/secret"]}"#;
        assert_eq!(redact(c, r#"{"public": 1}"#), RouteDecision::Deliver);
        assert_eq!(redact(c, r#"["secret"]"#), RouteDecision::Deliver);
        assert_eq!(redact(c, "plain text"), RouteDecision::Deliver);
        assert_eq!(redact(c, ""), RouteDecision::Deliver);
        assert_eq!(testing::metric("not_json"), 2);
        assert_eq!(testing::metric("redacted"), 0);
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "",
            "[]",
            r#"{"fields": []}"#,
            r#"{"fields": ["email"]}"#,
            r#"{"fields": ["/a"], "mask": 1}"#,
            r#"{"fields": ["/a"], "keep_last": -1}"#,
            r#"{"fields": ["/a"], "other": 1}"#,
        ] {
            let err = Redactor::parse(bad).unwrap_err();
            assert!(err.contains("redactor"), "{bad}: {err}");
        }
    }
}
