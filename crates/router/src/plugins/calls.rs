//! Running the bindings on messages: route bindings on publish, pick
//! bindings for groups, filter bindings per subscription, each with its
//! error policy, and the dead-letter copies they make.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_model::{Header, Message, Topic};
use switchyard_plugin_host::{
    Binding, Candidate, ErrorPolicy, FilterDecision, Hook, PluginError, PluginMessage,
    RouteDecision,
};
use switchyard_store::Append;

use super::{ERROR_HEADER, MAX_CONFIG, MAX_FILTER_VARIANTS, PLUGIN_HEADER, Plugins, now_ms};
use crate::{RouterError, validate};

impl Plugins {
    /// Whether any route binding exists (checked before doing any work).
    pub(crate) fn has_routes(&self) -> bool {
        !self.current.read().routes.is_empty()
    }

    /// Runs the route bindings that apply to `req`, in name order, on one
    /// snapshot (so a concurrent reload never splits a message between
    /// versions). Returns what to store (possibly nothing).
    pub(crate) async fn route(&self, req: Append) -> Routed {
        let snap = self.snapshot();
        let mut current = req;
        let mut routed_from = None;
        let mut failure = None;
        let ts = now_ms();
        for b in &snap.routes {
            let spec = b.spec();
            if !spec.applies_to(current.topic.as_str()) {
                continue;
            }
            let msg = PluginMessage {
                topic: current.topic.as_str(),
                key: current.key.as_deref(),
                headers: &current.headers,
                payload: &current.payload,
                timestamp_ms: ts,
            };
            // On the plugin threads: a slow plugin does not hold up this
            // worker's other connections.
            let result = b
                .route_async(&msg)
                .await
                .and_then(|d| self.apply(b, &current, d));
            match result {
                Ok(Applied::Continue(None)) => {}
                Ok(Applied::Continue(Some(next))) => current = next,
                Ok(Applied::Drop(reason)) => {
                    return Routed {
                        stored: Vec::new(),
                        routed_from: None,
                        dropped: Some((spec.name.clone(), reason)),
                        failure,
                    };
                }
                Ok(Applied::Reroute(copies)) => {
                    routed_from = Some(current.topic.clone());
                    return Routed {
                        stored: copies,
                        routed_from,
                        dropped: None,
                        failure,
                    };
                }
                Err(e) => {
                    let error = e.to_string();
                    match spec.on_error {
                        ErrorPolicy::Pass => {
                            failure = Some((spec.name.clone(), error));
                        }
                        ErrorPolicy::Drop => {
                            return Routed {
                                stored: Vec::new(),
                                routed_from: None,
                                dropped: Some((spec.name.clone(), error.clone())),
                                failure: Some((spec.name.clone(), error)),
                            };
                        }
                        ErrorPolicy::DeadLetter => {
                            let stored =
                                dead_letter(&current, &error, &[(PLUGIN_HEADER, &spec.name)])
                                    .map(|d| vec![d])
                                    .unwrap_or_default();
                            let dropped = stored.is_empty().then(|| {
                                (
                                    spec.name.clone(),
                                    format!("{error} (and no dead-letter topic)"),
                                )
                            });
                            return Routed {
                                stored,
                                routed_from: None,
                                dropped,
                                failure: Some((spec.name.clone(), error)),
                            };
                        }
                    }
                }
            }
        }
        Routed {
            stored: vec![current],
            routed_from,
            dropped: None,
            failure,
        }
    }

    /// Turns a plugin's decision into the next message(s), validating what
    /// the plugin produced as strictly as client input.
    fn apply(&self, b: &Binding, cur: &Append, d: RouteDecision) -> Result<Applied, PluginError> {
        let check = |a: &Append| {
            validate(a, self.max_payload).map_err(|e| {
                b.invalid_result(format!("the plugin produced an invalid message: {e}"))
            })
        };
        match d {
            RouteDecision::Deliver => Ok(Applied::Continue(None)),
            RouteDecision::Drop(reason) => Ok(Applied::Drop(reason)),
            RouteDecision::Replace { headers, payload } => {
                let mut next = cur.clone();
                if let Some(h) = headers {
                    next.headers = h;
                }
                if let Some(p) = payload {
                    next.payload = Bytes::from(p);
                }
                check(&next)?;
                Ok(Applied::Continue(Some(next)))
            }
            RouteDecision::Reroute(topics) => {
                let mut copies = Vec::with_capacity(topics.len());
                for t in topics {
                    let mut c = cur.clone();
                    // The host checked the names already.
                    c.topic = t
                        .parse::<Topic>()
                        .map_err(|e| b.invalid_result(e.to_string()))?;
                    check(&c)?;
                    copies.push(c);
                }
                Ok(Applied::Reroute(copies))
            }
        }
    }

