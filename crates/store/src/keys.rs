//! Key layouts of the keyspaces. All integers are big-endian so that byte
//! order is numeric order.

use fjall::UserKey;
use smallvec::SmallVec;
use switchyard_model::{NodeId, Topic};

/// A key being built on the stack; most keys are shorter.
type KeyBuf = SmallVec<[u8; 96]>;

/// `log`: origin ++ origin seq.
pub fn log_key(origin: NodeId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&origin.0.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a `log` key.
pub fn parse_log_key(k: &[u8]) -> Option<(NodeId, u64)> {
    let k: &[u8; 16] = k.try_into().ok()?;
    let origin = u64::from_be_bytes(k[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(k[8..].try_into().ok()?);
    Some((NodeId(origin), seq))
}

/// `index`: topic ++ 0 ++ origin ++ origin seq. Topics never contain a zero
/// byte, so one topic's keys never interleave with another's.
pub fn index_key(topic: &Topic, origin: NodeId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + 17);
    put_index_key(&mut k, topic, origin, seq);
    k
}

/// [`index_key`] as a key to store: one allocation at its size (none up
/// to 20 bytes) instead of a `Vec` and the engine's copy of it.
pub fn index_key_value(topic: &Topic, origin: NodeId, seq: u64) -> UserKey {
    let mut k = KeyBuf::new();
    put_index_key(&mut k, topic, origin, seq);
    UserKey::new(&k)
}

/// Writes an `index` key to the end of `k`.
fn put_index_key(k: &mut impl Extend<u8>, topic: &Topic, origin: NodeId, seq: u64) {
    k.extend(topic.as_str().bytes());
    k.extend([0]);
    k.extend(origin.0.to_be_bytes());
    k.extend(seq.to_be_bytes());
}

/// The origin seq at the end of an `index` key.
pub fn index_key_seq(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `meta` key of a stream's statistics: `s` ++ topic ++ 0 ++ origin.
pub fn stream_meta_key(topic: &Topic, origin: NodeId) -> UserKey {
    let mut k = KeyBuf::new();
    k.push(b's');
    k.extend_from_slice(topic.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&origin.0.to_be_bytes());
    UserKey::new(&k)
}

/// `meta` key of an origin's high-water mark: `o` ++ origin.
pub fn origin_meta_key(origin: NodeId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'o';
    k[1..].copy_from_slice(&origin.0.to_be_bytes());
    k
}

/// `meta` key of the record that this node holds an origin's whole log
/// (it replicates it): `w` ++ origin -> the origin sequence from which on
/// it holds every message, up to its watermark.
pub fn whole_log_key(origin: NodeId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'w';
    k[1..].copy_from_slice(&origin.0.to_be_bytes());
    k
}

/// `meta` key of the run marker: `running <fsync mode> <boot id>` while a
/// process has the store open, `clean` after it closed.
pub const RUN_KEY: &[u8] = b"run";

/// `meta` key of this node's id.
pub const NODE_ID_KEY: &[u8] = b"node_id";

/// `idem`: topic ++ 0 ++ idempotency key.
pub fn idem_key(topic: &Topic, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + 1 + key.len());
    k.extend_from_slice(topic.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `staged`: staging id ++ entry index -> the payload of a large batch's
/// entry, written before the batch is committed.
pub fn staged_key(id: u64, entry: u32) -> crate::codec::StagedKey {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&entry.to_be_bytes());
    k
}

/// The staging id at the start of a `staged` key.
pub fn staged_key_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?))
}

/// `meta` key of a large batch being staged: `b` ++ staging id, written
/// with its first slice and removed by the commit that makes the batch
/// visible. One left by a crash names payloads that nothing refers to.
pub fn staging_meta_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'b';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_index_keys_are_the_keys_reads_look_for() {
        let short: Topic = "a".parse().unwrap();
        let long: Topic = "x".repeat(200).parse().unwrap();
        for topic in [short, long] {
            let key = index_key(&topic, NodeId(7), 300);
            assert_eq!(&*index_key_value(&topic, NodeId(7), 300), &key[..]);
            assert_eq!(key.len(), topic.as_str().len() + 17);
            assert_eq!(index_key_seq(&key), Some(300));
        }
    }
}
