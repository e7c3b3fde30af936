//! Plugin log lines as messages: every line a binding logs (the `log`
//! import, and a guest's stdout and stderr), once its own log rate limit
//! admitted it, is also stored on the topic `$sys.plugins.<name>.log`, at
//! most [`LOG_TOPIC_LINES_PER_SEC`] lines a second per binding, so that any
//! subscriber of that topic can tail it.
//!
//! One background task follows the bindings: it compares the bindings'
//! snapshot generation every [`FOLLOW_INTERVAL`] and starts a forwarder
//! for each binding it has not seen (a new name, or a name bound anew after
//! a removal), stops those of bindings gone, and tells the others their
//! current version. A forwarder reads the binding's log followers channel
//! ([`switchyard_plugin_host::Stats::subscribe_logs`], bounded: a forwarder
//! that falls behind loses the oldest lines), drops what exceeds the rate
//! limit, and appends the rest straight to the store, as `$sys.cluster`
//! events are: route bindings never see these messages (they run on client
//! publishes only, and cannot reroute to a `$` topic), so a route plugin
//! that logs cannot feed its own log topic. Nothing here waits on a plugin
//! call, and a plugin's log call never waits on a forwarder (the channel
//! overwrites its oldest line when full), so a plugin that floods its log
//! slows no publish; what reaches the store is bounded by the rate limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use switchyard_model::{Header, Timestamp, Topic};
use switchyard_plugin_host::{LogLine, Stats};
use switchyard_store::{Append, Store};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::Plugins;

/// Most log lines a second one binding's log topic receives, with bursts
/// of as many (one second's worth saved up). Lines beyond it are dropped
/// and counted in the next stored line's `dropped`.
pub const LOG_TOPIC_LINES_PER_SEC: u32 = 20;

/// How often the forwarding task looks for bindings that came or went.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// The topic that receives the log lines of binding `name`.
pub fn log_topic(name: &str) -> Option<Topic> {
    format!("$sys.plugins.{name}.log").parse().ok()
}

/// A token bucket of whole lines: `rate` a second, at most `rate` saved up
/// (it starts full). Time is passed in.
#[derive(Debug)]
pub(crate) struct LineBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl LineBucket {
    pub(crate) fn new(rate: u32) -> LineBucket {
        LineBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: None,
        }
    }

    /// Takes one line at `now` if the bucket holds one.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            // A `now` before `last` (out of order) adds nothing.
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a forwarder has not stored yet of its binding's lines: those the
/// rate limit refused and those lost while it fell behind, reported with
/// the next line it stores.
#[derive(Debug)]
pub(crate) struct Forwarding {
    bucket: LineBucket,
    dropped: u64,
}

impl Forwarding {
    pub(crate) fn new(rate: u32) -> Forwarding {
        Forwarding {
            bucket: LineBucket::new(rate),
            dropped: 0,
        }
    }

    /// Counts `n` lines lost before they reached the forwarder.
    pub(crate) fn lost(&mut self, n: u64) {
        self.dropped = self.dropped.saturating_add(n);
    }

    /// Whether a line arriving at `now` is stored; when it is, the lines
    /// dropped since the previous stored one (which it reports).
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.bucket.admit(now) {
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped = self.dropped.saturating_add(1);
            None
        }
    }
}

/// The message that carries one log line.
pub(crate) fn line_message(topic: &Topic, line: &LogLine, version: u64, dropped: u64) -> Append {
    let body = json!({
        "level": line.level,
        "message": line.message,
        "time": Timestamp::from_millis(line.time_ms).to_rfc3339(),
        "time_ms": line.time_ms,
        "version": version,
        "dropped": dropped,
    });
    let mut a = Append::new(topic.clone(), Bytes::from(body.to_string()));
    a.headers.push(Header {
        name: "content-type".into(),
        value: "application/json".into(),
    });
    a
}

/// Most lines a forwarder takes from its channel before it stores them.
const MAX_BATCH: usize = 256;

/// The forwarder of one binding; stopped when dropped.
struct Follower {
    /// Which binding it follows: a name bound anew has new counters.
    stats: Weak<Stats>,
    version: Arc<AtomicU64>,
    task: AbortHandle,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the bindings of `plugins` and forwards their log lines to their
/// log topics until `stop` turns `true`.
pub(crate) async fn run(plugins: Arc<Plugins>, store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut followers: HashMap<String, Follower> = HashMap::new();
    let mut seen = None;
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Only `true` is ever sent; a dropped sender stops too.
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let snap = plugins.snapshot();
        if seen == Some(snap.generation) {
            continue;
        }
        seen = Some(snap.generation);
        followers.retain(|name, f| {
            snap.bindings
                .get(name)
                .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e.binding.stats()), f.stats.as_ptr()))
                && !f.task.is_finished()
        });
        for (name, entry) in &snap.bindings {
            if let Some(f) = followers.get(name) {
                f.version.store(entry.version, Ordering::Relaxed);
                continue;
            }
            let Some(topic) = log_topic(name) else {
                continue;
            };
            let stats = entry.binding.stats();
            let version = Arc::new(AtomicU64::new(entry.version));
            let rx = stats.subscribe_logs();
            let task = tokio::spawn(forward(rx, topic, version.clone(), store.clone()));
            followers.insert(
                name.clone(),
                Follower {
                    stats: Arc::downgrade(stats),
                    version,
                    task: task.abort_handle(),
                },
            );
        }
    }
}

