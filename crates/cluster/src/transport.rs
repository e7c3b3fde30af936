//! Node-to-node transport: HTTP/2 (cleartext, prior knowledge) between
//! nodes, compact postcard bodies, every request signed with a key derived
//! from the cluster key.
//!
//! Four exchanges use it: the **feed** (below), a group **take** (a node
//! that starts coordinating a group asks a peer for its copy), a group
//! **give** (a leaving node hands a group over) and a **forward** (a group
//! request relayed to the group's coordinator). See
//! `docs/internals/protocol.md` for their bodies.
//!
//! In the feed, a node asks a peer for the
//! peer's own messages (its origin log) that match the patterns the asking
//! node is interested in, after the origin sequence it already holds. The
//! peer answers with up to a bounded batch and `through`, the origin
//! sequence up to which it looked: the asking node then holds every message
//! of interest up to `through`. When there is nothing new the peer waits a
//! little before answering (a long poll), so messages flow promptly without
//! a queue per peer: the asking node pulls, so a slow node slows only its
//! own pulls (backpressure), and memory is bounded by one batch per peer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use switchyard_model::{Header, Message, MessageId, NodeId, Timestamp, Topic};

/// Path of the feed request.
pub const FEED_PATH: &str = "/cluster/v1/feed";
/// Path of a request to hand a consumer group's state to the node that now
/// coordinates it.
pub const GROUP_TAKE_PATH: &str = "/cluster/v1/groups/take";
/// Path of a request that hands a consumer group's state to the node that
/// coordinates it next, from a node that is leaving the cluster.
pub const GROUP_GIVE_PATH: &str = "/cluster/v1/groups/give";
/// Path of a request that asks a peer which of a publisher's idempotency
/// keys it already holds a message for.
pub const IDEMPOTENCY_PATH: &str = "/cluster/v1/idempotency";
/// Prefix of a client request relayed to the node that serves it: the rest
/// of the path and the query are the client's (`/cluster/v1/forward/v1/...`).
pub const FORWARD_PREFIX: &str = "/cluster/v1/forward";
/// Header carrying the request signature.
pub const AUTH_HEADER: &str = "switchyard-cluster-auth";
/// Content type of transport bodies.
pub const CONTENT_TYPE: &str = "application/x-switchyard-cluster";
/// Largest feed request body.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest feed answer body.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Signatures older or newer than this are refused.
const MAX_SKEW_MS: u64 = 30_000;

/// What a node asks a peer for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedRequest {
    /// Topic patterns of interest.
    pub patterns: Vec<String>,
    /// The peer's origin sequence the asking node holds through.
    pub after: u64,
    /// When not 0, the answer stops at this origin sequence (a catch-up
    /// of older messages ends where the live pulls began).
    pub until: u64,
    /// Most messages in the answer.
    pub limit: u32,
    /// How long the peer may wait for new messages, in ms.
    pub wait_ms: u32,
    /// Whose log: 0 for the answering node's own; another node's id asks
    /// for what the answering node holds of that origin (a catch-up while
    /// the origin is unreachable; `until` applies, the answer never waits).
    pub origin: u64,
    /// The asking node's id: a replica's pull of the whole log tells the
    /// origin with `after` how far it holds it (0 when not given).
    pub from: u64,
}

/// A request to give up a consumer group: the asking node now coordinates
/// it (it wins the group's rendezvous hash over the live members). The peer
/// stops its coordinator for the group, if one runs, and answers with the
/// group's persisted state; it refuses while it still sees itself as the
/// coordinator. The peer deletes its copy only when the asking node,
/// having stored the state, asks again with `confirm`, so an answer lost
/// on the way loses nothing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupTake {
    /// The group's name.
    pub name: String,
    /// The state was stored by the asking node: delete the copy handed over.
    pub confirm: bool,
}

/// A consumer group's persisted state, as handed from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupState {
    /// Settings, as the router encodes them.
    pub settings: Vec<u8>,
    /// The position (an encoded cursor).
    pub cursor: String,
    /// Counters, as the router encodes them.
    pub counters: Vec<u8>,
    /// Messages in flight: origin, origin sequence, delivery count.
    pub inflight: Vec<(u64, u64, u32)>,
}

