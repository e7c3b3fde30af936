//! Topic and pattern parsing and matching (crates/model/src/topic.rs).
//!
//! Input: a topic name and a pattern, separated by the first 0xff byte
//! (a byte that is never valid in either; without one, the whole input is
//! both). Parsing never panics; for what parses, matching agrees with a
//! plain reference matcher written from docs/api.md, a valid topic is a
//! pattern that matches exactly itself, and a pattern without wildcards is
//! a valid topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_model::{Topic, TopicPattern, TopicSet};

/// The matching rule as docs/api.md states it: `*` is one token, a final
/// `>` one or more tokens, a wildcard in the first position never matches
/// a `$` token, a literal matches itself.
fn reference(pattern: &str, topic: &str) -> bool {
    let pat: Vec<&str> = pattern.split('.').collect();
    let top: Vec<&str> = topic.split('.').collect();
    for (i, p) in pat.iter().enumerate() {
        let Some(t) = top.get(i) else { return false };
        let reserved_first = i == 0 && t.starts_with('$');
        match *p {
            ">" => return i + 1 == pat.len() && !reserved_first,
            "*" if reserved_first => return false,
            "*" => {}
            lit if lit != *t => return false,
            _ => {}
        }
    }
    pat.len() == top.len()
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&x| x == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);
    let topic = a.parse::<Topic>();
    let pattern = b.parse::<TopicPattern>();
    // Errors echo the input truncated to 80 bytes (escaped: at most 1 KiB).
    for e in [topic.as_ref().err(), pattern.as_ref().err()]
        .into_iter()
        .flatten()
    {
        assert!(e.to_string().len() < 1024);
    }

    if let Ok(t) = &topic {
        assert_eq!(t.as_str(), &*a);
        assert!(t.tokens().all(|tok| !tok.is_empty()));
        let own: TopicPattern = t
            .as_str()
            .parse()
            .expect("a valid topic is a valid pattern");
        assert!(own.matches(t), "{t:?} does not match itself");
        assert_eq!(own.exact().as_ref(), Some(t));
        let stars = t.tokens().map(|_| "*").collect::<Vec<_>>().join(".");
        let stars: TopicPattern = stars.parse().expect("stars are a pattern");
        assert_eq!(stars.matches(t), !t.is_reserved(), "{stars:?} {t:?}");
        let rest: TopicPattern = ">".parse().expect("> is a pattern");
        assert_eq!(rest.matches(t), !t.is_reserved());
    }

    if let Ok(p) = &pattern {
        assert_eq!(p.as_str(), &*b);
        assert_eq!(p.as_str().parse::<TopicPattern>().as_ref(), Ok(p));
        // An arbitrary (possibly invalid) name never panics the matcher.
        let _ = p.matches_name(&a);
        if let Some(exact) = p.exact() {
            assert_eq!(
                exact.as_str().parse::<Topic>().as_ref(),
                Ok(&exact),
                "a pattern without wildcards is a valid topic"
            );
        }
        if let Ok(t) = &topic {
            let m = p.matches(t);
            assert_eq!(m, reference(p.as_str(), t.as_str()), "{p:?} {t:?}");
            assert_eq!(m, p.matches_name(t.as_str()));
            assert_eq!(m, TopicSet::new(vec![p.clone()]).matches(t));
            if let Some(exact) = p.exact() {
                assert_eq!(m, exact == *t);
            }
        }
    }
});
