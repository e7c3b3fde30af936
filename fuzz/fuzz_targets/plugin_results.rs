//! Validation of what plugins return (crates/plugin-host/src/binding.rs,
//! crates/router/src/validate.rs).
//!
//! The input builds, through `arbitrary`, a message and a plugin's answer
//! to each hook. The host's checks accept or refuse the answer, never
//! panic, and what they accept holds what they promise (reroute targets
//! are 1 to 16 distinct valid topics outside `$`, payloads within the
//! output limit, a pick index within the candidates). The router then
//! applies an accepted route answer as it does (the message with its
//! headers or payload replaced, or a copy per reroute topic) and validates
//! each result as it validates client input: accepted or refused, never a
//! panic, and what it accepts is within the model's limits.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchyard_model::limits::{MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_HEADERS, MAX_KEY_LEN};
use switchyard_model::{Header, Topic};
use switchyard_plugin_host::fuzzing::{check_filter, check_pick, check_route};
use switchyard_plugin_host::{FilterDecision, MAX_REROUTE_TOPICS, RouteDecision};
use switchyard_router::{MAX_IDEMPOTENCY_KEY, PublishRequest, validate};

/// A topic name: often one from a small set of valid and invalid names (so
/// that repeats and reserved names are common), else arbitrary text.
fn topic_name(u: &mut Unstructured<'_>) -> Result<String> {
    const NAMES: &[&str] = &[
        "orders.eu.created",
        "orders.us.created",
        "a",
        "$sys.cluster",
        "$dlq.orders",
        "a..b",
        "",
        "orders.*",
        "a.>",
    ];
    Ok(if u.ratio(1, 2)? {
        NAMES[u.choose_index(NAMES.len())?].to_owned()
    } else {
        u.arbitrary()?
    })
}

fn headers(u: &mut Unstructured<'_>) -> Result<Vec<Header>> {
    let n = u.int_in_range(0..=70)?;
    (0..n)
        .map(|_| {
            Ok(Header {
                name: u.arbitrary()?,
                value: u.arbitrary()?,
            })
        })
        .collect()
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let max_output = u.int_in_range(0..=64usize)?;
    let max_payload = u.int_in_range(0..=64usize)?;

    // The message the plugin saw.
    let topic: Topic = match topic_name(u)?.parse() {
        Ok(t) => t,
        Err(_) => "orders.eu.created".parse().expect("valid"),
    };
    let current = PublishRequest {
        topic,
        key: if u.arbitrary()? {
            Some(Bytes::from(bytes(u, 8)?))
        } else {
            None
        },
        headers: headers(u)?,
        payload: Bytes::from(bytes(u, 80)?),
        idempotency_key: u.arbitrary()?,
    };
    if validate(&current, max_payload).is_ok() {
        assert_valid(&current, max_payload);
    }

    // A route answer.
    let decision = match u.int_in_range(0..=3)? {
        0 => RouteDecision::Deliver,
        1 => RouteDecision::Drop(u.arbitrary()?),
        2 => {
            let n = u.int_in_range(0..=18)?;
            RouteDecision::Reroute((0..n).map(|_| topic_name(u)).collect::<Result<_>>()?)
        }
        _ => RouteDecision::Replace {
            headers: if u.arbitrary()? {
                Some(headers(u)?)
            } else {
                None
            },
            payload: if u.arbitrary()? {
                Some(bytes(u, 80)?)
            } else {
                None
            },
        },
    };
    match check_route(decision.clone(), max_output) {
        Ok(accepted) => {
            assert_eq!(accepted, decision);
            match accepted {
                RouteDecision::Reroute(topics) => {
                    assert!((1..=MAX_REROUTE_TOPICS).contains(&topics.len()));
                    for (i, t) in topics.iter().enumerate() {
                        let topic: Topic = t.parse().expect("an accepted reroute topic is valid");
                        assert!(!topic.is_reserved());
                        assert!(!topics[..i].contains(t));
                        let copy = PublishRequest {
                            topic,
                            ..current.clone()
                        };
                        if validate(&copy, max_payload).is_ok() {
                            assert_valid(&copy, max_payload);
                        }
                    }
                }
                RouteDecision::Replace { headers, payload } => {
                    let mut next = current.clone();
                    if let Some(h) = headers {
                        next.headers = h;
                    }
                    if let Some(p) = payload {
                        assert!(p.len() <= max_output);
                        next.payload = Bytes::from(p);
                    }
                    if validate(&next, max_payload).is_ok() {
                        assert_valid(&next, max_payload);
                    }
                }
                RouteDecision::Deliver | RouteDecision::Drop(_) => {}
            }
        }
        Err(detail) => assert!(!detail.is_empty()),
    }

    // A filter answer.
    let filter = match u.int_in_range(0..=2)? {
        0 => FilterDecision::Keep,
        1 => FilterDecision::Skip,
        _ => FilterDecision::Transform(bytes(u, 80)?),
    };
    if let Ok(FilterDecision::Transform(p)) = check_filter(filter, max_output) {
        assert!(p.len() <= max_output);
    }

    // A pick answer.
    let candidates = u.int_in_range(0..=8usize)?;
    let chosen: Option<u32> = u.arbitrary()?;
    match check_pick(chosen, candidates) {
        Ok(Some(i)) => assert!(i < candidates && chosen == Some(i as u32)),
        Ok(None) => assert_eq!(chosen, None),
        Err(_) => assert!(chosen.is_some_and(|i| i as usize >= candidates)),
    }
    Ok(())
}

/// What `validate` promises about a message it accepts.
fn assert_valid(m: &PublishRequest, max_payload: usize) {
    assert!(!m.topic.is_reserved());
    assert!(m.payload.len() <= max_payload);
    assert!(m.key.as_ref().is_none_or(|k| k.len() <= MAX_KEY_LEN));
    assert!(m.headers.len() <= MAX_HEADERS);
    for h in &m.headers {
        assert!(!h.name.is_empty() && h.name.len() <= MAX_HEADER_NAME);
        assert!(h.value.len() <= MAX_HEADER_VALUE);
        assert!(!h.name.eq_ignore_ascii_case("idempotency-key"));
        assert!(!h.value.contains(['\r', '\n', '\0']));
    }
    if let Some(k) = &m.idempotency_key {
        assert!(!k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY);
        assert!(!k.contains(' '));
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
