//! Query-string parsing: strict, so that a typo is an error rather than a
//! silently ignored parameter.

use switchyard_model::{Cursor, Timestamp, TopicPattern, TopicSet};
use switchyard_router::Start;

use crate::problem::Problem;

/// Decoded `name=value` pairs.
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses the query and refuses parameters not in `allowed`. The
    /// token parameter (`authorization`) is taken by every endpoint and
    /// read by the authorization step, so it is left out here.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, Problem> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .filter(|(k, _)| k != crate::auth::QUERY_PARAMETER)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.len() > 256 {
            return Err(Problem::bad_request(
                "invalid_query",
                "too many query parameters (at most 256)",
            ));
        }
        for (k, _) in &pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(Problem::bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {k:?}; this endpoint takes {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Query { pairs })
    }

    /// Every value of a repeatable parameter.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter that may appear at most once.
    pub fn one<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, Problem> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("query parameter {name:?} may appear only once"),
            ));
        }
        Ok(first)
    }

    /// The `topic` patterns (at least one).
    pub fn topics(&self) -> Result<TopicSet, Problem> {
        let patterns = self
            .all("topic")
            .map(str::parse::<TopicPattern>)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err(Problem::bad_request(
                "missing_topic",
                "give at least one topic=<pattern> parameter",
            ));
        }
        if patterns.len() > 64 {
            return Err(Problem::bad_request(
                "invalid_query",
                "at most 64 topic patterns per request",
            ));
        }
        Ok(TopicSet::new(patterns))
    }

    /// A bounded integer parameter.
    pub fn number(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, Problem> {
        let Some(raw) = self.one(name)? else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(Problem::bad_request(
                "invalid_parameter",
                format!("{name}={raw:?} is not a whole number from {min} to {max}"),
            )),
        }
    }
}

/// Parses a `from` value: `earliest`, `latest`, an RFC 3339 time or a cursor.
pub(crate) fn parse_start(raw: &str) -> Result<Start, Problem> {
    match raw {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        t if t.contains(':') => Ok(Start::Time(Timestamp::parse_rfc3339(t)?)),
        c => Ok(Start::After(c.parse::<Cursor>()?)),
    }
}