/// Stores the lines of one binding's log on `topic` until the channel ends
/// (the binding is gone) or the task is aborted.
async fn forward(
    mut rx: broadcast::Receiver<LogLine>,
    topic: Topic,
    version: Arc<AtomicU64>,
    store: Arc<Store>,
) {
    let mut state = Forwarding::new(LOG_TOPIC_LINES_PER_SEC);
    loop {
        // The lines waiting now (at most MAX_BATCH) go to the store
        // together; at most one second's worth can pass the rate limit.
        let mut batch = Vec::new();
        let mut next = rx.recv().await;
        let mut taken = 0;
        let closed = loop {
            match next {
                Ok(line) => {
                    if let Some(dropped) = state.admit(Instant::now()) {
                        let v = version.load(Ordering::Relaxed);
                        batch.push(line_message(&topic, &line, v, dropped));
                    }
                }
                Err(RecvError::Lagged(n)) => state.lost(n),
                Err(RecvError::Closed) => break true,
            }
            taken += 1;
            if taken == MAX_BATCH {
                break false;
            }
            next = match rx.try_recv() {
                Ok(line) => Ok(line),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => break false,
            };
        };
        store_lines(&store, batch).await;
        if closed {
            return;
        }
    }
}

async fn store_lines(store: &Store, batch: Vec<Append>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.append(batch).await {
        tracing::warn!(error = %e, "storing plugin log lines failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = LineBucket::new(20);
        assert_eq!((0..100).filter(|_| b.admit(t0)).count(), 20);
        // 100 ms: two lines are back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..100).filter(|_| b.admit(t1)).count(), 2);
        // Idle for a minute: one second's worth, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.admit(t2)).count(), 20);
        // Time going backwards adds nothing.
        assert!(!b.admit(t0));
        assert!(!b.admit(t2));
        assert!(b.admit(t2 + Duration::from_millis(50)));
    }

    #[test]
    fn a_steady_flood_stores_the_rate_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut f = Forwarding::new(LOG_TOPIC_LINES_PER_SEC);
        let (mut stored, mut reported) = (0u64, 0u64);
        // 1000 lines a second for 10 s.
        for i in 0..10_000u64 {
            if let Some(d) = f.admit(t0 + Duration::from_millis(i)) {
                stored += 1;
                reported += d;
            }
        }
        // The burst, then 20 a second (the last line was at 9.999 s).
        assert!((200..=220).contains(&stored), "{stored}");
        // Every line is stored or reported dropped, but the dropped ones
        // after the last stored line are not reported yet.
        assert!(stored + reported <= 10_000);
        assert!(stored + reported > 10_000 - 60, "{stored} {reported}");
    }

    #[test]
    fn dropped_and_lost_lines_are_reported_by_the_next_stored_one() {
        let t0 = Instant::now();
        let mut f = Forwarding::new(2);
        assert_eq!(f.admit(t0), Some(0));
        assert_eq!(f.admit(t0), Some(0));
        assert_eq!(f.admit(t0), None);
        assert_eq!(f.admit(t0), None);
        f.lost(5);
        assert_eq!(f.admit(t0 + Duration::from_millis(500)), Some(7));
        assert_eq!(f.admit(t0 + Duration::from_millis(500)), None);
        assert_eq!(f.admit(t0 + Duration::from_secs(1)), Some(1));
    }

    #[test]
    fn log_topics_are_system_topics() {
        let t = log_topic("my-plugin_2").unwrap();
        assert_eq!(t.as_str(), "$sys.plugins.my-plugin_2.log");
        assert!(t.is_reserved());
        // `>` does not reach them; `$sys.>` does.
        assert!(
            !">".parse::<switchyard_model::TopicPattern>()
                .unwrap()
                .matches(&t)
        );
        assert!(
            "$sys.plugins.*.log"
                .parse::<switchyard_model::TopicPattern>()
                .unwrap()
                .matches(&t)
        );
        // The longest binding name still makes a valid topic.
        assert!(log_topic(&"x".repeat(64)).is_some());
    }

    #[test]
    fn a_line_message_is_json_with_its_version_and_drop_count() {
        let topic = log_topic("p").unwrap();
        let line = LogLine {
            level: "warn",
            message: "cannot parse \"x\"".into(),
            time_ms: 1_795_660_670_131,
        };
        let a = line_message(&topic, &line, 3, 12);
        assert_eq!(a.topic, topic);
        assert_eq!(a.headers[0].value, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&a.payload).unwrap();
        assert_eq!(
            v,
            json!({"level": "warn", "message": "cannot parse \"x\"",
                   "time": "2026-11-26T02:37:50.131Z", "time_ms": 1_795_660_670_131u64,
                   "version": 3, "dropped": 12})
        );
    }
}
