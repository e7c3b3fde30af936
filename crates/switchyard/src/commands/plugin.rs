//! `switchyard plugin push|list|rm|test|logs|new`: the printing around
//! [`crate::plugin_cli`].

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::args::{PluginCommand, ScopeArg};
use crate::client::Client;
use crate::config::LogFormat;
use crate::plugin_cli::{self, PluginList};
use serde_json::Value;
use switchyard_plugin_host::Hook;

/// Runs one `plugin` command; `ca` is `--ca-file`.
pub(crate) async fn run(cmd: PluginCommand, ca: Option<&Path>) -> Result<()> {
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
            scope,
            url,
            token,
        } => {
            let client = Client::with_ca_file(&url, ca)?.with_token(token)?;
            let bound = plugin_cli::push(
                &client,
                &plugin_cli::Push {
                    file: &file,
                    name: &name,
                    hook: hook.into(),
                    topics: &topics,
                    config: config.as_deref(),
                    on_error: on_error.map(Into::into),
                    fuel,
                    memory_mb,
                    scope: scope.map(ScopeArg::as_str),
                },
            )
            .await?;
            println!(
                "bound {} ({} hook, version {}, sha256 {})",
                name, bound.hook, bound.version, bound.sha256
            );
            Ok(())
        }
        PluginCommand::List { json, url, token } => {
            let v = Client::with_ca_file(&url, ca)?
                .with_token(token)?
                .get_json("/v1/plugins")
                .await?;
            if json {
                println!("{v}");
            } else {
                let list: PluginList = serde_json::from_value(v)?;
                print!("{}", plugin_cli::format_list(&list));
            }
            Ok(())
        }
        PluginCommand::Rm { name, url, token } => {
            let client = Client::with_ca_file(&url, ca)?.with_token(token)?;
            let req = client
                .request(http::Method::DELETE, &format!("/v1/plugins/{name}"))
                .body(Full::new(Bytes::new()))?;
            client.send(req).await?;
            println!("removed {name}");
            Ok(())
        }
        PluginCommand::Logs {
            name,
            json,
            count,
            url,
            token,
        } => {
            let client = Client::with_ca_file(&url, ca)?.with_token(token)?;
            follow_logs(&client, &name, json, count).await
        }
        PluginCommand::New {
            dir,
            hook,
            lang,
            name,
            sdk_path,
        } => {
            let hook: switchyard_plugin_host::Hook = hook.into();
            let lang: crate::scaffold::Lang = lang.into();
            let w = crate::scaffold::new(&crate::scaffold::New {
                dir: &dir,
                hook,
                lang,
                name: name.as_deref(),
                sdk_path: sdk_path.as_deref(),
            })?;
            let in_lang = match lang {
                crate::scaffold::Lang::Rust => String::new(),
                other => format!(" in {}", other.title()),
            };
            println!(
                "created {} ({} plugin{in_lang}) in {}",
                w.name,
                hook.as_str(),
                dir.display()
            );
            for f in &w.files {
                println!("  {}", f.display());
            }
            println!(
                "next: cd {} && {}\n\
                 the component: {}; README.md shows how to try it \
                 (switchyard plugin test) and bind it (switchyard plugin push)",
                dir.display(),
                w.next,
                w.component.display(),
            );
            Ok(())
        }
        PluginCommand::Test {
            file,
            hook,
            config,
            against,
            message,
            replay,
            from,
            limit,
            summary,
            candidates,
            fuel,
            memory_mb,
            url,
            token,
        } => {
            let filter = std::env::var("SWITCHYARD_LOG")
                .unwrap_or_else(|_| crate::logging::DEFAULT_FILTER.into());
            crate::logging::init(LogFormat::Pretty, &filter, crate::logging::Writer::Direct);
            let source = match (replay, message) {
                (Some(pattern), _) => Messages::Replay(pattern),
                (None, Some(message)) => Messages::Given(message),
                (None, None) => bail!("give --message or --replay"),
            };
            let replay = |pattern| plugin_cli::Replay {
                pattern,
                from: &from,
                limit,
            };
            if let Some(name) = against {
                let client = Client::with_ca_file(&url, ca)?.with_token(token)?;
                let flags = AgainstFlags {
                    file: &file,
                    hook: hook.map(Into::into),
                    config: config.as_deref(),
                    candidates: candidates.as_deref(),
                    fuel,
                    memory_mb,
                };
                let mut cmp = against_runners(&client, &name, &flags).await?;
                let print = |v: Option<Value>| -> Result<()> {
                    if let Some(v) = v
                        && !summary
                    {
                        writeln!(std::io::stdout().lock(), "{v}")?;
                    }
                    Ok(())
                };
                match &source {
                    Messages::Replay(pattern) => {
                        plugin_cli::replay_messages(&client, &replay(pattern), |m| {
                            print(cmp.run(m))
                        })
                        .await?
                    }
                    Messages::Given(text) => {
                        let messages =
                            plugin_cli::parse_messages(&plugin_cli::text_or_file(text)?)?;
                        if messages.is_empty() {
                            bail!("--message holds no message");
                        }
                        tokio::task::block_in_place(|| {
                            messages.iter().try_for_each(|m| print(cmp.run(m)))
                        })?;
                    }
                }
                println!("{}", cmp.summary());
                cmp.verdict()?;
                return Ok(());
            }
            let Some(hook) = hook.map(Into::into) else {
                bail!("--hook is required without --against");
            };
            let t = plugin_cli::Test {
                file: &file,
                hook,
                config: config.as_deref().unwrap_or_default(),
                candidates: candidates.as_deref(),
                fuel,
                memory_mb,
            };
            let mut runner = tokio::task::block_in_place(|| plugin_cli::Runner::new(&t))?;
            match source {
                Messages::Replay(pattern) => {
                    let client = Client::with_ca_file(&url, ca)?.with_token(token)?;
                    plugin_cli::replay(&client, &replay(&pattern), &mut runner, |v| {
                        if !summary {
                            writeln!(std::io::stdout().lock(), "{v}")?;
                        }
                        Ok(())
                    })
                    .await?;
                    if !summary && let Some(c) = runner.counters() {
                        println!("{c}");
                    }
                }
                Messages::Given(message) => {
                    let lines =
                        tokio::task::block_in_place(|| plugin_cli::test(&mut runner, &message))?;
                    if !summary {
                        let mut out = std::io::stdout().lock();
                        for l in lines {
                            writeln!(out, "{l}")?;
                        }
                    }
                }
            }
            if summary {
                let mut v = runner.summary().to_json(hook);
                if let Some(c) = runner.counters() {
                    v["counters"] = c["counters"].clone();
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            if runner.summary().failed() {
                bail!("the plugin failed on at least one message");
            }
            Ok(())
        }
    }
}

