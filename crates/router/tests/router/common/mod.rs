//! What the router tests share: a router on a temporary directory, messages
//! and patterns from strings, and reads bounded by a deadline.
//!
//! The helpers wait through the testkit's poll helper, whose deadline is
//! on the real clock, so that they serve tests on tokio's paused clock too:
//! there a `tokio::time::timeout` would fire as soon as the runtime idles
//! while the store works on its own threads.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use switchyard_model::{Header, Message, MessageId, TopicPattern, TopicSet};
use switchyard_router::{
    Appended, BindingSpec, ErrorPolicy, FsyncMode, GroupDelivery, GroupInfo, GroupOptions,
    GroupStart, Hook, Limits, Member, MemberOptions, PluginInfo, PublishRequest, Router,
    RouterConfig, RouterError, Settle, Settled, Source, Subscription,
};
use switchyard_testkit::poll_until;

/// How long a test waits for anything before it fails (real time).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Settings for a router whose data lives in `dir`. Publishes are not
/// synced: the tests do not simulate machine crashes, and syncs would
/// only slow them down.
pub fn config(dir: &Path) -> RouterConfig {
    let mut c = RouterConfig::new(dir.join("data"));
    c.store.fsync = FsyncMode::Never;
    c
}

/// Opens a router on `dir` with [`config`].
pub fn open(dir: &Path) -> Router {
    Router::open(config(dir)).expect("router opens")
}

/// Closes `router` and opens a new one on the same directory. The caller
/// drops every subscription and member first. Tasks the router started
/// (group coordinators) hold the store until they have seen their last
/// member and the router go, so the new router may find the directory
/// still locked for a moment: opening is retried until it succeeds.
pub async fn reopen(router: Router, dir: &Path) -> Router {
    router.close();
    drop(router);
    let c = config(dir);
    let opened = std::sync::Mutex::new(None);
    poll_until(
        TIMEOUT,
        "the router to open again (last error)",
        || {
            let error = match Router::open(c.clone()) {
                Ok(r) => {
                    *opened.lock().expect("not poisoned") = Some(r);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            std::future::ready(error)
        },
        Option::is_none,
    )
    .await;
    opened
        .into_inner()
        .expect("not poisoned")
        .expect("opened when the poll ended")
}

/// A set of topic patterns.
pub fn patterns(list: &[&str]) -> TopicSet {
    TopicSet::new(
        list.iter()
            .map(|p| p.parse::<TopicPattern>().expect("valid pattern"))
            .collect(),
    )
}

/// A message with a text payload.
pub fn msg(topic: &str, payload: &str) -> PublishRequest {
    PublishRequest::new(
        topic.parse().expect("valid topic"),
        Bytes::copy_from_slice(payload.as_bytes()),
    )
}

/// A message with a key and a text payload.
pub fn keyed(topic: &str, key: &str, payload: &str) -> PublishRequest {
    let mut m = msg(topic, payload);
    m.key = Some(Bytes::copy_from_slice(key.as_bytes()));
    m
}

/// Publishes one text message per payload on `topic`, as one batch, and
/// returns where each was stored.
pub async fn publish(router: &Router, topic: &str, payloads: &[&str]) -> Vec<Appended> {
    let batch = payloads.iter().map(|p| msg(topic, p)).collect();
    router
        .publish(batch)
        .await
        .expect("publish")
        .into_iter()
        .map(|p| {
            assert_eq!(p.results.len(), 1, "stored once: {p:?}");
            p.results.into_iter().next().expect("one result")
        })
        .collect()
}

/// `n` payloads `<prefix>-0` .. `<prefix>-<n-1>`.
pub fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Borrowed views of owned strings, for [`publish`].
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A message's payload as text.
pub fn text(m: &Message) -> String {
    String::from_utf8(m.payload.to_vec()).expect("text payload")
}

/// The payloads of messages, as text.
pub fn payloads(ms: &[Arc<Message>]) -> Vec<String> {
    ms.iter().map(|m| text(m)).collect()
}

/// A header of a message.
pub fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers
        .iter()
        .find(|h: &&Header| h.name == name)
        .map(|h| h.value.as_str())
}

/// Reads from `sub` until it has delivered at least `n` messages; returns
/// every message read.
pub async fn collect(sub: &mut Subscription, n: usize) -> Vec<Arc<Message>> {
    let state = tokio::sync::Mutex::new((sub, Vec::new()));
    poll_until(
        TIMEOUT,
        &format!("{n} messages from the subscription (count so far)"),
        || async {
            let mut guard = state.lock().await;
            let (sub, got) = &mut *guard;
            let d = sub.next_available().await.expect("subscription read");
            got.extend(d.messages);
            got.len()
        },
        |&len| len >= n,
    )
    .await;
    state.into_inner().1
}

/// Polls `fut` once: its output if it is ready at once.
pub fn now_or_never<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// The member's next batch of deliveries.
pub async fn next(member: &mut Member) -> Vec<GroupDelivery> {
    let member = tokio::sync::Mutex::new(member);
    let id = member.lock().await.id().to_owned();
    poll_until(
        TIMEOUT,
        &format!("a delivery to member {id}"),
        || async { now_or_never(member.lock().await.next()) },
        Option::is_some,
    )
    .await
    .flatten()
    .expect("the group is still open")
}

/// Reads from `member` until it has received at least `n` deliveries.
pub async fn receive(member: &mut Member, n: usize) -> Vec<GroupDelivery> {
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(next(member).await);
    }
    got
}

