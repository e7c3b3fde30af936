//! Membership between real gossip tasks on 127.0.0.1 UDP sockets.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use switchyard_cluster::{Cluster, ClusterConfig, ClusterEvent, MemberState};
use switchyard_testkit::wait_until;
use tokio::sync::mpsc;

const KEY: &[u8] = b"a cluster key of enough bytes";

async fn node(
    id: u64,
    key: &[u8],
    name: &str,
    seeds: &[String],
) -> (Cluster, mpsc::Receiver<ClusterEvent>) {
    let mut c = ClusterConfig::new("127.0.0.1:0".parse().unwrap(), key.to_vec());
    c.name = name.into();
    c.seeds = seeds.to_vec();
    Cluster::start(c, id, format!("127.0.0.1:{}", 7000 + id))
        .await
        .expect("start")
}

fn gossip_addr(c: &Cluster) -> String {
    c.members()[0].gossip_addr.clone()
}

fn state_of(c: &Cluster, id: u64) -> Option<MemberState> {
    let id = format!("{id:016x}");
    c.members()
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
}

/// Waits up to 15 s for `cond`, a condition on what the nodes see.
async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(15), what, || std::future::ready(cond())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_through_a_seed_and_see_a_graceful_leave() {
    let (a, _ea) = node(1, KEY, "edge", &[]).await;
    let seed = vec![gossip_addr(&a)];
    let (b, _eb) = node(2, KEY, "edge", &seed).await;
    let (c, mut ec) = node(3, KEY, "edge", &seed).await;
    for (x, others) in [(&a, [2, 3]), (&b, [1, 3]), (&c, [1, 2])] {
        wait("everyone alive", || {
            others
                .iter()
                .all(|&o| state_of(x, o) == Some(MemberState::Alive))
        })
        .await;
    }
    let m = &c.members()[1];
    assert_eq!(m.http_addr, "127.0.0.1:7001");
    b.leave().await;
    wait("b seen as left", || {
        state_of(&a, 2) == Some(MemberState::Left) && state_of(&c, 2) == Some(MemberState::Left)
    })
    .await;
    let mut seen = Vec::new();
    while let Ok(e) = ec.try_recv() {
        seen.push((e.event, e.member.id));
    }
    assert!(
        seen.contains(&("joined", format!("{:016x}", 1))),
        "{seen:?}"
    );
    assert!(seen.contains(&("left", format!("{:016x}", 2))), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_or_name_is_not_admitted() {
    let (a, _ea) = node(1, KEY, "edge", &[]).await;
    let seed = vec![gossip_addr(&a)];
    let (wrong_key, _e1) = node(2, b"another key of enough bytes!", "edge", &seed).await;
    let (wrong_name, _e2) = node(3, KEY, "lab", &seed).await;
    let (good, _e3) = node(4, KEY, "edge", &seed).await;
    wait("the good node joins", || {
        state_of(&a, 4) == Some(MemberState::Alive)
    })
    .await;
    wait("refusals counted", || {
        let s = a.stats().snapshot();
        s["refused_bad_auth"] > 0 && s["refused_wrong_cluster"] > 0
    })
    .await;
    assert_eq!(state_of(&a, 2), None);
    assert_eq!(state_of(&a, 3), None);
    assert_eq!(state_of(&wrong_key, 1), None);
    assert_eq!(state_of(&wrong_name, 1), None);
    assert!(good.members().len() >= 2);
    // Random bytes change nothing.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 1500))
            .map(|j| (j.wrapping_mul(31) ^ i) as u8)
            .collect();
        sock.send_to(&junk, gossip_addr(&a)).unwrap();
    }
    wait("junk counted", || {
        a.stats().snapshot()["refused_malformed"] >= 190
    })
    .await;
    assert_eq!(a.members().len(), 2);
}
