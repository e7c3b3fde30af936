//! Binary encodings of stored values: varints and length-prefixed bytes, a
//! format byte first so that the layout can evolve.

use bytes::Bytes;
use switchyard_model::{Header, Message, MessageId, NodeId, Timestamp, Topic, varint};

use crate::StoreError;

const RECORD_V1: u8 = 1;
/// A record whose payload is held in the `staged` keyspace, under the key
/// at the record's end (a large batch's payloads are written there in
/// slices before the batch is committed; see `crate::staging`).
const RECORD_STAGED: u8 = 2;

/// The key of a payload in the `staged` keyspace: staging id ++ entry
/// index, big-endian.
pub type StagedKey = [u8; 12];

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint::put(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn get_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint::get(buf)?).ok()?;
    if buf.len() < len {
        return None;
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Some(head)
}

fn get_str<'a>(buf: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(get_bytes(buf)?).ok()
}

const CORRUPT: StoreError = StoreError::Corrupt("message record");

/// Encodes a `log` record: everything of a message but its id (the key).
pub fn encode_message(m: &Message) -> Vec<u8> {
    encode_record(m, RECORD_V1, &m.payload)
}

/// Encodes a `log` record of a message whose payload is stored apart,
/// under `staged` in the `staged` keyspace.
pub fn encode_staged_message(m: &Message, staged: &StagedKey) -> Vec<u8> {
    encode_record(m, RECORD_STAGED, staged)
}

fn encode_record(m: &Message, version: u8, tail: &[u8]) -> Vec<u8> {
    let headers: usize = m
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(32 + m.topic.as_str().len() + headers + tail.len());
    out.push(version);
    put_bytes(&mut out, m.topic.as_str().as_bytes());
    varint::put(&mut out, m.stream_seq);
    varint::put(&mut out, m.timestamp.0);
    match &m.key {
        None => varint::put(&mut out, 0),
        Some(k) => {
            varint::put(&mut out, k.len() as u64 + 1);
            out.extend_from_slice(k);
        }
    }
    varint::put(&mut out, m.headers.len() as u64);
    for h in &m.headers {
        put_bytes(&mut out, h.name.as_bytes());
        put_bytes(&mut out, h.value.as_bytes());
    }
    out.extend_from_slice(tail);
    out
}

/// The topic of a `log` record, without decoding the rest.
pub fn record_topic(buf: &[u8]) -> Result<&str, StoreError> {
    let mut b = buf.get(1..).ok_or(CORRUPT)?;
    if buf[0] != RECORD_V1 && buf[0] != RECORD_STAGED {
        return Err(CORRUPT);
    }
    get_str(&mut b).ok_or(CORRUPT)
}

/// The timestamp of a `log` record, without decoding the rest.
pub fn record_timestamp(buf: &[u8]) -> Result<Timestamp, StoreError> {
    let mut b = buf.get(1..).ok_or(CORRUPT)?;
    get_bytes(&mut b).ok_or(CORRUPT)?;
    varint::get(&mut b).ok_or(CORRUPT)?;
    varint::get(&mut b).map(Timestamp).ok_or(CORRUPT)
}

/// Decodes a `log` record stored under (origin, seq). A record whose
/// payload is stored apart gets it from `staged`, which answers `None`
/// when retention has removed it since the record was read: then so does
/// this.
pub fn decode_message(
    origin: NodeId,
    seq: u64,
    buf: &[u8],
    staged: impl FnOnce(&StagedKey) -> Result<Option<Bytes>, StoreError>,
) -> Result<Option<Message>, StoreError> {
    let (&version, mut b) = buf.split_first().ok_or(CORRUPT)?;
    if version != RECORD_V1 && version != RECORD_STAGED {
        return Err(CORRUPT);
    }
    let topic: Topic = get_str(&mut b)
        .and_then(|t| t.parse().ok())
        .ok_or(CORRUPT)?;
    let stream_seq = varint::get(&mut b).ok_or(CORRUPT)?;
    let timestamp = Timestamp(varint::get(&mut b).ok_or(CORRUPT)?);
    let key = match varint::get(&mut b).ok_or(CORRUPT)? {
        0 => None,
        n => {
            let n = usize::try_from(n - 1).map_err(|_| CORRUPT)?;
            if b.len() < n {
                return Err(CORRUPT);
            }
            let (k, rest) = b.split_at(n);
            b = rest;
            Some(Bytes::copy_from_slice(k))
        }
    };
    let n_headers = varint::get(&mut b).ok_or(CORRUPT)?;
    let mut headers = Vec::with_capacity(n_headers.min(64) as usize);
    for _ in 0..n_headers {
        let name = get_str(&mut b).ok_or(CORRUPT)?.to_owned();
        let value = get_str(&mut b).ok_or(CORRUPT)?.to_owned();
        headers.push(Header { name, value });
    }
    let payload = if version == RECORD_STAGED {
        let key: &StagedKey = b.try_into().map_err(|_| CORRUPT)?;
        match staged(key)? {
            Some(p) => p,
            None => return Ok(None),
        }
    } else {
        Bytes::copy_from_slice(b)
    };
    Ok(Some(Message {
        id: MessageId { origin, seq },
        topic,
        stream_seq,
        timestamp,
        key,
        headers,
        payload,
    }))
}

