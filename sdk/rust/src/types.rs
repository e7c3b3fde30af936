//! Plain Rust types for the data a hook receives and returns.

/// One message header.
///
/// Names are lowercase ASCII and values are UTF-8, as published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// The header name, such as `content-type`.
    pub name: String,
    /// The header value.
    pub value: String,
}

impl Header {
    /// Builds a header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A message as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The topic the message was published to, such as `orders.eu`.
    pub topic: String,
    /// The message key, if the publisher gave one.
    pub key: Option<String>,
    /// Application headers in the order the publisher gave them.
    pub headers: Vec<Header>,
    /// The payload bytes, unchanged.
    pub payload: Vec<u8>,
    /// Publish time in milliseconds since the Unix epoch. For `route` it is
    /// the time the node received the message.
    pub timestamp_ms: u64,
}

impl Message {
    /// The value of the first header called `name`, compared without regard
    /// to ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_label(&self.headers, name)
    }

    /// The payload as UTF-8 text, or `None` if it is not valid UTF-8.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The payload parsed as JSON into `T`.
    ///
    /// Use `serde_json::Value` for `T` to inspect an arbitrary document.
    #[cfg(feature = "json")]
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// One member of a consumer group that a `pick` hook may choose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidate {
    /// The member's id, unique within the call.
    pub id: String,
    /// Messages delivered to this member and not yet acknowledged.
    pub inflight: u32,
    /// The member's weight (1 unless the member asked for another).
    pub weight: u32,
    /// Labels the member connected with, such as `zone=eu-1`, as name/value
    /// pairs.
    pub labels: Vec<Header>,
}

impl Candidate {
    /// The value of the first label called `name`, compared without regard
    /// to ASCII case.
    pub fn label(&self, name: &str) -> Option<&str> {
        find_label(&self.labels, name)
    }
}

fn find_label<'a>(list: &'a [Header], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// What a `route` hook decides for a message before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Store and deliver the message as published.
    Deliver,
    /// Do not store the message. The reason is returned to the publisher.
    Drop(String),
    /// Store the message on these topics instead of its own: 1 to 16 valid
    /// topic names; `$`-prefixed system topics are refused by the node.
    Reroute(Vec<String>),
    /// Store and deliver the message with replaced headers and/or payload.
    /// A field left as `None` keeps the original.
    Replace {
        /// The new header list, replacing all original headers.
        headers: Option<Vec<Header>>,
        /// The new payload.
        payload: Option<Vec<u8>>,
    },
}

impl RouteDecision {
    /// `Drop` with the given reason.
    pub fn drop_with(reason: impl Into<String>) -> Self {
        RouteDecision::Drop(reason.into())
    }

    /// `Reroute` to a single topic.
    pub fn reroute_to(topic: impl Into<String>) -> Self {
        RouteDecision::Reroute(vec![topic.into()])
    }

    /// `Replace` of the payload only; headers are kept.
    pub fn replace_payload(payload: Vec<u8>) -> Self {
        RouteDecision::Replace {
            headers: None,
            payload: Some(payload),
        }
    }

    /// `Replace` of the headers only; the payload is kept.
    pub fn replace_headers(headers: Vec<Header>) -> Self {
        RouteDecision::Replace {
            headers: Some(headers),
            payload: None,
        }
    }
}

/// What a `filter` hook decides for one message and one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    /// Write the message to the subscriber unchanged.
    Keep,
    /// Do not write the message to this subscriber; it still advances the
    /// subscriber's position.
    Skip,
    /// Write the message to this subscriber with this payload instead.
    Transform(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_label_lookup() {
        let msg = Message {
            headers: vec![Header::new("region", "eu"), Header::new("region", "us")],
            payload: b"{\"a\":1}".to_vec(),
            ..Default::default()
        };
        assert_eq!(msg.header("Region"), Some("eu"));
        assert_eq!(msg.header("zone"), None);
        assert_eq!(msg.payload_str(), Some("{\"a\":1}"));
        let c = Candidate {
            labels: vec![Header::new("weight", "3")],
            ..Default::default()
        };
        assert_eq!(c.label("weight"), Some("3"));
    }

    #[cfg(feature = "json")]
    #[test]
    fn payload_json() {
        let msg = Message {
            payload: b"{\"a\":[1,2]}".to_vec(),
            ..Default::default()
        };
        let v: serde_json::Value = msg.payload_json().unwrap();
        assert_eq!(v["a"][1], 2);
        let bad = Message {
            payload: b"{".to_vec(),
            ..Default::default()
        };
        assert!(bad.payload_json::<serde_json::Value>().is_err());
    }
}
