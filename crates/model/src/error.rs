use thiserror::Error;

/// A value that arrived from outside (a client, a peer, a config file) and
/// does not satisfy the model's rules. Parsing never changes any state, so a
/// caller may report the error and carry on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A topic name is empty, too long, has an empty token or a character
    /// outside `[A-Za-z0-9_-]`.
    #[error("invalid topic {name:?}: {reason}")]
    InvalidTopic {
        /// The offending name (truncated for display).
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A subscription or binding pattern is malformed.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The offending pattern (truncated for display).
        pattern: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A cursor string (an SSE `Last-Event-ID`, a `from` value) cannot be decoded.
    #[error("invalid cursor {cursor:?}: {reason}")]
    InvalidCursor {
        /// The offending cursor (truncated for display).
        cursor: String,
        /// Why it cannot be decoded.
        reason: &'static str,
    },
    /// A message id string cannot be decoded.
    #[error("invalid message id {id:?}")]
    InvalidMessageId {
        /// The offending id (truncated for display).
        id: String,
    },
    /// A time value is not RFC 3339 or out of range.
    #[error("invalid time {value:?}: expected RFC 3339, e.g. 2026-01-31T12:00:00Z")]
    InvalidTime {
        /// The offending value (truncated for display).
        value: String,
    },
}

/// Truncates user input before it is echoed in an error message.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
