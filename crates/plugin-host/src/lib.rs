//! The sandboxed host for Switchyard's WebAssembly plugins.
//!
//! A plugin is a WebAssembly component implementing one world of the
//! `switchyard:plugin` WIT package (`sdk/wit/plugin.wit`): `route-plugin`,
//! `filter-plugin` or `pick-plugin`. The [`PluginEngine`] validates and
//! compiles components (once per node: compiled artifacts are cached by the
//! sha256 of the component and the engine settings), and a [`Binding`] ties
//! a compiled [`Plugin`] to a hook, topic patterns, a configuration string,
//! an [`ErrorPolicy`] and [`Limits`].
//!
//! A binding keeps a small pool of ready instances and reuses them across
//! calls: nothing is instantiated per message. Each call runs with a fuel
//! budget (the time limit; fuel counts executed instructions, so the limit
//! does not depend on how busy the machine is), a memory cap and a cap on
//! host calls. A call that traps or exceeds a limit returns a
//! [`PluginError::Call`]; its instance and store are discarded (a trapped
//! store cannot be entered again) and the next call gets a fresh instance.
//! Plugins get WASI 0.2 with a context that grants nothing: no
//! filesystem, network, environment or arguments; random numbers and
//! clocks; stdout and stderr go to the binding's rate-limited log, and
//! `exit` fails the call (see `wasi.rs`).
//!
//! Node-wide limits bound what all bindings together may take (see
//! [`EngineConfig`]): calls run on a fixed set of plugin threads, never on
//! the caller's async worker (the `_async` calls of [`Binding`]); a
//! binding reserves `memory × instances` of a memory budget; fuel per call
//! is capped; compilation has a deadline; each binding's key-value bytes
//! and log rate are bounded. Only accepted plugins reach the compile
//! cache on disk.
//!
//! What it does not do: decide what a failure means for a message (the
//! router applies the binding's error policy) or persist bindings.
#![warn(missing_docs)]

mod binding;
mod bindings;
mod budget;
mod engine;
mod error;
mod executor;
mod host;
mod kv;
mod ratelimit;
mod stats;
mod types;
mod wasi;

pub use binding::{Binding, CallPermit};
pub use engine::{
    CompileWorker, EngineConfig, MAX_COMPILES, Plugin, PluginEngine, WORKER_INVALID_COMPONENT,
    compile_worker, sha256_hex,
};
pub use error::{FailureKind, PluginError};
pub use kv::{DEFAULT_KV_MAX_BYTES, KvBackend, MAX_KV_KEY, MAX_KV_KEYS, MAX_KV_VALUE, MemoryKv};
pub use stats::{LOG_TAIL_CAPACITY, LogLine, Stats, StatsSnapshot};
pub use types::{
    BindingSpec, Candidate, ErrorPolicy, FilterDecision, Hook, Limits, MAX_REROUTE_TOPICS,
    PluginMessage, RouteDecision,
};

/// The checks the host applies to what a plugin returns, callable without
/// a running plugin (for the fuzz targets in `fuzz/`). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::binding::{check_filter, check_pick, check_route};
}
