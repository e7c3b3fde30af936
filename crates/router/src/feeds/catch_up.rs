//! Catch-ups: fetching the older messages a reader needs that this node
//! does not hold, from their origin or from a peer that holds them, and
//! waiting for what the pulls bring.

use super::*;

/// Fetches the messages of `topics` with origin sequences after `from` up
/// to `held` (this node's watermarks when the topics entered its interest)
/// that this node does not hold because it did not follow those topics
/// then, so a reader starting at `from` misses none of them. Later messages
/// come through the pulls. Each origin's range comes from the origin when
/// it is a live peer; otherwise from any live peer that holds it (a peer
/// answers for another origin only what it holds of exactly these
/// patterns). Bounded by [`CATCH_UP_TIME`]; a range no node gives in time
/// is not recorded as held, so readers hold that origin back. When the
/// sources gave only the first part of a range (say a gone origin's last
/// messages reached no live node that holds its whole log), that part is
/// recorded: readers read up to it and hold the origin back from there.
/// The caller keeps `topics` in the interest throughout (it holds their
/// [`InterestGuard`]); what an earlier catch-up of the same patterns
/// already fetched is not fetched again.
pub(crate) async fn catch_up(
    store: &Arc<Store>,
    interest: &Arc<Interest>,
    cluster: &Cluster,
    topics: &TopicSet,
    from: &Cursor,
    held: &BTreeMap<NodeId, u64>,
) {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIME;
    let patterns = pattern_names(topics);
    let local = store.node_id();
    let peers = cluster.peers();
    let mut fetches = tokio::task::JoinSet::new();
    for (&origin, &until) in held {
        if origin == local {
            continue;
        }
        // On from what earlier catch-ups fetched.
        let Some(after) = interest.reach_names(&patterns, origin, from.get(origin)) else {
            continue;
        };
        if after >= until {
            continue;
        }
        // The origin itself, or else every live peer in turn.
        let sources: Vec<(String, bool)> = match peers.iter().find(|(n, _)| *n == origin.0) {
            Some((_, addr)) => vec![(addr.clone(), false)],
            None => peers.iter().map(|(_, a)| (a.clone(), true)).collect(),
        };
        if sources.is_empty() {
            continue;
        }
        let fetch = Fetch {
            store: store.clone(),
            cluster: cluster.clone(),
            topics: topics.clone(),
            patterns: patterns.clone(),
            origin,
            after,
            until,
            deadline,
        };
        fetches.spawn(fetch.run(sources));
    }
    while let Some(r) = fetches.join_next().await {
        let Ok(done) = r else { continue };
        match done.failed {
            None => {
                interest.record_caught_up(&patterns, done.origin, done.after);
                if done.stored > 0 {
                    tracing::debug!(origin = %done.origin, messages = done.stored,
                        "caught up with older messages of another origin");
                }
            }
            Some(e) => {
                interest.record_partial(&patterns, done.origin, done.after, done.reached);
                tracing::warn!(error = %e, "catching up with another origin's older messages failed")
            }
        }
    }
}

/// How one origin's range of a catch-up ended.
struct Fetched {
    origin: NodeId,
    /// Where the range began.
    after: u64,
    /// Everything of the patterns in `(after, reached]` is stored.
    reached: u64,
    /// Messages stored.
    stored: usize,
    /// Why no source gave the rest, when one did not.
    failed: Option<String>,
}

/// One origin's range of a catch-up.
struct Fetch {
    store: Arc<Store>,
    cluster: Cluster,
    topics: TopicSet,
    patterns: Vec<String>,
    origin: NodeId,
    after: u64,
    until: u64,
    deadline: tokio::time::Instant,
}

impl Fetch {
    /// Fetches the range from `sources` in turn (address, and whether it is
    /// another node than the origin), going on from where the last one
    /// stopped.
    async fn run(self, sources: Vec<(String, bool)>) -> Fetched {
        let mut pos = self.after;
        let mut stored = 0;
        // What was removed by retention, as the first answer (from
        // `after`) reports it.
        let mut trims: Option<Vec<OriginTrim>> = None;
        let mut last_error = String::from("no source");
        for (addr, relayed) in sources {
            while pos < self.until {
                match self.step(&addr, relayed, pos, &mut trims).await {
                    Ok((through, n)) => {
                        stored += n;
                        pos = through;
                    }
                    Err(e) => {
                        last_error = e;
                        break;
                    }
                }
            }
            if pos >= self.until {
                return Fetched {
                    origin: self.origin,
                    after: self.after,
                    reached: pos,
                    stored,
                    failed: None,
                };
            }
        }
        Fetched {
            origin: self.origin,
            after: self.after,
            reached: pos,
            stored,
            failed: Some(format!(
                "origin {} from {pos} to {}: {last_error}",
                self.origin, self.until
            )),
        }
    }

