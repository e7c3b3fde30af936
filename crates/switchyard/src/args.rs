//! The command line: every command, flag and environment variable of the
//! `switchyard` binary. Closed sets of choices are [`clap::ValueEnum`]s, so
//! that clap refuses a misspelt value before anything runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard_router::{ErrorPolicy, FsyncMode, Hook};

use crate::config::{LogFormat, Overrides};
use crate::scaffold::Lang;

/// The node URL the client commands talk to unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// `switchyard`: serve a node, or talk to one.
#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A WebAssembly-extensible edge message router"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Client commands: PEM CA certificates to trust for an https:// node
    /// URL, instead of the system's trust store.
    #[arg(long, global = true, env = "SWITCHYARD_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Every command.
#[derive(Subcommand)]
pub enum Command {
    /// Run a node (defaults: 127.0.0.1:7070, data in ./switchyard-data, fsync=always).
    Serve(ServeArgs),
    /// Print or check the configuration `serve` would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a running node to reload its configuration file (as SIGHUP
    /// does): checks the configuration first, then signals the node whose
    /// pid file is in the data directory.
    Reload(ReloadArgs),
    /// A command that talks to a node (or runs a plugin locally).
    #[command(flatten)]
    Client(ClientCommand),
    /// Compiles one plugin component for a node: the component on stdin,
    /// the compiled artifact into a file. A node runs this itself, so that
    /// the compiler's memory stays out of the node.
    #[command(name = "compile-plugin-worker", hide = true)]
    CompileWorker(CompileWorkerArgs),
}

/// Settings of the compile worker: the node's engine settings.
#[derive(Args)]
pub struct CompileWorkerArgs {
    /// The largest memory of a plugin instance, in bytes.
    #[arg(long)]
    pub max_memory_bytes: usize,
    /// Pooled instances (0: allocated on demand).
    #[arg(long)]
    pub pooled_instances: u32,
    /// Where the compiled artifact goes.
    #[arg(long)]
    pub output: PathBuf,
}

/// What `serve --help` says after the flags.
const SERVE_AFTER_HELP: &str = "\
Every configuration key can also be set by an environment variable: key k of
section [s] by SWITCHYARD_S_K (e.g. SWITCHYARD_LIMITS_MAX_PAYLOAD_BYTES), a
top-level key by SWITCHYARD_K (e.g. SWITCHYARD_LISTEN); lists are
comma-separated. A flag wins over a variable, a variable over the file, the
file over the default. `switchyard config show` prints the result and where
each value comes from; docs/configuration.md lists every key.";

/// `switchyard serve`, and the configuration of `switchyard config`.
#[derive(Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    /// TOML config file (see docs/configuration.md).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port
    /// [key: listen, env: SWITCHYARD_LISTEN].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory [key: data_dir, env: SWITCHYARD_DATA_DIR].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Durability: always, interval or never
    /// [key: storage.fsync, env: SWITCHYARD_STORAGE_FSYNC].
    #[arg(long, hide_possible_values = true)]
    pub fsync: Option<FsyncArg>,
    /// Log format: pretty or json [key: log_format, env: SWITCHYARD_LOG_FORMAT].
    #[arg(long, hide_possible_values = true)]
    pub log_format: Option<LogFormat>,
    /// UDP address for cluster gossip; the node joins a cluster only
    /// when this is set (the key comes from SWITCHYARD_CLUSTER_KEY)
    /// [key: cluster.gossip_listen, env: SWITCHYARD_CLUSTER_GOSSIP_LISTEN].
    #[arg(long)]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip address (host:port) of a node to join through (repeatable;
    /// replaces cluster.seeds) [key: cluster.seeds, env: SWITCHYARD_CLUSTER_SEEDS].
    #[arg(long = "join", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Cluster name (nodes of another name are refused)
    /// [key: cluster.name, env: SWITCHYARD_CLUSTER_NAME].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Nodes holding each origin's whole log, the origin included (1 to 7)
    /// [key: cluster.replication_factor, env: SWITCHYARD_CLUSTER_REPLICATION_FACTOR].
    #[arg(long)]
    pub replication_factor: Option<usize>,
    /// A host name the node answers to (repeatable; replaces the list):
    /// name, name:port, *.suffix or *
    /// [key: http.allowed_hosts, env: SWITCHYARD_HTTP_ALLOWED_HOSTS].
    #[arg(long = "allowed-host", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Start on a non-loopback address without [auth] keys (or with
    /// anonymous = "all"): every client that reaches it may publish and
    /// administer. For trusted networks only
    /// [key: auth.allow_anonymous, env: SWITCHYARD_AUTH_ALLOW_ANONYMOUS].
    #[arg(long)]
    pub allow_anonymous: bool,
    /// PEM certificate chain: the listener speaks TLS only (with --tls-key).
    /// Reloaded on SIGHUP and when the file changes
    /// [key: tls.cert_file, env: SWITCHYARD_TLS_CERT_FILE].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [key: tls.key_file, env: SWITCHYARD_TLS_KEY_FILE].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The config file to read and the values that override it.
    pub fn into_overrides(self) -> (Option<PathBuf>, Overrides) {
        let over = Overrides {
            listen: self.listen,
            data_dir: self.data_dir,
            fsync: self.fsync.map(FsyncMode::from),
            log_format: self.log_format,
            gossip_listen: self.gossip_listen,
            join: self.join,
            cluster_name: self.cluster_name,
            replication_factor: self.replication_factor,
            allowed_hosts: self.allowed_hosts,
            cluster_key: None,
            allow_anonymous: self.allow_anonymous,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
        };
        (self.config, over)
    }
}

