//! The node-to-node HTTP envelope: every request body and every answer
//! body between nodes is sealed with XChaCha20-Poly1305 (the cipher of the
//! gossip envelope, [`crate::seal`]) under keys derived from the cluster
//! key, one for requests and one for answers. A node without the key can
//! neither read nor forge node-to-node traffic, a request is accepted at
//! most once, and an answer opens only for the request it answers.
//!
//! **Requests.** The header `switchyard-cluster-auth:
//! 2.<node>.<boot>.<counter>.<ms>` (the protocol version, the sender's
//! node id, its process's random boot id and a per-process counter, all
//! 16 hex digits, and its clock in ms since the Unix epoch) names the
//! request's nonce, `node ‖ boot ‖ counter` (24 bytes, never reused under
//! one key: the boot is random per process and the counter never repeats
//! within it). The body is the request's plaintext sealed with that nonce;
//! the associated data binds the cluster name, the method, the address the
//! request was sent to (the receiver's advertised HTTP address, so a
//! request cannot be replayed at another node), the path with its query,
//! and the header's fields. A receiver refuses a request whose tag does
//! not verify ([`Refusal::Tampered`]), whose clock is more than
//! [`MAX_SKEW`] from its own ([`Refusal::Stale`]), or whose (node, boot,
//! counter) it has accepted before or is older than its window of the
//! last [`REPLAY_WINDOW`] counters of that sender process
//! ([`Refusal::Replayed`]).
//!
//! **Answers** are a sequence of sealed frames, so that a streamed answer
//! (a relayed group member's event stream) is authenticated chunk by chunk
//! as it goes: `SYA2` ‖ answer id (16 bytes: the answering process's boot
//! id and counter), then frames `length (4 bytes, big-endian) ‖ sealed`.
//! Frame `i` is sealed with the nonce `answer id ‖ i` and associated data
//! `SYA2 ‖ request nonce ‖ answer id ‖ i`; its plaintext is a flag byte
//! (1 on the last frame) and the data. Frame 0 is the head: the answer's
//! status and headers. An answer therefore opens only for its own request,
//! frames cannot be reordered, dropped or repeated (the index is in the
//! nonce), and a stream cut short lacks its last frame and is detected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Version of the node-to-node transport, the first field of the auth
/// header. Nodes of different versions refuse each other's requests.
pub const PROTOCOL_VERSION: &str = "2";
/// Header naming a request's sender and nonce.
pub const AUTH_HEADER: &str = "switchyard-cluster-auth";
/// Requests whose sender clock is further than this from ours are refused.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Counters of one sender process remembered below its highest: a request
/// delayed past this many later ones from the same process is refused
/// (its sender retries with a new nonce).
pub const REPLAY_WINDOW: u64 = 4096;
/// Sender processes whose windows are kept at most.
const MAX_WINDOWS: usize = 4096;
/// Bytes of the answer prefix.
pub const ANSWER_PREFIX: usize = 4 + 16;
/// Bytes a frame adds to its data: length, flag and tag.
pub const FRAME_OVERHEAD: usize = 4 + 1 + 16;
/// Largest sealed frame an opener accepts.
pub const MAX_FRAME: usize = 17 * 1024 * 1024;

const REQUEST_MAGIC: &[u8; 4] = b"SYR2";
const ANSWER_MAGIC: &[u8; 4] = b"SYA2";
const LAST: u8 = 1;

/// Why a node-to-node request or answer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No auth header, a malformed one, or one of another protocol
    /// version.
    BadAuth,
    /// The tag does not verify: another key, another cluster, or altered
    /// in transit (header, path or body).
    Tampered,
    /// Accepted before, or older than the replay window.
    Replayed,
    /// The sender's clock is too far from ours.
    Stale,
}

impl Refusal {
    /// Stable name for counters and refusals.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::BadAuth => "bad_auth",
            Refusal::Tampered => "tampered",
            Refusal::Replayed => "replayed",
            Refusal::Stale => "stale",
        }
    }
}