/// A leaving node hands a group it coordinated to the node that
/// coordinates it next; the answer is `true` once the state is stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupGive {
    /// The group's name.
    pub name: String,
    /// Its state.
    pub state: GroupState,
}

/// Asks a peer for the messages it holds under these (topic, idempotency
/// key) pairs: a publish with a key this node does not know may repeat one
/// that reached another node (a retry after a failure).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyLookup {
    /// (topic, key) pairs, at most [`MAX_IDEMPOTENCY_LOOKUP`].
    pub entries: Vec<(String, String)>,
}

/// Most pairs in one [`IdempotencyLookup`].
pub const MAX_IDEMPOTENCY_LOOKUP: usize = 10_000;

/// The message a peer holds under an idempotency key: its origin, origin
/// sequence, stream sequence and timestamp.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The message's origin.
    pub origin: u64,
    /// Its origin sequence.
    pub seq: u64,
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its timestamp (HLC).
    pub timestamp: u64,
}

/// The answer to an [`IdempotencyLookup`]: one entry per pair, in order.
pub type IdempotencyFound = Vec<Option<IdempotencyRecord>>;

/// The answer to a [`GroupTake`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum GroupTaken {
    /// The peer held no state for the group.
    Absent,
    /// The peer's state for the group; the peer no longer runs it and
    /// deletes it on confirmation.
    State(GroupState),
    /// The peer still coordinates the group as it sees the membership; ask
    /// again once the views agree.
    Refused(String),
    /// The peer holds no state of its own for the group, but copies of
    /// what coordinators that are no longer live members recorded in their
    /// origin logs (which the peer replicates). Nothing to confirm.
    Snapshots(Vec<GroupSnapshot>),
}

/// A group's state as its coordinator recorded it in its own origin log
/// (a `$sys.groups` stream), which replication copies to the origin's
/// replicas: a crashed coordinator's groups resume from it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The coordinator that recorded it.
    pub origin: u64,
    /// The group's name.
    pub name: String,
    /// When the group was created (its incarnation), in Unix milliseconds.
    pub created_ms: u64,
    /// The coordinator's epoch for the group.
    pub epoch: u64,
    /// The group's state; `None` records that the group was deleted.
    pub state: Option<GroupState>,
}

/// A message on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireMessage {
    /// Origin sequence.
    pub seq: u64,
    /// Topic.
    pub topic: String,
    /// Sequence in its stream (topic, origin).
    pub stream_seq: u64,
    /// Hybrid logical clock timestamp.
    pub timestamp: u64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A peer's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedResponse {
    /// The peer's node id (the messages' origin).
    pub origin: u64,
    /// Everything of interest up to this origin sequence is in `messages`
    /// or was held before.
    pub through: u64,
    /// Messages in origin order.
    pub messages: Vec<WireMessage>,
    /// For a request with `until` (a catch-up): the streams of the
    /// patterns whose older messages the peer removed by retention past
    /// `after`: topic, last removed stream sequence, its origin sequence.
    pub trimmed: Vec<(String, u64, u64)>,
    /// The end of the answering node's log when it answered: when
    /// `through` reaches it, the asking node is up to date with it.
    pub head: u64,
    /// For a head request (`limit` 0): the other origins whose whole log
    /// the answering node holds from the start, each with how far (its
    /// watermark). A node learns from it of origins that are gone, to
    /// read their logs through the node that holds them.
    #[serde(default)]
    pub held: Vec<(u64, u64)>,
}

impl WireMessage {
    /// The wire form of a stored message.
    pub fn from_message(m: &Message) -> Self {
        WireMessage {
            seq: m.id.seq,
            topic: m.topic.as_str().to_owned(),
            stream_seq: m.stream_seq,
            timestamp: m.timestamp.0,
            key: m.key.as_ref().map(|k| k.to_vec()),
            headers: m
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            payload: m.payload.to_vec(),
        }
    }

    /// The message of origin `origin`; `None` when the topic is invalid.
    pub fn into_message(self, origin: NodeId) -> Option<Message> {
        let topic: Topic = self.topic.parse().ok()?;
        Some(Message {
            id: MessageId {
                origin,
                seq: self.seq,
            },
            topic,
            stream_seq: self.stream_seq,
            timestamp: Timestamp(self.timestamp),
            key: self.key.map(Bytes::from),
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            payload: Bytes::from(self.payload),
        })
    }
}