/// Value of an `index` entry: what retention and statistics need without
/// reading the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexValue {
    pub stream_seq: u64,
    pub size: u64,
    pub timestamp: Timestamp,
    /// Where the payload is stored apart, when it is: retention removes it
    /// with the record.
    pub staged: Option<StagedKey>,
}

pub fn encode_index(v: &IndexValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    varint::put(&mut out, v.stream_seq);
    varint::put(&mut out, v.size);
    varint::put(&mut out, v.timestamp.0);
    if let Some(k) = &v.staged {
        out.extend_from_slice(k);
    }
    out
}

pub fn decode_index(mut b: &[u8]) -> Result<IndexValue, StoreError> {
    let bad = || StoreError::Corrupt("index entry");
    let stream_seq = varint::get(&mut b).ok_or_else(bad)?;
    let size = varint::get(&mut b).ok_or_else(bad)?;
    let timestamp = Timestamp(varint::get(&mut b).ok_or_else(bad)?);
    let staged = match b.len() {
        0 => None,
        _ => Some(StagedKey::try_from(b).map_err(|_| bad())?),
    };
    Ok(IndexValue {
        stream_seq,
        size,
        timestamp,
        staged,
    })
}

/// Writes a fixed list of varints.
pub fn encode_u64s(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 5);
    for &v in values {
        varint::put(&mut out, v);
    }
    out
}

/// Reads exactly `N` varints.
pub fn decode_u64s<const N: usize>(
    mut b: &[u8],
    what: &'static str,
) -> Result<[u64; N], StoreError> {
    let mut out = [0u64; N];
    for v in out.iter_mut() {
        *v = varint::get(&mut b).ok_or(StoreError::Corrupt(what))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let m = Message {
            id: MessageId {
                origin: NodeId(9),
                seq: 77,
            },
            topic: "a.b".parse().unwrap(),
            stream_seq: 5,
            timestamp: Timestamp(123456789),
            key: Some(Bytes::from_static(b"k")),
            headers: vec![Header {
                name: "content-type".into(),
                value: "text/plain".into(),
            }],
            payload: Bytes::from_static(b"\x00\xffpayload"),
        };
        let enc = encode_message(&m);
        assert_eq!(record_topic(&enc).unwrap(), "a.b");
        assert_eq!(
            decode_message(NodeId(9), 77, &enc, unused).unwrap(),
            Some(m.clone())
        );
        let none = Message {
            key: None,
            headers: vec![],
            ..m.clone()
        };
        assert_eq!(
            decode_message(NodeId(9), 77, &encode_message(&none), unused).unwrap(),
            Some(none)
        );
        assert!(decode_message(NodeId(9), 77, &enc[..3], unused).is_err());
        assert!(decode_message(NodeId(9), 77, &[], unused).is_err());

        // The payload stored apart: fetched by its key, or gone.
        let key: StagedKey = *b"staged-key-1";
        let staged = encode_staged_message(&m, &key);
        assert_eq!(record_topic(&staged).unwrap(), "a.b");
        assert_eq!(record_timestamp(&staged).unwrap(), m.timestamp);
        let fetched = decode_message(NodeId(9), 77, &staged, |k| {
            assert_eq!(k, &key);
            Ok(Some(m.payload.clone()))
        });
        assert_eq!(fetched.unwrap(), Some(m.clone()));
        assert_eq!(
            decode_message(NodeId(9), 77, &staged, |_| Ok(None)).unwrap(),
            None
        );
        assert!(decode_message(NodeId(9), 77, &staged[..staged.len() - 1], unused).is_err());
    }

    fn unused(_: &StagedKey) -> Result<Option<Bytes>, StoreError> {
        panic!("an inline record asked for a payload stored apart")
    }

    #[test]
    fn index_values_with_and_without_a_payload_stored_apart() {
        let plain = IndexValue {
            stream_seq: 3,
            size: 4000,
            timestamp: Timestamp(99),
            staged: None,
        };
        assert_eq!(decode_index(&encode_index(&plain)).unwrap(), plain);
        let apart = IndexValue {
            staged: Some(*b"0123456789ab"),
            ..plain
        };
        assert_eq!(decode_index(&encode_index(&apart)).unwrap(), apart);
        let mut cut = encode_index(&apart);
        cut.pop();
        assert!(decode_index(&cut).is_err());
    }
}