/// Counters of refused node-to-node HTTP traffic.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests refused: no, malformed or other-version auth header.
    pub refused_bad_auth: AtomicU64,
    /// Requests refused: the seal does not open.
    pub refused_tampered: AtomicU64,
    /// Requests refused: seen before.
    pub refused_replayed: AtomicU64,
    /// Requests refused: the sender's clock is too far off.
    pub refused_stale: AtomicU64,
    /// Answers refused: the seal does not open, or frames are missing,
    /// reordered or cut short.
    pub refused_answers: AtomicU64,
    /// Feed answers refused by the puller's checks of their values.
    pub refused_feed_answers: AtomicU64,
}

impl HttpStats {
    /// Counts a refused request.
    pub fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::BadAuth => &self.refused_bad_auth,
            Refusal::Tampered => &self.refused_tampered,
            Refusal::Replayed => &self.refused_replayed,
            Refusal::Stale => &self.refused_stale,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused answer.
    pub fn refused_answer(&self) {
        self.refused_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a feed answer refused by the puller's checks.
    pub fn refused_feed_answer(&self) {
        self.refused_feed_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("refused_http_bad_auth", get(&self.refused_bad_auth)),
            ("refused_http_tampered", get(&self.refused_tampered)),
            ("refused_http_replayed", get(&self.refused_replayed)),
            ("refused_http_stale", get(&self.refused_stale)),
            ("refused_http_answers", get(&self.refused_answers)),
            ("refused_feed_answers", get(&self.refused_feed_answers)),
        ]
    }
}

/// A request's sender, nonce and clock, as its auth header names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// The sender's node id.
    pub node: u64,
    /// The sender's process (random per start).
    pub boot: u64,
    /// The sender's counter.
    pub counter: u64,
    /// The sender's clock, ms since the Unix epoch.
    pub ms: u64,
}

impl RequestId {
    /// The 24-byte nonce: node ‖ boot ‖ counter.
    pub fn nonce(&self) -> [u8; 24] {
        let mut n = [0u8; 24];
        n[..8].copy_from_slice(&self.node.to_be_bytes());
        n[8..16].copy_from_slice(&self.boot.to_be_bytes());
        n[16..].copy_from_slice(&self.counter.to_be_bytes());
        n
    }

    /// The auth header's value.
    pub fn header(&self) -> String {
        format!(
            "{PROTOCOL_VERSION}.{:016x}.{:016x}.{:016x}.{}",
            self.node, self.boot, self.counter, self.ms
        )
    }

    /// Parses an auth header's value.
    pub fn parse(header: &str) -> Result<RequestId, Refusal> {
        let mut parts = header.split('.');
        let (Some(version), Some(node), Some(boot), Some(counter), Some(ms), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::BadAuth);
        };
        if version != PROTOCOL_VERSION {
            return Err(Refusal::BadAuth);
        }
        let hex = |s: &str| {
            if s.len() == 16 {
                u64::from_str_radix(s, 16).map_err(|_| Refusal::BadAuth)
            } else {
                Err(Refusal::BadAuth)
            }
        };
        Ok(RequestId {
            node: hex(node)?,
            boot: hex(boot)?,
            counter: hex(counter)?,
            ms: ms.parse().map_err(|_| Refusal::BadAuth)?,
        })
    }
}

/// What a request is bound to besides its body.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The receiver's advertised HTTP address (`host:port`), as the sender
    /// dials it.
    pub to: &'a str,
    /// The path with its query.
    pub path: &'a str,
}

/// Seals and opens node-to-node requests and answers for one node. Cheap
/// to clone.
#[derive(Clone)]
pub struct Envelope {
    inner: Arc<Inner>,
}