/// Encodes a transport body.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("transport values serialise")
}

/// Decodes a transport body.
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable body: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Signs and checks node-to-node requests with a key derived from the
/// cluster key: `<node hex>.<ms>.<hex HMAC-SHA256 of node, ms and path>`.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
    node: u64,
}

impl Signer {
    /// A signer for `node` with the cluster key `secret`.
    pub fn new(secret: &[u8], node: u64) -> Self {
        let mut derived = b"switchyard transport key v1\0".to_vec();
        derived.extend_from_slice(secret);
        Signer {
            key: crate::seal::derive_key(&derived),
            node,
        }
    }

    fn mac(&self, node: u64, ms: u64, path: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&node.to_be_bytes());
        mac.update(&ms.to_be_bytes());
        mac.update(path.as_bytes());
        mac
    }

    /// The header value for a request to `path`.
    pub fn sign(&self, path: &str) -> String {
        let ms = now_ms();
        let tag = self.mac(self.node, ms, path).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:016x}.{ms}.{hex}", self.node)
    }

    /// Checks a header value for `path`; the signing node's id.
    pub fn verify(&self, header: &str, path: &str) -> Result<u64, &'static str> {
        let mut parts = header.split('.');
        let (Some(node), Some(ms), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed signature");
        };
        let node = u64::from_str_radix(node, 16).map_err(|_| "malformed signature")?;
        let ms: u64 = ms.parse().map_err(|_| "malformed signature")?;
        if tag.len() != 64 || !tag.is_ascii() {
            return Err("malformed signature");
        }
        let tag: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&tag[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| "malformed signature")?;
        self.mac(node, ms, path)
            .verify_slice(&tag)
            .map_err(|_| "bad signature")?;
        if now_ms().abs_diff(ms) > MAX_SKEW_MS {
            return Err("signature too old or from a clock too far off");
        }
        Ok(node)
    }
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached or the connection broke.
    #[error("peer {addr} unreachable: {detail}")]
    Unreachable {
        /// The peer's HTTP address.
        addr: String,
        /// The cause.
        detail: String,
    },
    /// The peer answered with an error status.
    #[error("peer {addr} answered {status}: {detail}")]
    Refused {
        /// The peer's HTTP address.
        addr: String,
        /// The status.
        status: u16,
        /// The body.
        detail: String,
    },
    /// The answer could not be used.
    #[error("peer {addr} sent an unusable answer: {detail}")]
    Invalid {
        /// The peer's HTTP address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
}

type H2Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// An HTTP/2 client of one connection per peer, kept alive and
/// reconnected by its pool.
fn h2_client() -> H2Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(5))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .build(connector)
}

/// An HTTP/2 client for peers: two multiplexed connections per peer, one
/// for the feed and group hand-overs, one for relayed client requests.
///
/// Relayed requests have their own connection because a relayed group
/// member's event stream is read only as fast as the member reads it: the
/// data a member leaves unread holds its share of the connection's
/// receive window (hyper's client: 2 MiB per stream, 5 MiB per
/// connection), so three members that stop reading stall every stream of
/// their connection. Sharing it, they stalled this node's pulls from the
/// coordinator, and with them its subscribers and its replication of that
/// peer's log (measured: every message delayed past 30 s with four such
/// members). Apart, they can hold up only other relayed requests to the
/// same peer.
#[derive(Clone)]
pub struct PeerClient {
    /// Feeds, group takes and gives.
    http: H2Client,
    /// Relayed client requests ([`PeerClient::forward`]).
    relay: H2Client,
    signer: Signer,
}

impl PeerClient {
    /// A client that signs with `signer`.
    pub fn new(signer: Signer) -> Self {
        PeerClient {
            http: h2_client(),
            relay: h2_client(),
            signer,
        }
    }

    /// Asks the peer at `addr` (`host:port`) for its feed. Bounded by
    /// `timeout`, which should exceed the request's wait.
    pub async fn feed(
        &self,
        addr: &str,
        req: &FeedRequest,
        timeout: Duration,
    ) -> Result<FeedResponse, TransportError> {
        self.call(addr, FEED_PATH, req, timeout).await
    }