    /// A filter for one subscription: the binding `name` with the
    /// subscription's own configuration, if given. A configuration not in
    /// use yet gets instances of its own, whose `init` runs on the plugin
    /// threads (under the binding's limits) while this awaits.
    pub async fn filter(
        self: &Arc<Self>,
        name: &str,
        config: Option<String>,
    ) -> Result<Filter, RouterError> {
        let mut f = Filter {
            plugins: self.clone(),
            name: name.to_owned(),
            config,
            generation: 0,
            binding: None,
        };
        f.refresh().await?;
        Ok(f)
    }

    /// Asks the pick binding `name` which of `candidates` gets `m`. `None`
    /// when the binding does not apply to the topic or leaves the choice to
    /// the group's default.
    ///
    /// The group state machine that asks is synchronous, so this blocks
    /// its caller until the answer comes; on a multi-threaded runtime it
    /// does so in `block_in_place` (the worker's other tasks move to
    /// another thread) and the call itself runs on the plugin threads. On
    /// any other runtime (tests, tools) the call runs on the caller's
    /// thread.
    pub(crate) fn pick(
        &self,
        name: &str,
        m: &Message,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, RouterError> {
        let snap = self.snapshot();
        let entry = snap
            .bindings
            .get(name)
            .ok_or_else(|| RouterError::PluginNotFound(name.to_owned()))?;
        let b = &entry.binding;
        if b.spec().hook != Hook::Pick {
            return Err(RouterError::PluginSetting(format!(
                "plugin {name} is a {} plugin, not a pick plugin",
                b.spec().hook
            )));
        }
        if !b.spec().applies_to(m.topic.as_str()) {
            return Ok(None);
        }
        let msg = plugin_message(m);
        let r = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(b.pick_async(&msg, candidates)))
            }
            _ => b.pick(&msg, candidates),
        };
        r.map_err(RouterError::Plugin)
    }

    /// Checks that `name` is a pick binding.
    pub(crate) fn check_pick(&self, name: &str) -> Result<(), RouterError> {
        let snap = self.snapshot();
        match snap.bindings.get(name) {
            None => Err(RouterError::PluginNotFound(name.to_owned())),
            Some(e) if e.binding.spec().hook != Hook::Pick => {
                Err(RouterError::PluginSetting(format!(
                    "plugin {name} is a {} plugin, not a pick plugin",
                    e.binding.spec().hook
                )))
            }
            Some(_) => Ok(()),
        }
    }

    async fn filter_binding(
        &self,
        name: &str,
        config: Option<&str>,
    ) -> Result<(u64, Arc<Binding>), RouterError> {
        let snap = self.snapshot();
        let entry = snap
            .bindings
            .get(name)
            .ok_or_else(|| RouterError::PluginNotFound(name.to_owned()))?;
        let base = &entry.binding;
        if base.spec().hook != Hook::Filter {
            return Err(RouterError::PluginSetting(format!(
                "plugin {name} is a {} plugin, not a filter",
                base.spec().hook
            )));
        }
        let Some(config) = config.filter(|c| *c != base.spec().config) else {
            return Ok((snap.generation, base.clone()));
        };
        if config.len() > MAX_CONFIG {
            return Err(RouterError::PluginSetting(format!(
                "filter_config of {} bytes; at most {MAX_CONFIG}",
                config.len()
            )));
        }
        let key = (name.to_owned(), entry.version, config.to_owned());
        let in_use = |variants: &mut BTreeMap<_, std::sync::Weak<Binding>>| {
            if let Some(b) = variants.get(&key).and_then(std::sync::Weak::upgrade) {
                return Ok(Some(b));
            }
            variants.retain(|_, w| w.strong_count() > 0);
            if variants.len() >= MAX_FILTER_VARIANTS {
                return Err(RouterError::PluginSetting(format!(
                    "{MAX_FILTER_VARIANTS} subscriber filter configurations are in use already; \
                     subscribe with the binding's own configuration or one already in use"
                )));
            }
            Ok(None)
        };
        if let Some(b) = in_use(&mut self.variants.lock())? {
            return Ok((snap.generation, b));
        }
        let mut spec = base.spec().clone();
        spec.config = config.to_owned();
        // `init` runs on the plugin threads, not on this request's worker.
        let (engine, plugin, kv, stats) = (
            self.engine.clone(),
            base.plugin().clone(),
            self.kv.clone(),
            base.stats().clone(),
        );
        let b = self
            .engine
            .run(move || Binding::new(&engine, plugin, spec, kv, stats))
            .await
            .and_then(|r| r)
            .map_err(RouterError::Plugin)?;
        let mut variants = self.variants.lock();
        // Another subscriber may have created it meanwhile.
        if let Some(other) = in_use(&mut variants)? {
            return Ok((snap.generation, other));
        }
        variants.insert(key, Arc::downgrade(&b));
        Ok((snap.generation, b))
    }
}

