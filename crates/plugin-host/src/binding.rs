//! A plugin bound to a hook: a pool of reusable instances and the calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use switchyard_model::{Header, Topic};
use wasmtime::{Engine, Store, Trap};

use crate::bindings::route::switchyard::plugin::types as wit;
use crate::bindings::{filter, pick, route};
use crate::budget::{Reservation, Shortfall};
use crate::engine::{Plugin, PluginEngine};
use crate::executor::Executor;
use crate::host::{HostState, Shared};
use crate::kv::KvBackend;
use crate::stats::Stats;
use crate::{
    BindingSpec, Candidate, FailureKind, FilterDecision, Hook, MAX_REROUTE_TOPICS, PluginError,
    PluginMessage, RouteDecision,
};

/// Fuel for `init`: generous, since it runs once per instance (at least
/// this much, or four times the per-call budget; at most the node's
/// `max_fuel`).
const INIT_FUEL: u64 = 200_000_000;
/// Most host calls while an instance is created and `init` runs (at least
/// the binding's `max_host_calls`).
const INIT_HOST_CALLS: u32 = 100_000;

enum Inst {
    Route(route::RoutePlugin),
    Filter(filter::FilterPlugin),
    Pick(pick::PickPlugin),
}

struct Slot {
    store: Store<HostState>,
    inst: Inst,
}

struct Pool {
    idle: Vec<Slot>,
    live: usize,
    /// Callers waiting for an instance (a notify is a syscall; skip it
    /// when no one waits).
    waiting: usize,
}

/// A plugin bound to a hook with its settings. Immutable once built: a new
/// version of a plugin is a new `Binding`, and calls that started on the old
/// one finish on it. Calls are synchronous and short (bounded by the fuel
/// budget).
///
/// A node calls [`Binding::route_async`], [`Binding::filter_async`] and
/// [`Binding::pick_async`]: they await a permit (one per instance, so
/// waiting for an instance never blocks a thread), then run the call on
/// the engine's plugin threads and await its answer; the caller's async
/// worker serves other tasks meanwhile. The blocking [`Binding::route`],
/// [`Binding::filter`] and [`Binding::pick`] run on the caller's thread
/// and, past `max_instances` concurrent calls, block it until an
/// instance is free: for tools, tests and benchmarks, not for a node.
pub struct Binding {
    spec: BindingSpec,
    plugin: Arc<Plugin>,
    engine: Engine,
    shared: Arc<Shared>,
    pool: Mutex<Pool>,
    /// Wakes blocking callers (never an async one: those hold a permit).
    freed: Condvar,
    permits: Arc<tokio::sync::Semaphore>,
    exec: Arc<Executor>,
    /// The binding's share of the node's plugin memory budget.
    reservation: Reservation,
    max_fuel: u64,
}

/// The right to make one call on a [`Binding`] without waiting for an
/// instance; see [`Binding::permit`].
pub struct CallPermit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Binding {
    /// Binds `plugin` as `spec` describes, using `kv` for its key-value
    /// store and `stats` for its counters (pass the old binding's to keep
    /// counting across a reload). Reserves `memory_bytes × max_instances`
    /// of the engine's memory budget, creates the first instance and runs
    /// `init`, so that a rejected configuration is reported here. Once
    /// accepted, the plugin's compiled artifact is written to the compile
    /// cache. Blocking (`init` runs on the caller's thread: a node runs
    /// this on the plugin threads or a blocking thread).
    pub fn new(
        engine: &PluginEngine,
        plugin: Arc<Plugin>,
        spec: BindingSpec,
        kv: Arc<dyn KvBackend>,
        stats: Arc<Stats>,
    ) -> Result<Arc<Binding>, PluginError> {
        Binding::new_replacing(engine, plugin, spec, kv, stats, None)
    }

