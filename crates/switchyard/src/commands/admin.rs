//! Listings of a node's state: `switchyard groups`, `topics` and
//! `cluster members`. Tables are made from typed answers; `--json` prints
//! the answer whole.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Result;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::client::Client;

/// `GET /v1/cluster`, as far as the table shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterAnswer {
    members: Vec<Member>,
}

/// One member of `GET /v1/cluster`. A node outside any cluster lists only
/// itself, without addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Member {
    id: String,
    state: String,
    http_addr: String,
    gossip_addr: String,
    last_heard_ms: Option<u64>,
    #[serde(rename = "self")]
    is_self: bool,
}

/// `GET /v1/groups`, as far as the table shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupsAnswer {
    groups: Vec<Group>,
}

/// One group of `GET /v1/groups`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Group {
    name: String,
    strategy: String,
    members: Vec<IgnoredAny>,
    inflight: u64,
    lag: u64,
    acked: u64,
    dead_lettered: u64,
    coordinator: String,
    topics: Vec<String>,
}

/// GETs `path`; with `json` prints the answer whole and returns `None`,
/// else returns it read as `T`.
async fn get_or_print<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    json: bool,
) -> Result<Option<T>> {
    let v = client.get_json(path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(v)?))
}

/// `switchyard cluster members`.
pub(crate) async fn cluster_members(client: &Client, json: bool) -> Result<()> {
    if let Some(answer) = get_or_print::<ClusterAnswer>(client, "/v1/cluster", json).await? {
        std::io::stdout()
            .lock()
            .write_all(members_table(&answer).as_bytes())?;
    }
    Ok(())
}

/// `switchyard groups`.
pub(crate) async fn groups(client: &Client, json: bool) -> Result<()> {
    if let Some(answer) = get_or_print::<GroupsAnswer>(client, "/v1/groups", json).await? {
        std::io::stdout()
            .lock()
            .write_all(groups_table(&answer).as_bytes())?;
    }
    Ok(())
}

/// `switchyard topics`: the node's answer, pretty-printed.
pub(crate) async fn topics(client: &Client) -> Result<()> {
    let v = client.get_json("/v1/topics").await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn members_table(answer: &ClusterAnswer) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<8} {:<22} {:<22} {:>10}",
        "id", "state", "http", "gossip", "heard ms"
    );
    for m in &answer.members {
        let heard = match m.last_heard_ms {
            Some(ms) => ms.to_string(),
            None if m.is_self => "self".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<18} {:<8} {:<22} {:<22} {:>10}",
            m.id, m.state, m.http_addr, m.gossip_addr, heard,
        );
    }
    out
}

fn groups_table(answer: &GroupsAnswer) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:>7} {:>8} {:>8} {:>10} {:>8}  {:<16}  topics",
        "group", "strategy", "members", "inflight", "lag", "acked", "dlq", "coordinator"
    );
    for g in &answer.groups {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:>7} {:>8} {:>8} {:>10} {:>8}  {:<16}  {}",
            g.name,
            g.strategy,
            g.members.len(),
            g.inflight,
            g.lag,
            g.acked,
            g.dead_lettered,
            g.coordinator,
            g.topics.join(" "),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_table_from_both_answers() {
        let clustered: ClusterAnswer = serde_json::from_str(
            r#"{"cluster": "c", "node": "a1", "gossip": {"x": 1}, "members": [
                {"id": "00000000000000a1", "state": "alive", "http_addr": "127.0.0.1:7070",
                 "gossip_addr": "127.0.0.1:7946", "generation": 3, "last_heard_ms": null, "self": true},
                {"id": "00000000000000b2", "state": "suspect", "http_addr": "10.0.0.2:7070",
                 "gossip_addr": "10.0.0.2:7946", "generation": 1, "last_heard_ms": 1234, "self": false},
                {"id": "00000000000000c3", "state": "left", "http_addr": "h:1",
                 "gossip_addr": "g:2", "generation": 1, "last_heard_ms": null, "self": false}]}"#,
        )
        .unwrap();
        assert_eq!(
            members_table(&clustered),
            "id                 state    http                   gossip                   heard ms\n\
             00000000000000a1   alive    127.0.0.1:7070         127.0.0.1:7946               self\n\
             00000000000000b2   suspect  10.0.0.2:7070          10.0.0.2:7946                1234\n\
             00000000000000c3   left     h:1                    g:2                             -\n"
        );
        let alone: ClusterAnswer = serde_json::from_str(
            r#"{"cluster": null, "node": "a1", "members": [{"id": "a1", "state": "alive", "self": true}]}"#,
        )
        .unwrap();
        assert_eq!(
            members_table(&alone).lines().nth(1),
            Some(
                "a1                 alive                                                        self"
            )
        );
    }

    #[test]
    fn groups_table_from_an_answer() {
        let answer: GroupsAnswer = serde_json::from_str(
            r#"{"groups": [{"name": "workers", "topics": ["orders.>", "jobs"], "strategy": "round-robin",
                "ack_timeout_ms": 30000, "coordinator": "00000000000000a1", "members": [{"id": "m1"}, {"id": "m2"}],
                "inflight": 3, "pending_redelivery": 0, "lag": 17, "acked": 1200, "dead_lettered": 2,
                "delivered": 1205}]}"#,
        )
        .unwrap();
        assert_eq!(
            groups_table(&answer),
            "group                    strategy         members inflight      lag      acked      dlq  coordinator       topics\n\
             workers                  round-robin            2        3       17       1200        2  00000000000000a1  orders.> jobs\n"
        );
        assert_eq!(groups_table(&GroupsAnswer::default()).lines().count(), 1);
    }
}
