//! Local appends: what a publisher hands the store, what it gets back, and
//! how the writer turns a group of appends into one batch (sequence
//! numbers, HLC timestamps, stream sequences, idempotency records).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use switchyard_model::{Header, IDEMPOTENCY_HEADER, Message, MessageId, NodeId, Timestamp, Topic};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::batch::{Durability, Staged};
use crate::codec::{decode_u64s, encode_u64s};
use crate::error::Storage;
use crate::keys;
use crate::writer::{Writer, now_ms};

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

/// Idempotency keys on their way to the log, each with the number of
/// holders: publishes that are asking their peers about it
/// ([`crate::Store::hold_keys`]) and appends the writer has not decided
/// yet. A key whose commit failed stays held until the store is reopened:
/// the failed batch may still be in the journal and come back, so no other
/// copy may be stored meanwhile.
#[derive(Debug, Default)]
pub(crate) struct KeysInFlight(Mutex<HashMap<Vec<u8>, usize>>);

impl KeysInFlight {
    pub(crate) fn add(&self, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let mut held = self.0.lock();
        for k in keys {
            *held.entry(k.clone()).or_default() += 1;
        }
    }

    pub(crate) fn release(&self, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let mut held = self.0.lock();
        for k in keys {
            if let Some(n) = held.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    held.remove(k);
                }
            }
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.0.lock().contains_key(key)
    }
}

/// The `idem` keys of the keyed appends of `batch`.
pub(crate) fn idem_keys(batch: &[Append]) -> Vec<Vec<u8>> {
    batch
        .iter()
        .filter_map(|a| {
            let k = a.idempotency_key.as_ref()?;
            Some(keys::idem_key(&a.topic, k))
        })
        .collect()
}

/// Idempotency keys held as in flight until this drops (see
/// [`crate::Store::hold_keys`]).
#[must_use = "the keys are released when the hold drops"]
pub struct KeyHold {
    shared: Arc<crate::store::Shared>,
    keys: Vec<Vec<u8>>,
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        self.shared.keys_in_flight.release(&self.keys);
    }
}

impl crate::Store {
    /// Holds the idempotency keys `keys` ((topic, key) pairs) as in flight
    /// until the returned hold drops, so that [`Store::key_in_flight`]
    /// says a message may soon be stored under them. A publish holds its
    /// keys while it asks its peers whether they hold them; from
    /// [`Store::append`] on, the store holds them itself until its commit
    /// has decided (and for good, until the store is reopened, when the
    /// commit failed and the batch may still come back).
    ///
    /// [`Store::key_in_flight`]: crate::Store::key_in_flight
    /// [`Store::append`]: crate::Store::append
    pub fn hold_keys<'a>(&self, keys: impl IntoIterator<Item = (&'a Topic, &'a str)>) -> KeyHold {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|(topic, key)| keys::idem_key(topic, key))
            .collect();
        self.shared.keys_in_flight.add(&keys);
        KeyHold {
            shared: self.shared.clone(),
            keys,
        }
    }

    /// Whether a message may soon be stored on this node under idempotency
    /// key `key` on `topic`: a publish with that key is on its way to the
    /// log, or one failed in a way that may still have stored it.
    pub fn key_in_flight(&self, topic: &Topic, key: &str) -> bool {
        self.shared
            .keys_in_flight
            .contains(&keys::idem_key(topic, key))
    }

    /// The message stored under idempotency key `key` on `topic` within
    /// the idempotency window (this node's own, or one of another origin
    /// that this node holds), as a repeat would be answered.
    pub fn idempotent(&self, topic: &Topic, key: &str) -> Result<Option<Appended>, StoreError> {
        let sh = &*self.shared;
        let Some(v) = sh.idem.get(keys::idem_key(topic, key)).storage()? else {
            return Ok(None);
        };
        let (prev, expires) = decode_idem(topic, &v)?;
        Ok((expires > sh.steady.now_ms()).then_some(prev))
    }
}

/// Stages the idempotency record of `m`, a message of another origin that
/// carries its key in the [`IDEMPOTENCY_HEADER`] header, unless the record
/// exists or has expired (the window counts from the message's
/// timestamp, and lasts at most the window from now). A publish on this
/// node with the same topic and key then answers the original message, as
/// on its origin. `wall_ms` is the wall clock now; the record's expiry is
/// kept on the store's steady clock, as this node's own.
pub(crate) fn stage_remote_idem(
    sh: &crate::store::Shared,
    staged: &mut Staged<'_>,
    m: &Message,
    wall_ms: u64,
) -> Result<(), StoreError> {
    let Some(key) = m.header(IDEMPOTENCY_HEADER) else {
        return Ok(());
    };
    let window = sh.config.idempotency_window.as_millis() as u64;
    let left = m
        .timestamp
        .millis()
        .saturating_add(window)
        .saturating_sub(wall_ms)
        .min(window);
    if left == 0 {
        return Ok(());
    }
    let expires = sh.steady.now_ms() + left;
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
    /// `staging` names the staging id of a group of one bulk append whose
    /// payloads are already stored apart (see [`crate::staging`]).
    pub(crate) fn write_group(
        &mut self,
        group: &mut [Pending],
        staging: Option<u64>,
    ) -> Result<Vec<Vec<Appended>>, StoreError> {
        let (start_seq, start_hlc) = (self.next_seq, self.hlc.clone());
        let written = self.stage_and_commit(group, staging);
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
    fn stage_and_commit(
        &mut self,
        group: &mut [Pending],
        staging: Option<u64>,
    ) -> Result<Committed, StoreError> {
        let sh = &*self.shared;
        let local = sh.node_id;
        let now = now_ms();
        let idem_now = sh.steady.now_ms();
        let window = sh.config.idempotency_window.as_millis() as u64;
        let mut staged = Staged::new(sh, "publish", Durability::Publish);
        let mut seen_idem: HashMap<Vec<u8>, Appended> = HashMap::new();
        let mut results = Vec::with_capacity(group.len());
        let mut fresh: Vec<Arc<Message>> = Vec::new();
        for (batch, _) in group.iter_mut() {
            let mut out = Vec::with_capacity(batch.len());
            for (i, a) in batch.iter_mut().enumerate() {
                let apart = staging.map(|id| keys::staged_key(id, crate::staging::entry(i)));
                let idem = a
                    .idempotency_key
                    .as_ref()
                    .map(|k| keys::idem_key(&a.topic, k));
                if let Some(ik) = &idem {
                    let mut prev = seen_idem.get(ik).cloned();
                    if prev.is_none()
                        && let Some(v) = sh.idem.get(ik).storage()?
                    {
                        let (first, expires) = decode_idem(&a.topic, &v)?;
                        prev = (expires > idem_now).then_some(first);
                    }
                    if let Some(prev) = prev {
                        // A repeat stores nothing: its staged payload goes.
                        if let Some(k) = apart {
                            staged.remove(&sh.staged, k);
                        }
                        out.push(prev);
                        continue;
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
                staged.push_head_staged(&msg, apart);
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
        if let Some(id) = staging {
            staged.remove(&sh.meta, keys::staging_meta_key(id));
        }
        if !fresh.is_empty() || staging.is_some() {
            staged.commit()?;
        }
        Ok((results, fresh))
    }
}
