//! Example plugin (`filter`): keeps or skips messages by a condition on one
//! field of their JSON payload.
//!
//! Configuration (JSON):
//!
//! ```json
//! {"field": "/amount", "op": "gt", "value": 100, "action": "keep"}
//! ```
//!
//! * `field` (required): a JSON pointer (RFC 6901) into the payload, such as
//!   `/amount` or `/customer/tier`; `""` is the whole document.
//! * `op` (required): `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `exists`,
//!   `contains` or `in`.
//!   - `eq`/`ne` compare JSON values; numbers compare by value (`1` equals
//!     `1.0`).
//!   - `gt`/`gte`/`lt`/`lte` compare two numbers, or two strings
//!     byte-wise; any other pair does not match.
//!   - `exists` matches when the field is present (even if `null`).
//!   - `contains` matches a string field holding `value` (a string) as a
//!     substring, or an array field with an element equal to `value`.
//!   - `in` matches when the field equals one element of `value` (an array).
//! * `value`: the operand; required by every op except `exists`.
//! * `action`: `keep` (default) writes only matching messages to the
//!   subscriber; `skip` writes all but the matching ones.
//!
//! A payload that is not JSON, or that lacks the field, does not match: with
//! `"action": "keep"` it is skipped, with `"action": "skip"` it is kept. So
//! `ne` does not match a message without the field.
//!
//! Counters: `matched` (condition held), `skipped` (message not written),
//! `not_json` (payload was not JSON).

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Number, Value};
use switchyard_plugin::{Filter, FilterDecision, Message, export_filter, metrics};

/// The comparison applied to the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    Contains,
    In,
}

/// What to do with matching messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Keep,
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    op: Op,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    action: Action,
}

/// The plugin state: the parsed configuration.
#[derive(Debug)]
struct JsonFilter {
    field: String,
    op: Op,
    value: Value,
    action: Action,
}

impl JsonFilter {
    fn parse(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            return Err(
                "json-filter needs a configuration such as {\"field\": \"/amount\", \"op\": \"gt\", \"value\": 100}"
                    .into(),
            );
        }
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("invalid json-filter config: {e}"))?;
        if !c.field.is_empty() && !c.field.starts_with('/') {
            return Err(format!(
                "invalid json-filter config: field {:?} is not a JSON pointer (it must be empty or start with '/')",
                c.field
            ));
        }
        let value = match (c.op, c.value) {
            (Op::Exists, None) => Value::Null,
            (Op::Exists, Some(_)) => {
                return Err("invalid json-filter config: op \"exists\" takes no value".into());
            }
            (op, None) => {
                return Err(format!(
                    "invalid json-filter config: op {op:?} needs a value"
                ));
            }
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(v)) if !(v.is_number() || v.is_string()) => {
                return Err(format!(
                    "invalid json-filter config: op {:?} needs a number or a string value, not {v}",
                    c.op
                ));
            }
            (Op::In, Some(v)) if !v.is_array() => {
                return Err(format!(
                    "invalid json-filter config: op \"in\" needs an array value, not {v}"
                ));
            }
            (_, Some(v)) => v,
        };
        Ok(JsonFilter {
            field: c.field,
            op: c.op,
            value,
            action: c.action,
        })
    }

    /// Whether the condition holds for `payload`; `None` if it is not JSON.
    fn matches(&self, payload: &[u8]) -> Option<bool> {
        let doc: Value = serde_json::from_slice(payload).ok()?;
        Some(match doc.pointer(&self.field) {
            None => false,
            Some(field) => eval(self.op, field, &self.value),
        })
    }

    fn decide(&self, payload: &[u8]) -> FilterDecision {
        let matched = match self.matches(payload) {
            Some(m) => m,
            None => {
                metrics::add("not_json", 1);
                false
            }
        };
        if matched {
            metrics::add("matched", 1);
        }
        let keep = matched == (self.action == Action::Keep);
        if keep {
            FilterDecision::Keep
        } else {
            metrics::add("skipped", 1);
            FilterDecision::Skip
        }
    }
}

