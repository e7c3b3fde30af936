//! Cluster-wide plugin bindings between real node processes: a binding
//! pushed to one node runs on every node, concurrent pushes converge to one
//! version, a node that joins later or comes back gets the bindings, and a
//! deletion reaches every node.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{KEY, member_env, start_cluster, whoami};
use crate::support::*;

async fn get(node: &Node, name: &str) -> (u16, Value) {
    let (status, _, body) = node
        .raw(
            node.request("GET", &format!("/v1/plugins/{name}")),
            Vec::new(),
        )
        .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The topic a publish of `payload` to `orders` on `node` was stored under.
async fn routed_to(node: &Node, payload: &str) -> String {
    let (status, _, body) = node
        .raw(
            node.request("POST", "/v1/topics/orders"),
            payload.to_owned(),
        )
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 201, "{v}");
    v["topic"].as_str().unwrap().to_owned()
}

/// What `node` runs under `name`: (sha256, config, stamp), or `None`.
async fn running(node: &Node, name: &str) -> Option<(String, String, Value)> {
    let (status, v) = get(node, name).await;
    if status != 200 || v["running_here"] != true {
        return None;
    }
    Some((
        v["sha256"].as_str()?.to_owned(),
        v["config"].as_str()?.to_owned(),
        v["stamp"].clone(),
    ))
}

/// Waits until every node runs the same version of `name`; returns it.
async fn converged(nodes: &[&Node], name: &str, within: Duration) -> (String, String, Value) {
    wait_until(
        within,
        &format!("every node runs one version of {name}"),
        || async {
            let mut versions = Vec::new();
            for n in nodes {
                versions.push(running(n, name).await);
            }
            versions[0].is_some() && versions.iter().all(|v| *v == versions[0])
        },
    )
    .await;
    running(nodes[0], name).await.unwrap()
}