    /// [`Binding::new`] for a binding that is to replace `old`: what `old`
    /// holds of the memory budget counts as free. Call
    /// [`Binding::release_budget`] on `old` once the new one is in place.
    pub fn new_replacing(
        engine: &PluginEngine,
        plugin: Arc<Plugin>,
        spec: BindingSpec,
        kv: Arc<dyn KvBackend>,
        stats: Arc<Stats>,
        old: Option<&Binding>,
    ) -> Result<Arc<Binding>, PluginError> {
        let hooks = plugin.hooks();
        if !hooks.contains(&spec.hook) {
            return Err(PluginError::WrongHook {
                wanted: spec.hook.as_str(),
                found: hooks
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let l = &spec.limits;
        if l.memory_bytes < 1024 * 1024 || l.memory_bytes > engine.config.max_memory_bytes {
            return Err(PluginError::InvalidSetting(format!(
                "memory limit of {} bytes; allowed are 1 MiB to {} bytes",
                l.memory_bytes, engine.config.max_memory_bytes
            )));
        }
        let max_fuel = engine.config.max_fuel;
        if l.fuel == 0 || l.fuel > max_fuel {
            return Err(PluginError::InvalidSetting(format!(
                "fuel {}; allowed are 1 to {max_fuel} (the node's max_fuel)",
                l.fuel
            )));
        }
        if l.max_instances == 0 || l.max_instances > 64 {
            return Err(PluginError::InvalidSetting(format!(
                "max_instances {}; allowed are 1 to 64",
                l.max_instances
            )));
        }
        if spec.topics.is_empty() {
            return Err(PluginError::InvalidSetting(
                "a binding needs at least one topic pattern".into(),
            ));
        }
        let need = (l.memory_bytes as u64).saturating_mul(l.max_instances as u64);
        let budget = &engine.budget;
        let reservation = budget
            .reserve(need, l.max_instances as u64, old.map(|o| &o.reservation))
            .map_err(|short| {
                PluginError::OverBudget(match short {
                    Shortfall::Bytes(left) => format!(
                        "binding {} needs {need} bytes ({} instances of {} bytes); \
                         {left} of the node's {} bytes are left (lower memory_mb or \
                         max_instances, or unbind another plugin)",
                        spec.name,
                        l.max_instances,
                        l.memory_bytes,
                        budget.total()
                    ),
                    Shortfall::Slots(left) => format!(
                        "binding {} needs {} instance slots; {left} of the node's {} \
                         pooled instance slots are left (lower max_instances, unbind \
                         another plugin, or raise plugins.pooled_instances)",
                        spec.name,
                        l.max_instances,
                        budget.slots()
                    ),
                })
            })?;
        let (kv_keys, kv_bytes) = kv.usage(&spec.name).map_err(PluginError::Engine)?;
        stats.kv_keys.store(kv_keys, Ordering::Relaxed);
        stats.kv_bytes.store(kv_bytes, Ordering::Relaxed);
        let c = &engine.config;
        let shared = Arc::new(Shared {
            name: spec.name.as_str().into(),
            kv,
            stats,
            kv_max_bytes: c.kv_max_bytes,
            log_lines_per_sec: c.log_lines_per_sec,
            log_bytes_per_sec: c.log_bytes_per_sec,
        });
        let max_instances = spec.limits.max_instances;
        let binding = Binding {
            spec,
            plugin,
            engine: engine.engine.clone(),
            shared,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                live: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(max_instances)),
            exec: engine.exec.clone(),
            reservation,
            max_fuel,
        };
        let first = binding.instantiate().map_err(|e| match e {
            PluginError::Call { detail, .. } => PluginError::ConfigRejected(detail),
            other => other,
        })?;
        {
            let mut pool = binding.lock();
            pool.live = 1;
            pool.idle.push(first);
        }
        engine.persist(&binding.plugin);
        Ok(Arc::new(binding))
    }

    /// Returns the binding's share of the memory budget now, before the
    /// binding is dropped (calls still running on it finish): for a
    /// binding just replaced or unbound.
    pub fn release_budget(&self) {
        self.reservation.release();
    }

    /// Bytes of the memory budget the binding holds.
    pub fn budget_bytes(&self) -> u64 {
        self.reservation.bytes()
    }

    /// The binding's settings.
    pub fn spec(&self) -> &BindingSpec {
        &self.spec
    }

    /// The bound plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The counters (shared with earlier versions of the binding).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock()
    }

    /// A new instance with `init` run. An `init` error is a
    /// `PluginError::ConfigRejected`; a trap in it a `Call` failure.
    fn instantiate(&self) -> Result<Slot, PluginError> {
        off_runtime(|| self.instantiate_here())
    }

    fn instantiate_here(&self) -> Result<Slot, PluginError> {
        let state = HostState::new(
            self.shared.clone(),
            self.spec.limits.memory_bytes,
            self.spec.limits.max_host_calls,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every call into the host counts against `max_host_calls`: the
        // imports, and WASI functions, whose cost fuel does not see.
        store.call_hook(|mut ctx, hook| match hook {
            wasmtime::CallHook::CallingHost => ctx.data_mut().host_call(),
            _ => Ok(()),
        });
        // `init` may call the host more (a guest runtime starting up).
        store.data_mut().max_host_calls = self.spec.limits.max_host_calls.max(INIT_HOST_CALLS);
        store
            .set_fuel(
                self.spec
                    .limits
                    .fuel
                    .saturating_mul(4)
                    .max(INIT_FUEL)
                    .min(self.max_fuel),
            )
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        self.shared.stats.instance_created();
        let fail = |store: &Store<HostState>, e: wasmtime::Error| classify(store, e);
        let (inst, init) = match self.spec.hook {
            Hook::Route => {
                let pre = self.plugin.route.as_ref().expect("hook checked");
                let i = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let r = i
                    .switchyard_plugin_lifecycle()
                    .call_init(&mut store, &self.spec.config);
                (Inst::Route(i), r)
            }
            Hook::Filter => {
                let pre = self.plugin.filter.as_ref().expect("hook checked");
                let i = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let r = i
                    .switchyard_plugin_lifecycle()
                    .call_init(&mut store, &self.spec.config);
                (Inst::Filter(i), r)
            }
            Hook::Pick => {
                let pre = self.plugin.pick.as_ref().expect("hook checked");
                let i = pre.instantiate(&mut store).map_err(|e| fail(&store, e))?;
                let r = i
                    .switchyard_plugin_lifecycle()
                    .call_init(&mut store, &self.spec.config);
                (Inst::Pick(i), r)
            }
        };
        store.data().wasi.end_call();
        store.data_mut().max_host_calls = self.spec.limits.max_host_calls;
        match init {
            Ok(Ok(())) => Ok(Slot { store, inst }),
            Ok(Err(msg)) => Err(PluginError::ConfigRejected(msg)),
            Err(e) => Err(fail(&store, e)),
        }
    }

    /// Waits, without blocking a thread, until a call on this binding would
    /// find an instance free (or may create one). The `_async` calls take
    /// one themselves; a caller of the blocking calls may hold one across
    /// them so they never wait on a thread.
    pub async fn permit(&self) -> Option<CallPermit> {
        // The semaphore is never closed, so this waits and succeeds.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(CallPermit)
    }

    /// Runs `f` on the plugin threads holding a permit, so that it finds
    /// an instance without waiting.
    async fn on_pool<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Binding) -> Result<R, PluginError> + Send + 'static,
    ) -> Result<R, PluginError> {
        let permit = self.permit().await;
        let me = self.clone();
        self.exec
            .run(move || {
                let r = f(&me);
                drop(permit);
                r
            })
            .await?
    }