enum Applied {
    /// Go on with the replaced message, or (`None`) the same one.
    Continue(Option<Append>),
    Drop(String),
    Reroute(Vec<Append>),
}

/// What the route bindings made of one published message.
#[derive(Debug)]
pub(crate) struct Routed {
    pub stored: Vec<Append>,
    pub routed_from: Option<Topic>,
    pub dropped: Option<(String, String)>,
    pub failure: Option<(String, String)>,
}

/// The dead-letter copy of a message: on `$dlq.<topic>`, with the error in
/// [`ERROR_HEADER`] (one line, at most 1 KiB) and `extra` headers after it.
pub(crate) fn dead_letter(m: &Append, error: &str, extra: &[(&str, &str)]) -> Option<Append> {
    let topic: Topic = format!("$dlq.{}", m.topic).parse().ok()?;
    let mut headers = m.headers.clone();
    let mut error = error.replace(['\r', '\n'], " ");
    if error.len() > 1024 {
        let mut end = 1024;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
    }
    headers.push(Header {
        name: ERROR_HEADER.into(),
        value: error,
    });
    headers.extend(extra.iter().map(|(name, value)| Header {
        name: (*name).into(),
        value: (*value).into(),
    }));
    Some(Append {
        topic,
        key: m.key.clone(),
        headers,
        payload: m.payload.clone(),
        idempotency_key: None,
    })
}

/// How a plugin sees a stored message.
fn plugin_message(m: &Message) -> PluginMessage<'_> {
    PluginMessage {
        topic: m.topic.as_str(),
        key: m.key.as_deref(),
        headers: &m.headers,
        payload: &m.payload,
        timestamp_ms: m.timestamp.millis(),
    }
}

/// The message as something to store again (for a dead-letter copy).
pub(crate) fn as_append(m: &Message) -> Append {
    Append {
        topic: m.topic.clone(),
        key: m.key.clone(),
        headers: m.headers.clone(),
        payload: m.payload.clone(),
        idempotency_key: None,
    }
}

/// The egress filter of one subscription. It follows reloads: after a new
/// version of the binding is swapped in, the next message uses it.
pub struct Filter {
    plugins: Arc<Plugins>,
    name: String,
    config: Option<String>,
    generation: u64,
    binding: Option<Arc<Binding>>,
}

/// A filter's verdict on one message.
pub(crate) enum Filtered {
    Keep(Arc<Message>),
    Skip,
    /// Skipped, and a copy belongs on the dead-letter topic.
    DeadLetter(Append),
}

impl Filter {
    async fn refresh(&mut self) -> Result<Arc<Binding>, RouterError> {
        let generation = self.plugins.current.read().generation;
        match &self.binding {
            Some(b) if generation == self.generation => Ok(b.clone()),
            _ => {
                let (g, b) = self
                    .plugins
                    .filter_binding(&self.name, self.config.as_deref())
                    .await?;
                self.generation = g;
                self.binding = Some(b.clone());
                Ok(b)
            }
        }
    }

    /// Applies the filter to one message; the call runs on the plugin
    /// threads.
    pub(crate) async fn apply(&mut self, m: Arc<Message>) -> Result<Filtered, RouterError> {
        let b = self.refresh().await?;
        let spec = b.spec();
        if !spec.applies_to(m.topic.as_str()) {
            return Ok(Filtered::Keep(m));
        }
        let msg = plugin_message(&m);
        match b.filter_async(&msg).await {
            Ok(FilterDecision::Keep) => Ok(Filtered::Keep(m)),
            Ok(FilterDecision::Skip) => Ok(Filtered::Skip),
            Ok(FilterDecision::Transform(p)) => {
                let mut t = (*m).clone();
                t.payload = Bytes::from(p);
                Ok(Filtered::Keep(Arc::new(t)))
            }
            Err(e) => Ok(match spec.on_error {
                ErrorPolicy::Drop => Filtered::Skip,
                ErrorPolicy::Pass => Filtered::Keep(m),
                ErrorPolicy::DeadLetter => {
                    match dead_letter(
                        &as_append(&m),
                        &e.to_string(),
                        &[(PLUGIN_HEADER, &spec.name)],
                    ) {
                        Some(d) => Filtered::DeadLetter(d),
                        None => Filtered::Skip,
                    }
                }
            }),
        }
    }
}