    /// One request to `addr`: the position reached and the messages stored.
    async fn step(
        &self,
        addr: &str,
        relayed: bool,
        pos: u64,
        trims: &mut Option<Vec<OriginTrim>>,
    ) -> Result<(u64, usize), String> {
        let req = FeedRequest {
            patterns: self.patterns.clone(),
            after: pos,
            until: self.until,
            limit: FEED_LIMIT,
            wait_ms: 0,
            origin: if relayed { self.origin.0 } else { 0 },
            from: 0,
        };
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let resp = checked_feed(&self.cluster, self.origin.0, addr, &req, left).await?;
        if resp.origin != self.origin.0 || resp.through <= pos {
            return Err(format!("{addr} does not hold the range"));
        }
        let mut messages = Vec::with_capacity(resp.messages.len());
        for m in resp.messages {
            messages.push(
                m.into_message(self.origin)
                    .ok_or_else(|| "a message with an invalid topic".to_owned())?,
            );
        }
        let trims = trims.get_or_insert_with(|| {
            resp.trimmed
                .iter()
                .filter_map(|(t, stream_seq, origin_seq)| {
                    Some(OriginTrim {
                        topic: t.parse().ok()?,
                        stream_seq: *stream_seq,
                        origin_seq: *origin_seq,
                    })
                })
                .collect()
        });
        let through = resp.through.min(self.until);
        let complete = (through >= self.until).then(|| (self.topics.clone(), trims.clone()));
        let n = self
            .store
            .fill(self.origin, messages, self.after, through, complete)
            .await
            .map_err(|e| e.to_string())?;
        Ok((through, n))
    }
}

/// Moves `cursor` (a `from=latest` start) past what each live peer has
/// published so far, asking the peers for the heads of their logs (a feed
/// request with limit 0). Without it, a node that followed none of a
/// peer's topics for a while would still hold that peer's older messages
/// as new: its watermark for the peer stands where its interest ended. A
/// peer that does not answer within [`HEAD_WAIT`] is left as it is. A peer
/// whose pull is current (see `Interest::current`) is not asked: the
/// watermark for it already is its head, less one long poll at most.
pub(crate) async fn past_peer_heads(
    interest: &Interest,
    cluster: &Cluster,
    topics: &TopicSet,
    cursor: &mut Cursor,
) {
    let heads = peer_heads(interest, cluster, topics, |peer| interest.is_current(peer)).await;
    for (node, head) in heads {
        cursor.advance(node, head);
    }
}

/// Waits, at most `within`, until this node holds every live peer's
/// messages of `topics` up to the peer's head as it is now: the pulls,
/// which follow `topics` once they are in the interest, have passed it. A
/// pull answers from what the node holds; without this wait it would miss
/// a peer's messages that the pulls have not brought yet, where a stream
/// would simply deliver them a moment later. A peer that does not tell
/// its head within [`HEAD_WAIT`], or whose messages do not arrive in time,
/// is left out (its messages come with a later pull).
pub(crate) async fn await_peer_heads(
    store: &Store,
    interest: &Interest,
    cluster: &Cluster,
    topics: &TopicSet,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    // A peer whose pull is current needs no wait: this node's watermark
    // for it trails its head by one long poll at most.
    let heads = peer_heads(interest, cluster, topics, |peer| interest.is_current(peer)).await;
    let mut changes = store.changes();
    loop {
        let behind: Vec<NodeId> = heads
            .iter()
            .filter(|(node, head)| store.held_through(*node) < *head)
            .map(|(node, _)| *node)
            .collect();
        if behind.is_empty() {
            return;
        }
        changes.borrow_and_update();
        tokio::select! {
            _ = changes.changed() => {}
            // The watermark also moves without new messages of interest.
            () = tokio::time::sleep(HELD_POLL) => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(peers = ?behind, "a pull answers without peers' newest messages");
                return;
            }
        }
    }
}

/// Asks every live peer for its head, to learn of origins that are gone
/// but whose logs live peers hold (recorded in the interest, whose
/// `orphans_found` is then told).
pub(crate) async fn discover(interest: &Interest, cluster: &Cluster) {
    peer_heads(interest, cluster, &pull::whole_log(), |_| false).await;
}

/// The heads of the live peers' logs (a feed request with limit 0 each,
/// in parallel), except those `skip` names, and how far live peers hold
/// the logs of origins that are gone (those the answers name are
/// recorded in the interest, and every one recorded is returned). A peer
/// that does not answer within [`HEAD_WAIT`] is left out.
async fn peer_heads(
    interest: &Interest,
    cluster: &Cluster,
    topics: &TopicSet,
    skip: impl Fn(NodeId) -> bool,
) -> Vec<(NodeId, u64)> {
    let patterns: Vec<String> = topics
        .patterns()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let mut asks = tokio::task::JoinSet::new();
    for (node, addr) in cluster.peers() {
        if skip(NodeId(node)) {
            continue;
        }
        let req = FeedRequest {
            patterns: patterns.clone(),
            after: 0,
            until: 0,
            limit: 0,
            wait_ms: 0,
            origin: 0,
            from: 0,
        };
        let cluster = cluster.clone();
        asks.spawn(async move {
            let r = checked_feed(&cluster, node, &addr, &req, HEAD_WAIT).await;
            (node, r)
        });
    }
    let mut heads = Vec::new();
    let live: HashMap<u64, String> = cluster.peers().into_iter().collect();
    let local = cluster.local_id();
    while let Some(r) = asks.join_next().await {
        match r {
            Ok((node, Ok(resp))) if resp.origin == node => {
                heads.push((NodeId(node), resp.through));
                if let Some(addr) = live.get(&node) {
                    for &(origin, through) in &resp.held {
                        if origin != local && !live.contains_key(&origin) {
                            interest.record_orphan(NodeId(origin), addr, through);
                        }
                    }
                }
            }
            Ok((node, Ok(_))) => {
                tracing::warn!(peer = %NodeId(node), "a peer answered for another origin")
            }
            Ok((node, Err(e))) => {
                tracing::debug!(peer = %NodeId(node), error = %e, "no head from a peer")
            }
            Err(_) => {}
        }
    }
    heads.extend(interest.orphans(&live).into_iter().map(|(o, _, t)| (o, t)));
    heads
}