    /// Asks the peer at `addr` to give up consumer group `name` (see
    /// [`GroupTake`]). Bounded by `timeout`.
    pub async fn take_group(
        &self,
        addr: &str,
        req: &GroupTake,
        timeout: Duration,
    ) -> Result<GroupTaken, TransportError> {
        self.call(addr, GROUP_TAKE_PATH, req, timeout).await
    }

    /// Asks the peer at `addr` which of `req`'s idempotency keys it holds
    /// a message for. Bounded by `timeout`.
    pub async fn lookup_idempotency(
        &self,
        addr: &str,
        req: &IdempotencyLookup,
        timeout: Duration,
    ) -> Result<IdempotencyFound, TransportError> {
        self.call(addr, IDEMPOTENCY_PATH, req, timeout).await
    }

    /// Hands a group's state to the peer at `addr` (see [`GroupGive`]).
    pub async fn give_group(
        &self,
        addr: &str,
        req: &GroupGive,
        timeout: Duration,
    ) -> Result<bool, TransportError> {
        self.call(addr, GROUP_GIVE_PATH, req, timeout).await
    }

    /// Relays a client request to the peer at `addr` over the relay
    /// connection: `target` is the client's path and query (`/v1/...`),
    /// signed together with the forward prefix. Only the wait for the response head is bounded by
    /// `timeout`; the body streams for as long as the peer sends it (an SSE
    /// stream ends when either side drops it).
    pub async fn forward(
        &self,
        addr: &str,
        method: http::Method,
        target: &str,
        headers: &http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            detail,
        };
        let path = format!("{FORWARD_PREFIX}{target}");
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(AUTH_HEADER, self.signer.sign(&path));
        for name in [
            http::header::ACCEPT,
            http::header::CONTENT_TYPE,
            http::header::USER_AGENT,
        ] {
            if let Some(v) = headers.get(&name) {
                request = request.header(name, v);
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(timeout, self.relay.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))
    }

    /// One signed request with a postcard body and a postcard answer.
    async fn call<Q: Serialize, A: for<'de> Deserialize<'de>>(
        &self,
        addr: &str,
        path: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            detail,
        };
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(AUTH_HEADER, self.signer.sign(path))
            .body(Full::new(Bytes::from(encode(req))))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            timeout,
            Limited::new(resp.into_body(), MAX_RESPONSE).collect(),
        )
        .await
        .map_err(|_| unreachable("timed out reading the answer".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
        if !status.is_success() {
            return Err(TransportError::Refused {
                addr: addr.to_owned(),
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        decode(&body).map_err(|detail| TransportError::Invalid {
            addr: addr.to_owned(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_key_and_path() {
        let a = Signer::new(b"cluster secret", 7);
        let b = Signer::new(b"cluster secret", 9);
        let other = Signer::new(b"other secret", 9);
        let h = a.sign(FEED_PATH);
        assert_eq!(b.verify(&h, FEED_PATH), Ok(7));
        assert!(b.verify(&h, "/elsewhere").is_err());
        assert!(other.verify(&h, FEED_PATH).is_err());
        for junk in [
            "",
            "x",
            "1.2.3",
            "zz.1.00",
            &h[..h.len() - 1],
            &format!("{h}.x"),
        ] {
            assert!(b.verify(junk, FEED_PATH).is_err(), "{junk}");
        }
    }

    #[test]
    fn feed_bodies_round_trip() {
        let r = FeedResponse {
            origin: 5,
            through: 9,
            messages: vec![WireMessage {
                seq: 9,
                topic: "orders.eu".into(),
                stream_seq: 3,
                timestamp: 42,
                key: Some(b"k".to_vec()),
                headers: vec![("a".into(), "b".into())],
                payload: b"hello".to_vec(),
            }],
            trimmed: vec![("orders.eu".into(), 2, 7)],
            head: 12,
            held: vec![(7, 30)],
        };
        let back: FeedResponse = decode(&encode(&r)).unwrap();
        assert_eq!(back, r);
        let m = back.messages[0].clone().into_message(NodeId(5)).unwrap();
        assert_eq!(WireMessage::from_message(&m), r.messages[0]);
        assert!(decode::<FeedResponse>(b"\xff\xff\xff").is_err());
    }
}
