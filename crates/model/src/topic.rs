use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ModelError, shown};
use crate::message::limits::MAX_TOPIC_LEN;

/// A validated topic name: dot-separated tokens of `[A-Za-z0-9_-]+`, at most
/// [`MAX_TOPIC_LEN`] bytes. The first token may start with `$`; such names are
/// reserved for the system (`$sys.*`, `$dlq.<topic>`). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this topic is reserved for the system (starts with `$`).
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The tokens of this topic.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_len(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err("is longer than 255 bytes");
    }
    Ok(())
}

impl FromStr for Topic {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = |reason| ModelError::InvalidTopic {
            name: shown(s),
            reason,
        };
        check_len(s).map_err(bad)?;
        for (i, token) in s.split('.').enumerate() {
            let token = if i == 0 {
                token.strip_prefix('$').unwrap_or(token)
            } else {
                token
            };
            if !valid_token(token) {
                return Err(bad(if token.is_empty() {
                    "has an empty token"
                } else {
                    "tokens may hold only A-Z, a-z, 0-9, '_' and '-'"
                }));
            }
        }
        Ok(Topic(Arc::from(s)))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", &self.0)
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Token {
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Rest,
}

/// A subscription or binding pattern: tokens where `*` matches exactly one
/// token and a final `>` matches one or more trailing tokens. A wildcard in
/// the first position does not match a reserved (`$`) first token, so
/// `>` never delivers system topics by accident; subscribe to `$sys.>` to see
/// them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    text: Arc<str>,
    tokens: Box<[Token]>,
    /// No wildcard: the pattern matches its own text only.
    exact: bool,
}

impl TopicPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The single topic this pattern matches, when it holds no wildcard.
    pub fn exact(&self) -> Option<Topic> {
        self.exact.then(|| Topic(self.text.clone()))
    }

    /// The pattern's tokens before its first wildcard, as written (`a.b`
    /// for `a.b.>` and `a.b.*.d`, the whole pattern when it has no
    /// wildcard); `None` when it starts with one. Every topic the pattern
    /// matches starts with these tokens.
    pub fn literal_prefix(&self) -> Option<&str> {
        let n = self
            .tokens
            .iter()
            .take_while(|t| matches!(t, Token::Literal(_)))
            .count();
        if n == 0 {
            return None;
        }
        if n == self.tokens.len() {
            return Some(&self.text);
        }
        let end = self.text.match_indices('.').nth(n - 1).map(|(i, _)| i)?;
        Some(&self.text[..end])
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_name(topic.as_str())
    }

    /// Whether a topic name matches this pattern, without building a
    /// [`Topic`]. The name is assumed valid (for example read back from the
    /// store); an invalid name simply does not match as a valid one would.
    pub fn matches_name(&self, name: &str) -> bool {
        if self.exact {
            // Every delivery and every message a reader passes over asks:
            // one comparison instead of a walk over the tokens.
            return name == &*self.text;
        }
        // Tokens split on the byte: `.` is ASCII, so this is the same split
        // as `str::split('.')` without its UTF-8 searcher.
        let mut it = name.as_bytes().split(|&b| b == b'.');
        for (i, pat) in self.tokens.iter().enumerate() {
            match pat {
                Token::Literal(lit) => match it.next() {
                    Some(t) if t == lit.as_bytes() => {}
                    _ => return false,
                },
                Token::One => match it.next() {
                    Some(t) if !(i == 0 && t.first() == Some(&b'$')) => {}
                    _ => return false,
                },
                Token::Rest => {
                    return match it.next() {
                        Some(t) => !(i == 0 && t.first() == Some(&b'$')),
                        None => false,
                    };
                }
            }
        }
        it.next().is_none()
    }

    /// Whether this pattern matches every topic that `other` matches, so
    /// that a permission granted for this pattern also grants `other`:
    /// `orders.>` covers `orders.*.created` and `orders.eu`, `*.eu`
    /// covers `orders.eu`, but `orders.*` does not cover `orders.>` (which
    /// also matches `orders.eu.created`) and `>` does not cover `$sys.>`
    /// (a wildcard never matches a reserved first token).
    ///
    /// Tokens are drawn from an unbounded alphabet, so a wildcard of
    /// `other` is covered only by a wildcard of this pattern. Every pattern
    /// covers itself.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        covers_tokens(&self.tokens, &other.tokens)
    }

    /// Whether this pattern ends with `>`.
    fn is_open(&self) -> bool {
        matches!(self.tokens.last(), Some(Token::Rest))
    }
}

