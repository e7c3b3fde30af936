//! The log: `tracing` events to standard error, filtered by the `log` key
//! (`SWITCHYARD_LOG` in the environment; default [`DEFAULT_FILTER`]), as
//! text or JSON lines, written by a thread of their own for the node
//! ([`Writer::Queued`]). The filter can be replaced while the node runs
//! (a configuration reload).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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

/// How log lines reach standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// Written by the thread that logs, before it goes on. For short-lived
    /// commands, whose lines must interleave with what they print.
    Direct,
    /// Queued (at most [`QUEUED_LINES`]) and written by a thread of their
    /// own, for the node: a slow standard error (a busy disk, a full pipe to
    /// journald) must not hold a Tokio worker and every connection on it. A
    /// line that finds the queue full is dropped and counted in
    /// `switchyard_log_lines_dropped_total`.
    Queued,
}

/// The most log lines [`Writer::Queued`] holds before it drops: at a few
/// hundred bytes per line, a few MiB.
pub const QUEUED_LINES: usize = 16_384;

/// The installed log: the filter's reload handle, and for
/// [`Writer::Queued`] the guard that writes out the queued lines when it
/// is dropped (keep it until the process is done logging).
pub struct Logging {
    /// Replaces the filter while the process runs.
    pub filter: FilterReload,
    _flush: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global log subscriber with `filter` (checked by
/// [`check_filter`]; a filter that does not parse falls back to
/// [`DEFAULT_FILTER`]), writing through `writer`. Call once per process
/// (the binary does); a second call panics.
pub fn init(format: LogFormat, filter: &str, writer: Writer) -> Logging {
    let filter = parse(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (make_writer, flush) = match writer {
        Writer::Direct => (BoxMakeWriter::new(std::io::stderr), None),
        Writer::Queued => {
            let (queue, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(QUEUED_LINES)
                .thread_name("switchyard-log")
                .finish(std::io::stderr());
            let dropped = queue.error_counter();
            switchyard_gateway::report_dropped_log_lines(move || dropped.dropped_lines() as u64);
            (BoxMakeWriter::new(queue), Some(guard))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer)
        .with_ansi(ansi);
    let filter = match format {
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
    };
    Logging {
        filter,
        _flush: flush,
    }
}