fn region(field: &str) -> String {
    format!(
        "hook=route&topic=orders&config={}",
        enc(&format!(r#"{{"field": "/{field}"}}"#))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_pushed_to_one_node_runs_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = start_cluster(dir.path(), 3).await;
    let router = guest_wasm("field_router");

    // Pushed on node 1; publishes on node 3 are routed within 2 s.
    let (status, v) = nodes[0]
        .put_plugin("region", &region("region"), router.clone())
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["scope"].as_str(), v["version"].as_u64()),
        (Some("cluster"), Some(1)),
        "{v}"
    );
    let pushed = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        if routed_to(&nodes[2], &format!(r#"{{"region":"eu","n":{n}}}"#)).await == "orders.eu" {
            break;
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(2),
            "publishes on node 3 not routed 2 s after the push: {:#}",
            get(&nodes[0], "region").await.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("routed on node 3 {:?} after the push", pushed.elapsed());
    let one = converged(
        &[&nodes[0], &nodes[1], &nodes[2]],
        "region",
        Duration::from_secs(10),
    )
    .await;

    // The rollout as node 2 sees it: every member runs the version.
    let (_, v) = get(&nodes[1], "region").await;
    let rollout = v["rollout"].as_array().unwrap();
    assert_eq!(rollout.len(), 3, "{v:#}");
    assert!(
        rollout.iter().all(|m| m["state"] == "running"
            && m["current"] == true
            && m["sha256"] == one.0.as_str()),
        "{v:#}"
    );
    assert_eq!(v["cluster"]["version"], 1, "{v:#}");

    // A node-scoped binding stays on its node.
    let (status, v) = nodes[0]
        .put_plugin(
            "local",
            "hook=route&topic=local&scope=node",
            guest_wasm("passthrough"),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["scope"], "node");
    // The same name with the other scope is refused.
    let (status, v) = nodes[0]
        .put_plugin("local", "scope=cluster", Vec::new())
        .await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = nodes[1]
        .put_plugin("region", "scope=node", Vec::new())
        .await;
    assert_eq!(status, 409, "{v}");

    // Concurrent pushes on nodes 2 and 3 converge to one version: the one
    // with the higher stamp.
    let (zone, area) = (region("zone"), region("area"));
    let (a, b) = tokio::join!(
        nodes[1].put_plugin("region", &zone, Vec::new()),
        nodes[2].put_plugin("region", &area, Vec::new()),
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let stamp = |v: &Value| {
        (
            v["stamp"]["hlc"].as_u64().unwrap(),
            v["stamp"]["node"].as_str().unwrap().to_owned(),
        )
    };
    let winner = if stamp(&a.1) > stamp(&b.1) {
        &a.1
    } else {
        &b.1
    };
    let after = converged(
        &[&nodes[0], &nodes[1], &nodes[2]],
        "region",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(after.1, winner["config"].as_str().unwrap(), "{a:?} {b:?}");
    assert_eq!(after.2, winner["stamp"]);
    for node in &nodes[1..] {
        assert!(running(node, "local").await.is_none());
    }

    // A fourth node joins and gets the binding.
    let seed = whoami(&nodes[0]).await.1;
    let fourth = member_env(
        &dir.path().join("n3"),
        KEY,
        "127.0.0.1:0",
        std::slice::from_ref(&seed),
        "never",
        &[],
        &[],
    );
    let all = [&nodes[0], &nodes[1], &nodes[2], &fourth];
    let joined = converged(&all, "region", Duration::from_secs(15)).await;
    assert_eq!(joined, after);
    let field = after
        .1
        .split('/')
        .nth(1)
        .unwrap()
        .trim_end_matches(['"', '}'])
        .to_owned();
    assert_eq!(
        routed_to(&fourth, &format!(r#"{{"{field}":"ap"}}"#)).await,
        "orders.ap"
    );

    // A node whose plugin memory budget is too small for the binding
    // refuses it, and the rollout says so.
    let small = member_env(
        &dir.path().join("small"),
        KEY,
        "127.0.0.1:0",
        std::slice::from_ref(&seed),
        "never",
        &[],
        &[(
            "SWITCHYARD_PLUGINS_MEMORY_BUDGET_BYTES",
            Path::new("16777216"),
        )],
    );
    let small_id = whoami(&small).await.0;
    wait_until(
        Duration::from_secs(15),
        "the small node refuses",
        || async {
            let (_, v) = get(&nodes[0], "region").await;
            v["rollout"].as_array().is_some_and(|r| {
                r.iter().any(|m| {
                    m["node"] == small_id.as_str()
                        && m["state"] == "refused"
                        && m["detail"].as_str().is_some_and(|d| d.contains("budget"))
                })
            })
        },
    )
    .await;
    let (status, v) = get(&small, "region").await;
    assert_eq!(
        (status, &v["running_here"]),
        (200, &Value::Bool(false)),
        "{v:#}"
    );
    assert_eq!(routed_to(&small, r#"{"region":"eu"}"#).await, "orders");
    let (_, _, metrics) = small
        .raw(small.request("GET", "/metrics"), Vec::new())
        .await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("switchyard_plugin_cluster_bindings{state=\"refused\"} 1"),
        "{metrics}"
    );
    let mut small = small;
    assert!(small.terminate());

    // Node 2 is away while the binding is deleted on node 1; every node,
    // node 2 when it is back, drops it.
    let mut nodes = nodes;
    let second_dir = dir.path().join("n1");
    assert!(nodes[1].terminate());
    let (status, v) = node_delete(&nodes[0], "region").await;
    assert_eq!(status, 200, "{v}");
    nodes[1] = member_env(&second_dir, KEY, "127.0.0.1:0", &[seed], "never", &[], &[]);
    for node in [&nodes[0], &nodes[1], &nodes[2], &fourth] {
        wait_until(Duration::from_secs(15), "the binding deleted", || async {
            get(node, "region").await.0 == 404
        })
        .await;
        assert_eq!(routed_to(node, r#"{"region":"eu"}"#).await, "orders");
    }
    // The node-scoped binding is still there, on its node only.
    assert!(running(&nodes[0], "local").await.is_some());
}

async fn node_delete(node: &Node, name: &str) -> (u16, Value) {
    let (status, _, body) = node
        .raw(
            node.request("DELETE", &format!("/v1/plugins/{name}")),
            Vec::new(),
        )
        .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}
