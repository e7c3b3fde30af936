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
use crate::seal::{Refusal, Sealer};
use crate::transport::{PeerClient, Signer};

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A member's identity in gossip: node id, generation (bumped each time
/// the node rejoins after being declared down, and on every start), and
/// its addresses. Two identities with the same gossip address are the same
/// member; the higher generation wins.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node id (0 for a seed not yet heard from).
    pub node: u64,
    /// Generation.
    pub generation: u64,
    /// Gossip address.
    pub gossip: SocketAddr,
    /// HTTP address (`host:port`).
    pub http: String,
}

impl Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            generation: (self.generation + 1).max(now_ms()),
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
    /// Node-to-node requests refused (bad signature or body).
    pub refused_requests: AtomicU64,
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
    signer: Signer,
    client: PeerClient,
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
        let identity = NodeIdentity {
            node,
            generation: now_ms(),
            gossip,
            http,
        };
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
        };
        tracing::info!(node = %format!("{node:016x}"), %gossip, cluster = %config.name,
            seeds = config.seeds.len(), "gossip started");
        tokio::spawn(actor.run(command_rx));
        let signer = Signer::new(&config.key, node);
        let client = PeerClient::new(signer.clone());
        Ok((
            Cluster {
                shared,
                commands,
                signer,
                client,
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

    /// Signs and checks node-to-node requests.
    pub fn signer(&self) -> &Signer {
        &self.signer
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

fn foca_config(c: &ClusterConfig) -> Config {
    Config {
        probe_period: c.probe_period,
        probe_rtt: c.probe_rtt,
        num_indirect_probes: NonZeroUsize::new(3).expect("non-zero"),
        // Enough retransmissions for updates to reach clusters of ~50 nodes.
        max_transmissions: NonZeroU8::new(8).expect("non-zero"),
        suspect_to_down_after: c.suspect_timeout,
        remove_down_after: Some(Duration::from_secs(60)),
        max_packet_size: NonZeroUsize::new(MAX_PACKET - crate::seal::OVERHEAD - 64 - 1)
            .expect("non-zero"),
        notify_down_members: true,
        periodic_announce: Some(PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        }),
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: c.gossip_interval,
            num_members: NonZeroUsize::new(c.gossip_fanout).expect("validated"),
        }),
    }
}

struct Actor {
    sealer: Sealer,
    foca: Foca<NodeIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<NodeIdentity>,
    socket: UdpSocket,
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    seeds: Vec<String>,
    rejoin_interval: Duration,
    shared: Arc<Shared>,
    events: mpsc::Sender<ClusterEvent>,
    /// Members that announced they leave, with the generation that left.
    left: HashMap<u64, u64>,
    /// The last foreign cluster name warned about (one log line per name).
    warned_cluster: Option<String>,
    /// When members not yet in the view were last heard from.
    heard: HashMap<u64, Instant>,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 65536];
        let mut rejoin = tokio::time::interval(self.rejoin_interval);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.timers.keys().next().map(|(t, _)| *t);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.packet(&buf[..n], from),
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                    }
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                () = sleep_until(next) => self.fire_timers(),
                _ = rejoin.tick() => {
                    if self.foca.num_members() == 0 {
                        self.announce_to_seeds().await;
                    }
                }
            }
            self.flush().await;
        }
    }

    fn packet(&mut self, packet: &[u8], from: SocketAddr) {
        let stats = &self.shared.stats;
        stats
            .bytes_in
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        if packet.len() > MAX_PACKET {
            stats.refused(Refusal::Malformed);
            return;
        }
        let (sender, body) = match self.sealer.open(packet) {
            Ok(x) => x,
            Err((why, name)) => {
                stats.refused(why);
                if let Some(name) = name
                    && self.warned_cluster.as_deref() != Some(name.as_str())
                {
                    tracing::warn!(%from, their_cluster = %name, our_cluster = %self.shared.name,
                        "refusing gossip from a node of another cluster");
                    self.warned_cluster = Some(name);
                }
                return;
            }
        };
        stats.packets_in.fetch_add(1, Ordering::Relaxed);
        {
            let mut members = self.shared.members.lock();
            match members.get_mut(&sender.node) {
                Some(k) => k.last_heard = Some(Instant::now()),
                // Not in the view yet (the packet may be the one that
                // introduces it): remember when it was heard.
                None => {
                    if self.heard.len() >= MAX_REMEMBERED {
                        self.heard.clear();
                    }
                    self.heard.insert(sender.node, Instant::now());
                }
            }
        }
        match body.split_first() {
            Some((&KIND_SWIM, rest)) => {
                if let Err(e) = self.foca.handle_data(rest, &mut self.runtime) {
                    stats.refused_invalid.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, error = %e, "unusable gossip packet");
                }
            }
            Some((&KIND_LEAVE, rest)) => {
                if let Ok(generation) = rest.try_into().map(u64::from_be_bytes) {
                    self.left.insert(sender.node, generation);
                }
            }
            _ => {
                stats.refused_invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer failed");
            }
        }
    }

    async fn announce_to_seeds(&mut self) {
        let local = self.foca.identity().gossip;
        for seed in self.seeds.clone() {
            let addrs = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    tracing::debug!(%seed, error = %e, "cannot resolve seed");
                    continue;
                }
            };
            for addr in addrs.into_iter().filter(|a| *a != local) {
                let dst = NodeIdentity {
                    node: 0,
                    generation: 0,
                    gossip: addr,
                    http: String::new(),
                };
                if let Err(e) = self.foca.announce(dst, &mut self.runtime) {
                    tracing::debug!(%addr, error = %e, "announce failed");
                }
            }
        }
    }

    async fn leave(&mut self) {
        let generation = self.foca.identity().generation;
        let mut body = vec![KIND_LEAVE];
        body.extend_from_slice(&generation.to_be_bytes());
        let packet = self.sealer.seal(&body);
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().gossip).collect();
        for p in &peers {
            let _ = self.socket.send_to(&packet, p).await;
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leaving the cluster failed");
        }
        self.flush().await;
        tracing::info!(peers = peers.len(), "left the cluster");
    }

    /// Sends what foca produced, schedules its timers, and updates the view.
    async fn flush(&mut self) {
        let stats = &self.shared.stats;
        while let Some((dst, data)) = self.runtime.to_send() {
            let mut body = Vec::with_capacity(1 + data.len());
            body.push(KIND_SWIM);
            body.extend_from_slice(&data);
            let packet = self.sealer.seal(&body);
            match self.socket.send_to(&packet, dst.gossip).await {
                Ok(n) => {
                    stats.packets_out.fetch_add(1, Ordering::Relaxed);
                    stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(to = %dst.gossip, error = %e, "gossip send failed"),
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .insert((Instant::now() + after, self.timer_seq), timer);
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(
                        generation = id.generation,
                        "declared down by the cluster; rejoined with a new generation"
                    );
                    *self.shared.local.lock() = id;
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("this node was declared down and cannot rejoin");
                }
                _ => {}
            }
        }
        self.sync_view();
    }

    /// Compares foca's membership with the view, records changes and
    /// emits events for them.
    fn sync_view(&mut self) {
        let now = Instant::now();
        let local = self.foca.identity().node;
        // One entry per node: a node that came back on another address is
        // listed by foca under both identities until the old one is removed.
        let mut current: HashMap<u64, (NodeIdentity, State)> = HashMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if id.node == 0 || id.node == local {
                continue;
            }
            let newer = current
                .get(&id.node)
                .is_none_or(|(known, _)| id.generation > known.generation);
            if newer {
                current.insert(id.node, (id.clone(), m.state()));
            }
        }
        let mut events = Vec::new();
        {
            let mut members = self.shared.members.lock();
            for (node, (identity, state)) in &current {
                let left = self.left.get(node) == Some(&identity.generation);
                let state = match state {
                    State::Alive => MemberState::Alive,
                    State::Suspect => MemberState::Suspect,
                    State::Down if left => MemberState::Left,
                    State::Down => MemberState::Down,
                };
                match members.get_mut(node) {
                    None => {
                        let k = Known {
                            identity: identity.clone(),
                            state,
                            last_heard: self.heard.remove(node),
                            changed: now,
                        };
                        if state != MemberState::Down && state != MemberState::Left {
                            events.push(("joined", k.clone()));
                        }
                        members.insert(*node, k);
                    }
                    Some(k) => {
                        let rejoined = k.identity.generation != identity.generation
                            && state == MemberState::Alive;
                        if rejoined {
                            k.identity = identity.clone();
                            k.state = state;
                            k.changed = now;
                            events.push(("rejoined", k.clone()));
                        } else if k.state != state {
                            let name = match (k.state, state) {
                                (_, MemberState::Suspect) => "suspect",
                                (MemberState::Down | MemberState::Left, MemberState::Alive) => {
                                    "joined"
                                }
                                (_, MemberState::Alive) => "alive",
                                (_, MemberState::Down) => "down",
                                (_, MemberState::Left) => "left",
                            };
                            k.identity = identity.clone();
                            k.state = state;
                            k.changed = now;
                            events.push((name, k.clone()));
                        }
                    }
                }
            }
            // Members foca forgot (removed after being down, or replaced by
            // another node on the same address) stay in the view as down.
            for (node, k) in members.iter_mut() {
                if !current.contains_key(node)
                    && matches!(k.state, MemberState::Alive | MemberState::Suspect)
                {
                    let left = self.left.get(node) == Some(&k.identity.generation);
                    k.state = if left {
                        MemberState::Left
                    } else {
                        MemberState::Down
                    };
                    k.changed = now;
                    events.push((if left { "left" } else { "down" }, k.clone()));
                }
            }
            if members.len() > MAX_REMEMBERED {
                let mut gone: Vec<(Instant, u64)> = members
                    .iter()
                    .filter(|(_, k)| matches!(k.state, MemberState::Down | MemberState::Left))
                    .map(|(n, k)| (k.changed, *n))
                    .collect();
                gone.sort();
                for (_, n) in gone.into_iter().take(members.len() - MAX_REMEMBERED) {
                    members.remove(&n);
                }
            }
        }
        for (event, k) in events {
            tracing::info!(member = %format!("{:016x}", k.identity.node), event, "cluster membership");
            let member = view(&k.identity, k.state, k.last_heard, false, now);
            if self
                .events
                .try_send(ClusterEvent { event, member })
                .is_err()
            {
                self.shared
                    .stats
                    .events_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