/// Evaluates `field <op> operand`.
fn eval(op: Op, field: &Value, operand: &Value) -> bool {
    match op {
        Op::Exists => true,
        Op::Eq => json_eq(field, operand),
        Op::Ne => !json_eq(field, operand),
        Op::Gt => compare(field, operand) == Some(Ordering::Greater),
        Op::Gte => matches!(
            compare(field, operand),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Lt => compare(field, operand) == Some(Ordering::Less),
        Op::Lte => matches!(
            compare(field, operand),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Op::Contains => match (field, operand) {
            (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
            (Value::Array(items), v) => items.iter().any(|item| json_eq(item, v)),
            _ => false,
        },
        Op::In => match operand {
            Value::Array(items) => items.iter().any(|item| json_eq(field, item)),
            _ => false,
        },
    }
}

/// Orders two numbers or two strings; `None` for any other pair.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// Orders two JSON numbers exactly when both are integers, else as `f64`.
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    // One side is a u64 above i64::MAX and the other a negative integer.
    match (a.as_i64(), b.as_u64(), a.as_u64(), b.as_i64()) {
        (Some(_), Some(_), None, _) => return Some(Ordering::Less),
        (_, None, Some(_), Some(_)) => return Some(Ordering::Greater),
        _ => {}
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// JSON equality in which numbers compare by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

impl Filter for JsonFilter {
    fn new(config: &str) -> Result<Self, String> {
        JsonFilter::parse(config)
    }

    fn filter(&mut self, msg: Message) -> FilterDecision {
        self.decide(&msg.payload)
    }
}

export_filter!(JsonFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_plugin::testing;

    fn decide(config: &str, payload: &str) -> FilterDecision {
        JsonFilter::parse(config)
            .unwrap()
            .decide(payload.as_bytes())
    }

    fn keeps(config: &str, payload: &str) -> bool {
        decide(config, payload) == FilterDecision::Keep
    }

    #[test]
    fn numeric_ops() {
        let gt = r#"{"field": "/amount", "op": "gt", "value": 100}"#;
        assert!(keeps(gt, r#"{"amount": 150}"#));
        assert!(keeps(gt, r#"{"amount": 100.5}"#));
        assert!(!keeps(gt, r#"{"amount": 100}"#));
        assert!(!keeps(gt, r#"{"amount": "150"}"#));
        let gte = r#"{"field": "/amount", "op": "gte", "value": 100}"#;
        assert!(keeps(gte, r#"{"amount": 100.0}"#));
        let lt = r#"{"field": "/a/b", "op": "lt", "value": -1}"#;
        assert!(keeps(lt, r#"{"a": {"b": -2}}"#));
        assert!(!keeps(lt, r#"{"a": {"b": 18446744073709551615}}"#));
        let lte = r#"{"field": "/n", "op": "lte", "value": 18446744073709551615}"#;
        assert!(keeps(lte, r#"{"n": -5}"#));
    }

    #[test]
    fn equality_and_strings() {
        let eq = r#"{"field": "/tier", "op": "eq", "value": "gold"}"#;
        assert!(keeps(eq, r#"{"tier": "gold"}"#));
        assert!(!keeps(eq, r#"{"tier": "silver"}"#));
        let eq_num = r#"{"field": "/n", "op": "eq", "value": 1}"#;
        assert!(keeps(eq_num, r#"{"n": 1.0}"#));
        let ne = r#"{"field": "/tier", "op": "ne", "value": "gold"}"#;
        assert!(keeps(ne, r#"{"tier": "silver"}"#));
        assert!(
            !keeps(ne, r#"{"other": 1}"#),
            "a missing field never matches"
        );
        let lt = r#"{"field": "/d", "op": "lt", "value": "2024-01-01"}"#;
        assert!(keeps(lt, r#"{"d": "2023-12-31"}"#));
    }

    #[test]
    fn exists_contains_in() {
        let exists = r#"{"field": "/x", "op": "exists"}"#;
        assert!(keeps(exists, r#"{"x": null}"#));
        assert!(!keeps(exists, r#"{"y": 1}"#));
        let contains = r#"{"field": "/tags", "op": "contains", "value": "vip"}"#;
        assert!(keeps(contains, r#"{"tags": ["a", "vip"]}"#));
        assert!(keeps(contains, r#"{"tags": "very vip customer"}"#));
        assert!(!keeps(contains, r#"{"tags": ["a"]}"#));
        let contains_num = r#"{"field": "/ids", "op": "contains", "value": 3}"#;
        assert!(keeps(contains_num, r#"{"ids": [1, 3.0]}"#));
        let r#in = r#"{"field": "/c", "op": "in", "value": ["de", "fr"]}"#;
        assert!(keeps(r#in, r#"{"c": "fr"}"#));
        assert!(!keeps(r#in, r#"{"c": "it"}"#));
        let arr = r#"{"field": "/0", "op": "eq", "value": 7}"#;
        assert!(keeps(arr, "[7, 8]"));
    }

    #[test]
    fn skip_action_and_non_json() {
        let skip = r#"{"field": "/debug", "op": "eq", "value": true, "action": "skip"}"#;
        assert_eq!(decide(skip, r#"{"debug": true}"#), FilterDecision::Skip);
        assert_eq!(decide(skip, r#"{"debug": false}"#), FilterDecision::Keep);
        assert_eq!(decide(skip, "not json"), FilterDecision::Keep);
        let keep = r#"{"field": "/debug", "op": "exists"}"#;
        assert_eq!(decide(keep, "not json"), FilterDecision::Skip);
        assert_eq!(testing::metric("not_json"), 2);
        assert_eq!(testing::metric("matched"), 1);
        assert_eq!(testing::metric("skipped"), 2);
    }

    #[test]
    fn bad_configs() {
        for bad in [
            "",
            "nope",
            r#"{"op": "eq", "value": 1}"#,
            r#"{"field": "amount", "op": "eq", "value": 1}"#,
            r#"{"field": "/a", "op": "between", "value": 1}"#,
            r#"{"field": "/a", "op": "eq"}"#,
            r#"{"field": "/a", "op": "exists", "value": 1}"#,
            r#"{"field": "/a", "op": "gt", "value": [1]}"#,
            r#"{"field": "/a", "op": "in", "value": 1}"#,
            r#"{"field": "/a", "op": "eq", "value": 1, "action": "drop"}"#,
            r#"{"field": "/a", "op": "eq", "value": 1, "extra": 1}"#,
        ] {
            let err = JsonFilter::parse(bad).unwrap_err();
            assert!(err.contains("json-filter"), "{bad}: {err}");
        }
    }
}
