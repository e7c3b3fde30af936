//! The client half of the command line: every command except `serve`.
//! Each talks to a node over its HTTP API (`plugin test` runs a plugin
//! locally instead), prints to standard output, and returns an error for
//! the binary to print.

mod admin;
mod plugin;
mod publish;
mod subscribe;
mod token;

use std::path::Path;

use crate::args::{ClientCommand, ClusterCommand, TokenCommand};
use crate::client::Client;

/// Runs one client command; `ca` holds the CA certificates to trust for
/// an `https://` node URL (`--ca-file`), else the system's are.
pub async fn run(command: ClientCommand, ca: Option<&Path>) -> anyhow::Result<()> {
    match command {
        ClientCommand::Cluster(ClusterCommand::Members { json, url, token }) => {
            admin::cluster_members(&Client::with_ca_file(&url, ca)?.with_token(token)?, json).await
        }
        ClientCommand::Publish(args) => publish::run(args, ca).await,
        ClientCommand::Subscribe(args) => subscribe::run(args, ca).await,
        ClientCommand::Groups { json, url, token } => {
            admin::groups(&Client::with_ca_file(&url, ca)?.with_token(token)?, json).await
        }
        ClientCommand::Plugin(cmd) => plugin::run(cmd, ca).await,
        ClientCommand::Token(TokenCommand::Issue(args)) => token::issue(args),
        ClientCommand::Topics { url, token } => {
            admin::topics(&Client::with_ca_file(&url, ca)?.with_token(token)?).await
        }
    }
}
