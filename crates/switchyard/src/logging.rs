//! The log: `tracing` events to standard error, filtered by
//! `SWITCHYARD_LOG` (default `info`), as text or JSON lines.

use crate::config::LogFormat;

/// Installs the global log subscriber. Call once per process (the binary
/// does); a second call panics.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| "info".into());
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
