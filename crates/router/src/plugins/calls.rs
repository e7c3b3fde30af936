//! Running the bindings on messages: route bindings on publish, pick
//! bindings for groups, filter bindings per subscription, each with its
//! error policy, and the dead-letter copies they make.

use std::sync::Arc;

use bytes::Bytes;
use switchyard_model::{Header, Message, Topic};
use switchyard_plugin_host::{
    Binding, CallPermit, Candidate, ErrorPolicy, FilterDecision, Hook, PluginError, PluginMessage,
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
            let result = {
                let _permit = b.permit().await;
                b.route(&msg)
            }
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
    /// subscription's own configuration, if given.
    pub fn filter(
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
        f.refresh()?;
        Ok(f)
    }

    /// Asks the pick binding `name` which of `candidates` gets `m`. `None`
    /// when the binding does not apply to the topic or leaves the choice to
    /// the group's default.
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
        b.pick(&msg, candidates).map_err(RouterError::Plugin)
    }

    /// Waits until a call of pick binding `name` would find an instance
    /// (see [`Binding::permit`]); `None` when there is no such binding.
    pub(crate) async fn pick_permit(&self, name: &str) -> Option<CallPermit> {
        let binding = self.snapshot().bindings.get(name)?.binding.clone();
        binding.permit().await
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

    fn filter_binding(
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
        let mut variants = self.variants.lock();
        if let Some(b) = variants.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok((snap.generation, b));
        }
        variants.retain(|_, w| w.strong_count() > 0);
        if variants.len() >= MAX_FILTER_VARIANTS {
            return Err(RouterError::PluginSetting(format!(
                "{MAX_FILTER_VARIANTS} subscriber filter configurations are in use already; \
                 subscribe with the binding's own configuration or one already in use"
            )));
        }
        let mut spec = base.spec().clone();
        spec.config = config.to_owned();
        let b = Binding::new(
            &self.engine,
            base.plugin().clone(),
            spec,
            self.kv.clone(),
            base.stats().clone(),
        )
        .map_err(RouterError::Plugin)?;
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
    fn refresh(&mut self) -> Result<&Arc<Binding>, RouterError> {
        let generation = self.plugins.current.read().generation;
        if self.binding.is_none() || generation != self.generation {
            let (g, b) = self
                .plugins
                .filter_binding(&self.name, self.config.as_deref())?;
            self.generation = g;
            self.binding = Some(b);
        }
        Ok(self.binding.as_ref().expect("just set"))
    }

    /// Waits until the filter's calls would find an instance free; hold
    /// the permit while applying it (see [`Binding::permit`]).
    pub(crate) async fn permit(&mut self) -> Result<Option<CallPermit>, RouterError> {
        let b = self.refresh()?.clone();
        Ok(b.permit().await)
    }

    /// Applies the filter to one message.
    pub(crate) fn apply(&mut self, m: Arc<Message>) -> Result<Filtered, RouterError> {
        let b = self.refresh()?.clone();
        let spec = b.spec();
        if !spec.applies_to(m.topic.as_str()) {
            return Ok(Filtered::Keep(m));
        }
        let msg = plugin_message(&m);
        match b.filter(&msg) {
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
