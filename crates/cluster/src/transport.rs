//! Node-to-node transport: HTTP/2 between nodes (cleartext with prior
//! knowledge, or TLS with ALPN `h2` when the nodes serve TLS), compact
//! postcard bodies, every request and every answer sealed
//! with keys derived from the cluster key ([`crate::envelope`]).
//!
//! Five exchanges use it: the **feed** (below), a group **take** (a node
//! that starts coordinating a group asks a peer for its copy), a group
//! **give** (a leaving node hands a group over), an **idempotency** lookup
//! and a **forward** (a group request relayed to the group's coordinator,
//! whose answer may be an event stream). See `docs/api.md` for their
//! bodies.
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

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use serde::{Deserialize, Serialize};
use switchyard_model::{Header, Message, MessageId, NodeId, Timestamp, Topic};

pub use crate::envelope::AUTH_HEADER;
use crate::envelope::{
    AnswerHead, AnswerOpener, AnswerSealer, Envelope, Opened, RequestId, Target,
};

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
/// Content type of transport bodies (sealed requests and answers).
pub const CONTENT_TYPE: &str = "application/x-switchyard-cluster; v=2";
/// Largest feed request body (plaintext).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest feed answer body (plaintext).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Largest relayed client request body (plaintext, its headers included).
pub const MAX_FORWARD: usize = 2 * 1024 * 1024;
/// Bytes sealing adds to a whole answer: the prefix, two frames (head and
/// body) and a head of a few headers.
const ANSWER_OVERHEAD: usize =
    crate::envelope::ANSWER_PREFIX + 2 * crate::envelope::FRAME_OVERHEAD + 4096;

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
    /// The members the asking node sees live, itself included. A peer
    /// that holds no copy answers with the snapshots recorded by the
    /// coordinators that either node sees gone, so that a node that sees
    /// a coordinator down before the peer does still learns its last
    /// state. Absent from nodes of earlier versions: then the peer's own
    /// view decides.
    pub live: Option<Vec<u64>>,
}

/// A group take as nodes of earlier versions of this transport send it
/// (without [`GroupTake::live`]).
#[derive(Serialize, Deserialize)]
struct EarlierGroupTake {
    name: String,
    confirm: bool,
}

impl GroupTake {
    /// Decodes a take of this version or of an earlier one. Postcard
    /// fields are positional: the earlier form ends where `live` starts,
    /// and nodes of the earlier version ignore the bytes `live` adds.
    pub fn decode(b: &[u8]) -> Result<GroupTake, String> {
        decode::<GroupTake>(b).or_else(|e| match decode::<EarlierGroupTake>(b) {
            Ok(t) => Ok(GroupTake {
                name: t.name,
                confirm: t.confirm,
                live: None,
            }),
            Err(_) => Err(e),
        })
    }
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

/// What a peer knows of one idempotency key.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum IdempotencyAnswer {
    /// The peer holds no message under the key and none is on its way.
    Absent,
    /// The message the peer holds under the key.
    Held(IdempotencyRecord),
    /// A publish with the key is on its way to the peer's log (or failed
    /// in a way that may still have stored it): a message may soon exist
    /// under the key.
    InFlight,
}

/// The answer to an [`IdempotencyLookup`]: one entry per pair, in order.
pub type IdempotencyFound = Vec<IdempotencyAnswer>;

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
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP/2 client of one connection per peer, kept alive and
/// reconnected by its pool; it speaks TLS to `https://` URLs with `tls`
/// (ALPN `h2`).
fn h2_client(tls: &rustls::ClientConfig) -> H2Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http2()
        .wrap_connector(connector);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(5))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .build(connector)
}

