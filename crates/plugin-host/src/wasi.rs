//! WASI 0.2 for plugins, through `wasmtime-wasi`, with a context that
//! grants nothing.
//!
//! Guest runtimes (the Rust standard library, componentize-js's
//! StarlingMonkey, componentize-py's CPython) import WASI interfaces for
//! stdio, the environment, clocks, random numbers, files and sockets, and
//! some call them while they start. Every plugin store gets a fresh
//! [`WasiCtx`] that:
//!
//! - has no preopened directories (every path lookup fails), no
//!   environment variables, no arguments, and an empty stdin;
//! - denies every socket: TCP, UDP and name lookups are disabled and
//!   every address check answers no;
//! - sends stdout and stderr to the binding's log, line by line, through
//!   the binding's log rate limiter (the limiter the `log` import uses;
//!   followers of `GET /v1/plugins/{name}/logs` see the lines too),
//!   at most [`MAX_OUTPUT_PER_CALL`] bytes of each stream per call (the
//!   rest is dropped and counted as dropped log lines);
//! - turns `exit` into a trap: the call fails and the instance is
//!   discarded, like any trap.
//!
//! The functions are the synchronous ones of `wasmtime-wasi`. Those that
//! may block (`poll`, `blocking-write-and-flush`) run their future on
//! `wasmtime-wasi`'s own small Tokio runtime; the streams here are always
//! ready, so nothing waits there. Imports that are not WASI 0.2 (for
//! example `wasi:http`) are defined to trap when called.

use std::sync::Arc;

use parking_lot::Mutex;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceTable, ResourceType};
use wasmtime::{Engine, Result};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::host::{HostState, Shared};

/// Most bytes of stdout, and of stderr, kept from one call (and from
/// `init`); the rest of the call's output is dropped.
pub const MAX_OUTPUT_PER_CALL: usize = 16 * 1024;

/// Longest line taken from stdout or stderr; a longer one is cut into
/// lines of this size.
const MAX_LINE: usize = 4 * 1024;

/// Most random bytes the guest may ask for at once.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// Which stream a line came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stdio {
    Stdout,
    Stderr,
}

impl Stdio {
    fn name(self) -> &'static str {
        match self {
            Stdio::Stdout => "stdout",
            Stdio::Stderr => "stderr",
        }
    }
}

/// What one stream of one instance has written and not yet logged.
#[derive(Default)]
struct Buffer {
    /// The unfinished last line.
    line: Vec<u8>,
    /// Bytes taken during the current call.
    taken: usize,
    /// Whether output was dropped over the per-call cap in this call.
    capped: bool,
    /// The last line written to stderr in this call (for failure reports).
    last: Option<String>,
}

/// An instance's stdout or stderr: lines go to the binding's log.
#[derive(Clone)]
pub(crate) struct LogPipe {
    which: Stdio,
    shared: Arc<Shared>,
    buf: Arc<Mutex<Buffer>>,
}

impl LogPipe {
    fn new(which: Stdio, shared: Arc<Shared>) -> LogPipe {
        LogPipe {
            which,
            shared,
            buf: Arc::default(),
        }
    }

    /// Takes bytes the guest wrote; complete lines are logged now.
    fn take(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock();
        let room = MAX_OUTPUT_PER_CALL.saturating_sub(buf.taken);
        let kept = &bytes[..bytes.len().min(room)];
        buf.taken += kept.len();
        if kept.len() < bytes.len() && !buf.capped {
            buf.capped = true;
            // One dropped line stands for the call's cut output.
            self.shared.stats.log_dropped();
        }
        for &b in kept {
            if b == b'\n' {
                let line = std::mem::take(&mut buf.line);
                self.emit(&mut buf, &line);
            } else {
                buf.line.push(b);
                if buf.line.len() >= MAX_LINE {
                    let line = std::mem::take(&mut buf.line);
                    self.emit(&mut buf, &line);
                }
            }
        }
    }

    /// Logs an unfinished line, and starts a new call's count.
    fn end_call(&self) {
        let mut buf = self.buf.lock();
        if !buf.line.is_empty() {
            let line = std::mem::take(&mut buf.line);
            self.emit(&mut buf, &line);
        }
        buf.taken = 0;
        buf.capped = false;
    }

