use std::fmt;

/// Why a plugin call failed. Every kind is contained: the instance that
/// failed is discarded and the binding's error policy decides what happens
/// to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap,
    /// The call used up its fuel: the time budget.
    OutOfFuel,
    /// The instance tried to grow its memory past the binding's cap.
    MemoryLimit,
    /// The call made more host calls (kv, log, metrics) than allowed.
    HostCallLimit,
    /// The plugin answered something the node cannot accept (an index out of
    /// range, an invalid topic, a payload over the size limit).
    InvalidResult,
    /// A new instance could not be created or initialised.
    Instantiate,
}

impl FailureKind {
    /// A short stable name, as the counters and error headers show it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::OutOfFuel => "out_of_fuel",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::HostCallLimit => "host_call_limit",
            FailureKind::InvalidResult => "invalid_result",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from loading, binding or calling a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component this node can compile.
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// The component implements none of the worlds of `switchyard:plugin`.
    #[error(
        "the component implements no switchyard:plugin world (route-plugin, filter-plugin or pick-plugin): {0}"
    )]
    NoKnownWorld(String),
    /// The component does not implement the hook it is being bound to.
    #[error("the component does not implement the {wanted} hook; it implements {found}")]
    WrongHook {
        /// The hook asked for.
        wanted: &'static str,
        /// The hooks the component implements.
        found: String,
    },
    /// The plugin's `init` refused the configuration string.
    #[error("the plugin rejected its configuration: {0}")]
    ConfigRejected(String),
    /// Compiling the component was refused: it took longer than the
    /// node's compile timeout, or too many compilations are running.
    #[error("the component was not compiled: {0}")]
    CompileRefused(String),
    /// The binding's instances would not fit in what is left of the node's
    /// plugin memory budget.
    #[error("plugin memory budget: {0}")]
    OverBudget(String),
    /// A binding setting is out of range.
    #[error("invalid plugin setting: {0}")]
    InvalidSetting(String),
    /// A call failed; see [`FailureKind`].
    #[error("plugin {kind}: {detail}")]
    Call {
        /// What went wrong.
        kind: FailureKind,
        /// Details for logs and error headers.
        detail: String,
    },
    /// The engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
}

impl PluginError {
    pub(crate) fn call(kind: FailureKind, detail: impl Into<String>) -> Self {
        PluginError::Call {
            kind,
            detail: detail.into(),
        }
    }

    /// The failure kind of a failed call, if this is one.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            PluginError::Call { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