/// `switchyard config ...`: the configuration `serve` would run with, from
/// the same file, variables and flags.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, each value with where it comes
    /// from (default, the file, a variable, a flag). Secrets are not printed.
    Show {
        /// toml (commented) or json.
        #[arg(long, value_enum, default_value_t = ShowFormat::Toml, hide_possible_values = true)]
        format: ShowFormat,
        /// The configuration, as `serve` takes it.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Validate the configuration as `serve` does before it binds anything
    /// (key and certificate files are read): exit status 0 when it is valid,
    /// 2 with the reason when not.
    Check {
        /// The configuration, as `serve` takes it.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// `switchyard reload`.
#[derive(Args)]
pub struct ReloadArgs {
    /// The node's process id, instead of the pid file
    /// (`<data_dir>/switchyard.pid`).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The configuration, as `serve` takes it: it is checked before the
    /// node is signalled, and names the data directory.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `config show --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// TOML, each value followed by a comment naming its origin.
    Toml,
    /// JSON: `{"section": {"key": {"value": ..., "source": ...}}}`.
    Json,
}

/// The commands that do not run a node.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Cluster membership as a node sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Publish one message: DATA is text, @file, or - for standard input.
    Publish(PublishArgs),
    /// Print messages of one or more topic patterns as they arrive, one per line.
    Subscribe(SubscribeArgs),
    /// List consumer groups with their members, in-flight messages and lag.
    Groups {
        /// Print the whole JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Manage WebAssembly plugins on a node, or test one locally.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Issue tokens for the client API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List topics with their message counts and sizes.
    Topics {
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// `switchyard token ...`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Sign a token whose `switchyard` claim lists what its holder may do,
    /// and print it.
    Issue(IssueArgs),
}

/// `switchyard token issue`.
#[derive(Args)]
pub struct IssueArgs {
    /// File holding the HS256 shared secret (the node's auth.hs256_secret_file).
    #[arg(
        long,
        required_unless_present = "private_key_file",
        conflicts_with = "private_key_file"
    )]
    pub secret_file: Option<PathBuf>,
    /// PEM private key (PKCS#8 for EC and Ed25519; PKCS#1 or PKCS#8 for RSA)
    /// whose public key the node lists in auth.public_key_files.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// Signing algorithm; default HS256 with --secret-file, and with
    /// --private-key-file EdDSA, ES256 or RS256 by the key's type.
    #[arg(long, value_enum, hide_possible_values = true)]
    pub alg: Option<AlgArg>,
    /// Topic pattern the holder may publish to (repeatable).
    #[arg(long = "publish", value_name = "PATTERN")]
    pub publish: Vec<String>,
    /// Topic pattern the holder may subscribe to (repeatable).
    #[arg(long = "subscribe", value_name = "PATTERN")]
    pub subscribe: Vec<String>,
    /// The holder may manage plugins, delete groups and administer the cluster.
    #[arg(long)]
    pub admin: bool,
    /// Lifetime: seconds, or a number with s, m, h or d (e.g. 15m, 1h, 30d);
    /// `never` leaves out `exp`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// `sub` claim (who the token is for).
    #[arg(long)]
    pub subject: Option<String>,
    /// `aud` claim (the node's auth.audience).
    #[arg(long)]
    pub audience: Option<String>,
    /// `iss` claim (the node's auth.issuer).
    #[arg(long)]
    pub issuer: Option<String>,
}

/// `--alg`: a JWT signing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "verbatim")]
#[allow(clippy::upper_case_acronyms)]
pub enum AlgArg {
    /// HMAC with SHA-256 (shared secret).
    HS256,
    /// HMAC with SHA-384 (shared secret).
    HS384,
    /// HMAC with SHA-512 (shared secret).
    HS512,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RS384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RS512,
    /// RSA-PSS with SHA-256.
    PS256,
    /// RSA-PSS with SHA-384.
    PS384,
    /// RSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// `switchyard publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// Topic, e.g. orders.eu.
    pub topic: String,
    /// The payload: text, @path to read a file, - to read standard input (default: empty).
    pub data: Option<String>,
    /// Message key.
    #[arg(long)]
    pub key: Option<String>,
    /// Message header as name=value (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Content type stored with the message.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Node URL (http:// or https://).
    #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token sent with every request (see `switchyard token issue`).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `switchyard subscribe`.
#[derive(Args)]
pub struct SubscribeArgs {
    /// Topic patterns (`*` one token, `>` the rest).
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Start: earliest, latest, a cursor, or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Print the payload (raw) or the JSON envelope (json), one message per line.
    #[arg(long, value_enum, default_value_t = Format::Raw, hide_possible_values = true)]
    pub format: Format,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Join this consumer group instead of following every message:
    /// each message goes to one member of the group.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: manual (ack after printing each batch) or auto.
    #[arg(
        long,
        value_enum,
        default_value_t = Ack::Manual,
        requires = "group",
        hide_possible_values = true
    )]
    pub ack: Ack,
    /// With --group: the group's strategy, when this creates the group.
    #[arg(long, requires = "group")]
    pub strategy: Option<String>,
    /// Node URL (http:// or https://).
    #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token sent with every request (see `switchyard token issue`).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `switchyard cluster ...`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// List the members with their state, addresses and last contact.
    Members {
        /// Print the whole JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// `switchyard plugin ...`.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Upload a component and bind it (replaces a binding of the same name atomically).
    Push {
        /// The component (.wasm, built for wasm32-wasip2).
        file: PathBuf,
        /// Binding name.
        #[arg(long)]
        name: String,
        /// route, filter or pick.
        #[arg(long, hide_possible_values = true)]
        hook: HookArg,
        /// Topic pattern it applies to (repeatable; default `>`).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Configuration string passed to the plugin's init.
        #[arg(long)]
        config: Option<String>,
        /// drop, pass or dead-letter.
        #[arg(long, hide_possible_values = true)]
        on_error: Option<OnErrorArg>,
        /// Fuel per hook call.
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory cap per instance, in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// `cluster` (every node; the default in a cluster) or `node`
        /// (this node alone; the default outside a cluster).
        #[arg(long)]
        scope: Option<ScopeArg>,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// List bindings with their counters.
    List {
        /// Print the node's JSON answer.
        #[arg(long)]
        json: bool,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Unbind a plugin and delete its key-value data.
    Rm {
        /// Binding name.
        name: String,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Follow a binding's log lines as the plugin writes them (those its
    /// log rate limit admits), one per line, until interrupted.
    ///
    /// The node also stores them, at most 20 a second, on the topic
    /// `$sys.plugins.<name>.log`: `switchyard subscribe
    /// '$sys.plugins.<name>.log' --from earliest` reads them back.
    Logs {
        /// Binding name.
        name: String,
        /// Print each line as the node's JSON {"level", "message", "time", "time_ms"}.
        #[arg(long)]
        json: bool,
        /// Exit after this many lines.
        #[arg(long)]
        count: Option<u64>,
        /// Node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// Bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Write a new plugin project for one hook: a working example, its
    /// test, a README.
    ///
    /// Rust (the default): a crate with Cargo.toml and src/lib.rs.
    /// JavaScript or Python (--lang js, --lang python): the component
    /// module, its logic in a module of its own with a test that runs
    /// without the component runtime, a build script for componentize-js or
    /// componentize-py, and a copy of the WIT contract.
    #[command(after_help = NEW_AFTER_HELP)]
    New {
        /// Directory to create; an existing one must be empty.
        dir: PathBuf,
        /// route, filter or pick.
        #[arg(long, hide_possible_values = true)]
        hook: HookArg,
        /// rust, js or python.
        #[arg(long, default_value = "rust", hide_possible_values = true)]
        lang: LangArg,
        /// Project name: the crate, npm package and component file name
        /// (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Rust only: depend on the SDK by path, e.g. the sdk/rust directory
        /// of a Switchyard checkout (default: the published version 0.1).
        #[arg(long, value_name = "PATH")]
        sdk_path: Option<PathBuf>,
    },
    /// Run a hook locally and print each decision as JSON: on messages
    /// given with --message, or on the messages a node stored (--replay).
    /// With --against, run the component a node binds under a name too,
    /// and print only where the two decide differently.
    #[command(after_help = TEST_AFTER_HELP)]
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// route, filter or pick (with --against: the binding's hook by
        /// default; given, both run it).
        #[arg(long, hide_possible_values = true, required_unless_present = "against")]
        hook: Option<HookArg>,
        /// Configuration string passed to init (default: empty; with
        /// --against, the binding's config; given, the local component's
        /// only).
        #[arg(long)]
        config: Option<String>,
        /// Compare with the component the node binds under NAME, run with
        /// that binding's hook, config and limits: print one JSON line
        /// {"message", "topic", "local", "bound"} per message decided
        /// differently, then {"compared", "differing", ...}. Exit status 3
        /// when any differs.
        #[arg(long, value_name = "NAME")]
        against: Option<String>,
        /// A JSON message {"topic", "payload", "key", "headers", ...} or an
        /// envelope as GET /v1/messages answers it, several as JSON lines, or @file.
        #[arg(long, required_unless_present = "replay", conflicts_with = "replay")]
        message: Option<String>,
        /// Pull the messages a node stored under this topic pattern
        /// (GET /v1/messages, page by page) and run the hook on each.
        #[arg(long, value_name = "PATTERN")]
        replay: Option<String>,
        /// With --replay: earliest, latest, a cursor, or an RFC 3339 time.
        #[arg(long, default_value = "earliest", requires = "replay")]
        from: String,
        /// With --replay: most messages to run.
        #[arg(long, default_value_t = 1000, requires = "replay")]
        limit: u64,
        /// Print only the counts per decision, the errors by kind and the
        /// mean and p99 time per call, as one JSON object (with --against:
        /// only the last line, the comparison's summary).
        #[arg(long)]
        summary: bool,
        /// For pick: a JSON array of candidates [{"id", "inflight", "weight", "labels"}], or @file.
        #[arg(long)]
        candidates: Option<String>,
        /// Fuel per hook call (with --against: the binding's by default).
        #[arg(long)]
        fuel: Option<u64>,
        /// Memory cap per instance, in MiB (with --against: the binding's by default).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// With --replay or --against: node URL (http:// or https://).
        #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL)]
        url: String,
        /// With --replay or --against: bearer token sent with every request (see `switchyard token issue`).
        #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// What `plugin test --help` says after the flags.
const TEST_AFTER_HELP: &str = "\
Examples:
  switchyard plugin test router.wasm --hook route --message '{\"topic\": \"orders\", \"payload\": \"{}\"}'
  switchyard plugin test router.wasm --hook route --message @messages.ndjson
  switchyard plugin test router.wasm --hook route --config '{\"field\": \"/region\"}' \\
      --replay 'orders' --from earliest --limit 5000 --summary --url http://node:7070
  switchyard plugin test router-v2.wasm --replay 'orders' --against region --url http://node:7070
The exit status is non-zero when any call failed. With --against, failed
calls are decisions too (compared by error kind): the exit status is 0 when
every message was decided alike, 3 when at least one was decided
differently, 1 on an error (and 2 for a refused flag).";

const NEW_AFTER_HELP: &str = "\
Examples (then, in the directory):
  switchyard plugin new my-router --hook route
      cargo test && cargo build --release --target wasm32-wasip2
  switchyard plugin new my-router --hook route --lang js
      npm install && npm test && npm run build
  switchyard plugin new my-router --hook route --lang python
      python3 -m unittest && sh build.sh
The JavaScript and Python builds install componentize-js or componentize-py
(pinned versions) from the npm registry or PyPI.";

/// `--fsync`: when a publish is acknowledged (see [`FsyncMode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// After the write is synced.
    Always,
    /// After the write reaches the OS; synced every interval.
    Interval,
    /// After the write reaches the OS.
    Never,
}

impl From<FsyncArg> for FsyncMode {
    fn from(a: FsyncArg) -> FsyncMode {
        match a {
            FsyncArg::Always => FsyncMode::Always,
            FsyncArg::Interval => FsyncMode::Interval,
            FsyncArg::Never => FsyncMode::Never,
        }
    }
}

/// `--format`: what `subscribe` prints of each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload as it is.
    Raw,
    /// The JSON envelope (id, topic, key, headers, payload, ...).
    Json,
}

impl Format {
    /// The value of the API's `format` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
        }
    }
}

/// `--ack`: when a group member's messages count as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ack {
    /// When the client acknowledges them, after printing each batch.
    Manual,
    /// Once the node hands them to the connection.
    Auto,
}

impl Ack {
    /// The value of the API's `ack` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Ack::Manual => "manual",
            Ack::Auto => "auto",
        }
    }
}

