//! SWIM membership: one task owns foca, the UDP socket and the timers, so
//! nothing is shared but a view of the members and the counters.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, Config, Foca, Identity, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, PostcardCodec, State, Timer,
};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{ClusterConfig, MAX_PACKET};
use crate::envelope::{Envelope, HttpStats};
use crate::seal::{Refusal, Sealer};
use crate::transport::PeerClient;

mod actor;
use actor::{Actor, foca_config};

/// Receive buffer asked for the gossip socket (the kernel caps it at
/// `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// Events queued for the node before new ones are dropped (and counted).
const EVENT_QUEUE: usize = 1024;
/// Members remembered after they went down or left.
const MAX_REMEMBERED: usize = 1024;
/// First byte of a sealed body: a foca packet.
const KIND_SWIM: u8 = 0;
/// First byte of a sealed body: the sender leaves the cluster.
const KIND_LEAVE: u8 = 1;

/// A node's rendezvous score as a replica of `origin` (SplitMix64 of the
/// two ids): fixed, so nodes running different builds agree.
fn replica_score(origin: u64, node: u64) -> u64 {
    let mut z = origin ^ node.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A member's identity in gossip: node id, generation (bumped each time
/// the node rejoins after being declared down, and on every start), and
/// its addresses. Two identities with the same gossip address are the same
/// member; the higher generation wins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node id (0 for a seed not yet heard from).
    pub node: u64,
    /// Generation.
    pub generation: u64,
    /// Gossip address.
    pub gossip: SocketAddr,
    /// HTTP address (`host:port`).
    pub http: String,
    /// The highest generation seen of another identity at this gossip
    /// address (an earlier run of this node, or of the node that had the
    /// address before): a renewed identity must win against it. Shared by
    /// the clones of this node's own identity; not part of the wire form
    /// or of equality.
    #[serde(skip)]
    floor: Arc<AtomicU64>,
}

impl NodeIdentity {
    fn new(node: u64, generation: u64, gossip: SocketAddr, http: String) -> NodeIdentity {
        NodeIdentity {
            node,
            generation,
            gossip,
            http,
            floor: Arc::default(),
        }
    }

    /// Records that another identity at this gossip address has
    /// generation `generation`.
    pub(crate) fn saw_at_address(&self, generation: u64) {
        self.floor.fetch_max(generation, Ordering::Relaxed);
    }
}

impl PartialEq for NodeIdentity {
    fn eq(&self, other: &Self) -> bool {
        (self.node, self.generation, self.gossip, &self.http)
            == (other.node, other.generation, other.gossip, &other.http)
    }
}

impl Eq for NodeIdentity {}

impl std::hash::Hash for NodeIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.node, self.generation, self.gossip, &self.http).hash(state);
    }
}

impl Identity for NodeIdentity {
    type Addr = SocketAddr;

    /// The next generation: above this one, the wall clock, and every
    /// generation seen of another identity at this address. Without the
    /// last, a node that restarts while an earlier run's generation is
    /// ahead of its wall clock (stamped while the clock stood ahead) loses
    /// the address to that dead identity, is declared down, renews by one,
    /// loses again: thousands of rejoins a second until the clock
    /// catches up (seen in the long chaos run of seed 103).
    fn renew(&self) -> Option<Self> {
        let floor = self.floor.load(Ordering::Relaxed);
        Some(NodeIdentity {
            generation: (self.generation + 1)
                .max(now_ms())
                .max(floor.saturating_add(1)),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// A member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared dead.
    Down,
    /// Left on purpose (graceful shutdown).
    Left,
}

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    /// Node id (16 hex digits).
    pub id: String,
    /// State.
    pub state: MemberState,
    /// HTTP address.
    pub http_addr: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// Generation.
    pub generation: u64,
    /// Milliseconds since a packet from it arrived (`null` for this node
    /// and for members never heard from directly).
    pub last_heard_ms: Option<u64>,
    /// Whether this is the local node.
    #[serde(rename = "self")]
    pub is_self: bool,
}

/// A membership change.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterEvent {
    /// `joined`, `suspect`, `alive`, `down`, `left` or `rejoined` (same
    /// node, new generation).
    pub event: &'static str,
    /// The member after the change.
    pub member: MemberView,
}

/// Counters of the gossip layer.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Packets received and accepted.
    pub packets_in: AtomicU64,
    /// Packets sent.
    pub packets_out: AtomicU64,
    /// Bytes received (accepted or not).
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Packets refused: malformed or oversized.
    pub refused_malformed: AtomicU64,
    /// Packets refused: another cluster name.
    pub refused_wrong_cluster: AtomicU64,
    /// Packets refused: authentication failed (another key, forged, altered).
    pub refused_bad_auth: AtomicU64,
    /// Packets refused: replayed.
    pub refused_replayed: AtomicU64,
    /// Packets refused: the sender's clock is too far off.
    pub refused_stale: AtomicU64,
    /// Authenticated packets foca could not use.
    pub refused_invalid: AtomicU64,
    /// Membership events dropped because the node did not take them in time.
    pub events_dropped: AtomicU64,
    /// Node-to-node requests that opened but were refused: an
    /// undecodable body, or the request itself was invalid.
    pub refused_requests: AtomicU64,
    /// Refused node-to-node HTTP traffic (requests that do not open, are
    /// replayed or stale; answers that do not open; feed answers whose
    /// values fail the puller's checks).
    pub http: Arc<HttpStats>,
}