/// The rustls crypto provider of every TLS configuration of the node:
/// `ring`. rustls marks it deprecated because it has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake and a long C build.
#[allow(deprecated)]
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS settings a node dials its peers with when it serves TLS.
///
/// With `ca` (the `[tls] ca_file` certificates) a peer's certificate must
/// chain to one of them and name the host of the peer's advertised
/// address. Without, any certificate is taken (its handshake signature
/// still checked): the sealed envelope ([`crate::envelope`]) already
/// authenticates and encrypts every body with the cluster key, and TLS
/// then adds confidentiality of the rest (paths, headers) against a
/// passive observer.
pub fn peer_tls_config(
    ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = tls_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match ca {
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyPeerCert(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Takes any certificate of a peer: see [`peer_tls_config`].
#[derive(Debug)]
struct AnyPeerCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyPeerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A relayed client request as it travels sealed: the client's headers
/// that the serving node reads, and its body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardedRequest {
    /// Headers (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The client's body.
    pub body: Vec<u8>,
}

/// Client headers a relayed request carries.
pub const FORWARDED_HEADERS: [http::HeaderName; 4] = [
    http::header::ACCEPT,
    http::header::CONTENT_TYPE,
    http::header::USER_AGENT,
    http::HeaderName::from_static(JOIN_WITHOUT_ADMIN),
];

/// Header the relaying node sets on a group join whose member has no
/// admin rights: the coordinator, which trusts relayed requests, limits
/// the groups such a join may create. The relaying node removes a
/// client's own header of this name.
pub const JOIN_WITHOUT_ADMIN: &str = "switchyard-join-without-admin";

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
    /// `https` when the nodes serve TLS, else `http`.
    scheme: &'static str,
    /// Feeds, group takes and gives.
    http: H2Client,
    /// Relayed client requests ([`PeerClient::forward`]).
    relay: H2Client,
    envelope: Envelope,
}

impl PeerClient {
    /// A client that seals with `envelope`, and dials its peers over TLS
    /// with `tls` when given (see [`peer_tls_config`]).
    pub fn new(envelope: Envelope, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        let (scheme, tls) = match tls {
            Some(tls) => ("https", tls),
            // Never used for an `http` URL, but the connector wants one.
            None => match peer_tls_config(None) {
                Ok(c) => ("http", std::sync::Arc::new(c)),
                Err(_) => unreachable!("ring supports the default protocol versions"),
            },
        };
        PeerClient {
            scheme,
            http: h2_client(&tls),
            relay: h2_client(&tls),
            envelope,
        }
    }

    /// Asks the peer at `addr` (`host:port`) for its feed. Bounded by
    /// `timeout`, which should exceed the request's wait. The answer is
    /// authentic (it opened for this request); its values are the
    /// caller's to check.
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
    /// sealed with the client's body and the headers in
    /// [`FORWARDED_HEADERS`]. Only the wait for the answer's head is
    /// bounded by `timeout`; the body streams for as long as the peer
    /// sends it (an SSE stream ends when either side drops it). The
    /// answer's status, headers and body are the peer's, opened frame by
    /// frame: a frame that does not open, or a stream that ends without
    /// its last frame, ends the body with an error.
    pub async fn forward(
        &self,
        addr: &str,
        method: http::Method,
        target: &str,
        headers: &http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<http::Response<OpenedBody>, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            detail,
        };
        let path = format!("{FORWARD_PREFIX}{target}");
        let forwarded = ForwardedRequest {
            headers: FORWARDED_HEADERS
                .iter()
                .filter_map(|name| {
                    let v = headers.get(name)?;
                    Some((name.as_str().to_owned(), v.as_bytes().to_vec()))
                })
                .collect(),
            body: body.to_vec(),
        };
        let (id, sealed) = self.envelope.seal_request(
            Target {
                method: method.as_str(),
                to: addr,
                path: &path,
            },
            &encode(&forwarded),
        );
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}://{addr}{path}", self.scheme))
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(AUTH_HEADER, id.header())
            .body(Full::new(Bytes::from(sealed)))
            .map_err(|e| unreachable(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = tokio::time::timeout_at(deadline, self.relay.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = refused_unless_ok(addr, resp, timeout).await?;
        let mut body = OpenedBody {
            inner: resp.into_body(),
            opener: self.envelope.answer_opener(&id),
            addr: addr.to_owned(),
        };
        let head = tokio::time::timeout_at(deadline, body.head())
            .await
            .map_err(|_| unreachable("timed out".into()))??;
        let mut out = http::Response::new(body);
        *out.status_mut() =
            http::StatusCode::from_u16(head.status).map_err(|_| TransportError::Invalid {
                addr: addr.to_owned(),
                detail: format!("status {}", head.status),
            })?;
        for (name, value) in head.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&value),
            ) {
                out.headers_mut().append(name, value);
            }
        }
        Ok(out)
    }

    /// One sealed request with a postcard body and a postcard answer of at
    /// most [`MAX_RESPONSE`] bytes.
    pub(crate) async fn call<Q: Serialize, A: for<'de> Deserialize<'de>>(
        &self,
        addr: &str,
        path: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, TransportError> {
        self.call_limited(addr, path, req, timeout, MAX_RESPONSE)
            .await
    }

    /// One sealed request with a postcard body and a postcard answer of at
    /// most `max_answer` bytes.
    pub(crate) async fn call_limited<Q: Serialize, A: for<'de> Deserialize<'de>>(
        &self,
        addr: &str,
        path: &str,
        req: &Q,
        timeout: Duration,
        max_answer: usize,
    ) -> Result<A, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            detail,
        };
        let (id, sealed) = self.envelope.seal_request(
            Target {
                method: "POST",
                to: addr,
                path,
            },
            &encode(req),
        );
        let request = http::Request::post(format!("{}://{addr}{path}", self.scheme))
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(AUTH_HEADER, id.header())
            .body(Full::new(Bytes::from(sealed)))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = refused_unless_ok(addr, resp, timeout).await?;
        let body = tokio::time::timeout(
            timeout,
            Limited::new(resp.into_body(), max_answer + ANSWER_OVERHEAD).collect(),
        )
        .await
        .map_err(|_| unreachable("timed out reading the answer".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
        let (head, body) =
            self.envelope
                .answer_opener(&id)
                .whole(&body)
                .map_err(|_| TransportError::Invalid {
                    addr: addr.to_owned(),
                    detail: "the answer's seal does not open for this request".into(),
                })?;
        if !(200..300).contains(&head.status) {
            return Err(TransportError::Refused {
                addr: addr.to_owned(),
                status: head.status,
                detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        decode(&body).map_err(|detail| TransportError::Invalid {
            addr: addr.to_owned(),
            detail,
        })
    }
}

/// A sealed answer comes as `200`; any other status is a refusal before
/// the request was opened (unsealed, with a short reason), read for the
/// error.
async fn refused_unless_ok(
    addr: &str,
    resp: http::Response<Incoming>,
    timeout: Duration,
) -> Result<http::Response<Incoming>, TransportError> {
    if resp.status() == http::StatusCode::OK {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let detail =
        match tokio::time::timeout(timeout, Limited::new(resp.into_body(), 4096).collect()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            _ => String::new(),
        };
    Err(TransportError::Refused {
        addr: addr.to_owned(),
        status,
        detail,
    })
}

/// A peer's sealed answer, opened frame by frame (see
/// [`crate::envelope`]): yields the plaintext of each frame after the head.
pub struct OpenedBody {
    inner: Incoming,
    opener: AnswerOpener,
    addr: String,
}

impl OpenedBody {
    fn invalid(&self, detail: &str) -> TransportError {
        TransportError::Invalid {
            addr: self.addr.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Reads up to the head frame.
    async fn head(&mut self) -> Result<AnswerHead, TransportError> {
        loop {
            match self.opener.next_frame() {
                Ok(Opened::Frame(data)) => {
                    return self
                        .opener
                        .head(&data)
                        .map_err(|_| self.invalid("the answer's head does not decode"));
                }
                Ok(Opened::Pending) => {}
                Err(_) => return Err(self.invalid("the answer's seal does not open")),
            }
            match self.inner.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.opener.push(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(TransportError::Unreachable {
                        addr: self.addr.clone(),
                        detail: e.to_string(),
                    });
                }
                None => {
                    return Err(self.invalid("the answer ended before its head"));
                }
            }
        }
    }
}

impl HttpBody for OpenedBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        loop {
            match self.opener.next_frame() {
                Ok(Opened::Frame(data)) if data.is_empty() => continue,
                Ok(Opened::Frame(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Opened::Pending) if self.opener.is_done() => return Poll::Ready(None),
                Ok(Opened::Pending) => {}
                Err(_) => {
                    return Poll::Ready(Some(Err(
                        self.invalid("a frame of the answer does not open")
                    )));
                }
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.opener.push(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(TransportError::Unreachable {
                        addr: self.addr.clone(),
                        detail: e.to_string(),
                    })));
                }
                Poll::Ready(None) => {
                    // Ended cleanly without the last frame: cut short on
                    // the way.
                    self.opener.truncated();
                    return Poll::Ready(Some(Err(self.invalid("the answer was cut short"))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A node's answer to an opened request, sealed frame by frame as the
/// inner body yields data: the head (status and headers) first, each data
/// chunk as one frame, and a last frame when the inner body ends. An
/// inner body that fails ends the stream without a last frame, which the
/// peer sees as cut short.
pub struct SealedBody<B> {
    inner: B,
    sealer: AnswerSealer,
    first: Option<Bytes>,
    finished: bool,
}

impl<B> SealedBody<B> {
    /// Seals `inner` as the answer to request `id` with status and
    /// headers `head`.
    pub fn new(envelope: &Envelope, id: &RequestId, head: &AnswerHead, inner: B) -> Self {
        let mut sealer = envelope.answer_sealer(id);
        let mut first = sealer.prefix().to_vec();
        first.extend_from_slice(&sealer.frame(&encode(head), false));
        SealedBody {
            inner,
            sealer,
            first: Some(Bytes::from(first)),
            finished: false,
        }
    }
}

impl<B> HttpBody for SealedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        let sealed = self.sealer.frame(&data, false);
                        return Poll::Ready(Some(Ok(Frame::data(sealed))));
                    }
                    // Empty chunks and trailers carry nothing to relay.
                    _ => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let last = self.sealer.frame(&[], true);
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.finished
    }
}

/// A whole sealed answer to request `id`: status, headers and body.
pub fn seal_whole(envelope: &Envelope, id: &RequestId, head: &AnswerHead, body: &[u8]) -> Vec<u8> {
    envelope.answer_sealer(id).whole(head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_from_an_earlier_version_decodes_and_a_new_one_round_trips() {
        let old = encode(&EarlierGroupTake {
            name: "g".into(),
            confirm: true,
        });
        let take = GroupTake::decode(&old).unwrap();
        assert_eq!(take.live, None);
        assert!(take.confirm);
        let new = GroupTake {
            name: "g".into(),
            confirm: false,
            live: Some(vec![1, 2]),
        };
        let bytes = encode(&new);
        assert_eq!(GroupTake::decode(&bytes).unwrap(), new);
        // Nodes of the earlier version read the new form.
        let earlier: EarlierGroupTake = decode(&bytes).unwrap();
        assert_eq!((earlier.name.as_str(), earlier.confirm), ("g", false));
        assert!(GroupTake::decode(b"\xff").is_err());
    }

    #[tokio::test]
    async fn sealed_bodies_open_frame_by_frame() {
        use crate::envelope::HttpStats;
        use std::sync::Arc;
        let a = Envelope::new(b"cluster secret", "edge", 1, Arc::new(HttpStats::default()));
        let b = Envelope::new(b"cluster secret", "edge", 2, Arc::new(HttpStats::default()));
        let (id, _) = a.seal_request(
            Target {
                method: "GET",
                to: "127.0.0.1:1",
                path: "/cluster/v1/forward/v1/events",
            },
            b"",
        );
        let head = AnswerHead {
            status: 200,
            headers: vec![("content-type".into(), b"text/event-stream".to_vec())],
        };
        let chunks = ["data: one\n\n", "", "data: two\n\n"];
        let inner = Chunks(chunks.iter().map(|c| Bytes::from(*c)).collect());
        let sealed = SealedBody::new(&b, &id, &head, inner)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let (h, body) = a.answer_opener(&id).whole(&sealed).unwrap();
        assert_eq!(h, head);
        assert_eq!(body, b"data: one\n\ndata: two\n\n");
    }

    /// A body of given chunks.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
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
