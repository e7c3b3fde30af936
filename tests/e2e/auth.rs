//! Authorization of the client API end to end: tokens from the header,
//! the cookie and the query, scopes for publishing and subscribing,
//! admin-only endpoints, anonymous access, public keys with rotation,
//! `switchyard token issue`, and the refusal to start beyond loopback
//! without keys. The keys are the test keys in `fixtures/auth`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::client::Client;
use switchyard::sse::SseParser;

use crate::support::{BIN, Node, enc};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/e2e/fixtures/auth");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// A node whose `[auth]` section is `auth` (plus any other lines).
fn start(dir: &std::path::Path, auth: &str) -> Node {
    Node::start_with_config(dir, &format!("[auth]\n{auth}\n"), &[])
}

pub(crate) fn secret_config() -> String {
    format!("hs256_secret_file = {:?}", fixture("hs256.secret"))
}

/// `switchyard token issue` with `args`; the printed token.
fn issue(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["token", "issue"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "token issue {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{text:?}");
    token
}

/// A shared-secret token for `publish` and `subscribe` patterns.
pub(crate) fn hs_token(publish: &[&str], subscribe: &[&str], admin: bool) -> String {
    let mut args = vec!["--secret-file".to_owned(), fixture("hs256.secret")];
    for p in publish {
        args.extend(["--publish".to_owned(), (*p).to_owned()]);
    }
    for s in subscribe {
        args.extend(["--subscribe".to_owned(), (*s).to_owned()]);
    }
    if admin {
        args.push("--admin".into());
    }
    issue(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn secret_key() -> EncodingKey {
    let s = std::fs::read(fixture("hs256.secret")).unwrap();
    EncodingKey::from_secret(s.trim_ascii())
}

fn bearer(req: http::request::Builder, token: &str) -> http::request::Builder {
    req.header("authorization", format!("Bearer {token}"))
}

/// Status, headers and JSON body.
async fn call(
    node: &Node,
    req: http::request::Builder,
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let (status, headers, body) = node.raw(req, body.to_owned()).await;
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, v)
}

/// Opens an event stream with `req`; the status, and the first message
/// event's data when the stream opened (after publishing `publish` with
/// `publisher`, once the stream is open).
async fn sse(
    node: &Node,
    req: http::request::Builder,
    publish: Option<(&Client, &str, &str)>,
) -> (u16, Option<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    if let Some((publisher, topic, payload)) = publish {
        publisher
            .publish(topic, Bytes::from(payload.to_owned()), None, &[], None)
            .await
            .unwrap();
    }
    let mut body = resp.into_body();
    let mut parser = SseParser::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            for e in parser.push(&data) {
                if e.event == "message" {
                    return (status, Some(e.data));
                }
            }
        }
    }
    let _ = node;
    (status, None)
}

