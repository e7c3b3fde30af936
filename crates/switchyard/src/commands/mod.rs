//! The client half of the command line: every command except `serve`.
//! Each talks to a node over its HTTP API (`plugin test` runs a plugin
//! locally instead), prints to standard output, and returns an error for
//! the binary to print.

mod admin;
mod plugin;
mod publish;
mod subscribe;

use crate::args::{ClientCommand, ClusterCommand};

/// Runs one client command.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Cluster(ClusterCommand::Members { json, url }) => {
            admin::cluster_members(&url, json).await
        }
        ClientCommand::Publish(args) => publish::run(args).await,
        ClientCommand::Subscribe(args) => subscribe::run(args).await,
        ClientCommand::Groups { json, url } => admin::groups(&url, json).await,
        ClientCommand::Plugin(cmd) => plugin::run(cmd).await,
        ClientCommand::Topics { url } => admin::topics(&url).await,
    }
}