    fn acquire(&self) -> Result<Slot, PluginError> {
        let mut pool = self.lock();
        loop {
            if let Some(slot) = pool.idle.pop() {
                return Ok(slot);
            }
            if pool.live < self.spec.limits.max_instances {
                pool.live += 1;
                drop(pool);
                return self.instantiate().inspect_err(|e| {
                    self.shared
                        .stats
                        .failure(e.kind().unwrap_or(FailureKind::Instantiate));
                    let mut pool = self.lock();
                    pool.live -= 1;
                    if pool.waiting > 0 {
                        self.freed.notify_one();
                    }
                });
            }
            pool.waiting += 1;
            self.freed.wait(&mut pool);
            pool.waiting -= 1;
        }
    }

    fn release(&self, slot: Slot, healthy: bool) {
        let mut pool = self.lock();
        let wake = pool.waiting > 0;
        if healthy {
            pool.idle.push(slot);
            drop(pool);
        } else {
            pool.live -= 1;
            drop(pool);
            drop(slot);
        }
        if wake {
            self.freed.notify_one();
        }
    }

    /// Runs one hook call on a pooled instance with fresh budgets; a failed
    /// instance is discarded.
    fn call<R: Send>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &Inst) -> wasmtime::Result<R> + Send,
    ) -> Result<R, PluginError> {
        off_runtime(|| self.call_here(f))
    }

    fn call_here<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &Inst) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut slot = self.acquire()?;
        let start = Instant::now();
        let fuel = slot.store.set_fuel(self.spec.limits.fuel);
        let data = slot.store.data_mut();
        data.host_calls = 0;
        data.last_error = None;
        data.wasi.start_call();
        let result = match fuel {
            Ok(()) => f(&mut slot.store, &slot.inst),
            Err(e) => Err(e),
        };
        self.shared.stats.call(start.elapsed().as_nanos() as u64);
        slot.store.data().wasi.end_call();
        match result {
            Ok(v) => {
                self.release(slot, true);
                Ok(v)
            }
            Err(e) => {
                let err = classify(&slot.store, e);
                self.fail(&err);
                self.release(slot, false);
                Err(err)
            }
        }
    }

    fn fail(&self, err: &PluginError) {
        let kind = err.kind().unwrap_or(FailureKind::Trap);
        self.shared.stats.failure(kind);
        tracing::warn!(plugin = %self.spec.name, kind = kind.as_str(), error = %err, "plugin call failed");
    }

    /// Records that a caller found the plugin's answer unacceptable (for
    /// checks only the caller can make) and returns the error to report.
    pub fn invalid_result(&self, detail: String) -> PluginError {
        let err = PluginError::call(FailureKind::InvalidResult, detail);
        self.fail(&err);
        err
    }

    /// Calls `route` on the caller's thread (blocking; see [`Binding`]).
    /// The answer is validated: reroute targets are 1 to
    /// [`MAX_REROUTE_TOPICS`] distinct valid topics outside the `$`
    /// namespace; a replaced payload is within the output limit.
    pub fn route(&self, msg: &PluginMessage<'_>) -> Result<RouteDecision, PluginError> {
        let d = self.call_route(&wit_message(msg))?;
        self.finish_route(d)
    }

    /// [`Binding::route`] on the plugin threads: waits for an instance
    /// and for the answer without blocking the caller's thread.
    pub async fn route_async(
        self: &Arc<Self>,
        msg: &PluginMessage<'_>,
    ) -> Result<RouteDecision, PluginError> {
        let m = wit_message(msg);
        let d = self.on_pool(move |b| b.call_route(&m)).await?;
        self.finish_route(d)
    }

    fn call_route(&self, m: &wit::Message) -> Result<wit::RouteDecision, PluginError> {
        self.call(|store, inst| match inst {
            Inst::Route(i) => i.switchyard_plugin_route().call_route(store, m),
            _ => unreachable!("a route binding holds route instances"),
        })
    }

    fn finish_route(&self, decision: wit::RouteDecision) -> Result<RouteDecision, PluginError> {
        let decision = match decision {
            wit::RouteDecision::Deliver => RouteDecision::Deliver,
            wit::RouteDecision::Drop(reason) => RouteDecision::Drop(reason),
            wit::RouteDecision::Reroute(topics) => RouteDecision::Reroute(topics),
            wit::RouteDecision::Replace(r) => RouteDecision::Replace {
                headers: r.headers.map(model_headers),
                payload: r.payload,
            },
        };
        check_route(decision, self.spec.limits.max_output_bytes)
            .map_err(|detail| self.invalid_result(detail))
    }

    /// Calls `filter` on the caller's thread (blocking; see [`Binding`]).
    /// A transformed payload is checked against the output limit.
    pub fn filter(&self, msg: &PluginMessage<'_>) -> Result<FilterDecision, PluginError> {
        let d = self.call_filter(&wit_message(msg))?;
        self.finish_filter(d)
    }

    /// [`Binding::filter`] on the plugin threads.
    pub async fn filter_async(
        self: &Arc<Self>,
        msg: &PluginMessage<'_>,
    ) -> Result<FilterDecision, PluginError> {
        let m = wit_message(msg);
        let d = self.on_pool(move |b| b.call_filter(&m)).await?;
        self.finish_filter(d)
    }

    fn call_filter(&self, m: &wit::Message) -> Result<wit::FilterDecision, PluginError> {
        self.call(|store, inst| match inst {
            Inst::Filter(i) => i.switchyard_plugin_filter().call_filter(store, m),
            _ => unreachable!("a filter binding holds filter instances"),
        })
    }

    fn finish_filter(&self, decision: wit::FilterDecision) -> Result<FilterDecision, PluginError> {
        let decision = match decision {
            wit::FilterDecision::Keep => FilterDecision::Keep,
            wit::FilterDecision::Skip => FilterDecision::Skip,
            wit::FilterDecision::Transform(p) => FilterDecision::Transform(p),
        };
        check_filter(decision, self.spec.limits.max_output_bytes)
            .map_err(|detail| self.invalid_result(detail))
    }

    /// Calls `pick` on the caller's thread (blocking; see [`Binding`]):
    /// the index of the chosen candidate, or `None` to leave the choice to
    /// the group's default strategy. An index out of range is an
    /// [`FailureKind::InvalidResult`] failure.
    pub fn pick(
        &self,
        msg: &PluginMessage<'_>,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, PluginError> {
        let chosen = self.call_pick(&wit_message(msg), &wit_candidates(candidates))?;
        check_pick(chosen, candidates.len()).map_err(|detail| self.invalid_result(detail))
    }

    /// [`Binding::pick`] on the plugin threads.
    pub async fn pick_async(
        self: &Arc<Self>,
        msg: &PluginMessage<'_>,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, PluginError> {
        let (m, cands) = (wit_message(msg), wit_candidates(candidates));
        let chosen = self.on_pool(move |b| b.call_pick(&m, &cands)).await?;
        check_pick(chosen, candidates.len()).map_err(|detail| self.invalid_result(detail))
    }

    fn call_pick(
        &self,
        m: &wit::Message,
        cands: &[wit::Candidate],
    ) -> Result<Option<u32>, PluginError> {
        self.call(|store, inst| match inst {
            Inst::Pick(i) => i.switchyard_plugin_pick().call_pick(store, m, cands),
            _ => unreachable!("a pick binding holds pick instances"),
        })
    }
}