    fn emit(&self, buf: &mut Buffer, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return;
        }
        if self.which == Stdio::Stderr {
            buf.last = Some(line.to_owned());
        }
        let shared = &self.shared;
        if !shared.stats.admit_log(
            shared.log_lines_per_sec,
            shared.log_bytes_per_sec,
            line.len(),
        ) {
            return;
        }
        // Followers of the binding's log see the line too, at the level
        // it is logged at.
        let level = match self.which {
            Stdio::Stdout => "info",
            Stdio::Stderr => "warn",
        };
        shared.stats.tail_log(level, line);
        let plugin = &*shared.name;
        let stream = self.which.name();
        match self.which {
            Stdio::Stdout => {
                tracing::info!(target: "switchyard::plugin", plugin, stream, "{line}")
            }
            Stdio::Stderr => {
                tracing::warn!(target: "switchyard::plugin", plugin, stream, "{line}")
            }
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests use the async stream; none is linked.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: output over the cap is dropped, not waited on.
        Ok(64 * 1024)
    }
}

/// The WASI state of one instance's store.
pub(crate) struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl Wasi {
    /// A context that grants nothing; stdout and stderr go to the
    /// binding's log.
    pub fn new(shared: &Arc<Shared>) -> Wasi {
        let stdout = LogPipe::new(Stdio::Stdout, shared.clone());
        let stderr = LogPipe::new(Stdio::Stderr, shared.clone());
        let mut b = WasiCtx::builder();
        // The builder's defaults already have no environment, arguments,
        // preopens or stdin; sockets are switched off here as well.
        b.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .max_random_size(MAX_RANDOM_BYTES);
        Wasi {
            ctx: b.build(),
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    /// Starts a call: forgets the earlier call's last stderr line.
    pub fn start_call(&self) {
        self.stderr.buf.lock().last = None;
    }

    /// Ends a call: logs unfinished lines and resets the per-call caps.
    pub fn end_call(&self) {
        self.stdout.end_call();
        self.stderr.end_call();
    }

    /// The last stderr line of the current call (a guest runtime's
    /// exception or panic message), forgotten once read.
    pub fn take_last_stderr(&self) -> Option<String> {
        self.stderr.buf.lock().last.take()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// Adds the WASI 0.2 interfaces to the shared linker.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)
}

/// Whether the shared linker provides the import `name`: the plugin's
/// own interfaces and the WASI 0.2 interfaces of `wasmtime-wasi` (matched
/// by the linker for any 0.2.x version the guest names).
fn provided(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    let package = iface.split('/').next().unwrap_or(iface);
    match package {
        "switchyard:plugin" => true,
        "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" | "wasi:filesystem"
        | "wasi:sockets" => version.starts_with("0.2."),
        _ => false,
    }
}

/// A linker for one component: the shared linker, and functions that
/// trap for every import it does not provide (such as `wasi:http`, which
/// componentize-js links unless told not to).
///
/// Not `Linker::define_unknown_imports_as_traps`: it defines the guest's
/// exact version name (`wasi:cli/stdout@0.2.6`) as a new instance, which
/// then hides the linker's 0.2.12 definition that would have matched.
pub(crate) fn link(
    base: &Linker<HostState>,
    engine: &Engine,
    component: &Component,
) -> Result<Linker<HostState>> {
    let mut linker = base.clone();
    for (name, item) in component.component_type().imports(engine) {
        if provided(name) {
            continue;
        }
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut i = linker.instance(name)?;
                for (export, item) in instance.exports(engine) {
                    stub(&mut i, name, export, &item.ty)?;
                }
            }
            ty => stub(&mut linker.root(), "", name, &ty)?,
        }
    }
    Ok(linker)
}

/// Defines `name` in `i` as a function that traps (or as a resource type
/// of the host's that no function can make).
fn stub(
    i: &mut LinkerInstance<'_, HostState>,
    parent: &str,
    name: &str,
    item: &ComponentItem,
) -> Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let what = format!("{parent}#{name}");
            i.func_new(name, move |_, _, _, _| {
                wasmtime::bail!("the plugin called `{what}`, which the node does not provide")
            })
        }
        ComponentItem::Resource(_) => {
            i.resource(name, ResourceType::host::<Unprovided>(), |_, _| Ok(()))
        }
        _ => Ok(()),
    }
}

/// The host type of resources of interfaces the node does not provide.
struct Unprovided;

/// Nanoseconds since the first call: the plugins' monotonic clock.
pub(crate) fn monotonic_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}
