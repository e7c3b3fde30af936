//! The membership task: one task owns foca, the UDP socket and the timer
//! heap, so it needs no locks beyond the shared view it publishes.

use super::*;

pub(super) fn foca_config(c: &ClusterConfig) -> Config {
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

pub(super) struct Actor {
    pub(super) sealer: Sealer,
    pub(super) foca: Foca<NodeIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>,
    pub(super) runtime: AccumulatingRuntime<NodeIdentity>,
    pub(super) socket: UdpSocket,
    pub(super) timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    pub(super) timer_seq: u64,
    pub(super) seeds: Vec<String>,
    pub(super) rejoin_interval: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) events: mpsc::Sender<ClusterEvent>,
    /// Members that announced they leave, with the generation that left.
    pub(super) left: HashMap<u64, u64>,
    /// The last foreign cluster name warned about (one log line per name).
    pub(super) warned_cluster: Option<String>,
    /// When members not yet in the view were last heard from.
    pub(super) heard: HashMap<u64, Instant>,
    /// The last rejoin, and how many rejoins followed each other within
    /// [`QUICK_REJOIN`] up to it.
    pub(super) rejoins: Option<(Instant, u32)>,
}

/// Rejoins closer together than this mean the new generations keep losing
/// their gossip address to an identity this node cannot see (see
/// [`Actor::rejoined`]).
const QUICK_REJOIN: Duration = Duration::from_secs(1);

impl Actor {
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
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
                let dst = NodeIdentity::new(0, 0, addr, String::new());
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
                OwnedNotification::Rejoin(id) => self.rejoined(id),
                OwnedNotification::Defunct => {
                    tracing::warn!("this node was declared down and cannot rejoin");
                }
                _ => {}
            }
        }
        self.sync_view();
    }

    /// This node was declared down and took a new generation `id`. When
    /// that keeps happening (a peer still holds an identity of this gossip
    /// address with a higher generation, from a run whose wall clock stood
    /// ahead, and declares each new one down), the next generation leaps:
    /// by 1 s after the second quick rejoin, doubling each time up to
    /// about 17 min, so a lead of minutes is passed in a dozen rejoins
    /// instead of one per millisecond of it.
    fn rejoined(&mut self, id: NodeIdentity) {
        let now = Instant::now();
        let streak = match self.rejoins {
            Some((last, n)) if now.duration_since(last) < QUICK_REJOIN => n + 1,
            _ => 0,
        };
        self.rejoins = Some((now, streak));
        if streak > 0 {
            let leap = 1u64 << (streak + 9).min(20);
            id.saw_at_address(id.generation.saturating_add(leap));
        }
        tracing::info!(
            generation = id.generation,
            quick_rejoins = streak,
            "declared down by the cluster; rejoined with a new generation"
        );
        *self.shared.local.lock() = id;
    }

    /// Compares foca's membership with the view, records changes and
    /// emits events for them.
    fn sync_view(&mut self) {
        let now = Instant::now();
        let local = self.foca.identity().node;
        // One entry per node: a node that came back on another address is
        // listed by foca under both identities until the old one is removed.
        let mut current: HashMap<u64, (NodeIdentity, State)> = HashMap::new();
        let me = self.foca.identity();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if id.gossip == me.gossip && id != me {
                me.saw_at_address(id.generation);
            }
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
