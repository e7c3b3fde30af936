//! A node's wiring: the store and engine behind the HTTP API, joined to a
//! cluster when configured, and its orderly stop.
//!
//! [`serve`] takes a validated [`NodeConfig`], a bound listener and a
//! shutdown future, so that a test can run a whole node in its own process
//! on `127.0.0.1:0` and stop it at will:
//!
//! ```no_run
//! # async fn demo(config: switchyard::config::NodeConfig) -> Result<(), switchyard::node::NodeError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let node = tokio::spawn(switchyard::node::serve(config, listener, async {
//!     let _ = stopped.await;
//! }));
//! // ... talk to the node ...
//! let _ = stop.send(());
//! node.await.expect("node task")?;
//! # Ok(())
//! # }
//! ```
//!
//! Signals are the binary's business: it passes a future that resolves on
//! the first Ctrl-C or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use switchyard_gateway::GatewayConfig;
use switchyard_router::{Cluster, Router, RouterError};
use tokio::net::TcpListener;

use crate::config::{ConfigError, NodeConfig};

/// Longest a leaving node waits for its replicas to hold its whole log.
const REPLICATION_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a node did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration was refused; nothing was opened.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP listener could not be bound or read.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be opened (missing rights, a store of
    /// another format, another node using it).
    #[error("cannot open the data directory {}", dir.display())]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// The engine's error.
        #[source]
        source: RouterError,
    },
    /// The node could not join its cluster; the store was closed again.
    #[error(transparent)]
    Cluster(#[from] switchyard_cluster::ClusterError),
    /// The HTTP server stopped on an I/O error; the store was closed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// A blocking start or stop task panicked.
    #[error("a node task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// A started node: its store is open, it has joined its cluster, and its
/// listener is bound; [`Node::run`] serves requests.
pub struct Node {
    router: Router,
    cluster: Option<Cluster>,
    listener: TcpListener,
    addr: SocketAddr,
    gateway: GatewayConfig,
}

impl Node {
    /// Opens the store (on a blocking thread) and joins the cluster, if
    /// configured, announcing the HTTP address `listener` is bound to (or
    /// `cluster.http_advertise`).
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        let addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.listen,
            source,
        })?;
        let http = config.advertised_http(addr)?;
        let mut router_config = config.router.clone();
        // Components compile in a worker process of this executable.
        router_config.plugins.engine.compile_worker =
            std::env::current_exe()
                .ok()
                .map(|program| switchyard_plugin_host::CompileWorker {
                    program,
                    args: vec!["compile-plugin-worker".into()],
                });
        let dir = router_config.store.path.clone();
        let router = tokio::task::spawn_blocking(move || Router::open(router_config))
            .await?
            .map_err(|source| NodeError::Open { dir, source })?;
        router.forward_plugin_logs();
        tracing::info!(
            target: "switchyard",
            node = %router.node_id(),
            %addr,
            fsync = %config.router.store.fsync,
            "switchyard node started"
        );
        let cluster = match (config.cluster, http) {
            (Some(cc), Some(http)) => match Cluster::start(cc, router.node_id().0, http).await {
                Ok((cluster, events)) => {
                    router.attach_cluster(cluster.clone(), events);
                    Some(cluster)
                }
                Err(e) => {
                    close(router).await?;
                    return Err(e.into());
                }
            },
            _ => None,
        };
        Ok(Node {
            router,
            cluster,
            listener,
            addr,
            gateway: config.gateway,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine (to inspect the node in process).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Serves the HTTP API until `shutdown` resolves; then hands this
    /// node's consumer groups to other members and leaves the cluster
    /// (while the peers still answer), stops accepting, ends streams, gives
    /// in-flight requests [`GatewayConfig::shutdown_grace`], and closes the
    /// store. Returns when the store is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Node {
            router,
            cluster,
            listener,
            gateway,
            ..
        } = self;
        let stop = async {
            shutdown.await;
            tracing::info!(target: "switchyard", "shutting down: draining connections");
            if let Some(c) = &cluster {
                // Groups first, while the peers still answer; then the
                // replicas get the rest of the log (bounded); then the leave.
                router.groups().hand_off().await;
                router.await_replicated(REPLICATION_GRACE).await;
                c.leave().await;
            }
        };
        let served = switchyard_gateway::serve(listener, router.clone(), gateway, stop).await;
        close(router).await?;
        served.map_err(NodeError::Serve)?;
        tracing::info!(target: "switchyard", "stopped");
        Ok(())
    }
}

/// Starts a node on `listener` and runs it until `shutdown` resolves and
/// the store is closed: [`Node::start`] then [`Node::run`].
pub async fn serve(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    Node::start(config, listener).await?.run(shutdown).await
}

/// Stops the engine's background tasks, then closes the store on a
/// blocking thread (it syncs and joins its threads).
async fn close(router: Router) -> Result<(), NodeError> {
    router.shutdown().await;
    Ok(())
}