/// Where `plugin test` takes its messages from.
enum Messages {
    /// `--replay PATTERN`.
    Replay(String),
    /// `--message`.
    Given(String),
}

/// The flags of `plugin test --against` that set how the two run.
struct AgainstFlags<'a> {
    file: &'a Path,
    hook: Option<Hook>,
    config: Option<&'a str>,
    candidates: Option<&'a str>,
    fuel: Option<u64>,
    memory_mb: Option<u64>,
}

/// Reads binding `name` of the node and builds the local runner and the
/// bound one: both with the binding's hook and limits unless the flags
/// set them, the local one with `--config` when given.
async fn against_runners(
    client: &Client,
    name: &str,
    f: &AgainstFlags<'_>,
) -> Result<plugin_cli::Against> {
    let bound = plugin_cli::fetch_bound(client, name).await?;
    let local_bytes = std::fs::read(f.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.file.display()))?;
    let hook = f.hook.unwrap_or(bound.hook);
    let mut limits = bound.limits;
    // Calls run one after another here: one instance each.
    limits.max_instances = 1;
    if let Some(fuel) = f.fuel {
        limits.fuel = fuel;
    }
    if let Some(m) = f.memory_mb {
        limits.memory_bytes = (m as usize) << 20;
    }
    tokio::task::block_in_place(|| {
        let engine = plugin_cli::local_engine()?;
        let candidates = || plugin_cli::parse_candidates(hook, f.candidates);
        let local = plugin_cli::Runner::from_bytes(
            &engine,
            &local_bytes,
            hook,
            f.config.unwrap_or(&bound.config),
            candidates()?,
            limits,
        )
        .map_err(|e| anyhow::anyhow!("the local component: {e}"))?;
        let theirs = plugin_cli::Runner::from_bytes(
            &engine,
            &bound.component,
            hook,
            &bound.config,
            candidates()?,
            limits,
        )
        .map_err(|e| anyhow::anyhow!("the component of binding {name}: {e}"))?;
        if theirs.sha256() != bound.sha256 {
            bail!(
                "the component the node sent for {name} does not match its sha256 {}",
                bound.sha256
            );
        }
        Ok(plugin_cli::Against::new(local, theirs, &bound))
    })
}

/// Prints the `log` events of `GET /v1/plugins/{name}/logs` until the
/// stream ends (the binding was removed) or `count` lines were printed.
async fn follow_logs(client: &Client, name: &str, json: bool, count: Option<u64>) -> Result<()> {
    let req = client
        .request(http::Method::GET, &format!("/v1/plugins/{name}/logs"))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))?;
    let resp = client.send(req).await?;
    let mut parser = crate::sse::SseParser::new();
    let mut body = resp.into_body();
    let mut printed = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let events = parser.push(&data);
        if let Some(e) = parser.error() {
            bail!("{e}; stopped reading the stream");
        }
        let mut out = std::io::stdout().lock();
        for ev in events {
            match ev.event.as_str() {
                "log" if json => writeln!(out, "{}", ev.data)?,
                "log" => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data)?;
                    writeln!(
                        out,
                        "{} {:<5} {}",
                        v["time"].as_str().unwrap_or("?"),
                        v["level"].as_str().unwrap_or("?").to_uppercase(),
                        v["message"].as_str().unwrap_or(""),
                    )?;
                }
                "dropped" if json => {
                    writeln!(out, "{}", ev.data)?;
                    continue;
                }
                "dropped" => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data)?;
                    eprintln!(
                        "{} log lines dropped: this reader fell behind",
                        v["dropped"]
                    );
                    continue;
                }
                _ => continue,
            }
            out.flush()?;
            printed += 1;
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
    }
    eprintln!("the log stream of {name} ended (the binding was removed, or the node stopped)");
    Ok(())
}