fn wit_candidates(candidates: &[Candidate]) -> Vec<wit::Candidate> {
    candidates
        .iter()
        .map(|c| wit::Candidate {
            id: c.id.clone(),
            inflight: c.inflight,
            weight: c.weight,
            labels: wit_headers(&c.labels),
        })
        .collect()
}

/// Checks a plugin's `route` answer: reroute targets are 1 to
/// [`MAX_REROUTE_TOPICS`] distinct valid topics outside the `$` namespace;
/// a replaced payload is at most `max_output_bytes`. The refusal's detail
/// is what the binding reports as an invalid result.
pub fn check_route(
    decision: RouteDecision,
    max_output_bytes: usize,
) -> Result<RouteDecision, String> {
    match decision {
        RouteDecision::Reroute(topics) => {
            if topics.is_empty() || topics.len() > MAX_REROUTE_TOPICS {
                return Err(format!(
                    "reroute to {} topics; allowed are 1 to {MAX_REROUTE_TOPICS}",
                    topics.len()
                ));
            }
            for (i, t) in topics.iter().enumerate() {
                match t.parse::<Topic>() {
                    Ok(topic) if topic.is_reserved() => {
                        return Err(format!("reroute to the reserved topic {t:?}"));
                    }
                    Ok(_) if topics[..i].contains(t) => {
                        return Err(format!("reroute names {t:?} twice"));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("reroute to {:?}: {e}", truncated(t))),
                }
            }
            Ok(RouteDecision::Reroute(topics))
        }
        RouteDecision::Replace {
            payload: Some(p), ..
        } if p.len() > max_output_bytes => Err(format!(
            "replacement payload of {} bytes; the limit is {max_output_bytes}",
            p.len()
        )),
        other => Ok(other),
    }
}