/// Whether `member` has no delivery waiting right now.
pub fn idle(member: &mut Member) -> bool {
    now_or_never(member.next()).is_none()
}

/// The ids of deliveries.
pub fn ids(ds: &[GroupDelivery]) -> Vec<MessageId> {
    ds.iter().map(|d| d.message.id).collect()
}

/// The payloads of deliveries, as text.
pub fn delivered(ds: &[GroupDelivery]) -> Vec<String> {
    ds.iter().map(|d| text(&d.message)).collect()
}

/// The settings of a binding named `name` for `hook` on `topics`, with the
/// `drop` error policy and default limits.
pub fn spec(name: &str, hook: Hook, topics: &[&str], config: &str) -> BindingSpec {
    BindingSpec {
        name: name.into(),
        hook,
        topics: topics
            .iter()
            .map(|t| t.parse().expect("valid pattern"))
            .collect(),
        config: config.into(),
        on_error: ErrorPolicy::Drop,
        limits: Limits::default(),
    }
}

/// Binds the guest plugin `component` (a crate of `plugins/`, such as
/// `field_router`) through the API with `settings`.
pub fn bind(router: &Router, settings: BindingSpec, component: &str) -> PluginInfo {
    let wasm = switchyard_testkit::guest_plugin(component);
    router
        .plugins()
        .bind(settings, Some(&wasm), Source::Api)
        .expect("plugin binds")
}

/// Reads from every member until they have received at least `n`
/// deliveries between them; returns each member's deliveries.
pub async fn receive_all(members: &mut [&mut Member], n: usize) -> Vec<Vec<GroupDelivery>> {
    let count = members.len();
    let state = tokio::sync::Mutex::new((members, vec![Vec::new(); count]));
    poll_until(
        TIMEOUT,
        &format!("{n} deliveries to the members (per member so far)"),
        || async {
            let mut guard = state.lock().await;
            let (members, got) = &mut *guard;
            for (m, got) in members.iter_mut().zip(got.iter_mut()) {
                while let Some(Some(ds)) = now_or_never(m.next()) {
                    got.extend(ds);
                }
            }
            got.iter().map(Vec::len).collect::<Vec<_>>()
        },
        |per_member| per_member.iter().sum::<usize>() >= n,
    )
    .await;
    state.into_inner().1
}

/// Joins group `name` on `topics` as a new member.
pub async fn join(
    router: &Router,
    name: &str,
    topics: &[&str],
    options: GroupOptions,
    member: MemberOptions,
) -> Member {
    router
        .groups()
        .join(name, patterns(topics), options, member)
        .await
        .expect("joins")
}

/// Joins group `name` on `topics` with default member options, creating
/// it (if new) at the oldest message held.
pub async fn join_earliest(router: &Router, name: &str, topics: &[&str]) -> Member {
    join(
        router,
        name,
        topics,
        from_earliest(),
        MemberOptions::default(),
    )
    .await
}

/// Group options that start a new group at the oldest message held.
pub fn from_earliest() -> GroupOptions {
    GroupOptions {
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    }
}

/// Settles deliveries as `member` with `op`.
pub async fn settle(
    router: &Router,
    member: &Member,
    ds: &[GroupDelivery],
    op: Settle,
) -> Result<Settled, RouterError> {
    router
        .groups()
        .settle(member.group(), Some(member.id().to_owned()), ids(ds), op)
        .await
}

/// Acknowledges deliveries as `member`; every one must apply.
pub async fn ack(router: &Router, member: &Member, ds: &[GroupDelivery]) {
    let s = settle(router, member, ds, Settle::Ack).await.expect("ack");
    assert_eq!(s.applied.len(), ds.len(), "{s:?}");
    assert!(s.stale.is_empty(), "{s:?}");
}

/// A group's info.
pub async fn info(router: &Router, name: &str) -> GroupInfo {
    router.groups().info(name).await.expect("group info")
}

/// Polls the group's info until `cond` holds; returns that info.
pub async fn wait_info(
    router: &Router,
    name: &str,
    what: &str,
    cond: impl FnMut(&GroupInfo) -> bool,
) -> GroupInfo {
    poll_until(TIMEOUT, what, || info(router, name), cond).await
}
