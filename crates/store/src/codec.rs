//! Binary encodings of stored values: varints and length-prefixed bytes, a
//! format byte first so that the layout can evolve.

use std::cell::RefCell;

use bytes::Bytes;
use fjall::UserValue;
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
/// With `staged`, the payload is stored apart, under that key in the
/// `staged` keyspace, and the record names it in the payload's place.
pub fn message_value(m: &Message, staged: Option<&StagedKey>) -> UserValue {
    with_scratch(|out| match staged {
        Some(k) => write_record(out, m, RECORD_STAGED, k),
        None => write_record(out, m, RECORD_V1, &m.payload),
    })
}

/// A scratch buffer this large or smaller is kept for the thread's next
/// value.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes a value with `write` into the thread's scratch buffer and copies
/// it out at its exact size: one allocation per value (none up to 20
/// bytes, which the engine keeps inline) instead of a growing `Vec` and
/// the engine's copy of it.
fn with_scratch(write: impl FnOnce(&mut Vec<u8>)) -> UserValue {
    SCRATCH.with(|cell| {
        let Ok(mut out) = cell.try_borrow_mut() else {
            // Only a `write` that encoded another value inside itself gets
            // here; it is not worth a panic.
            let mut own = Vec::new();
            write(&mut own);
            return UserValue::from(own);
        };
        out.clear();
        write(&mut out);
        let value = UserValue::new(&out);
        if out.capacity() > SCRATCH_KEEP {
            *out = Vec::new();
        }
        value
    })
}

/// Encodes varints into a value, on the stack: at most `N` / 10 of them.
fn small_value<const N: usize>(write: impl FnOnce(&mut &mut [u8])) -> UserValue {
    let mut buf = [0u8; N];
    let mut rest: &mut [u8] = &mut buf;
    write(&mut rest);
    let len = N - rest.len();
    UserValue::new(&buf[..len])
}

fn write_record(out: &mut Vec<u8>, m: &Message, version: u8, tail: &[u8]) {
    let headers: usize = m
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    out.reserve(32 + m.topic.as_str().len() + headers + tail.len());
    out.push(version);
    put_bytes(out, m.topic.as_str().as_bytes());
    varint::put(out, m.stream_seq);
    varint::put(out, m.timestamp.0);
    match &m.key {
        None => varint::put(out, 0),
        Some(k) => {
            varint::put(out, k.len() as u64 + 1);
            out.extend_from_slice(k);
        }
    }
    varint::put(out, m.headers.len() as u64);
    for h in &m.headers {
        put_bytes(out, h.name.as_bytes());
        put_bytes(out, h.value.as_bytes());
    }
    out.extend_from_slice(tail);
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

/// Encodes an `index` entry's value (kept inline in the engine's entry
/// unless the payload is stored apart).
pub fn index_value(v: &IndexValue) -> UserValue {
    small_value::<42>(|out| {
        varint::put(out, v.stream_seq);
        varint::put(out, v.size);
        varint::put(out, v.timestamp.0);
        if let Some(k) = &v.staged {
            bytes::BufMut::put_slice(out, k);
        }
    })
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

/// [`encode_u64s`] of up to eight values, as a value to store.
pub fn u64s_value(values: &[u64]) -> UserValue {
    if values.len() > 8 {
        return UserValue::from(encode_u64s(values));
    }
    small_value::<80>(|out| {
        for &v in values {
            varint::put(out, v);
        }
    })
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
        let enc = message_value(&m, None);
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
            decode_message(NodeId(9), 77, &message_value(&none, None), unused).unwrap(),
            Some(none)
        );
        assert!(decode_message(NodeId(9), 77, &enc[..3], unused).is_err());
        assert!(decode_message(NodeId(9), 77, &[], unused).is_err());

        // The payload stored apart: fetched by its key, or gone.
        let key: StagedKey = *b"staged-key-1";
        let staged = message_value(&m, Some(&key));
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
        assert_eq!(decode_index(&index_value(&plain)).unwrap(), plain);
        let apart = IndexValue {
            staged: Some(*b"0123456789ab"),
            ..plain
        };
        assert_eq!(decode_index(&index_value(&apart)).unwrap(), apart);
        let mut cut = index_value(&apart).to_vec();
        cut.pop();
        assert!(decode_index(&cut).is_err());
    }

    #[test]
    fn values_built_in_place_hold_the_largest_encodings() {
        let v = IndexValue {
            stream_seq: u64::MAX,
            size: u64::MAX,
            timestamp: Timestamp(u64::MAX),
            staged: Some([7; 12]),
        };
        assert_eq!(decode_index(&index_value(&v)).unwrap(), v);
        let eight = [u64::MAX; 8];
        assert_eq!(decode_u64s::<8>(&u64s_value(&eight), "t").unwrap(), eight);
        let nine = [u64::MAX; 9];
        assert_eq!(decode_u64s::<9>(&u64s_value(&nine), "t").unwrap(), nine);
        assert_eq!(&*u64s_value(&[1, 300]), &encode_u64s(&[1, 300])[..]);

        // The thread's scratch buffer gives each record its own bytes, also
        // after one larger than it keeps.
        let unused = |_: &StagedKey| -> Result<Option<Bytes>, StoreError> { Ok(None) };
        let message = |payload: Vec<u8>| Message {
            id: MessageId {
                origin: NodeId(1),
                seq: 1,
            },
            topic: "a".parse().unwrap(),
            stream_seq: 1,
            timestamp: Timestamp(1),
            key: None,
            headers: vec![],
            payload: Bytes::from(payload),
        };
        let big = message(vec![1; 100_000]);
        let small = message(vec![2; 10]);
        let (a, b, c) = (
            message_value(&small, None),
            message_value(&big, None),
            message_value(&small, None),
        );
        assert_eq!(
            decode_message(NodeId(1), 1, &a, unused).unwrap(),
            Some(small.clone())
        );
        assert_eq!(decode_message(NodeId(1), 1, &b, unused).unwrap(), Some(big));
        assert_eq!(
            decode_message(NodeId(1), 1, &c, unused).unwrap(),
            Some(small)
        );
    }
}