/// Whether the tokens `a` match every topic the tokens `b` match (see
/// [`TopicPattern::covers`]).
fn covers_tokens(a: &[Token], b: &[Token]) -> bool {
    let reserved = |t: &Token| matches!(t, Token::Literal(l) if l.starts_with('$'));
    for (i, at) in a.iter().enumerate() {
        // `b` is shorter: its topics are shorter than any `a` matches.
        let Some(bt) = b.get(i) else {
            return false;
        };
        match (at, bt) {
            // The rest of `a` takes any tokens, as long as there is one
            // (`b` has one here), except a reserved first token.
            (Token::Rest, _) => return !(i == 0 && reserved(bt)),
            // `b` goes on with any number of tokens; `a` does not.
            (_, Token::Rest) => return false,
            (Token::Literal(x), Token::Literal(y)) if x == y => {}
            (Token::Literal(_), _) => return false,
            (Token::One, Token::Literal(_)) if i == 0 && reserved(bt) => return false,
            (Token::One, Token::Literal(_) | Token::One) => {}
        }
    }
    // `a` has no `>`: its topics have exactly its length.
    a.len() == b.len()
}

impl FromStr for TopicPattern {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = |reason| ModelError::InvalidPattern {
            pattern: shown(s),
            reason,
        };
        check_len(s).map_err(bad)?;
        let parts: Vec<&str> = s.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                ">" => return Err(bad("'>' may only be the last token")),
                lit => {
                    let bare = if i == 0 {
                        lit.strip_prefix('$').unwrap_or(lit)
                    } else {
                        lit
                    };
                    if !valid_token(bare) {
                        return Err(bad(if bare.is_empty() {
                            "has an empty token"
                        } else {
                            "tokens are '*', '>' or A-Z, a-z, 0-9, '_' and '-'"
                        }));
                    }
                    Token::Literal(lit.into())
                }
            };
            tokens.push(token);
        }
        Ok(TopicPattern {
            text: Arc::from(s),
            exact: tokens.iter().all(|t| matches!(t, Token::Literal(_))),
            tokens: tokens.into(),
        })
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({})", &self.text)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of patterns, as one subscription holds. Matches a topic when any of
/// its patterns does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSet {
    patterns: Vec<TopicPattern>,
}

impl TopicSet {
    /// Builds a set from patterns; duplicates are removed.
    pub fn new(mut patterns: Vec<TopicPattern>) -> Self {
        patterns.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        patterns.dedup();
        TopicSet { patterns }
    }

