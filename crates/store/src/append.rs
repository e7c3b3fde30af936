//! Local appends: what a publisher hands the store, what it gets back, and
//! how the writer turns a group of appends into one batch (sequence
//! numbers, HLC timestamps, stream sequences, idempotency records).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_model::{Header, IDEMPOTENCY_HEADER, Message, MessageId, NodeId, Timestamp, Topic};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::batch::{Durability, Staged};
use crate::codec::{decode_u64s, encode_u64s};
use crate::error::Storage;
use crate::keys;
use crate::writer::{Writer, now_ms, steady_ms};

/// What a committed group of append requests gives: each request's
/// results, and the new messages for the readers' tail.
type Committed = (Vec<Vec<Appended>>, Vec<Arc<Message>>);

/// One message to append.
#[derive(Clone, Debug)]
pub struct Append {
    /// Destination topic.
    pub topic: Topic,
    /// Optional message key.
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Payload.
    pub payload: Bytes,
    /// When set, an append with the same topic and key within the idempotency
    /// window returns the first result instead of storing a duplicate.
    pub idempotency_key: Option<String>,
}

impl Append {
    /// A message with a payload and nothing else.
    pub fn new(topic: Topic, payload: Bytes) -> Self {
        Append {
            topic,
            key: None,
            headers: Vec::new(),
            payload,
            idempotency_key: None,
        }
    }
}

/// The result of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The message id (origin, origin sequence).
    pub id: MessageId,
    /// The topic.
    pub topic: Topic,
    /// Sequence within the stream (topic, origin).
    pub stream_seq: u64,
    /// HLC timestamp.
    pub timestamp: Timestamp,
    /// True when an earlier append with the same idempotency key answered.
    pub duplicate: bool,
}

/// One append request waiting for its commit: its messages and where to
/// answer.
pub(crate) type Pending = (
    Vec<Append>,
    oneshot::Sender<Result<Vec<Appended>, StoreError>>,
);

fn idem_record(a: &Appended, expires_ms: u64) -> Vec<u8> {
    encode_u64s(&[
        a.id.origin.0,
        a.id.seq,
        a.stream_seq,
        a.timestamp.0,
        expires_ms,
    ])
}

/// Decodes an idempotency record into its result and expiry.
fn decode_idem(topic: &Topic, b: &[u8]) -> Result<(Appended, u64), StoreError> {
    let [origin, seq, stream_seq, ts, expires] = decode_u64s::<5>(b, "idempotency record")?;
    let appended = Appended {
        id: MessageId {
            origin: NodeId(origin),
            seq,
        },
        topic: topic.clone(),
        stream_seq,
        timestamp: Timestamp(ts),
        duplicate: true,
    };
    Ok((appended, expires))
}

impl crate::Store {
    /// The message stored under idempotency key `key` on `topic` within
    /// the idempotency window (this node's own, or one of another origin
    /// that this node holds), as a repeat would be answered.
    pub fn idempotent(&self, topic: &Topic, key: &str) -> Result<Option<Appended>, StoreError> {
        let sh = &*self.shared;
        let Some(v) = sh.idem.get(keys::idem_key(topic, key)).storage()? else {
            return Ok(None);
        };
        let (prev, expires) = decode_idem(topic, &v)?;
        Ok((expires > steady_ms()).then_some(prev))
    }
}

/// Stages the idempotency record of `m`, a message of another origin that
/// carries its key in the [`IDEMPOTENCY_HEADER`] header, unless the record
/// exists or has expired (the window counts from the message's
/// timestamp). A publish on this node with the same topic and key then
/// answers the original message, as on its origin.
pub(crate) fn stage_remote_idem(
    sh: &crate::store::Shared,
    staged: &mut Staged<'_>,
    m: &Message,
    now_ms: u64,
) -> Result<(), StoreError> {
    let Some(key) = m.header(IDEMPOTENCY_HEADER) else {
        return Ok(());
    };
    let window = sh.config.idempotency_window.as_millis() as u64;
    let expires = m.timestamp.millis().saturating_add(window);
    if expires <= now_ms {
        return Ok(());
    }
    let ik = keys::idem_key(&m.topic, key);
    if sh.idem.get(&ik).storage()?.is_some() {
        return Ok(());
    }
    let appended = Appended {
        id: m.id,
        topic: m.topic.clone(),
        stream_seq: m.stream_seq,
        timestamp: m.timestamp,
        duplicate: true,
    };
    staged.insert(&sh.idem, ik, idem_record(&appended, expires));
    Ok(())
}

