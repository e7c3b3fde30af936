//! The log: `tracing` events to standard error, filtered by
//! `SWITCHYARD_LOG` (default [`DEFAULT_FILTER`]), as text or JSON lines.

use crate::config::LogFormat;

/// The filter without `SWITCHYARD_LOG`: the node's own events from `info`
/// on, the storage engine's (fjall and its LSM tree) from `warn` on. At
/// `info` the engine logs a line per keyspace at every start ("Finished
/// ingestion writer", seven times) and at every flush.
pub const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Installs the global log subscriber. Call once per process (the binary
/// does); a second call panics.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}
