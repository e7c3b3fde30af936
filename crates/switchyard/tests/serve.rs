//! A whole node in the test's own process: started through
//! `switchyard::node::serve` on a listener bound to port 0, used over HTTP,
//! stopped through its shutdown future, and started again on the same data
//! directory.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use switchyard::client::Client;
use switchyard::config::{FileConfig, NodeConfig, Overrides};
use switchyard::node::{NodeError, serve};
use switchyard_router::FsyncMode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A node running in a task, and the means to stop it.
struct InProcess {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl InProcess {
    async fn start(data_dir: &Path) -> InProcess {
        let config = NodeConfig::build(
            FileConfig::default(),
            Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                data_dir: Some(data_dir.to_owned()),
                fsync: Some(FsyncMode::Always),
                ..Default::default()
            },
        )
        .expect("valid config");
        let listener = TcpListener::bind(config.listen).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(config, listener, async {
            let _ = stopped.await;
        }));
        InProcess { url, stop, task }
    }

    /// Triggers the shutdown and waits for `serve` to return.
    async fn stop(self) {
        self.stop.send(()).expect("node still running");
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("node task")
            .expect("clean stop");
    }
}

/// Every payload of `topic` from the start, through the pull API.
async fn pull(client: &Client, topic: &str) -> Vec<String> {
    let v = client
        .get_json(&format!(
            "/v1/messages?topic={topic}&from=earliest&limit=100"
        ))
        .await
        .expect("pull");
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["payload"].as_str().expect("text payload").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_in_process_stops_and_reopens_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let node = InProcess::start(&data).await;
    let client = Client::new(&node.url).unwrap();
    let answer: Value = client
        .publish("inproc.t", Bytes::from("hello"), None, &[], None)
        .await
        .expect("publish");
    assert_eq!(answer["topic"], "inproc.t");
    assert_eq!(pull(&client, "inproc.t").await, ["hello"]);
    node.stop().await;
    // The listener is closed with the node.
    assert!(client.get_json("/v1/topics").await.is_err());

    // The store was closed and dropped: a second node opens the same
    // directory and finds the message.
    let node = InProcess::start(&data).await;
    let client = Client::new(&node.url).unwrap();
    assert_eq!(pull(&client, "inproc.t").await, ["hello"]);
    client
        .publish("inproc.t", Bytes::from("again"), None, &[], None)
        .await
        .expect("publish");
    assert_eq!(pull(&client, "inproc.t").await, ["hello", "again"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fc: FileConfig = toml::from_str("listen = \"0.0.0.0:0\"\n[cluster]\nseeds = []\n").unwrap();
    let over = Overrides {
        data_dir: Some(dir.path().join("data")),
        gossip_listen: Some("0.0.0.0:0".parse().unwrap()),
        cluster_key: Some("k".repeat(32)),
        ..Default::default()
    };
    let e = NodeConfig::build(fc, over).unwrap_err();
    assert!(e.to_string().contains("set http_advertise"), "{e}");
    assert!(!dir.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_task_is_dropped_stops_listening() {
    // The accept loop runs as a task of its own: dropping `serve` (here by
    // aborting the task that awaits it) must end it and close the
    // listener, not leave it accepting. (Checked to fail when the loop
    // outlives `serve`: neither aborted nor told by its quit signal.)
    let dir = tempfile::tempdir().unwrap();
    let node = InProcess::start(&dir.path().join("data")).await;
    let addr = node.url.trim_start_matches("http://").to_owned();
    let client = Client::new(&node.url).unwrap();
    client
        .publish("inproc.t", Bytes::from("hello"), None, &[], None)
        .await
        .expect("publish");
    node.task.abort();
    let _ = node.task.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the listener still accepts 10 s after serve was dropped"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(node.stop);
}
