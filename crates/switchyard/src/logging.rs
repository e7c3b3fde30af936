//! The log: `tracing` events to standard error, filtered by the `log` key
//! (`SWITCHYARD_LOG` in the environment; default [`DEFAULT_FILTER`]), as
//! text or JSON lines. The filter can be replaced while the node runs
//! (a configuration reload).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter by default: the node's own events from `info` on, the
/// storage engine's (fjall and its LSM tree) from `warn` on. At `info` the
/// engine logs a line per keyspace at every start ("Finished ingestion
/// writer", seven times) and at every flush.
pub const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Replaces the log filter of the running process.
pub struct FilterReload(Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>);

impl FilterReload {
    /// Makes `filter` (directives checked by [`check_filter`]) the filter.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        (self.0)(parse(filter)?)
    }
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| format!("not a log filter: {e}"))
}

/// `filter` when it parses as `EnvFilter` directives, else why not.
pub fn check_filter(filter: &str) -> Result<String, String> {
    parse(filter).map(|_| filter.to_owned())
}

/// Installs the global log subscriber with `filter` (checked by
/// [`check_filter`]; a filter that does not parse falls back to
/// [`DEFAULT_FILTER`]). Call once per process (the binary does); a second
/// call panics.
pub fn init(format: LogFormat, filter: &str) -> FilterReload {
    let filter = parse(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            FilterReload(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }))
        }
        LogFormat::Pretty => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            FilterReload(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }))
        }
    }
}