/// `--hook`: which hook a plugin binding implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookArg {
    /// Decides where a message is stored.
    Route,
    /// Decides what a subscriber sees.
    Filter,
    /// Chooses a group member.
    Pick,
}

impl From<HookArg> for Hook {
    fn from(h: HookArg) -> Hook {
        match h {
            HookArg::Route => Hook::Route,
            HookArg::Filter => Hook::Filter,
            HookArg::Pick => Hook::Pick,
        }
    }
}

/// `--scope`: where a binding runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// This node alone.
    Node,
    /// Every node of the cluster.
    Cluster,
}

impl ScopeArg {
    /// The value of the API's `scope=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeArg::Node => "node",
            ScopeArg::Cluster => "cluster",
        }
    }
}

/// `--lang`: the language of a new plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LangArg {
    /// A crate using the Rust SDK.
    Rust,
    /// JavaScript, built with componentize-js.
    Js,
    /// Python, built with componentize-py.
    Python,
}

impl From<LangArg> for Lang {
    fn from(l: LangArg) -> Lang {
        match l {
            LangArg::Rust => Lang::Rust,
            LangArg::Js => Lang::Js,
            LangArg::Python => Lang::Python,
        }
    }
}

/// `--on-error`: what happens to a message when its plugin call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    /// The message is dropped.
    Drop,
    /// The message goes on as if the plugin had not been there.
    Pass,
    /// The message goes to the dead-letter topic.
    DeadLetter,
}

