//! The pull loop for one peer: the messages of the interest, or, for a
//! peer this node replicates, its whole log.

use super::*;

/// The pull loop for one peer.
pub(crate) struct Pull {
    pub(crate) store: Arc<Store>,
    pub(crate) interest: Arc<Interest>,
    pub(crate) cluster: Cluster,
    pub(crate) peer: NodeId,
    pub(crate) addr: String,
    /// This node replicates the peer: it copies the peer's whole log, not
    /// only the topics of the interest.
    pub(crate) replica: bool,
    /// The peer is an origin that is not a live member: its log is pulled
    /// through the live node at `addr`, which holds it.
    pub(crate) relayed: bool,
}

/// Failed pulls from a peer after which its messages are asked of the
/// other peers.
const RELAY_AFTER_FAILURES: u32 = 2;
/// Pause between two pulls through a relay that brought nothing: a gone
/// origin's log grows only while its holder is still copying it.
const RELAY_IDLE: Duration = Duration::from_secs(1);

/// The patterns of a whole log: every topic, the system's included.
pub(super) const WHOLE_LOG: [&str; 3] = [">", "$sys.>", "$dlq.>"];

pub(super) fn whole_log() -> TopicSet {
    TopicSet::new(
        WHOLE_LOG
            .iter()
            .filter_map(|p| p.parse::<TopicPattern>().ok())
            .collect(),
    )
}

impl Pull {
    /// Pulls from the peer until the task is aborted. A replica first
    /// copies the peer's log up to where it holds it (a catch-up of the
    /// whole log), then pulls the whole log from there on.
    pub(crate) async fn run(self) {
        if self.replica {
            self.backfill().await;
        }
        self.interest.set_current(self.peer, false);
        let mut version = self.interest.version.subscribe();
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let (ver, mut patterns) = self.interest.snapshot();
            version.borrow_and_update();
            if self.replica {
                patterns = WHOLE_LOG.iter().map(|p| (*p).to_owned()).collect();
            }
            if patterns.is_empty() {
                self.interest.set_current(self.peer, false);
                if version.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let req = FeedRequest {
                patterns,
                after: self.store.held_through(self.peer),
                until: 0,
                limit: FEED_LIMIT,
                wait_ms: FEED_WAIT.as_millis() as u32,
                origin: if self.relayed { self.peer.0 } else { 0 },
                from: self.store.node_id().0,
            };
            let answer = tokio::select! {
                r = checked_feed(&self.cluster, self.peer.0, &self.addr, &req, FEED_WAIT * 2) => r,
                _ = version.changed() => continue,
            };
            let failure = match answer {
                Ok(resp) => {
                    let caught_up = resp.through >= resp.head;
                    let idle = self.relayed && resp.through <= req.after;
                    match self.apply(ver, resp).await {
                        Ok(applied) => {
                            // A batch asked for with other patterns says
                            // nothing about the patterns followed now.
                            self.interest.set_current(self.peer, applied && caught_up);
                            backoff = Duration::from_millis(100);
                            failures = 0;
                            if idle {
                                tokio::select! {
                                    () = tokio::time::sleep(RELAY_IDLE) => {}
                                    _ = version.changed() => {}
                                }
                            }
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.interest.set_current(self.peer, false);
            tracing::debug!(peer = %self.peer, addr = %self.addr, error = %failure, "pull failed; retrying");
            failures += 1;
            // The peer may be dead before the membership says so: its
            // messages that other nodes hold come from them meanwhile.
            if !self.relayed
                && failures >= RELAY_AFTER_FAILURES
                && self.through_others(ver, &req).await
            {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = version.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Copies the peer's whole log up to this node's watermark for it
    /// (taken under the gate, so no narrower batch lands after it), from
    /// the peer, or, when it is unreachable, from any peer that holds it;
    /// retried with backoff until it is complete. Then this node holds the
    /// peer's whole log from its start.
    async fn backfill(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let through = {
                let _gate = self.interest.gate.write().await;
                self.store.held_through(self.peer)
            };
            let all = whole_log();
            if through > 0 {
                let held = BTreeMap::from([(self.peer, through)]);
                catch_up(
                    &self.store,
                    &self.interest,
                    &self.cluster,
                    &all,
                    &Cursor::earliest(),
                    &held,
                )
                .await;
            }
            if through == 0 || self.interest.holds(&all, self.peer, 0) {
                self.interest.record_full(self.peer, 0);
                persist_full(&self.store, &self.interest, self.peer);
                tracing::debug!(peer = %self.peer, through, "replicating a peer's whole log");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Asks the other live peers in turn for what the request asks of the
    /// peer's log (they answer what they hold of it, as replicas do) and
    /// stores the first answer that brings something. Whether one did.
    async fn through_others(&self, ver: u64, req: &FeedRequest) -> bool {
        let relayed = FeedRequest {
            origin: self.peer.0,
            wait_ms: 0,
            from: 0,
            ..req.clone()
        };
        for (node, addr) in self.cluster.peers() {
            if node == self.peer.0 {
                continue;
            }
            let resp = match checked_feed(&self.cluster, node, &addr, &relayed, FEED_WAIT).await {
                Ok(resp) if resp.origin == self.peer.0 && resp.through > relayed.after => resp,
                _ => continue,
            };
            if let Ok(true) = self.apply(ver, resp).await {
                tracing::debug!(peer = %self.peer, through = %addr, "pulled a peer's messages through another node");
                return true;
            }
        }
        false
    }

    /// Stores a batch; `false` when it was asked for with other patterns
    /// than those followed now (it is asked for again).
    async fn apply(&self, ver: u64, resp: FeedResponse) -> Result<bool, String> {
        if resp.origin != self.peer.0 {
            return Err(format!("answered for origin {:016x}", resp.origin));
        }
        let mut messages = Vec::with_capacity(resp.messages.len());
        for m in resp.messages {
            messages.push(
                m.into_message(self.peer)
                    .ok_or_else(|| "a message with an invalid topic".to_owned())?,
            );
        }
        let _gate = self.interest.gate.read().await;
        // A replica's batch covers the whole log, whatever the interest.
        if !self.replica && *self.interest.version.borrow() != ver {
            // Asked for with other patterns: ask again.
            return Ok(false);
        }
        self.store
            .ingest(self.peer, messages, resp.through)
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
    }
}