impl GossipStats {
    /// Counts a refused node-to-node request.
    pub fn refused_request(&self) {
        self.refused_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::Malformed => &self.refused_malformed,
            Refusal::WrongCluster => &self.refused_wrong_cluster,
            Refusal::BadAuth => &self.refused_bad_auth,
            Refusal::Replayed => &self.refused_replayed,
            Refusal::Stale => &self.refused_stale,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("packets_in", get(&self.packets_in)),
            ("packets_out", get(&self.packets_out)),
            ("bytes_in", get(&self.bytes_in)),
            ("bytes_out", get(&self.bytes_out)),
            ("refused_malformed", get(&self.refused_malformed)),
            ("refused_wrong_cluster", get(&self.refused_wrong_cluster)),
            ("refused_bad_auth", get(&self.refused_bad_auth)),
            ("refused_replayed", get(&self.refused_replayed)),
            ("refused_stale", get(&self.refused_stale)),
            ("refused_invalid", get(&self.refused_invalid)),
            ("events_dropped", get(&self.events_dropped)),
            ("refused_requests", get(&self.refused_requests)),
        ])
        .into_iter()
        .chain(self.http.snapshot())
        .collect()
    }
}

/// What this node knows of one member.
#[derive(Clone, Debug)]
struct Known {
    identity: NodeIdentity,
    state: MemberState,
    last_heard: Option<Instant>,
    changed: Instant,
}

struct Shared {
    local: Mutex<NodeIdentity>,
    members: Mutex<HashMap<u64, Known>>,
    stats: GossipStats,
    name: String,
}

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting is wrong.
    #[error("cluster settings: {0}")]
    Config(String),
    /// The gossip socket could not be bound.
    #[error("cannot listen for gossip on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

enum Command {
    Leave(oneshot::Sender<()>),
}

/// A handle to the running membership task. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    envelope: Envelope,
    client: PeerClient,
    replication_factor: usize,
    http: String,
}

