//! `switchyard subscribe`: print the messages of an event stream, one per
//! line, either following every message of the topics or as one member of
//! a consumer group. Both run the same loop ([`follow`]), which reconnects
//! a broken stream for up to [`RECONNECT_FOR`]; what differs is in a
//! [`Follower`]: a plain subscription resumes after the last event it saw
//! (`Last-Event-ID`), a group member rejoins and gets again whatever it had
//! not acknowledged.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::args::{Ack, SubscribeArgs};
use crate::client::{Client, ClientError};
use crate::sse::{Event, SseParser};

/// How long a broken stream is retried before the command gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// The pause between two connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Runs `subscribe`, with or without `--group`; `ca` is `--ca-file`.
pub(crate) async fn run(a: SubscribeArgs, ca: Option<&Path>) -> Result<()> {
    match &a.group {
        Some(group) => {
            let mut member = GroupMember::new(&a, group)?;
            let client = Client::with_ca_file(&a.url, ca)?.with_token(a.token.clone())?;
            follow(&client, &mut member).await
        }
        None => {
            let client = Client::with_ca_file(&a.url, ca)?.with_token(a.token.clone())?;
            let mut follower = Plain::new(&client, &a).await?;
            follow(&client, &mut follower).await
        }
    }
}

/// One way of following a stream: what to ask for, what to do with the
/// events, and when a failed connection is worth retrying.
trait Follower {
    /// The stream's path and query.
    fn path(&self) -> &str;
    /// Whether a new connection resumes after the last event seen (with
    /// `Last-Event-ID`); otherwise each connection starts afresh.
    fn resumes(&self) -> bool;
    /// Whether a connection that cannot be made is retried (rather than
    /// reported at once).
    fn may_retry(&self) -> bool;
    /// Notes that a connection is open.
    fn connected(&mut self);
    /// Handles the events one chunk completed; `true` when the command is
    /// done.
    async fn handle(&mut self, client: &Client, events: Vec<Event>) -> Result<bool>;
    /// What the command says on standard error when the stream breaks.
    fn on_break(&self) -> &'static str;
}

/// Reads the stream `f` asks for until `f` is done, reconnecting when it
/// breaks. A connection that cannot be made is retried every
/// [`RECONNECT_PAUSE`] for [`RECONNECT_FOR`] when `f` allows it.
async fn follow(client: &Client, f: &mut impl Follower) -> Result<()> {
    let mut parser = SseParser::new();
    let mut broken_since: Option<Instant> = None;
    loop {
        let mut req = client.request(http::Method::GET, f.path());
        if !f.resumes() {
            parser = SseParser::new();
        } else if let Some(id) = parser.last_id() {
            req = req.header("last-event-id", id);
        }
        let req = req
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        let resp = match client.send(req).await {
            Ok(r) => r,
            Err(e @ ClientError::Unreachable { .. }) if f.may_retry() => {
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(e.into());
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        f.connected();
        broken_since = None;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = parser.push(&data);
            if let Some(e) = parser.error() {
                bail!("{e}; stopped reading the stream");
            }
            if f.handle(client, events).await? {
                return Ok(());
            }
        }
        eprintln!("stream interrupted; {}", f.on_break());
    }
}

/// Writes one message line and flushes it, so that a pipe sees it at once.
fn print_line(data: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{data}")?;
    out.flush()?;
    Ok(())
}

/// The repeated `topic` parameter of `patterns`.
fn topics_query(patterns: &[String]) -> form_urlencoded::Serializer<'static, String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for p in patterns {
        q.append_pair("topic", p);
    }
    q
}

/// A pull answer, as far as pinning `latest` needs it.
#[derive(Deserialize)]
struct Page {
    cursor: Option<String>,
}

/// Follows every message of the topics; gaps go to standard error.
struct Plain {
    path: String,
    count: Option<u64>,
    printed: u64,
    connected_once: bool,
}

impl Plain {
    /// Pins `--from latest` to a cursor first, so that a reconnect before
    /// the first event still misses nothing published in between.
    async fn new(client: &Client, a: &SubscribeArgs) -> Result<Plain> {
        let from = if a.from == "latest" {
            let path = format!(
                "/v1/messages?{}&from=latest&limit=1",
                topics_query(&a.patterns).finish()
            );
            let page: Page = serde_json::from_value(client.get_json(&path).await?)?;
            page.cursor.context("the node answered without a cursor")?
        } else {
            a.from.clone()
        };
        let mut q = topics_query(&a.patterns);
        q.append_pair("from", &from);
        q.append_pair("format", a.format.as_str());
        Ok(Plain {
            path: format!("/v1/events?{}", q.finish()),
            count: a.count,
            printed: 0,
            connected_once: false,
        })
    }
}

impl Follower for Plain {
    fn path(&self) -> &str {
        &self.path
    }

    fn resumes(&self) -> bool {
        true
    }

    fn may_retry(&self) -> bool {
        self.connected_once
    }

    fn connected(&mut self) {
        self.connected_once = true;
    }