impl From<OnErrorArg> for ErrorPolicy {
    fn from(o: OnErrorArg) -> ErrorPolicy {
        match o {
            OnErrorArg::Drop => ErrorPolicy::Drop,
            OnErrorArg::Pass => ErrorPolicy::Pass,
            OnErrorArg::DeadLetter => ErrorPolicy::DeadLetter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn serve_flags_name_their_key_and_variable() {
        let cli = <Cli as clap::CommandFactory>::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for (flag, key) in crate::config::sources::FLAGS {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("{flag}"));
            let help = arg.get_help().expect("help").to_string();
            let var = crate::config::sources::env_name(key);
            assert!(
                help.ends_with(&format!("[key: {key}, env: {var}]")),
                "{flag}: {help}"
            );
        }
    }

    #[test]
    fn choices_keep_their_spellings() {
        for (v, want) in [
            ("always", FsyncMode::Always),
            ("interval", FsyncMode::Interval),
            ("never", FsyncMode::Never),
        ] {
            let got = FsyncMode::from(FsyncArg::from_str(v, false).unwrap());
            assert_eq!(got, want);
            assert_eq!(got.to_string(), v);
        }
        for h in HookArg::value_variants() {
            let name = h.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(Hook::from(*h).as_str(), name);
        }
        for o in OnErrorArg::value_variants() {
            let name = o.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(ErrorPolicy::from(*o).as_str(), name);
        }
        for f in Format::value_variants() {
            assert_eq!(f.to_possible_value().unwrap().get_name(), f.as_str());
        }
        for a in Ack::value_variants() {
            assert_eq!(a.to_possible_value().unwrap().get_name(), a.as_str());
        }
        for (v, want) in [("pretty", LogFormat::Pretty), ("json", LogFormat::Json)] {
            assert_eq!(LogFormat::from_str(v, false).unwrap(), want);
        }
        for (v, want) in [
            ("rust", Lang::Rust),
            ("js", Lang::Js),
            ("python", Lang::Python),
        ] {
            assert_eq!(Lang::from(LangArg::from_str(v, false).unwrap()), want);
        }
        assert_eq!(LangArg::value_variants().len(), 3);
    }

    #[test]
    fn a_misspelt_choice_is_refused() {
        for args in [
            &["switchyard", "serve", "--fsync", "sometimes"][..],
            &["switchyard", "serve", "--log-format", "xml"][..],
            &["switchyard", "subscribe", "t", "--format", "yaml"][..],
            &[
                "switchyard",
                "subscribe",
                "t",
                "--group",
                "g",
                "--ack",
                "later",
            ][..],
            &[
                "switchyard",
                "plugin",
                "push",
                "f.wasm",
                "--name",
                "n",
                "--hook",
                "x",
            ][..],
        ] {
            let e = Cli::try_parse_from(args).err().expect("refused");
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
        }
        assert!(Cli::try_parse_from(["switchyard", "subscribe", "t", "--format", "json"]).is_ok());
    }
}