impl Cluster {
    /// Binds the gossip socket, starts the membership task and joins through
    /// the seeds. `node` is this node's id, `http` its HTTP address. The
    /// receiver yields membership changes (bounded; when the node does not
    /// keep up, events are dropped and counted).
    pub async fn start(
        config: ClusterConfig,
        node: u64,
        http: String,
    ) -> Result<(Cluster, mpsc::Receiver<ClusterEvent>), ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        let replication_factor = config.replication_factor;
        let socket = UdpSocket::bind(config.gossip_listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: config.gossip_listen,
                source,
            })?;
        // Bursts of datagrams (many peers at once, or a flood of junk that
        // must be counted and refused) wait in the kernel while the task is
        // busy; the default buffer (about 200 KiB) drops them.
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER) {
            tracing::debug!(error = %e, "could not enlarge the gossip receive buffer");
        }
        let bound = socket.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.gossip_listen,
            source,
        })?;
        let mut gossip = config.gossip_advertise.unwrap_or(bound);
        if gossip.port() == 0 {
            gossip.set_port(bound.port());
        }
        if gossip.ip().is_unspecified() {
            return Err(ClusterError::Config(format!(
                "gossip listens on {bound}, which other nodes cannot reach; set cluster.gossip_advertise"
            )));
        }
        let identity = NodeIdentity::new(node, now_ms(), gossip, http.clone());
        let shared = Arc::new(Shared {
            local: Mutex::new(identity.clone()),
            members: Mutex::new(HashMap::new()),
            stats: GossipStats::default(),
            name: config.name.clone(),
        });
        let (commands, command_rx) = mpsc::channel(8);
        let (events, event_rx) = mpsc::channel(EVENT_QUEUE);
        let foca = Foca::new(
            identity.clone(),
            foca_config(&config),
            rand::make_rng::<SmallRng>(),
            PostcardCodec,
        );
        let actor = Actor {
            sealer: Sealer::new(&config.key, &config.name, node),
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            timers: BTreeMap::new(),
            timer_seq: 0,
            seeds: config.seeds.clone(),
            rejoin_interval: config.rejoin_interval,
            shared: shared.clone(),
            events,
            left: HashMap::new(),
            warned_cluster: None,
            heard: HashMap::new(),
            rejoins: None,
        };
        tracing::info!(node = %format!("{node:016x}"), %gossip, cluster = %config.name,
            seeds = config.seeds.len(), "gossip started");
        tokio::spawn(actor.run(command_rx));
        let envelope = Envelope::new(&config.key, &config.name, node, shared.stats.http.clone());
        let client = PeerClient::new(envelope.clone(), config.peer_tls.clone());
        Ok((
            Cluster {
                shared,
                commands,
                envelope,
                client,
                replication_factor,
                http,
            },
            event_rx,
        ))
    }

    /// Every member this node knows, itself first.
    pub fn members(&self) -> Vec<MemberView> {
        let now = Instant::now();
        let local = self.shared.local.lock().clone();
        let mut out = vec![view(&local, MemberState::Alive, None, true, now)];
        let members = self.shared.members.lock();
        let mut rest: Vec<MemberView> = members
            .values()
            .filter(|k| k.identity.node != local.node)
            .map(|k| view(&k.identity, k.state, k.last_heard, false, now))
            .collect();
        rest.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(rest);
        out
    }

    /// Members known and not gone on purpose (alive, suspect or down,
    /// this node included): the size a quorum is counted against, so that
    /// a side of a partition cannot reach one on its own.
    pub fn known_members(&self) -> usize {
        let local = self.shared.local.lock().node;
        1 + self
            .shared
            .members
            .lock()
            .values()
            .filter(|k| k.identity.node != local && k.state != MemberState::Left)
            .count()
    }

    /// How much of the cluster this node sees (see [`MembersSeen`] and
    /// [`majority_counts`]): a side of a partition sees a majority only if
    /// it holds more than half of the members; consumer groups are
    /// coordinated only there.
    pub fn members_seen(&self) -> MembersSeen {
        let me = self.shared.local.lock().clone();
        let members = self.shared.members.lock();
        let others: Vec<(MemberState, SocketAddr)> = members
            .values()
            .filter(|k| k.identity.node != me.node)
            .map(|k| (k.state, k.identity.gossip))
            .collect();
        majority_counts(me.gossip, &others)
    }

    /// This node's id.
    pub fn local_id(&self) -> u64 {
        self.shared.local.lock().node
    }

    /// This node's current generation: it changes when the cluster
    /// declared the node down (it was paused or cut off for longer than the
    /// failure detection takes) and the node rejoined.
    pub fn generation(&self) -> u64 {
        self.shared.local.lock().generation
    }

    /// Nodes holding each origin's whole log, the origin included.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Whether node `me` holds a copy of `origin`'s whole log: it is one of
    /// the `replication_factor - 1` live members (`live`, origin excluded)
    /// with the highest rendezvous score for the origin, so every node that
    /// sees the same members picks the same replicas.
    pub fn replicates(&self, me: u64, origin: u64, live: &[u64]) -> bool {
        let wanted = self.replication_factor.saturating_sub(1);
        if wanted == 0 || me == origin {
            return false;
        }
        let mut ranked: Vec<u64> = live.iter().copied().filter(|&n| n != origin).collect();
        if !ranked.contains(&me) {
            ranked.push(me);
        }
        ranked.sort_by_key(|&n| std::cmp::Reverse((replica_score(origin, n), n)));
        ranked.iter().take(wanted).any(|&n| n == me)
    }

    /// Live peers (alive or suspect, not this node): node id and HTTP address.
    pub fn peers(&self) -> Vec<(u64, String)> {
        let local = self.shared.local.lock().node;
        self.shared
            .members
            .lock()
            .values()
            .filter(|k| {
                k.identity.node != local
                    && matches!(k.state, MemberState::Alive | MemberState::Suspect)
            })
            .map(|k| (k.identity.node, k.identity.http.clone()))
            .collect()
    }

    /// Seals and opens node-to-node requests and answers.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// This node's advertised HTTP address, as peers dial it: requests
    /// sealed for another address do not open here.
    pub fn http_addr(&self) -> &str {
        &self.http
    }

    /// The HTTP/2 client for peers.
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The gossip counters.
    pub fn stats(&self) -> &GossipStats {
        &self.shared.stats
    }

    /// Leaves the cluster: members see this node as `left`, not `down`.
    /// Returns once the leave was sent (or the task has stopped).
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// The members a node sees live and the members it counts a majority
/// against ([`Cluster::members_seen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembersSeen {
    /// Members live in the node's view (alive or suspect), itself
    /// included.
    pub live: usize,
    /// Members a majority is counted against (see [`majority_counts`]).
    pub counted: usize,
}