fn challenge(headers: &http::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    for (method, path) in [
        ("POST", "/v1/topics/a"),
        ("GET", "/v1/events?topic=a"),
        ("GET", "/v1/messages?topic=a"),
        ("GET", "/v1/topics"),
        ("GET", "/v1/groups"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/plugins"),
    ] {
        let (status, headers, v) = call(&node, node.request(method, path), "x").await;
        assert_eq!(status, 401, "{method} {path}: {v}");
        assert_eq!(v["code"], "unauthorized", "{method} {path}");
        assert_eq!(challenge(&headers), r#"Bearer realm="switchyard""#);
    }
    // Health stays open.
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = call(&node, node.request("GET", path), "").await;
        assert_eq!(status, 200, "{path}");
    }
    // A malformed token is 401 invalid_token, even where anonymous access
    // would do.
    let (status, headers, v) = call(
        &node,
        bearer(node.request("GET", "/v1/topics"), "not.a.jwt"),
        "",
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("invalid_token")));
    assert!(challenge(&headers).contains(r#"error="invalid_token""#));
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let expired = sign(
        Algorithm::HS256,
        &secret_key(),
        &json!({"exp": now() - 3600, "switchyard": {"publish": [">"], "subscribe": [">"]}}),
    );
    let (status, headers, v) = call(
        &node,
        bearer(node.request("POST", "/v1/topics/a"), &expired),
        "x",
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["code"], "token_expired");
    let c = challenge(&headers);
    assert!(
        c.starts_with(r#"Bearer realm="switchyard", error="invalid_token", error_description=""#)
            && c.contains("expired"),
        "{c}"
    );
}

#[tokio::test]
async fn publishing_outside_the_scope_is_403_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let publisher = hs_token(&["orders.>"], &[], false);
    let reader = hs_token(&[], &[">"], false);
    let (status, _, v) = call(
        &node,
        bearer(node.request("POST", "/v1/topics/orders.eu"), &publisher),
        "in scope",
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, headers, v) = call(
        &node,
        bearer(node.request("POST", "/v1/topics/billing.eu"), &publisher),
        "out of scope",
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert!(challenge(&headers).contains(r#"error="insufficient_scope""#));
    // A batch with one entry out of scope stores none of them.
    let batch = json!([
        {"topic": "orders.us", "payload": "a"},
        {"topic": "audit", "payload": "b"},
    ]);
    let (status, _, v) = call(
        &node,
        bearer(node.request("POST", "/v1/batch"), &publisher)
            .header("content-type", "application/json"),
        &batch.to_string(),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["index"], 1, "{v}");
    let reader_client = Client::new(&node.url)
        .unwrap()
        .with_token(Some(reader))
        .unwrap();
    let all = reader_client
        .get_json(&format!("/v1/messages?topic={}&from=earliest", enc(">")))
        .await
        .unwrap();
    let payloads: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["in scope"]);
}

#[tokio::test]
async fn subscriptions_need_covering_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let publisher = Client::new(&node.url)
        .unwrap()
        .with_token(Some(hs_token(&[">"], &[], false)))
        .unwrap();
    let reader = hs_token(&[], &["orders.>"], false);
    for pattern in [">", "*.eu", "orders", "billing.>"] {
        let path = format!("/v1/events?topic={}", enc(pattern));
        let (status, _) = sse(&node, bearer(node.request("GET", &path), &reader), None).await;
        assert_eq!(status, 403, "{pattern}");
        let path = format!("/v1/messages?topic={}", enc(pattern));
        let (status, _, _) = call(&node, bearer(node.request("GET", &path), &reader), "").await;
        assert_eq!(status, 403, "{pattern}");
    }
    // One uncovered pattern among covered ones refuses the subscription.
    let path = format!("/v1/events?topic={}&topic=audit", enc("orders.*"));
    let (status, _, v) = call(&node, bearer(node.request("GET", &path), &reader), "").await;
    assert_eq!(status, 403);
    assert!(v["detail"].as_str().unwrap().contains("audit"), "{v}");
    // Covered: the stream opens and delivers.
    let path = format!("/v1/events?topic={}", enc("orders.*.created"));
    let (status, data) = sse(
        &node,
        bearer(node.request("GET", &path), &reader),
        Some((&publisher, "orders.eu.created", "hello")),
    )
    .await;
    assert_eq!((status, data.as_deref()), (200, Some("hello")));
    // A group join is a subscription too.
    let path = format!("/v1/events?topic={}&group=g1", enc(">"));
    let (status, _) = sse(&node, bearer(node.request("GET", &path), &reader), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_cookie_and_the_query_parameter_carry_tokens_for_event_streams() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let publisher = Client::new(&node.url)
        .unwrap()
        .with_token(Some(hs_token(&[">"], &[], false)))
        .unwrap();
    let reader = hs_token(&["cookie.only"], &["news.>"], false);
    let path = format!("/v1/events?topic={}", enc("news.>"));
    let (status, data) = sse(
        &node,
        node.request("GET", &path).header(
            "cookie",
            format!("theme=dark; switchyardAuthorization={reader}"),
        ),
        Some((&publisher, "news.a", "by cookie")),
    )
    .await;
    assert_eq!((status, data.as_deref()), (200, Some("by cookie")));
    let path = format!("/v1/events?topic={}&authorization={reader}", enc("news.>"));
    let (status, data) = sse(
        &node,
        node.request("GET", &path),
        Some((&publisher, "news.b", "by query")),
    )
    .await;
    assert_eq!((status, data.as_deref()), (200, Some("by query")));
    // The query parameter is accepted by endpoints with strict parameters.
    let path = format!("/v1/messages?topic=news.a&from=earliest&authorization={reader}");
    let (status, _, v) = call(&node, node.request("GET", &path), "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["messages"][0]["payload"], "by cookie");
    // A cookie does not authorize a publish (another site's page could
    // send it); the query parameter does.
    let (status, _, _) = call(
        &node,
        node.request("POST", "/v1/topics/cookie.only")
            .header("cookie", format!("switchyardAuthorization={reader}")),
        "x",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        &node,
        node.request(
            "POST",
            &format!("/v1/topics/cookie.only?authorization={reader}"),
        ),
        "x",
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn plugins_need_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let user = hs_token(&[">"], &[">"], false);
    let admin = hs_token(&[], &[], true);
    let put = |t: Option<&str>| {
        let req = node
            .request("PUT", "/v1/plugins/p1?hook=route")
            .header("content-type", "application/wasm");
        match t {
            Some(t) => bearer(req, t),
            None => req,
        }
    };
    let (status, _, _) = call(&node, put(None), "not wasm").await;
    assert_eq!(status, 401);
    let (status, _, v) = call(&node, put(Some(&user)), "not wasm").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    for (method, path) in [("GET", "/v1/plugins"), ("DELETE", "/v1/plugins/p1")] {
        let (status, _, _) = call(&node, bearer(node.request(method, path), &user), "").await;
        assert_eq!(status, 403, "{method} {path}");
    }
    // The admin token passes authorization; the body is then refused.
    let (status, _, v) = call(&node, put(Some(&admin)), "not wasm").await;
    assert_eq!(status, 422, "{v}");
    let (status, _, _) = call(
        &node,
        bearer(node.request("GET", "/v1/plugins"), &admin),
        "",
    )
    .await;
    assert_eq!(status, 200);
    // Group deletion is admin-only too; reading groups needs any token.
    let (status, _, _) = call(
        &node,
        bearer(node.request("DELETE", "/v1/groups/g"), &user),
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = call(&node, bearer(node.request("GET", "/v1/groups"), &user), "").await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &node,
        bearer(node.request("DELETE", "/v1/groups/g"), &admin),
        "",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn anonymous_subscribe_reads_but_does_not_publish() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &format!("{}\nanonymous = \"subscribe\"", secret_config()),
    );
    let publisher = Client::new(&node.url)
        .unwrap()
        .with_token(Some(hs_token(&["public.>"], &[], false)))
        .unwrap();
    let path = format!("/v1/events?topic={}", enc(">"));
    let (status, data) = sse(
        &node,
        node.request("GET", &path),
        Some((&publisher, "public.news", "for all")),
    )
    .await;
    assert_eq!((status, data.as_deref()), (200, Some("for all")));
    let (status, _, _) = call(&node, node.request("GET", "/v1/topics"), "").await;
    assert_eq!(status, 200);
    let (status, headers, v) = call(&node, node.request("POST", "/v1/topics/public.x"), "x").await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthorized")));
    assert!(challenge(&headers).starts_with("Bearer"));
    let (status, _, _) = call(&node, node.request("GET", "/v1/plugins"), "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn public_keys_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &format!(
            "public_key_files = [{:?}, {:?}]",
            fixture("ed25519-a.pub.pem"),
            fixture("ed25519-b.pub.pem")
        ),
    );
    let claims = json!({"exp": now() + 600, "switchyard": {"publish": ["k.>"]}});
    for key in ["ed25519-a.key.pem", "ed25519-b.key.pem"] {
        let pem = std::fs::read(fixture(key)).unwrap();
        let token = sign(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_pem(&pem).unwrap(),
            &claims,
        );
        let (status, _, v) = call(
            &node,
            bearer(node.request("POST", "/v1/topics/k.x"), &token),
            "x",
        )
        .await;
        assert_eq!(status, 201, "{key}: {v}");
    }
    // Keys the node does not list are refused: an RSA key, the secret.
    let pem = std::fs::read(fixture("rsa.key.pem")).unwrap();
    let rsa = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
        &claims,
    );
    let hs = sign(Algorithm::HS256, &secret_key(), &claims);
    for token in [rsa, hs] {
        let (status, _, v) = call(
            &node,
            bearer(node.request("POST", "/v1/topics/k.x"), &token),
            "x",
        )
        .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("invalid_token")),
            "{v}"
        );
    }
    // `token issue` with the private key signs what the node accepts.
    let token = issue(&[
        "--private-key-file",
        &fixture("ed25519-b.key.pem"),
        "--publish",
        "k.*",
        "--ttl",
        "5m",
    ]);
    let (status, _, v) = call(
        &node,
        bearer(node.request("POST", "/v1/topics/k.y"), &token),
        "x",
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test]
async fn the_cli_sends_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &secret_config());
    let token = hs_token(&["cli.>"], &["cli.>"], false);
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(["--url", &node.url])
            .env_remove("SWITCHYARD_TOKEN");
        if let Some(t) = token {
            c.env("SWITCHYARD_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(&["publish", "cli.a", "from the cli"], Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["publish", "cli.a", "no token"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = run(&["publish", "other", "out of scope"], Some(&token));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = run(
        &[
            "subscribe",
            "cli.>",
            "--from",
            "earliest",
            "--count",
            "1",
            "--token",
            &token,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from the cli");
    let out = run(&["topics"], Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["plugin", "list"], Some(&token));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

/// Starts `serve` on `listen` with `args`; the first stdout line, or the
/// exit status and standard error when it stopped first.
fn serve_on(dir: &std::path::Path, listen: &str, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .env("SWITCHYARD_LOG", "warn")
        .env_remove("SWITCHYARD_ALLOW_ANONYMOUS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let result = if line.starts_with("switchyard listening on") {
        Ok(line.trim().to_owned())
    } else {
        let out = child.wait_with_output().unwrap();
        return Err(format!(
            "{:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn beyond_loopback_without_keys_needs_allow_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let err = serve_on(dir.path(), "0.0.0.0:0", &[]).unwrap_err();
    assert!(err.starts_with("Some(2)"), "{err}");
    assert!(
        err.contains("--allow-anonymous") && err.contains("[auth]"),
        "{err}"
    );
    let line = serve_on(dir.path(), "0.0.0.0:0", &["--allow-anonymous"]).unwrap();
    assert!(line.contains("0.0.0.0:"), "{line}");
    // With keys, the node starts beyond loopback without the flag.
    let config = dir.path().join("auth.toml");
    std::fs::write(&config, format!("[auth]\n{}\n", secret_config())).unwrap();
    serve_on(
        dir.path(),
        "0.0.0.0:0",
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    // On loopback without keys, the quick start, it starts as before.
    serve_on(dir.path(), "127.0.0.1:0", &[]).unwrap();
}

/// The status of a request whose answer may be an endless event stream
/// (the stream is dropped at once).
pub(crate) async fn status_of(req: http::request::Builder) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Members without admin rights create groups only while the node holds
/// fewer than `max_groups_without_admin`; they still join existing ones,
/// and a member with an admin token creates more.
#[tokio::test]
async fn members_without_admin_rights_create_a_bounded_number_of_groups() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_config(
        dir.path(),
        &format!(
            "[auth]\n{}\nanonymous = \"subscribe\"\n[limits]\nmax_groups_without_admin = 2\n",
            secret_config()
        ),
        &[],
    );
    let join = |group: &str| format!("/v1/events?topic=jobs&group={group}");
    for g in ["g1", "g2"] {
        assert_eq!(status_of(node.request("GET", &join(g))).await, 200, "{g}");
    }
    let (status, _, v) = call(&node, node.request("GET", &join("g3")), "").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("admin"),
        "the answer says what would help: {v}"
    );
    // A token with subscribe rights only is limited alike.
    let member = hs_token(&[], &[">"], false);
    let (status, _, _) = call(&node, bearer(node.request("GET", &join("g3")), &member), "").await;
    assert_eq!(status, 403);
    // Existing groups take new members.
    assert_eq!(status_of(node.request("GET", &join("g1"))).await, 200);
    // An admin creates one more.
    let admin = hs_token(&[], &[">"], true);
    assert_eq!(
        status_of(bearer(node.request("GET", &join("g3")), &admin)).await,
        200
    );
    let groups = node.get_json("/v1/groups").await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 3, "{groups}");
    // A client cannot pass itself off as a relayed join with admin rights,
    // nor mark itself: the header is ignored on a client's request.
    let (status, _, _) = call(
        &node,
        node.request("GET", &join("g4"))
            .header("switchyard-join-without-admin", "0"),
        "",
    )
    .await;
    assert_eq!(status, 403);
}