    async fn handle(&mut self, _: &Client, events: Vec<Event>) -> Result<bool> {
        for event in events {
            if event.event == "gap" {
                eprintln!("gap: {}", event.data);
                continue;
            }
            print_line(&event.data)?;
            self.printed += 1;
            if self.count.is_some_and(|c| self.printed >= c) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn on_break(&self) -> &'static str {
        "reconnecting"
    }
}

/// The `joined` event that opens a group member's stream.
#[derive(Deserialize)]
struct Joined {
    member: Option<String>,
}

/// `POST /v1/groups/{group}/ack`.
#[derive(Serialize)]
struct AckRequest<'a> {
    ids: &'a [String],
    member: Option<&'a str>,
}

/// A consumer group member: prints its share of messages and, with manual
/// acks, acknowledges each chunk's messages once they are printed. Past
/// `--count` the rest of a chunk is left unacknowledged for another member.
struct GroupMember {
    path: String,
    ack_path: String,
    manual: bool,
    count: Option<u64>,
    printed: u64,
    /// The member id of the current connection (from its `joined` event).
    member: Option<String>,
}

impl GroupMember {
    fn new(a: &SubscribeArgs, group: &str) -> Result<GroupMember> {
        if a.from != "latest" && a.from != "earliest" {
            bail!("a group starts from earliest or latest, not {:?}", a.from);
        }
        let mut q = topics_query(&a.patterns);
        q.append_pair("group", group);
        q.append_pair("ack", a.ack.as_str());
        q.append_pair("from", &a.from);
        q.append_pair("format", a.format.as_str());
        if let Some(s) = &a.strategy {
            q.append_pair("strategy", s);
        }
        Ok(GroupMember {
            path: format!("/v1/events?{}", q.finish()),
            ack_path: format!("/v1/groups/{group}/ack"),
            manual: a.ack == Ack::Manual,
            count: a.count,
            printed: 0,
            member: None,
        })
    }

    /// Acknowledges `ids`; a refusal because they were settled or handed to
    /// another member in the meantime is only reported.
    async fn ack(&self, client: &Client, ids: &[String]) -> Result<()> {
        let body = serde_json::to_vec(&AckRequest {
            ids,
            member: self.member.as_deref(),
        })?;
        let acked = client
            .send_json(
                http::Method::POST,
                &self.ack_path,
                Bytes::from(body),
                "application/json",
            )
            .await;
        match acked {
            Ok(_) => Ok(()),
            // Redelivered elsewhere after the ack timeout, or already
            // settled: the group keeps the message; go on.
            Err(ClientError::Api { status, detail }) if status == 409 => {
                eprintln!("ack refused: {detail}");
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("acknowledging")),
        }
    }
}

impl Follower for GroupMember {
    fn path(&self) -> &str {
        &self.path
    }

    fn resumes(&self) -> bool {
        false
    }

    fn may_retry(&self) -> bool {
        self.printed > 0
    }

    fn connected(&mut self) {
        self.member = None;
    }

    async fn handle(&mut self, client: &Client, events: Vec<Event>) -> Result<bool> {
        let mut ids = Vec::new();
        let mut done = false;
        for event in events {
            if event.event == "joined" {
                let joined: Joined = serde_json::from_str(&event.data)?;
                self.member = joined.member;
                continue;
            }
            if done {
                continue;
            }
            print_line(&event.data)?;
            ids.extend(event.id);
            self.printed += 1;
            done = self.count.is_some_and(|c| self.printed >= c);
        }
        if self.manual && !ids.is_empty() {
            self.ack(client, &ids).await?;
        }
        Ok(done)
    }

    fn on_break(&self) -> &'static str {
        "rejoining the group"
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{ClientCommand, Command};

    fn args(line: &[&str]) -> SubscribeArgs {
        let cli = crate::args::Cli::try_parse_from(line).expect("valid command line");
        match cli.command {
            Command::Client(ClientCommand::Subscribe(a)) => a,
            _ => panic!("not subscribe"),
        }
    }

    #[test]
    fn a_group_member_asks_for_its_settings() {
        let a = args(&[
            "switchyard",
            "subscribe",
            "orders.>",
            "jobs",
            "--group",
            "g",
            "--ack",
            "auto",
            "--from",
            "earliest",
            "--format",
            "json",
            "--strategy",
            "key-hash",
        ]);
        let m = GroupMember::new(&a, "g").unwrap();
        assert_eq!(
            m.path,
            "/v1/events?topic=orders.%3E&topic=jobs&group=g&ack=auto&from=earliest&format=json&strategy=key-hash"
        );
        assert_eq!(m.ack_path, "/v1/groups/g/ack");
        assert!(!m.manual && !m.resumes() && !m.may_retry());
        let a = args(&[
            "switchyard",
            "subscribe",
            "t",
            "--group",
            "g",
            "--from",
            "0-1",
        ]);
        let e = GroupMember::new(&a, "g").err().expect("refused");
        assert_eq!(
            e.to_string(),
            "a group starts from earliest or latest, not \"0-1\""
        );
    }

    #[test]
    fn the_ack_body_names_the_member() {
        let ids = ["a-1".to_owned(), "a-2".to_owned()];
        let body = AckRequest {
            ids: &ids,
            member: Some("m1"),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"ids":["a-1","a-2"],"member":"m1"}"#
        );
        let body = AckRequest {
            ids: &ids,
            member: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"ids": ids, "member": null})
        );
    }
}
