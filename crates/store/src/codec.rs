//! Binary encodings of stored values: varints and length-prefixed bytes, a
//! format byte first so that the layout can evolve.

use bytes::Bytes;
use switchyard_model::{Header, Message, MessageId, NodeId, Timestamp, Topic, varint};

use crate::StoreError;

const RECORD_V1: u8 = 1;

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
    let headers: usize = m
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(32 + m.topic.as_str().len() + headers + m.payload.len());
    out.push(RECORD_V1);
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
    out.extend_from_slice(&m.payload);
    out
}

/// The topic of a `log` record, without decoding the rest.
pub fn record_topic(buf: &[u8]) -> Result<&str, StoreError> {
    let mut b = buf.get(1..).ok_or(CORRUPT)?;
    if buf[0] != RECORD_V1 {
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

/// Decodes a `log` record stored under (origin, seq).
pub fn decode_message(origin: NodeId, seq: u64, buf: &[u8]) -> Result<Message, StoreError> {
    let (&version, mut b) = buf.split_first().ok_or(CORRUPT)?;
    if version != RECORD_V1 {
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
    Ok(Message {
        id: MessageId { origin, seq },
        topic,
        stream_seq,
        timestamp,
        key,
        headers,
        payload: Bytes::copy_from_slice(b),
    })
}

/// Value of an `index` entry: what retention and statistics need without
/// reading the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexValue {
    pub stream_seq: u64,
    pub size: u64,
    pub timestamp: Timestamp,
}

pub fn encode_index(v: &IndexValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    varint::put(&mut out, v.stream_seq);
    varint::put(&mut out, v.size);
    varint::put(&mut out, v.timestamp.0);
    out
}

pub fn decode_index(mut b: &[u8]) -> Result<IndexValue, StoreError> {
    let bad = StoreError::Corrupt("index entry");
    Ok(IndexValue {
        stream_seq: varint::get(&mut b).ok_or(bad)?,
        size: varint::get(&mut b).ok_or(StoreError::Corrupt("index entry"))?,
        timestamp: Timestamp(varint::get(&mut b).ok_or(StoreError::Corrupt("index entry"))?),
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
        assert_eq!(decode_message(NodeId(9), 77, &enc).unwrap(), m);
        let none = Message {
            key: None,
            headers: vec![],
            ..m
        };
        assert_eq!(
            decode_message(NodeId(9), 77, &encode_message(&none)).unwrap(),
            none
        );
        assert!(decode_message(NodeId(9), 77, &enc[..3]).is_err());
        assert!(decode_message(NodeId(9), 77, &[]).is_err());
    }
}