/// Checks a plugin's `filter` answer: a transformed payload is at most
/// `max_output_bytes`.
pub fn check_filter(
    decision: FilterDecision,
    max_output_bytes: usize,
) -> Result<FilterDecision, String> {
    match decision {
        FilterDecision::Transform(p) if p.len() > max_output_bytes => Err(format!(
            "transformed payload of {} bytes; the limit is {max_output_bytes}",
            p.len()
        )),
        other => Ok(other),
    }
}

/// Checks a plugin's `pick` answer: the index of one of `candidates`
/// candidates, or `None` to leave the choice to the group's default.
pub fn check_pick(chosen: Option<u32>, candidates: usize) -> Result<Option<usize>, String> {
    match chosen {
        None => Ok(None),
        Some(i) if (i as usize) < candidates => Ok(Some(i as usize)),
        Some(i) => Err(format!("picked index {i} of {candidates} candidates")),
    }
}

fn truncated(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn wit_headers(headers: &[Header]) -> Vec<wit::Header> {
    headers
        .iter()
        .map(|h| wit::Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

fn wit_message(msg: &PluginMessage<'_>) -> wit::Message {
    wit::Message {
        topic: msg.topic.to_owned(),
        key: msg.key.map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: wit_headers(msg.headers),
        payload: msg.payload.to_vec(),
        timestamp_ms: msg.timestamp_ms,
    }
}

fn model_headers(headers: Vec<wit::Header>) -> Vec<Header> {
    headers
        .into_iter()
        .map(|h| Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

/// Runs plugin code (`f`) where `wasmtime-wasi` may block.
///
/// `wasmtime-wasi`'s blocking stream and poll functions (a guest that
/// prints) enter a Tokio runtime with `Handle::block_on`, which panics on
/// a thread that runs async tasks. The plugin threads run none, so `f`
/// runs right there; where a runtime is current (a tool's, a test's, a
/// current-thread runtime's), it runs on a short-lived thread of its own.
fn off_runtime<R: Send>(
    f: impl FnOnce() -> Result<R, PluginError> + Send,
) -> Result<R, PluginError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("plugin-call".into())
            .spawn_scoped(s, f)
            .map_err(|e| PluginError::Engine(format!("cannot start a thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(PluginError::Engine("a plugin call panicked".into())))
    })
}

/// Collapses whitespace runs (including newlines) into single spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Names a failed call's cause from the store's flags and the error.
fn classify(store: &Store<HostState>, e: wasmtime::Error) -> PluginError {
    let state = store.data();
    // The root cause names the trap (or the host's reason); the wasm
    // backtrace above it is noise for operators.
    let mut detail = one_line(&e.root_cause().to_string());
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        detail = format!("the plugin called exit({})", exit.0);
    }
    if let Some(last) = &state.last_error {
        detail.push_str("; last error log: ");
        detail.push_str(&one_line(last));
    } else if let Some(last) = state.wasi.take_last_stderr() {
        detail.push_str("; last stderr line: ");
        detail.push_str(&one_line(&last));
    }
    let kind = if state.limiter.exceeded {
        FailureKind::MemoryLimit
    } else if state.host_calls_exceeded {
        FailureKind::HostCallLimit
    } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        detail = "the call used up its fuel (time budget)".into();
        FailureKind::OutOfFuel
    } else {
        FailureKind::Trap
    };
    PluginError::call(kind, detail)
}
