//! TLS on the HTTP listener: HTTPS with HTTP/1.1 and HTTP/2 chosen by
//! ALPN, the CLI over https with a private CA, certificates replaced while
//! streams stay open (SIGHUP, changed files, a bad new pair), refused
//! starts, and a two-node cluster whose peers speak TLS to each other.
//! Every certificate is made here with rcgen (a CA and server certificates
//! for 127.0.0.1 signed by it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use switchyard::sse::SseParser;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// A private CA that signs server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM, and the certificate's DER.
struct Pair {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for 127.0.0.1 and localhost named `cn`.
    fn server(&self, cn: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `text` to `path` by a rename, as certificate tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes the pair to `dir/cert.pem` and `dir/key.pem`, and the CA to
/// `dir/ca.pem` (where `Node::start` finds the CA its client trusts).
fn install(dir: &Path, ca: &Ca, pair: &Pair) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    replace(&cert, &pair.cert);
    replace(&key, &pair.key);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    (cert, key)
}

/// Starts a TLS node in `dir` with `pair`, and `extra` config lines.
fn start_tls(dir: &Path, ca: &Ca, pair: &Pair, extra: &str, args: &[&str]) -> Node {
    install(dir, ca, pair);
    let toml = format!("[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n{extra}");
    let node = Node::start_with_config(dir, &toml, args);
    assert!(node.url.starts_with("https://"), "{}", node.url);
    node
}

fn addr(node: &Node) -> String {
    node.url.strip_prefix("https://").unwrap().to_owned()
}

/// A TLS connection to `node` trusting `roots`, offering `alpn`.
async fn connect(
    node: &Node,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(switchyard_gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr(node)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// The certificate a new connection to `node` is served.
async fn served_cert(node: &Node, ca: &Ca) -> CertificateDer<'static> {
    let tls = connect(node, &[ca.der()], &[b"http/1.1"]).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Reads events from `body` until one has `data`, within 10 s.
async fn expect_event(body: &mut hyper::body::Incoming, parser: &mut SseParser, data: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no event {data:?} in time"))
            .expect("stream open")
            .unwrap();
        if let Ok(bytes) = frame.into_data()
            && parser.push(&bytes).iter().any(|e| e.data == data)
        {
            return;
        }
    }
}

fn get(uri: String) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .header("accept", "text/event-stream")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn post(uri: String, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(uri)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn https_serves_h2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let node = start_tls(dir.path(), &ca, &ca.server("node"), "", &[]);
    let base = node.url.clone();

    // HTTP/2: ALPN offers both and the server picks h2; one connection
    // carries an event stream and the publishes it sees.
    let tls = connect(&node, &[ca.der()], &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = h2
        .send_request(get(format!("{base}/v1/events?topic=tls.h2&from=earliest")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let mut events = resp.into_body();
    let mut parser = SseParser::new();
    let resp = h2
        .send_request(post(format!("{base}/v1/topics/tls.h2"), "over h2"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    expect_event(&mut events, &mut parser, "over h2").await;

    // HTTP/1.1: a client that offers only http/1.1.
    let tls = connect(&node, &[ca.der()], &[b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = h1
        .send_request(post("/v1/topics/tls.h1".into(), "over http/1.1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    resp.into_body().collect().await.unwrap();
    let resp = h1
        .send_request(get("/v1/events?topic=tls.h1&from=earliest".into()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = resp.into_body();
    expect_event(&mut events, &mut SseParser::new(), "over http/1.1").await;

    // No ALPN at all: HTTP/1.1.
    let tls = connect(&node, &[ca.der()], &[]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = h1
        .send_request(post("/v1/topics/tls.h1".into(), "no alpn"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // The library client (as the CLI uses it) over https.
    let v = node.client.get_json("/v1/topics").await.unwrap();
    assert!(v.to_string().contains("tls.h1"), "{v}");

    // A client that does not trust the CA fails its handshake.
    let other = Ca::new("another CA");
    let err = connect(&node, &[other.der()], &[b"h2"]).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // No cleartext on the port: an HTTP/1.1 request gets no HTTP answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr(&node)).await.unwrap();
    tcp.write_all(b"GET /v1/topics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn cli_publishes_and_reads_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let node = start_tls(dir.path(), &ca, &ca.server("node"), "", &[]);
    let ca_file = dir.path().join("ca.pem");
    let cli = |args: &[&str], ca: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_remove("SWITCHYARD_CA_FILE");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = cli(
        &["publish", "cli.tls", "hello over https", "--url", &node.url],
        Some(&ca_file),
    );
    assert!(out.status.success(), "{out:?}");
    let out = cli(
        &[
            "subscribe",
            "cli.tls",
            "--from",
            "earliest",
            "--count",
            "1",
            "--url",
            &node.url,
        ],
        Some(&ca_file),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over https\n");
    // The CA from the environment.
    let out = Command::new(BIN)
        .args(["topics", "--url", &node.url])
        .env("SWITCHYARD_CA_FILE", &ca_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli.tls"));
    // Without the CA the node's certificate is not trusted.
    let out = cli(&["publish", "cli.tls", "x", "--url", &node.url], None);
    assert!(!out.status.success(), "{out:?}");
    let other = dir.path().join("other.pem");
    std::fs::write(&other, Ca::new("another CA").pem()).unwrap();
    let out = cli(
        &["publish", "cli.tls", "x", "--url", &node.url],
        Some(&other),
    );
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// Opens an event stream on `topic` with the node's own client (trusting
/// the CA), before a certificate change.
async fn open_stream(node: &Node, topic: &str) -> Sse {
    Sse::connect(
        node,
        &format!("/v1/events?topic={topic}&from=earliest"),
        None,
    )
    .await
    .unwrap()
}

async fn wait_served(node: &Node, ca: &Ca, want: &CertificateDer<'static>, what: &str) {
    wait_until(Duration::from_secs(20), what, || async {
        served_cert(node, ca).await == *want
    })
    .await;
}

/// The stream opened before keeps flowing: `payload` published now arrives.
async fn still_flows(node: &Node, sse: &mut Sse, topic: &str, payload: &str) {
    node.publish(topic, payload.to_owned()).await;
    loop {
        let e = sse
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the open stream ended before {payload:?}"));
        if e.data == payload {
            return;
        }
    }
}

fn hangup(node: &Node) {
    node.hangup();
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_streams() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let first = ca.server("first");
    // No polling within the test: only SIGHUP reloads.
    let node = start_tls(dir.path(), &ca, &first, "poll_interval_secs = 3600\n", &[]);
    assert_eq!(served_cert(&node, &ca).await, first.der);
    let mut sse = open_stream(&node, "reload").await;
    still_flows(&node, &mut sse, "reload", "before").await;

    let second = ca.server("second");
    install(dir.path(), &ca, &second);
    // Unchanged until the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_cert(&node, &ca).await, first.der);
    hangup(&node);
    wait_served(
        &node,
        &ca,
        &second.der,
        "the second certificate after SIGHUP",
    )
    .await;
    still_flows(&node, &mut sse, "reload", "after SIGHUP").await;

    // A bad certificate file, then a key that is not the certificate's:
    // the second pair stays.
    replace(
        &dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    hangup(&node);
    let third = ca.server("third");
    replace(&dir.path().join("cert.pem"), &third.cert);
    hangup(&node);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_cert(&node, &ca).await, second.der);
    still_flows(&node, &mut sse, "reload", "after bad pairs").await;
    node.log_with(&["TLS certificate not reloaded"]).await;
    // Its key, and the third pair is served.
    replace(&dir.path().join("key.pem"), &third.key);
    hangup(&node);
    wait_served(&node, &ca, &third.der, "the third certificate").await;
}

#[tokio::test]
async fn changed_files_reload_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let first = ca.server("first");
    let node = start_tls(dir.path(), &ca, &first, "poll_interval_secs = 1\n", &[]);
    let mut sse = open_stream(&node, "poll").await;
    let second = ca.server("second");
    install(dir.path(), &ca, &second);
    wait_served(
        &node,
        &ca,
        &second.der,
        "the second certificate after the change",
    )
    .await;
    still_flows(&node, &mut sse, "poll", "after the change").await;
    // A bad pair written over it is not taken.
    replace(&dir.path().join("key.pem"), &ca.server("unrelated").key);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served_cert(&node, &ca).await, second.der);
    still_flows(&node, &mut sse, "poll", "after a bad key").await;
}

#[test]
fn a_node_with_bad_tls_files_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let pair = ca.server("node");
    let (cert, key) = install(dir.path(), &ca, &pair);
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, ca.server("other").key).unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key, expect) in [
        (&missing, &key, "cannot read"),
        (&junk, &key, "no PEM certificate"),
        (&cert, &junk, "not a PEM private key"),
        (&cert, &other_key, "is not the key of the certificate"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("[tls]") && stderr.contains(expect),
            "{expect}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_tls_cluster_delivers_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    // One node checks its peers against the CA, the other takes any
    // certificate (the sealed envelope authenticates peers).
    let cluster = "[cluster]\nkey = \"an end-to-end cluster key\"\n";
    let (d0, d1) = (dir.path().join("n0"), dir.path().join("n1"));
    std::fs::create_dir_all(&d0).unwrap();
    let n0 = start_tls(
        &d0,
        &ca,
        &ca.server("n0"),
        &format!("ca_file = \"ca.pem\"\n{cluster}"),
        &["--fsync", "never", "--gossip-listen", "127.0.0.1:0"],
    );
    let seed = n0.get_json("/v1/cluster").await["members"][0]["gossip_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let n1 = start_tls(
        &d1,
        &ca,
        &ca.server("n1"),
        cluster,
        &[
            "--fsync",
            "never",
            "--gossip-listen",
            "127.0.0.1:0",
            "--join",
            &seed,
        ],
    );
    for n in [&n0, &n1] {
        wait_until(Duration::from_secs(20), "both members alive", || async {
            let v = n.get_json("/v1/cluster").await;
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["state"] == "alive")
                .count()
                == 2
        })
        .await;
    }
    // Each way: a subscriber on one node gets what the other one took.
    for (from, to, topic) in [(&n0, &n1, "x.one"), (&n1, &n0, "x.two")] {
        let mut sse = open_stream(to, topic).await;
        from.publish(topic, "across").await;
        let e = sse.next(Duration::from_secs(20)).await.expect("event");
        assert_eq!(e.data, "across");
    }
    // Whose log the node holds: the feed pulled over TLS.
    let held = n1.pull_all("x.one").await;
    assert_eq!(held.len(), 1);
}