impl Writer {
    /// Writes a group of requests as one batch; returns per-request results.
    /// Takes the messages' contents out of the requests instead of copying
    /// them. On failure nothing of the group is stored and no sequence
    /// number or timestamp is used up.
    pub(crate) fn write_group(
        &mut self,
        group: &mut [Pending],
    ) -> Result<Vec<Vec<Appended>>, StoreError> {
        let (start_seq, start_hlc) = (self.next_seq, self.hlc.clone());
        let written = self.stage_and_commit(group);
        match written {
            Ok((results, fresh)) => {
                self.committed(fresh);
                Ok(results)
            }
            Err(e) => {
                self.next_seq = start_seq;
                self.hlc = start_hlc;
                Err(e)
            }
        }
    }

    /// Stages every request of `group` and commits them; returns the
    /// results and the messages stored.
    fn stage_and_commit(&mut self, group: &mut [Pending]) -> Result<Committed, StoreError> {
        let sh = &*self.shared;
        let local = sh.node_id;
        let now = now_ms();
        let idem_now = steady_ms();
        let window = sh.config.idempotency_window.as_millis() as u64;
        let mut staged = Staged::new(sh, "publish", Durability::Publish);
        let mut seen_idem: HashMap<Vec<u8>, Appended> = HashMap::new();
        let mut results = Vec::with_capacity(group.len());
        let mut fresh: Vec<Arc<Message>> = Vec::new();
        for (batch, _) in group.iter_mut() {
            let mut out = Vec::with_capacity(batch.len());
            for a in batch.iter_mut() {
                let idem = a
                    .idempotency_key
                    .as_ref()
                    .map(|k| keys::idem_key(&a.topic, k));
                if let Some(ik) = &idem {
                    if let Some(prev) = seen_idem.get(ik) {
                        out.push(prev.clone());
                        continue;
                    }
                    if let Some(v) = sh.idem.get(ik).storage()? {
                        let (prev, expires) = decode_idem(&a.topic, &v)?;
                        if expires > idem_now {
                            out.push(prev);
                            continue;
                        }
                    }
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(k) = &a.idempotency_key {
                    a.headers.push(Header {
                        name: IDEMPOTENCY_HEADER.to_owned(),
                        value: k.clone(),
                    });
                }
                let timestamp = self.hlc.now(now);
                let msg = Message {
                    id: MessageId { origin: local, seq },
                    topic: a.topic.clone(),
                    stream_seq: staged.stream(&a.topic, local).last_seq + 1,
                    timestamp,
                    key: a.key.take(),
                    headers: std::mem::take(&mut a.headers),
                    payload: std::mem::take(&mut a.payload),
                };
                // It takes its stream's next sequence, so it is always staged.
                staged.push_head(&msg);
                let appended = Appended {
                    id: msg.id,
                    topic: a.topic.clone(),
                    stream_seq: msg.stream_seq,
                    timestamp,
                    duplicate: false,
                };
                if let Some(ik) = idem {
                    staged.insert(
                        &sh.idem,
                        ik.clone(),
                        idem_record(&appended, idem_now + window),
                    );
                    seen_idem.insert(
                        ik,
                        Appended {
                            duplicate: true,
                            ..appended.clone()
                        },
                    );
                }
                out.push(appended);
                fresh.push(Arc::new(msg));
            }
            results.push(out);
        }
        if !fresh.is_empty() {
            staged.commit()?;
        }
        Ok((results, fresh))
    }
}
