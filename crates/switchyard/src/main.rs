//! `switchyard`: serve a node, or talk to one. This file parses the command
//! line, runs `serve` with the process's signals, and prints errors; the
//! work is in the library (`switchyard::node`, `switchyard::commands`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use switchyard::args::{Cli, Command, ConfigCommand, ReloadArgs, ServeArgs, ShowFormat};
use switchyard::config::{ConfigError, Layered, NodeConfig};
use switchyard::node::{Node, NodeError};
use switchyard::reload::Reloader;

/// mimalloc instead of the system allocator, with `--features mimalloc`
/// (see docs/BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tunes glibc malloc for a server whose threads allocate and free many
/// small message buffers: without padding, every thread arena grows and
/// shrinks its heap a few pages at a time (an `mprotect` per step), which
/// showed as 3-4 % of CPU under publish load.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: mallopt only changes allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CompileWorker(args) = &cli.command {
        return compile_worker(args);
    }
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Config(cmd) => config(cmd),
            Command::Reload(args) => reload(args),
            Command::Client(cmd) => switchyard::commands::run(cmd, cli.ca_file.as_deref()).await,
            Command::CompileWorker(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A refused configuration exits with 2, as a refused flag does.
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<switchyard::plugin_cli::Differ>().is_some() {
                // `plugin test --against`: the decisions differ.
                ExitCode::from(switchyard::plugin_cli::DIFFER_STATUS)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The hidden `compile-plugin-worker`: one component from stdin, compiled
/// into `--output` (see `switchyard_plugin_host::compile_worker`).
fn compile_worker(args: &switchyard::args::CompileWorkerArgs) -> ExitCode {
    match switchyard_plugin_host::compile_worker(
        args.max_memory_bytes,
        args.pooled_instances,
        std::io::stdin().lock(),
        &args.output,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err((status, message)) => {
            eprintln!("{message}");
            ExitCode::from(u8::try_from(status).unwrap_or(1))
        }
    }
}

/// `switchyard config show` and `switchyard config check`.
fn config(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Show { format, serve } => {
            let (file, overrides) = serve.into_overrides();
            let layered = Layered::gather(file.as_deref(), std::env::vars_os(), overrides)?;
            let mut out = std::io::stdout().lock();
            match format {
                ShowFormat::Toml => out.write_all(layered.to_toml()?.as_bytes())?,
                ShowFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &layered.to_json()?)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
        }
        ConfigCommand::Check { serve } => {
            let (file, overrides) = serve.into_overrides();
            let layered = Layered::gather(file.as_deref(), std::env::vars_os(), overrides)?;
            NodeConfig::from_layered(&layered)?;
            println!("configuration is valid");
        }
    }
    Ok(())
}

/// The file in the data directory that holds a running node's process id.
const PID_FILE: &str = "switchyard.pid";

/// `switchyard reload`: checks the configuration as `serve` would load it,
/// then sends SIGHUP to the node that runs on its data directory.
fn reload(args: ReloadArgs) -> Result<()> {
    let (file, overrides) = args.serve.into_overrides();
    let config = NodeConfig::load(file.as_deref(), overrides)?;
    let pid_file = config.router.store.path.join(PID_FILE);
    let pid = match args.pid {
        Some(p) => p,
        None => std::fs::read_to_string(&pid_file)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {}: {e}; is a node running on this data directory? (or give --pid)",
                    pid_file.display()
                )
            })?
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{} does not hold a process id: {e}", pid_file.display()))?,
    };
    // A pid file left by a node that was killed may name another process now.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.split(|&b| b == 0).any(|a| a == b"serve") {
        anyhow::bail!("process {pid} is not a running switchyard node");
    }
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow::anyhow!("{pid} is not a process id"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|e| anyhow::anyhow!("cannot signal process {pid}: {e}"))?;
    println!("asked the node (pid {pid}) to reload; its log names what changed");
    Ok(())
}

/// Writes the pid file while the node runs; removes it when dropped.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn create(data_dir: &std::path::Path) -> std::io::Result<PidFile> {
        let path = data_dir.join(PID_FILE);
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `switchyard serve`: validates the whole configuration, binds, starts the
/// node, prints where it listens, and runs it until Ctrl-C or SIGTERM.
async fn serve(args: ServeArgs) -> Result<()> {
    let (file, overrides) = args.into_overrides();
    let config = NodeConfig::load(file.as_deref(), overrides)?;
    // Held to the end of `serve`: dropping it writes out the queued lines.
    let logging = switchyard::logging::init(
        config.log_format,
        &config.log_filter,
        switchyard::logging::Writer::Queued,
    );
    let filter = config.log_filter.clone();
    let listener = listen(config.listen).map_err(|source| NodeError::Listen {
        addr: config.listen,
        source,
    })?;
    // Installed before the node reports itself ready, so that a signal from
    // then on always means a graceful stop.
    let signals = Signals::install()?;
    let hangups = Hangups::install()?;
    let tls = config.gateway.tls.clone();
    let data_dir = config.router.store.path.clone();
    let live = config.gateway.live.clone();
    let node = Node::start(config, listener).await?;
    // After the store is open: it holds the data directory's lock.
    let _pid_file = PidFile::create(&data_dir)
        .inspect_err(|e| tracing::warn!(target: "switchyard", error = %e, "cannot write the pid file; `switchyard reload` needs --pid"))
        .ok();
    hangups.reload_with(Reloader::new(
        node.router().clone(),
        tls.clone(),
        file,
        Box::new(load_again),
        logging.filter,
        filter,
        live,
    ));
    // The first stdout line tells scripts and tests where the node listens.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("switchyard listening on {scheme}://{}", node.addr());
    std::io::stdout().flush()?;
    node.run(signals.first_then_watch()).await?;
    Ok(())
}

/// The accept queue asked for; the kernel caps it at `net.core.somaxconn`
/// (4,096 by default since Linux 5.4). tokio's `TcpListener::bind` asks for
/// 1,024: thousands of clients reconnecting at once overflowed that, and the
/// kernel dropped their SYNs, which clients retry only after 1 s.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the client listener (with `SO_REUSEADDR`, as `TcpListener::bind`
/// does) and listens with [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Loads the configuration again from the same command line, environment
/// and file as at start (see [`switchyard::reload`]).
fn load_again() -> Result<NodeConfig, String> {
    let cli = Cli::try_parse().map_err(|e| e.to_string())?;
    let Command::Serve(args) = cli.command else {
        return Err("not a serve command line".into());
    };
    let (file, overrides) = args.into_overrides();
    NodeConfig::load(file.as_deref(), overrides).map_err(|e| format!("{e:#}"))
}

/// SIGHUP, registered before the node reports ready (so that a reload
/// never stops it), served once the node runs.
struct Hangups {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Hangups {
    fn install() -> Result<Hangups> {
        Ok(Hangups {
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        })
    }

    /// Reloads the configuration on every SIGHUP, one reload at a time.
    fn reload_with(self, reloader: Reloader) {
        #[cfg(unix)]
        {
            let mut hangup = self.hangup;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    reloader.reload().await;
                }
            });
        }
        #[cfg(not(unix))]
        let _ = (self, reloader);
    }
}

/// Ctrl-C and SIGTERM. The streams are registered once, so that no signal
/// falls between two waits.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Resolves on the first signal, after starting the watcher that ends
    /// the process on the second: a second Ctrl-C during the hand-off of
    /// groups, the leave or the drain exits at once (status 130).
    async fn first_then_watch(mut self) {
        self.next().await;
        tokio::spawn(async move {
            self.next().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    }
}
