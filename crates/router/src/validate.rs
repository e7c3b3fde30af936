use switchyard_model::IDEMPOTENCY_HEADER;
use switchyard_model::limits::{
    MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_HEADERS, MAX_HEADERS_TOTAL, MAX_KEY_LEN,
};

use crate::{InvalidMessage, PublishRequest};

/// Longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Checks a message against the model's limits and the node's payload
/// limit. Pure: nothing is stored or changed.
pub fn validate(req: &PublishRequest, max_payload: usize) -> Result<(), InvalidMessage> {
    if req.topic.is_reserved() {
        return Err(InvalidMessage::ReservedTopic(req.topic.to_string()));
    }
    if req.payload.len() > max_payload {
        return Err(InvalidMessage::PayloadTooLarge {
            size: req.payload.len(),
            max: max_payload,
        });
    }
    if let Some(k) = &req.key
        && k.len() > MAX_KEY_LEN
    {
        return Err(InvalidMessage::KeyTooLong {
            size: k.len(),
            max: MAX_KEY_LEN,
        });
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(InvalidMessage::HeadersTooLarge(format!(
            "{} headers, at most {MAX_HEADERS} are allowed",
            req.headers.len()
        )));
    }
    let mut total = 0;
    for h in &req.headers {
        if h.name.is_empty() || h.name.len() > MAX_HEADER_NAME {
            return Err(InvalidMessage::InvalidHeader(format!(
                "header names are 1 to {MAX_HEADER_NAME} bytes long"
            )));
        }
        if !h
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(InvalidMessage::InvalidHeader(format!(
                "header name {:?} is not an HTTP token",
                h.name
            )));
        }
        if h.name.eq_ignore_ascii_case(IDEMPOTENCY_HEADER) {
            return Err(InvalidMessage::InvalidHeader(format!(
                "header {:?} is reserved: send the key as the Idempotency-Key request header",
                h.name
            )));
        }
        if h.value.len() > MAX_HEADER_VALUE {
            return Err(InvalidMessage::HeadersTooLarge(format!(
                "header {:?} has {} bytes, at most {MAX_HEADER_VALUE} are allowed",
                h.name,
                h.value.len()
            )));
        }
        if h.value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(InvalidMessage::InvalidHeader(format!(
                "header {:?} holds control characters",
                h.name
            )));
        }
        total += h.name.len() + h.value.len();
    }
    if total > MAX_HEADERS_TOTAL {
        return Err(InvalidMessage::HeadersTooLarge(format!(
            "headers total {total} bytes, at most {MAX_HEADERS_TOTAL} are allowed"
        )));
    }
    if let Some(k) = &req.idempotency_key {
        if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
            return Err(InvalidMessage::InvalidIdempotencyKey(
                "it must be 1 to 256 bytes long",
            ));
        }
        if !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(InvalidMessage::InvalidIdempotencyKey(
                "it must be printable ASCII without spaces",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchyard_model::Header;

    use super::*;

    fn req() -> PublishRequest {
        PublishRequest::new("a.b".parse().unwrap(), Bytes::from_static(b"x"))
    }

    #[test]
    fn accepts_plain_message() {
        assert_eq!(validate(&req(), 10), Ok(()));
    }

    #[test]
    fn refuses_each_bad_field() {
        let big = PublishRequest {
            payload: Bytes::from(vec![0; 11]),
            ..req()
        };
        assert!(matches!(
            validate(&big, 10),
            Err(InvalidMessage::PayloadTooLarge { .. })
        ));
        let reserved = PublishRequest {
            topic: "$sys.x".parse().unwrap(),
            ..req()
        };
        assert!(matches!(
            validate(&reserved, 10),
            Err(InvalidMessage::ReservedTopic(_))
        ));
        let key = PublishRequest {
            key: Some(Bytes::from(vec![b'k'; MAX_KEY_LEN + 1])),
            ..req()
        };
        assert!(matches!(
            validate(&key, 10),
            Err(InvalidMessage::KeyTooLong { .. })
        ));
        let h = |n: &str, v: &str| Header {
            name: n.into(),
            value: v.into(),
        };
        let many = PublishRequest {
            headers: vec![h("a", "b"); MAX_HEADERS + 1],
            ..req()
        };
        assert!(matches!(
            validate(&many, 10),
            Err(InvalidMessage::HeadersTooLarge(_))
        ));
        let name = PublishRequest {
            headers: vec![h("a b", "c")],
            ..req()
        };
        assert!(matches!(
            validate(&name, 10),
            Err(InvalidMessage::InvalidHeader(_))
        ));
        let value = PublishRequest {
            headers: vec![h("a", "x\ny")],
            ..req()
        };
        assert!(matches!(
            validate(&value, 10),
            Err(InvalidMessage::InvalidHeader(_))
        ));
        let long = PublishRequest {
            headers: vec![h("a", &"v".repeat(MAX_HEADER_VALUE + 1))],
            ..req()
        };
        assert!(matches!(
            validate(&long, 10),
            Err(InvalidMessage::HeadersTooLarge(_))
        ));
        let idem = PublishRequest {
            idempotency_key: Some("a b".into()),
            ..req()
        };
        assert!(matches!(
            validate(&idem, 10),
            Err(InvalidMessage::InvalidIdempotencyKey(_))
        ));
    }

    #[test]
    fn the_idempotency_header_is_reserved() {
        let r = PublishRequest {
            headers: vec![Header {
                name: "Idempotency-Key".into(),
                value: "k".into(),
            }],
            ..req()
        };
        assert!(matches!(
            validate(&r, 10),
            Err(InvalidMessage::InvalidHeader(m)) if m.contains("reserved")
        ));
    }
}