    /// The patterns of this set.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// Whether any pattern matches `topic`.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_name(topic.as_str())
    }

    /// Whether any pattern matches a topic name (see [`TopicPattern::matches_name`]).
    pub fn matches_name(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches_name(name))
    }

    /// Whether the patterns of this set together match every topic that
    /// `pattern` matches (see [`TopicPattern::covers`]).
    ///
    /// One pattern of the set covering `pattern` is enough, and it is also
    /// necessary for a pattern without `>`: a topic whose wildcard tokens
    /// are fresh names matches only patterns with wildcards there. A
    /// pattern ending with `>` matches topics of every length from its
    /// own on, and patterns of different lengths may share them out (`a.*`
    /// and `a.*.>` together cover `a.>`); so it is split into one pattern
    /// per length, with `*` in place of `>`, up to one token longer than
    /// the longest pattern of the set, beyond which the answer no longer
    /// changes.
    pub fn covers(&self, pattern: &TopicPattern) -> bool {
        if self.patterns.iter().any(|a| a.covers(pattern)) {
            return true;
        }
        if !pattern.is_open() {
            return false;
        }
        let fixed = &pattern.tokens[..pattern.tokens.len() - 1];
        let longest = self
            .patterns
            .iter()
            .map(|a| a.tokens.len())
            .max()
            .unwrap_or(0);
        let mut expanded: Vec<Token> = fixed.to_vec();
        expanded.push(Token::One);
        while expanded.len() <= longest.max(pattern.tokens.len()) + 1 {
            if !self
                .patterns
                .iter()
                .any(|a| covers_tokens(&a.tokens, &expanded))
            {
                return false;
            }
            expanded.push(Token::One);
        }
        true
    }

    /// Whether this set covers every pattern of `other`.
    pub fn covers_set(&self, other: &TopicSet) -> bool {
        other.patterns.iter().all(|p| self.covers(p))
    }

    /// The topics this set names exactly, when no pattern holds a wildcard.
    pub fn exact_topics(&self) -> Option<Vec<Topic>> {
        self.patterns.iter().map(TopicPattern::exact).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        s.parse().unwrap()
    }
    fn p(s: &str) -> TopicPattern {
        s.parse().unwrap()
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        assert_eq!(p("orders.eu").literal_prefix(), Some("orders.eu"));
        assert_eq!(p("orders.>").literal_prefix(), Some("orders"));
        assert_eq!(p("a.b.*.d").literal_prefix(), Some("a.b"));
        assert_eq!(p("a.b.c.>").literal_prefix(), Some("a.b.c"));
        assert_eq!(p(">").literal_prefix(), None);
        assert_eq!(p("*.eu").literal_prefix(), None);
        // Every topic a pattern matches starts with its prefix's tokens.
        for (pat, topic) in [("a.b.*.d", "a.b.x.d"), ("orders.>", "orders.eu.x")] {
            let pat = p(pat);
            let prefix = pat.literal_prefix().unwrap();
            assert!(pat.matches(&t(topic)));
            assert!(topic.starts_with(&format!("{prefix}.")));
        }
    }

    #[test]
    fn topic_validation() {
        for ok in [
            "a",
            "orders.eu.created",
            "A-b_c.9",
            "$sys.cluster",
            "$dlq.orders.eu",
        ] {
            assert!(ok.parse::<Topic>().is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a/b", "a.*", "a.>", "$", "a.$b", "é", &long,
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad}");
        }
        assert!("a".repeat(255).parse::<Topic>().is_ok());
    }

    #[test]
    fn pattern_validation() {
        for ok in ["a", "*", ">", "a.*.c", "a.>", "*.>", "$sys.>"] {
            assert!(ok.parse::<TopicPattern>().is_ok(), "{ok}");
        }
        for bad in ["", "a.>.b", ">.a", "a..b", "a*", "a.b*", "a.>>", "a. b"] {
            assert!(bad.parse::<TopicPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn star_matches_exactly_one_token() {
        let pat = p("orders.*.created");
        assert!(pat.matches(&t("orders.eu.created")));
        assert!(!pat.matches(&t("orders.created")));
        assert!(!pat.matches(&t("orders.eu.west.created")));
        assert!(!pat.matches(&t("orders.eu.created.x")));
        assert!(p("*").matches(&t("a")));
        assert!(!p("*").matches(&t("a.b")));
    }

    #[test]
    fn rest_matches_one_or_more_trailing_tokens() {
        let pat = p("orders.>");
        assert!(pat.matches(&t("orders.eu")));
        assert!(pat.matches(&t("orders.eu.created.x")));
        assert!(!pat.matches(&t("orders")));
        assert!(!pat.matches(&t("ordersx.eu")));
        assert!(p(">").matches(&t("a.b.c")));
        assert!(p("*.b.>").matches(&t("a.b.c.d")));
        assert!(!p("*.b.>").matches(&t("a.b")));
    }

    #[test]
    fn literals_and_prefixes() {
        assert!(p("a.b").matches(&t("a.b")));
        assert!(!p("a.b").matches(&t("a.bc")));
        assert!(!p("a.b").matches(&t("a")));
        assert!(!p("a.b").matches(&t("a.b.c")));
        assert_eq!(p("a.b").exact(), Some(t("a.b")));
        assert_eq!(p("a.*").exact(), None);
    }

    /// The matcher against the grammar read token by token, over every
    /// pattern and name built from a few tokens.
    #[test]
    fn matching_agrees_with_the_token_grammar() {
        fn reference(pattern: &str, name: &str) -> bool {
            let (pat, toks): (Vec<&str>, Vec<&str>) =
                (pattern.split('.').collect(), name.split('.').collect());
            for (i, p) in pat.iter().enumerate() {
                let reserved = |t: &str| i == 0 && t.starts_with('$');
                match *p {
                    ">" => return toks.len() > i && !reserved(toks[i]),
                    "*" if toks.get(i).is_some_and(|t| !reserved(t)) => {}
                    lit if toks.get(i) == Some(&lit) => {}
                    _ => return false,
                }
            }
            toks.len() == pat.len()
        }
        let words = ["a", "b", "$s"];
        let mut names: Vec<String> = Vec::new();
        for n in 1..=3 {
            let mut all = vec![String::new()];
            for _ in 0..n {
                all = all
                    .iter()
                    .flat_map(|p| words.iter().map(move |w| format!("{p}.{w}")))
                    .collect();
            }
            names.extend(all.into_iter().map(|n| n[1..].to_owned()));
        }
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !n[1..].contains('$'))
            .collect();
        let mut patterns: Vec<String> = names.clone();
        for n in &names {
            let parts: Vec<&str> = n.split('.').collect();
            for i in 0..parts.len() {
                let mut star = parts.clone();
                star[i] = "*";
                patterns.push(star.join("."));
                let mut rest = parts[..i].to_vec();
                rest.push(">");
                patterns.push(rest.join("."));
            }
        }
        for pat in &patterns {
            let parsed = p(pat);
            for name in &names {
                assert_eq!(
                    parsed.matches(&t(name)),
                    reference(pat, name),
                    "{pat} against {name}"
                );
            }
        }
    }

    #[test]
    fn wildcards_do_not_match_reserved_first_token() {
        assert!(!p(">").matches(&t("$sys.cluster")));
        assert!(!p("*.cluster").matches(&t("$sys.cluster")));
        assert!(p("$sys.>").matches(&t("$sys.cluster")));
        assert!(p("$dlq.*").matches(&t("$dlq.orders")));
    }

    #[test]
    fn covers_by_examples() {
        for (a, b) in [
            ("orders.>", "orders.*.created"),
            ("orders.>", "orders.eu"),
            ("orders.>", "orders.>"),
            ("orders.>", "orders.*.>"),
            ("*.eu", "orders.eu"),
            ("*.*", "*.eu"),
            (">", "orders.>"),
            (">", "*"),
            (">", "*.>"),
            ("*.>", "a.b.>"),
            ("a.b", "a.b"),
            ("$sys.>", "$sys.cluster"),
            ("$sys.*", "$sys.*"),
            ("$dlq.>", "$dlq.orders.*"),
        ] {
            assert!(p(a).covers(&p(b)), "{a} should cover {b}");
        }
        for (a, b) in [
            ("orders.*", "orders.>"),
            ("orders.*", "orders.eu.x"),
            ("orders.eu", "orders.*"),
            ("orders.>", "orders"),
            ("orders.>", ">"),
            ("*.>", ">"),
            ("a.*.>", "a.>"),
            (">", "$sys.cluster"),
            (">", "$sys.>"),
            ("*", "$sys"),
            ("*.cluster", "$sys.cluster"),
            ("a.b", "a.b.c"),
            ("a.b.c", "a.b"),
            ("a.*", "b.*"),
            ("$sys.>", "*.cluster"),
        ] {
            assert!(!p(a).covers(&p(b)), "{a} should not cover {b}");
        }
    }

    #[test]
    fn a_set_covers_what_its_patterns_share_out() {
        let set = |ps: &[&str]| TopicSet::new(ps.iter().map(|s| p(s)).collect());
        assert!(set(&["a.*", "a.*.>"]).covers(&p("a.>")));
        assert!(set(&["a.*", "a.*.*", "a.*.*.>"]).covers(&p("a.>")));
        assert!(!set(&["a.*", "a.*.*.>"]).covers(&p("a.>")));
        assert!(set(&["*", "*.>"]).covers(&p(">")));
        assert!(!set(&["*", "*.>"]).covers(&p("$sys.>")));
        assert!(!set(&["a.x", "a.y"]).covers(&p("a.*")));
        assert!(set(&["a.x", "b.>"]).covers_set(&set(&["a.x", "b.*"])));
        assert!(!set(&["a.x", "b.>"]).covers_set(&set(&["a.x", "c"])));
        assert!(!set(&[]).covers(&p("a")));
    }

    /// Every valid pattern of up to `max_len` tokens over the literals
    /// `a`, `b` (and `$r` first).
    fn small_patterns(max_len: usize) -> Vec<TopicPattern> {
        let mut out: Vec<Vec<&str>> = vec![vec![]];
        let mut all = Vec::new();
        for len in 1..=max_len {
            let mut next = Vec::new();
            for prefix in &out {
                let first = ["a", "b", "*", ">", "$r"];
                let later = ["a", "b", "*", ">"];
                for tok in if len == 1 { &first[..] } else { &later[..] } {
                    if prefix.last() == Some(&">") {
                        continue;
                    }
                    let mut v = prefix.clone();
                    v.push(tok);
                    next.push(v);
                }
            }
            all.extend(next.iter().filter_map(|v| v.join(".").parse().ok()));
            out = next
                .into_iter()
                .filter(|v| v.last() != Some(&">"))
                .collect();
        }
        all
    }

    /// Every topic of up to `max_len` tokens over `a`, `b`, a token no
    /// pattern names (`c`), and `$r` first.
    fn small_topics(max_len: usize) -> Vec<String> {
        let mut level: Vec<String> = ["a", "b", "c", "$r"].map(String::from).to_vec();
        let mut all = level.clone();
        for _ in 1..max_len {
            level = level
                .iter()
                .flat_map(|t| ["a", "b", "c"].map(|x| format!("{t}.{x}")))
                .collect();
            all.extend(level.iter().cloned());
        }
        all
    }

    /// The topics of `topics` that `pattern` matches, as a bit set.
    fn matched(pattern: &TopicPattern, topics: &[String]) -> Vec<u64> {
        let mut bits = vec![0u64; topics.len().div_ceil(64)];
        for (i, t) in topics.iter().enumerate() {
            if pattern.matches_name(t) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        bits
    }

    fn subset(small: &[u64], large: &[u64]) -> bool {
        small.iter().zip(large).all(|(s, l)| s & !l == 0)
    }

    /// `covers` agrees with enumeration: a pattern covers another exactly
    /// when it matches every topic the other matches. Patterns of up to 3
    /// tokens are checked against topics of up to 5 tokens, which is long
    /// enough to tell `>` from any run of `*`; the token `c` stands for
    /// every name no pattern mentions.
    #[test]
    fn covers_agrees_with_brute_force() {
        let patterns = small_patterns(3);
        let topics = small_topics(5);
        let sets: Vec<Vec<u64>> = patterns.iter().map(|q| matched(q, &topics)).collect();
        let mut checked = 0;
        for (a, sa) in patterns.iter().zip(&sets) {
            for (b, sb) in patterns.iter().zip(&sets) {
                assert_eq!(a.covers(b), subset(sb, sa), "{a} covers {b}?");
                checked += 1;
            }
        }
        assert!(checked > 4000, "{checked} pairs");
    }

    /// The same for sets of two patterns, whose union may cover a pattern
    /// that neither covers alone.
    #[test]
    fn set_covers_agrees_with_brute_force() {
        let patterns = small_patterns(3);
        let topics = small_topics(5);
        let sets: Vec<Vec<u64>> = patterns.iter().map(|q| matched(q, &topics)).collect();
        let mut shared_out = 0;
        for (i, a1) in patterns.iter().enumerate() {
            for (j, a2) in patterns.iter().enumerate().skip(i) {
                let union: Vec<u64> = sets[i].iter().zip(&sets[j]).map(|(x, y)| x | y).collect();
                let set = TopicSet::new(vec![a1.clone(), a2.clone()]);
                for (b, sb) in patterns.iter().zip(&sets) {
                    let want = subset(sb, &union);
                    assert_eq!(set.covers(b), want, "{{{a1}, {a2}}} covers {b}?");
                    if want && !a1.covers(b) && !a2.covers(b) {
                        shared_out += 1;
                    }
                }
            }
        }
        assert!(
            shared_out > 0,
            "no case where two patterns share a cover out"
        );
    }

    #[test]
    fn topic_set() {
        let set = TopicSet::new(vec![p("a.*"), p("b"), p("a.*")]);
        assert_eq!(set.patterns().len(), 2);
        assert!(set.matches(&t("a.x")) && set.matches(&t("b")) && !set.matches(&t("c")));
        assert_eq!(set.exact_topics(), None);
        assert_eq!(
            TopicSet::new(vec![p("b"), p("a")]).exact_topics(),
            Some(vec![t("a"), t("b")])
        );
    }
}