struct Inner {
    request: XChaCha20Poly1305,
    answer: XChaCha20Poly1305,
    name: Vec<u8>,
    node: u64,
    boot: u64,
    /// Request nonces: one per request sent.
    counter: AtomicU64,
    /// Answer ids: one per answer sealed. Apart from the request counter
    /// so that answering does not move this node's requests through the
    /// receivers' replay windows.
    answers: AtomicU64,
    /// Per sender process (node, boot): the request counters accepted
    /// recently.
    windows: Mutex<HashMap<(u64, u64), Window>>,
    stats: Arc<HttpStats>,
}

struct Window {
    highest: u64,
    /// Bit i set: `highest - i` was accepted.
    seen: Box<[u64; (REPLAY_WINDOW / 64) as usize]>,
    last: Instant,
}

impl Window {
    fn bit(&self, back: u64) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u64) {
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }

    /// Moves the window up by `shift` counters.
    fn shift(&mut self, shift: u64) {
        let words = self.seen.len() as u64;
        if shift >= REPLAY_WINDOW {
            self.seen.fill(0);
            return;
        }
        let (w, b) = ((shift / 64) as usize, (shift % 64) as u32);
        for i in (0..words as usize).rev() {
            let lo = i.checked_sub(w).map_or(0, |j| self.seen[j]);
            let below = i
                .checked_sub(w + 1)
                .map_or(0, |j| self.seen[j])
                .checked_shr(64 - b)
                .filter(|_| b != 0)
                .unwrap_or(0);
            self.seen[i] = (lo << b) | below;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn put(aad: &mut Vec<u8>, field: &[u8]) {
    aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
    aad.extend_from_slice(field);
}

impl Envelope {
    /// An envelope for node `node` of cluster `name` with the cluster key
    /// `secret`, counting refusals in `stats`.
    pub fn new(secret: &[u8], name: &str, node: u64, stats: Arc<HttpStats>) -> Envelope {
        let key = |label: &[u8]| {
            let mut derived = label.to_vec();
            derived.extend_from_slice(secret);
            crate::seal::derive_key(&derived)
        };
        let request = key(b"switchyard http request key v2\0");
        let answer = key(b"switchyard http answer key v2\0");
        Envelope {
            inner: Arc::new(Inner {
                request: XChaCha20Poly1305::new(Key::from_slice(&request)),
                answer: XChaCha20Poly1305::new(Key::from_slice(&answer)),
                name: name.as_bytes().to_vec(),
                node,
                boot: getrandom::u64()
                    .unwrap_or_else(|_| now_ms() ^ u64::from(std::process::id()).rotate_left(32)),
                counter: AtomicU64::new(1),
                answers: AtomicU64::new(1),
                windows: Mutex::new(HashMap::new()),
                stats,
            }),
        }
    }

    /// The refusal counters.
    pub fn stats(&self) -> &HttpStats {
        &self.inner.stats
    }

    fn next_counter(&self) -> u64 {
        self.inner.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn request_aad(&self, target: Target<'_>, id: &RequestId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + target.path.len() + target.to.len());
        aad.extend_from_slice(REQUEST_MAGIC);
        put(&mut aad, &self.inner.name);
        put(&mut aad, target.method.as_bytes());
        put(&mut aad, target.to.as_bytes());
        put(&mut aad, target.path.as_bytes());
        aad.extend_from_slice(&id.nonce());
        aad.extend_from_slice(&id.ms.to_be_bytes());
        aad
    }

    /// Seals a request: its id (whose [`RequestId::header`] goes in the
    /// auth header) and the sealed body.
    pub fn seal_request(&self, target: Target<'_>, body: &[u8]) -> (RequestId, Vec<u8>) {
        let id = RequestId {
            node: self.inner.node,
            boot: self.inner.boot,
            counter: self.next_counter(),
            ms: now_ms(),
        };
        let aad = self.request_aad(target, &id);
        let sealed = self
            .inner
            .request
            .encrypt(
                XNonce::from_slice(&id.nonce()),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .expect("sealing a buffer in memory cannot fail");
        (id, sealed)
    }

    /// The checks that need no body: the header parses, is of this
    /// protocol version, and its clock is within [`MAX_SKEW`]. Counted when
    /// refused.
    pub fn precheck(&self, header: Option<&str>) -> Result<RequestId, Refusal> {
        let checked = header
            .ok_or(Refusal::BadAuth)
            .and_then(RequestId::parse)
            .and_then(|id| {
                if now_ms().abs_diff(id.ms) > MAX_SKEW.as_millis() as u64 {
                    Err(Refusal::Stale)
                } else {
                    Ok(id)
                }
            });
        if let Err(why) = checked {
            self.inner.stats.refused(why);
        }
        checked
    }

    /// Opens a request whose header passed [`Envelope::precheck`]: its
    /// plaintext body, or why it was refused (counted). A request is
    /// accepted at most once.
    pub fn open_request(
        &self,
        id: &RequestId,
        target: Target<'_>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let aad = self.request_aad(target, id);
        let opened = self
            .inner
            .request
            .decrypt(
                XNonce::from_slice(&id.nonce()),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| Refusal::Tampered)
            .and_then(|body| {
                if self.accept(id) {
                    Ok(body)
                } else {
                    Err(Refusal::Replayed)
                }
            });
        if let Err(why) = opened {
            self.inner.stats.refused(why);
        }
        opened
    }

    /// Records a request's (node, boot, counter); false when it was seen
    /// before or is below the window.
    fn accept(&self, id: &RequestId) -> bool {
        let now = Instant::now();
        let mut windows = self.inner.windows.lock();
        let key = (id.node, id.boot);
        if windows.len() >= MAX_WINDOWS && !windows.contains_key(&key) {
            // Forget sender processes not heard from for longer than any
            // request stays acceptable; if none, the least recent one.
            windows.retain(|_, w| now.duration_since(w.last) < MAX_SKEW * 2);
            if windows.len() >= MAX_WINDOWS
                && let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.last).map(|(k, _)| *k)
            {
                windows.remove(&oldest);
            }
        }
        let w = windows.entry(key).or_insert_with(|| Window {
            highest: 0,
            seen: Box::new([0; (REPLAY_WINDOW / 64) as usize]),
            last: now,
        });
        w.last = now;
        if id.counter > w.highest {
            w.shift(id.counter - w.highest);
            w.highest = id.counter;
            w.set(0);
            return true;
        }
        let back = w.highest - id.counter;
        if back >= REPLAY_WINDOW || w.bit(back) {
            return false;
        }
        w.set(back);
        true
    }

    /// A sealer for the answer to request `id`.
    pub fn answer_sealer(&self, id: &RequestId) -> AnswerSealer {
        let mut answer_id = [0u8; 16];
        answer_id[..8].copy_from_slice(&self.inner.boot.to_be_bytes());
        let n = self.inner.answers.fetch_add(1, Ordering::Relaxed);
        answer_id[8..].copy_from_slice(&n.to_be_bytes());
        AnswerSealer {
            envelope: self.clone(),
            request: id.nonce(),
            answer_id,
            index: 0,
        }
    }

    /// An opener for the answer to request `id`.
    pub fn answer_opener(&self, id: &RequestId) -> AnswerOpener {
        AnswerOpener {
            envelope: self.clone(),
            request: id.nonce(),
            answer_id: None,
            index: 0,
            buf: BytesMut::new(),
            done: false,
        }
    }
}

fn answer_aad(request: &[u8; 24], answer_id: &[u8; 16], index: u64) -> [u8; 52] {
    let mut aad = [0u8; 52];
    aad[..4].copy_from_slice(ANSWER_MAGIC);
    aad[4..28].copy_from_slice(request);
    aad[28..44].copy_from_slice(answer_id);
    aad[44..].copy_from_slice(&index.to_be_bytes());
    aad
}

fn answer_nonce(answer_id: &[u8; 16], index: u64) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(answer_id);
    n[16..].copy_from_slice(&index.to_be_bytes());
    n
}

/// An answer's status and headers, its first frame.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnswerHead {
    /// The HTTP status.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Seals the frames of one answer, in order.
pub struct AnswerSealer {
    envelope: Envelope,
    request: [u8; 24],
    answer_id: [u8; 16],
    index: u64,
}

impl AnswerSealer {
    /// The answer's prefix: magic and answer id. Sent before the frames.
    pub fn prefix(&self) -> Bytes {
        let mut out = Vec::with_capacity(ANSWER_PREFIX);
        out.extend_from_slice(ANSWER_MAGIC);
        out.extend_from_slice(&self.answer_id);
        Bytes::from(out)
    }

    /// The next frame holding `data`; `last` on the answer's final frame.
    pub fn frame(&mut self, data: &[u8], last: bool) -> Bytes {
        let mut plain = Vec::with_capacity(1 + data.len());
        plain.push(if last { LAST } else { 0 });
        plain.extend_from_slice(data);
        let aad = answer_aad(&self.request, &self.answer_id, self.index);
        let sealed = self
            .envelope
            .inner
            .answer
            .encrypt(
                XNonce::from_slice(&answer_nonce(&self.answer_id, self.index)),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("sealing a buffer in memory cannot fail");
        self.index += 1;
        let mut out = Vec::with_capacity(4 + sealed.len());
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
        Bytes::from(out)
    }

    /// A whole answer: prefix, head and body in one buffer.
    pub fn whole(mut self, head: &AnswerHead, body: &[u8]) -> Vec<u8> {
        let head = postcard::to_allocvec(head).expect("heads serialise");
        let mut out = self.prefix().to_vec();
        out.extend_from_slice(&self.frame(&head, false));
        out.extend_from_slice(&self.frame(body, true));
        out
    }
}

/// What an answer's frames brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// More bytes are needed for the next frame.
    Pending,
    /// The data of the next frame (the head is frame 0).
    Frame(Bytes),
}

/// Opens the frames of one answer, in order; a frame that does not open,
/// comes out of order or follows the last one fails the whole answer
/// (counted once).
pub struct AnswerOpener {
    envelope: Envelope,
    request: [u8; 24],
    answer_id: Option<[u8; 16]>,
    index: u64,
    buf: BytesMut,
    done: bool,
}

impl AnswerOpener {
    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the last frame was opened.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Frames opened so far (the head included).
    pub fn frames(&self) -> u64 {
        self.index
    }

    fn fail(&mut self) -> Refusal {
        self.envelope.inner.stats.refused_answer();
        self.done = true;
        self.buf.clear();
        Refusal::Tampered
    }

    /// The next frame's data from the bytes received so far.
    pub fn next_frame(&mut self) -> Result<Opened, Refusal> {
        if self.done {
            return if self.buf.is_empty() {
                Ok(Opened::Pending)
            } else {
                Err(self.fail())
            };
        }
        let answer_id = match self.answer_id {
            Some(a) => a,
            None => {
                if self.buf.len() < ANSWER_PREFIX {
                    return Ok(Opened::Pending);
                }
                if &self.buf[..4] != ANSWER_MAGIC {
                    return Err(self.fail());
                }
                let a: [u8; 16] = self.buf[4..ANSWER_PREFIX].try_into().expect("16 bytes");
                self.buf.advance(ANSWER_PREFIX);
                self.answer_id = Some(a);
                a
            }
        };
        if self.buf.len() < 4 {
            return Ok(Opened::Pending);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if !(17..=MAX_FRAME).contains(&len) {
            return Err(self.fail());
        }
        if self.buf.len() < 4 + len {
            return Ok(Opened::Pending);
        }
        self.buf.advance(4);
        let sealed = self.buf.split_to(len);
        let aad = answer_aad(&self.request, &answer_id, self.index);
        let Ok(plain) = self.envelope.inner.answer.decrypt(
            XNonce::from_slice(&answer_nonce(&answer_id, self.index)),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        ) else {
            return Err(self.fail());
        };
        self.index += 1;
        let mut plain = Bytes::from(plain);
        let flag = plain.get_u8();
        if flag == LAST {
            if self.index < 2 {
                // An answer holds a head and at least one more frame.
                return Err(self.fail());
            }
            self.done = true;
        } else if flag != 0 {
            return Err(self.fail());
        }
        Ok(Opened::Frame(plain))
    }

    /// The head and body of a whole answer.
    pub fn whole(mut self, bytes: &[u8]) -> Result<(AnswerHead, Vec<u8>), Refusal> {
        self.push(bytes);
        let mut head = None;
        let mut body = Vec::new();
        loop {
            match self.next_frame()? {
                Opened::Pending => break,
                Opened::Frame(data) if head.is_none() => {
                    head = Some(postcard::from_bytes::<AnswerHead>(&data).map_err(|_| self.fail())?)
                }
                Opened::Frame(data) => body.extend_from_slice(&data),
            }
        }
        match head {
            Some(head) if self.done && self.buf.is_empty() => Ok((head, body)),
            _ => Err(self.fail()),
        }
    }

    /// Records that the answer ended without its last frame: it was cut
    /// short on the way (counted).
    pub fn truncated(&mut self) {
        if !self.done {
            self.fail();
        }
    }

    /// Decodes a head frame; a head that does not decode fails the answer.
    pub fn head(&mut self, data: &[u8]) -> Result<AnswerHead, Refusal> {
        postcard::from_bytes(data).map_err(|_| self.fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Envelope, Envelope) {
        let a = Envelope::new(b"cluster secret", "edge", 1, Arc::default());
        let b = Envelope::new(b"cluster secret", "edge", 2, Arc::default());
        (a, b)
    }

    const T: Target<'static> = Target {
        method: "POST",
        to: "127.0.0.1:8080",
        path: "/cluster/v1/feed",
    };

    #[test]
    fn requests_open_once_only_with_the_key_and_target() {
        let (a, b) = pair();
        let (id, sealed) = a.seal_request(T, b"hello");
        let parsed = b.precheck(Some(&id.header())).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(b.open_request(&parsed, T, &sealed).unwrap(), b"hello");
        assert_eq!(
            b.open_request(&parsed, T, &sealed).unwrap_err(),
            Refusal::Replayed
        );
        let (id, sealed) = a.seal_request(T, b"hello");
        for other in [
            Target { method: "GET", ..T },
            Target {
                to: "127.0.0.1:8081",
                ..T
            },
            Target {
                path: "/cluster/v1/feed?x",
                ..T
            },
        ] {
            assert_eq!(
                b.open_request(&id, other, &sealed).unwrap_err(),
                Refusal::Tampered
            );
        }
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(
            b.open_request(&id, T, &flipped).unwrap_err(),
            Refusal::Tampered
        );
        let moved = RequestId {
            ms: id.ms + 1,
            ..id
        };
        assert_eq!(
            b.open_request(&moved, T, &sealed).unwrap_err(),
            Refusal::Tampered
        );
        let other_key = Envelope::new(b"other secret", "edge", 3, Arc::default());
        assert_eq!(
            other_key.open_request(&id, T, &sealed).unwrap_err(),
            Refusal::Tampered
        );
        let other_name = Envelope::new(b"cluster secret", "lab", 3, Arc::default());
        assert_eq!(
            other_name.open_request(&id, T, &sealed).unwrap_err(),
            Refusal::Tampered
        );
        // Refusals before and after tampering do not burn the nonce.
        assert!(b.open_request(&id, T, &sealed).is_ok());
        let s = b.stats().snapshot();
        assert_eq!(s[1], ("refused_http_tampered", 5));
        assert_eq!(s[2], ("refused_http_replayed", 1));
    }

    #[test]
    fn headers_of_another_version_or_clock_are_refused() {
        let (a, b) = pair();
        let (id, _) = a.seal_request(T, b"");
        for bad in [
            String::new(),
            "1.2.3".into(),
            id.header().replacen("2.", "1.", 1),
            format!("{}.1", id.header()),
            "0000000000000007.1733000000000.00".into(),
        ] {
            assert_eq!(
                b.precheck(Some(&bad)).unwrap_err(),
                Refusal::BadAuth,
                "{bad}"
            );
        }
        assert_eq!(b.precheck(None).unwrap_err(), Refusal::BadAuth);
        let old = RequestId {
            ms: id.ms - 31_000,
            ..id
        };
        assert_eq!(b.precheck(Some(&old.header())).unwrap_err(), Refusal::Stale);
    }

    #[test]
    fn the_replay_window_accepts_late_requests_once() {
        let (a, b) = pair();
        let reqs: Vec<_> = (0..5000).map(|_| a.seal_request(T, b"x")).collect();
        let open = |i: usize| b.open_request(&reqs[i].0, T, &reqs[i].1);
        assert!(open(100).is_ok());
        assert!(open(99).is_ok());
        assert!(open(3).is_ok());
        assert_eq!(open(99).unwrap_err(), Refusal::Replayed);
        assert!(open(4000).is_ok());
        // Within the window below the highest: accepted once.
        assert!(open(200).is_ok());
        assert_eq!(open(200).unwrap_err(), Refusal::Replayed);
        assert_eq!(open(100).unwrap_err(), Refusal::Replayed);
        assert!(open(4999).is_ok());
        // 200 is now more than the window behind.
        assert_eq!(open(201).unwrap_err(), Refusal::Replayed);
        assert!(open(1000).is_ok());
        assert_eq!(open(1000).unwrap_err(), Refusal::Replayed);
        assert_eq!(open(4000).unwrap_err(), Refusal::Replayed);
    }

    #[test]
    fn answers_open_only_for_their_request_and_in_order() {
        let (a, b) = pair();
        let (id, _) = a.seal_request(T, b"");
        let (other, _) = a.seal_request(T, b"");
        let head = AnswerHead {
            status: 200,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
        };
        let whole = b.answer_sealer(&id).whole(&head, b"body");
        assert_eq!(
            a.answer_opener(&id).whole(&whole).unwrap(),
            (head.clone(), b"body".to_vec())
        );
        // Another request's answer, a flipped byte, a cut: refused.
        assert!(a.answer_opener(&other).whole(&whole).is_err());
        for i in [0, 5, 21, 30, whole.len() - 1] {
            let mut flipped = whole.clone();
            flipped[i] ^= 1;
            assert!(a.answer_opener(&id).whole(&flipped).is_err(), "{i}");
        }
        assert!(
            a.answer_opener(&id)
                .whole(&whole[..whole.len() - 1])
                .is_err()
        );
        // A stream: frames open one by one; reordered frames are refused.
        let mut s = b.answer_sealer(&id);
        let head_bytes = postcard::to_allocvec(&head).unwrap();
        let (p, f0, f1, f2) = (
            s.prefix(),
            s.frame(&head_bytes, false),
            s.frame(b"one", false),
            s.frame(b"", true),
        );
        let mut o = a.answer_opener(&id);
        o.push(&p);
        o.push(&f0[..3]);
        assert_eq!(o.next_frame().unwrap(), Opened::Pending);
        o.push(&f0[3..]);
        assert_eq!(o.next_frame().unwrap(), Opened::Frame(head_bytes.into()));
        o.push(&f1);
        assert_eq!(o.next_frame().unwrap(), Opened::Frame("one".into()));
        assert!(!o.is_done());
        o.push(&f2);
        assert_eq!(o.next_frame().unwrap(), Opened::Frame(Bytes::new()));
        assert!(o.is_done());
        let mut o = a.answer_opener(&id);
        o.push(&p);
        o.push(&f0);
        o.push(&f2);
        assert!(o.next_frame().is_ok());
        assert!(o.next_frame().is_err());
        assert_eq!(
            a.stats().refused_answers.load(Ordering::Relaxed),
            8,
            "each refused answer counted once"
        );
    }
}
