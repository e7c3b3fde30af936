//! `switchyard`: serve a node, or talk to one.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use switchyard::client::{Client, ClientError};
use switchyard::config::{NodeConfig, Overrides};
use switchyard::sse::SseParser;
use switchyard_router::{Cluster, FsyncMode, Router};

const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Tunes glibc malloc for a server whose threads allocate and free many
/// small message buffers: without padding, every thread arena grows and
/// shrinks its heap a few pages at a time (an `mprotect` per step), which
/// showed as 3-4 % of CPU under publish load.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A WebAssembly-extensible edge message router"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (defaults: 127.0.0.1:7070, data in ./switchyard-data, fsync=always).
    Serve {
        /// TOML config file (see docs/configuration.md).
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// HTTP listen address; port 0 picks a free port.
        #[arg(long, env = "SWITCHYARD_LISTEN")]
        listen: Option<SocketAddr>,
        /// Data directory.
        #[arg(long, env = "SWITCHYARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Durability: always, interval or never.
        #[arg(long, env = "SWITCHYARD_FSYNC")]
        fsync: Option<FsyncMode>,
        /// Log format: pretty or json.
        #[arg(long, env = "SWITCHYARD_LOG_FORMAT")]
        log_format: Option<String>,
        /// UDP address for cluster gossip; the node joins a cluster only
        /// when this is set (the key comes from SWITCHYARD_CLUSTER_KEY).
        #[arg(long, env = "SWITCHYARD_GOSSIP_LISTEN")]
        gossip_listen: Option<SocketAddr>,
        /// Gossip address (host:port) of a node to join through (repeatable).
        #[arg(long = "join", env = "SWITCHYARD_JOIN", value_delimiter = ',')]
        join: Vec<String>,
        /// Cluster name (nodes of another name are refused).
        #[arg(long, env = "SWITCHYARD_CLUSTER_NAME")]
        cluster_name: Option<String>,
    },
    /// Cluster membership as a node sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Publish one message: DATA is text, @file, or - for standard input.
    Publish {
        /// Topic, e.g. orders.eu.
        topic: String,
        /// The payload: text, @path to read a file, - to read standard input (default: empty).
        data: Option<String>,
        /// Message key.
        #[arg(long)]
        key: Option<String>,
        /// Message header as name=value (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Content type stored with the message.
        #[arg(long)]
        content_type: Option<String>,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// Print messages of one or more topic patterns as they arrive, one per line.
    Subscribe {
        /// Topic patterns (`*` one token, `>` the rest).
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Start: earliest, latest, a cursor, or an RFC 3339 time.
        #[arg(long, default_value = "latest")]
        from: String,
        /// Print the payload (raw) or the JSON envelope (json), one message per line.
        #[arg(long, default_value = "raw")]
        format: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Join this consumer group instead of following every message:
        /// each message goes to one member of the group.
        #[arg(long)]
        group: Option<String>,
        /// With --group: manual (ack after printing each batch) or auto.
        #[arg(long, default_value = "manual", requires = "group")]
        ack: String,
        /// With --group: the group's strategy, when this creates the group.
        #[arg(long, requires = "group")]
        strategy: Option<String>,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// List consumer groups with their members, in-flight messages and lag.
    Groups {
        /// Print the whole JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// Manage WebAssembly plugins on a node, or test one locally.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List topics with their message counts and sizes.
    Topics {
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// List the members with their state, addresses and last contact.
    Members {
        /// Print the whole JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Upload a component and bind it (replaces a binding of the same name atomically).
    Push {
        /// The component (.wasm, built for wasm32-wasip2).
        file: PathBuf,
        /// Binding name.
        #[arg(long)]
        name: String,
        /// route, filter or pick.
        #[arg(long)]
        hook: String,
        /// Topic pattern it applies to (repeatable; default `>`).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Configuration string passed to the plugin's init.
        #[arg(long)]
        config: Option<String>,
        /// drop, pass or dead-letter.
        #[arg(long)]
        on_error: Option<String>,
        /// Fuel per hook call.
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory cap per instance, in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// List bindings with their counters.
    List {
        /// Print the node's JSON answer.
        #[arg(long)]
        json: bool,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// Unbind a plugin and delete its key-value data.
    Rm {
        /// Binding name.
        name: String,
        /// Node URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
    },
    /// Run a hook locally, without a node, and print each decision as JSON.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// route, filter or pick.
        #[arg(long)]
        hook: String,
        /// Configuration string passed to init.
        #[arg(long, default_value = "")]
        config: String,
        /// A JSON message {"topic", "payload", "key", "headers", ...}, several as JSON lines, or @file.
        #[arg(long)]
        message: String,
        /// For pick: a JSON array of candidates [{"id", "inflight", "weight", "labels"}], or @file.
        #[arg(long)]
        candidates: Option<String>,
        /// Fuel per hook call.
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory cap per instance, in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
    },
}

async fn plugin(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::Push {
            file,
            name,
            hook,
            topics,
            config,
            on_error,
            fuel,
            memory_mb,
            url,
        } => {
            let client = Client::new(&url)?;
            let v = switchyard::plugin_cli::push(
                &client,
                &switchyard::plugin_cli::Push {
                    file: &file,
                    name: &name,
                    hook: &hook,
                    topics: &topics,
                    config: config.as_deref(),
                    on_error: on_error.as_deref(),
                    fuel,
                    memory_mb,
                },
            )
            .await?;
            println!(
                "bound {} ({} hook, version {}, sha256 {})",
                name,
                v["hook"].as_str().unwrap_or("?"),
                v["version"],
                v["sha256"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        PluginCommand::List { json, url } => {
            let v = Client::new(&url)?.get_json("/v1/plugins").await?;
            if json {
                println!("{v}");
            } else {
                print!("{}", switchyard::plugin_cli::format_list(&v));
            }
            Ok(())
        }
        PluginCommand::Rm { name, url } => {
            let client = Client::new(&url)?;
            let req = client
                .request(http::Method::DELETE, &format!("/v1/plugins/{name}"))
                .body(Full::new(Bytes::new()))?;
            client.send(req).await?;
            println!("removed {name}");
            Ok(())
        }
        PluginCommand::Test {
            file,
            hook,
            config,
            message,
            candidates,
            fuel,
            memory_mb,
        } => {
            init_logging(false);
            let t = switchyard::plugin_cli::Test {
                file: &file,
                hook: &hook,
                config: &config,
                message: &message,
                candidates: candidates.as_deref(),
                fuel,
                memory_mb,
            };
            let (lines, failed) = tokio::task::block_in_place(|| switchyard::plugin_cli::test(&t))?;
            let mut out = std::io::stdout().lock();
            for l in lines {
                writeln!(out, "{l}")?;
            }
            if failed {
                bail!("the plugin failed on at least one message");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
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
            Command::Serve {
                config,
                listen,
                data_dir,
                fsync,
                log_format,
                gossip_listen,
                join,
                cluster_name,
            } => {
                serve(
                    config,
                    Overrides {
                        listen,
                        data_dir,
                        fsync,
                        log_format,
                        gossip_listen,
                        join,
                        cluster_name,
                        cluster_key: std::env::var("SWITCHYARD_CLUSTER_KEY")
                            .ok()
                            .filter(|k| !k.is_empty()),
                    },
                )
                .await
            }
            Command::Cluster(ClusterCommand::Members { json, url }) => {
                cluster_members(&url, json).await
            }
            Command::Publish {
                topic,
                data,
                key,
                headers,
                content_type,
                url,
            } => publish(&url, &topic, data, key, headers, content_type).await,
            Command::Subscribe {
                patterns,
                from,
                format,
                count,
                group: Some(group),
                ack,
                strategy,
                url,
            } => {
                let join = GroupJoin {
                    group,
                    ack,
                    strategy,
                };
                subscribe_group(&url, &patterns, &from, &format, count, &join).await
            }
            Command::Subscribe {
                patterns,
                from,
                format,
                count,
                url,
                ..
            } => subscribe(&url, &patterns, &from, &format, count).await,
            Command::Groups { json, url } => groups(&url, json).await,
            Command::Topics { url } => topics(&url).await,
            Command::Plugin(cmd) => plugin(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config_file: Option<PathBuf>, over: Overrides) -> Result<()> {
    let config = NodeConfig::load(config_file.as_deref(), over).map_err(anyhow::Error::msg)?;
    init_logging(config.log_json);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router_config = config.router.clone();
    let data_dir = router_config.store.path.clone();
    let router = tokio::task::spawn_blocking(move || Router::open(router_config))
        .await?
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    tracing::info!(node = %router.node_id(), %addr, fsync = %config.router.store.fsync, "switchyard node started");
    let cluster = match config.cluster.clone() {
        Some(cc) => {
            let http = match &config.http_advertise {
                Some(h) => h.clone(),
                None if !addr.ip().is_unspecified() => addr.to_string(),
                // A wildcard listen address is no address for peers: use
                // the gossip address's host when it names one.
                None => match cc.gossip_advertise.unwrap_or(cc.gossip_listen).ip() {
                    ip if !ip.is_unspecified() => SocketAddr::new(ip, addr.port()).to_string(),
                    _ => anyhow::bail!(
                        "the node listens on {addr}, which peers cannot connect to: set \
                         http_advertise under [cluster] to the host:port peers reach this node at"
                    ),
                },
            };
            let (cluster, events) = Cluster::start(cc, router.node_id().0, http).await?;
            router.attach_cluster(cluster.clone(), events);
            Some(cluster)
        }
        None => None,
    };
    // The first stdout line tells scripts and tests where the node listens.
    println!("switchyard listening on http://{addr}");
    std::io::stdout().flush()?;
    let shutdown = async {
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        if let Some(c) = &cluster {
            // Groups first, while the peers still answer; then the leave.
            router.groups().hand_off().await;
            c.leave().await;
        }
        tokio::spawn(async {
            wait_for_signal().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    };
    switchyard_gateway::serve(listener, router.clone(), config.gateway, shutdown).await?;
    tokio::task::spawn_blocking(move || router.close()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn read_data(data: Option<String>) -> Result<Bytes> {
    Ok(match data.as_deref() {
        None => Bytes::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            Bytes::from(buf)
        }
        Some(s) if s.starts_with('@') => {
            Bytes::from(std::fs::read(&s[1..]).with_context(|| format!("cannot read {}", &s[1..]))?)
        }
        Some(s) => Bytes::from(s.to_owned()),
    })
}

async fn publish(
    url: &str,
    topic: &str,
    data: Option<String>,
    key: Option<String>,
    headers: Vec<String>,
    content_type: Option<String>,
) -> Result<()> {
    let client = Client::new(url)?;
    let payload = read_data(data)?;
    let headers = headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((n, v)) if !n.is_empty() => Ok((n.to_owned(), v.to_owned())),
            _ => bail!("--header {h:?}: expected NAME=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    let answer = client
        .publish(
            topic,
            payload,
            key.as_deref(),
            &headers,
            content_type.as_deref(),
        )
        .await?;
    println!("{answer}");
    Ok(())
}

fn events_path(patterns: &[String], from: &str, format: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for p in patterns {
        q.append_pair("topic", p);
    }
    q.append_pair("from", from);
    q.append_pair("format", format);
    format!("/v1/events?{}", q.finish())
}

/// Follows the event stream, reconnecting with `Last-Event-ID` when it breaks
/// (for up to 30 s), and prints one message per line.
async fn subscribe(
    url: &str,
    patterns: &[String],
    from: &str,
    format: &str,
    count: Option<u64>,
) -> Result<()> {
    let client = Client::new(url)?;
    // `latest` is pinned to a cursor first, so that a reconnect before the
    // first event still misses nothing published in between.
    let from = if from == "latest" {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for p in patterns {
            q.append_pair("topic", p);
        }
        let v = client
            .get_json(&format!("/v1/messages?{}&from=latest&limit=1", q.finish()))
            .await?;
        v["cursor"]
            .as_str()
            .context("the node answered without a cursor")?
            .to_owned()
    } else {
        from.to_owned()
    };
    let from = from.as_str();
    let mut parser = SseParser::new();
    let mut printed = 0u64;
    let mut connected_once = false;
    let mut broken_since: Option<Instant> = None;
    let stdout = std::io::stdout();
    loop {
        let mut req = client.request(http::Method::GET, &events_path(patterns, from, format));
        if let Some(id) = parser.last_id() {
            req = req.header("last-event-id", id);
        }
        let req = req
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let resp = match client.send(req).await {
            Ok(r) => r,
            Err(e @ ClientError::Unreachable { .. }) if connected_once => {
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        connected_once = true;
        broken_since = None;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for event in parser.push(&data) {
                let mut out = stdout.lock();
                match event.event.as_str() {
                    "gap" => eprintln!("gap: {}", event.data),
                    _ => {
                        writeln!(out, "{}", event.data)?;
                        out.flush()?;
                        printed += 1;
                        if count.is_some_and(|c| printed >= c) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        eprintln!("stream interrupted; reconnecting");
    }
}

/// GETs `path`; with `json` prints the answer whole and returns `None`.
async fn get_or_print(url: &str, path: &str, json: bool) -> Result<Option<serde_json::Value>> {
    let v = Client::new(url)?.get_json(path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(None);
    }
    Ok(Some(v))
}

async fn cluster_members(url: &str, json: bool) -> Result<()> {
    let Some(v) = get_or_print(url, "/v1/cluster", json).await? else {
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<18} {:<8} {:<22} {:<22} {:>10}",
        "id", "state", "http", "gossip", "heard ms"
    )?;
    for m in v["members"].as_array().into_iter().flatten() {
        let heard = match m["last_heard_ms"].as_u64() {
            Some(ms) => ms.to_string(),
            None if m["self"] == true => "self".into(),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:<18} {:<8} {:<22} {:<22} {:>10}",
            m["id"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or(""),
            m["http_addr"].as_str().unwrap_or(""),
            m["gossip_addr"].as_str().unwrap_or(""),
            heard,
        )?;
    }
    Ok(())
}

/// How `subscribe --group` joins.
struct GroupJoin {
    group: String,
    ack: String,
    strategy: Option<String>,
}

/// Joins a consumer group and prints its share of messages, one per line.
/// With manual acks each batch is acknowledged after it is printed; a
/// broken stream rejoins (for up to 30 s), and whatever was not acknowledged
/// is delivered again, to this or another member.
async fn subscribe_group(
    url: &str,
    patterns: &[String],
    from: &str,
    format: &str,
    count: Option<u64>,
    join: &GroupJoin,
) -> Result<()> {
    if from != "latest" && from != "earliest" {
        anyhow::bail!("a group starts from earliest or latest, not {from:?}");
    }
    let client = Client::new(url)?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    for p in patterns {
        q.append_pair("topic", p);
    }
    q.append_pair("group", &join.group);
    q.append_pair("ack", &join.ack);
    q.append_pair("from", from);
    q.append_pair("format", format);
    if let Some(s) = &join.strategy {
        q.append_pair("strategy", s);
    }
    let path = format!("/v1/events?{}", q.finish());
    let ack_path = format!("/v1/groups/{}/ack", join.group);
    let manual = join.ack == "manual";
    let mut printed = 0u64;
    let mut broken_since: Option<Instant> = None;
    let stdout = std::io::stdout();
    loop {
        let req = client
            .request(http::Method::GET, &path)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let resp = match client.send(req).await {
            Ok(r) => r,
            Err(e @ ClientError::Unreachable { .. }) if printed > 0 => {
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        broken_since = None;
        let mut parser = SseParser::new();
        let mut member = None;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let mut ids = Vec::new();
            let mut done = false;
            for event in parser.push(&data) {
                if event.event == "joined" {
                    let v: serde_json::Value = serde_json::from_str(&event.data)?;
                    member = v["member"].as_str().map(str::to_owned);
                    continue;
                }
                if done {
                    // Past --count: left unacknowledged for another member.
                    continue;
                }
                let mut out = stdout.lock();
                writeln!(out, "{}", event.data)?;
                out.flush()?;
                ids.extend(event.id);
                printed += 1;
                done = count.is_some_and(|c| printed >= c);
            }
            if manual && !ids.is_empty() {
                let body = serde_json::json!({"ids": ids, "member": member});
                let acked = client
                    .send_json(
                        http::Method::POST,
                        &ack_path,
                        Bytes::from(body.to_string()),
                        "application/json",
                    )
                    .await;
                match acked {
                    Ok(_) => {}
                    // Redelivered elsewhere after the ack timeout, or already
                    // settled: the group keeps the message; go on.
                    Err(ClientError::Api { status, detail }) if status == 409 => {
                        eprintln!("ack refused: {detail}");
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("acknowledging")),
                }
            }
            if done {
                return Ok(());
            }
        }
        eprintln!("stream interrupted; rejoining the group");
    }
}

async fn groups(url: &str, json: bool) -> Result<()> {
    let Some(v) = get_or_print(url, "/v1/groups", json).await? else {
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<16} {:>7} {:>8} {:>8} {:>10} {:>8}  {:<16}  topics",
        "group", "strategy", "members", "inflight", "lag", "acked", "dlq", "coordinator"
    )?;
    for g in v["groups"].as_array().into_iter().flatten() {
        let topics: Vec<&str> = g["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        writeln!(
            out,
            "{:<24} {:<16} {:>7} {:>8} {:>8} {:>10} {:>8}  {:<16}  {}",
            g["name"].as_str().unwrap_or(""),
            g["strategy"].as_str().unwrap_or(""),
            g["members"].as_array().map_or(0, Vec::len),
            g["inflight"].as_u64().unwrap_or(0),
            g["lag"].as_u64().unwrap_or(0),
            g["acked"].as_u64().unwrap_or(0),
            g["dead_lettered"].as_u64().unwrap_or(0),
            g["coordinator"].as_str().unwrap_or(""),
            topics.join(" "),
        )?;
    }
    Ok(())
}

async fn topics(url: &str) -> Result<()> {
    let client = Client::new(url)?;
    let v = client.get_json("/v1/topics").await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