impl MembersSeen {
    /// Whether the live members are more than half of those counted.
    pub fn majority(&self) -> bool {
        self.live * 2 > self.counted
    }
}

/// What a node sees of the cluster ([`MembersSeen`]), from the node's
/// gossip address `me` and every other member it knows (`others`: state
/// and gossip address).
///
/// Live members (alive or suspect) count, and so do members that are
/// down, so that a side of a partition does not count only itself.
/// Members that left on purpose do not count, nor does a member that is
/// down at a gossip address that this node or a live member now has: a
/// node replaced on the same address (one whose data was wiped, or
/// started anew) is one member, not two.
pub(crate) fn majority_counts(me: SocketAddr, others: &[(MemberState, SocketAddr)]) -> MembersSeen {
    let live_at: std::collections::HashSet<SocketAddr> = others
        .iter()
        .filter(|(state, _)| matches!(state, MemberState::Alive | MemberState::Suspect))
        .map(|&(_, addr)| addr)
        .chain(std::iter::once(me))
        .collect();
    let mut live = 1;
    let mut counted = 1;
    for &(state, addr) in others {
        match state {
            MemberState::Alive | MemberState::Suspect => {
                live += 1;
                counted += 1;
            }
            MemberState::Down if !live_at.contains(&addr) => counted += 1,
            MemberState::Down | MemberState::Left => {}
        }
    }
    MembersSeen { live, counted }
}

fn view(
    id: &NodeIdentity,
    state: MemberState,
    last_heard: Option<Instant>,
    is_self: bool,
    now: Instant,
) -> MemberView {
    MemberView {
        id: format!("{:016x}", id.node),
        state,
        http_addr: id.http.clone(),
        gossip_addr: id.gossip.to_string(),
        generation: id.generation,
        last_heard_ms: last_heard.map(|t| now.duration_since(t).as_millis() as u64),
        is_self,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(live: usize, counted: usize) -> MembersSeen {
        MembersSeen { live, counted }
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_majority_counts_members_down_but_not_those_that_left_or_were_replaced() {
        use MemberState::*;
        let me = at(1);
        // Alone: a majority of one.
        assert_eq!(majority_counts(me, &[]), seen(1, 1));
        // Three nodes, one down: 2 of 3. Two down: 1 of 3.
        assert_eq!(
            majority_counts(me, &[(Alive, at(2)), (Down, at(3))]),
            seen(2, 3)
        );
        assert_eq!(
            majority_counts(me, &[(Down, at(2)), (Down, at(3))]),
            seen(1, 3)
        );
        // A suspect member is live.
        assert_eq!(
            majority_counts(me, &[(Suspect, at(2)), (Down, at(3))]),
            seen(2, 3)
        );
        // A member that left does not count.
        assert_eq!(
            majority_counts(me, &[(Left, at(2)), (Down, at(3))]),
            seen(1, 2)
        );
        // A node wiped and started again on its address is a new member;
        // its old identity, down, does not count against the majority,
        // and neither does an old identity of this node's own address.
        assert_eq!(
            majority_counts(
                me,
                &[(Alive, at(2)), (Down, at(2)), (Alive, at(3)), (Down, at(1))]
            ),
            seen(3, 3)
        );
        // Two nodes: the survivor of one death sees 1 of 2, no majority.
        assert!(!majority_counts(me, &[(Down, at(2))]).majority());
        assert!(majority_counts(me, &[(Alive, at(2)), (Down, at(3))]).majority());
    }
}
