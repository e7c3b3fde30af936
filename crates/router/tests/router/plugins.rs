//! Plugins built from `plugins/` bound to a router: route plugins reroute
//! and drop at publish, a filter plugin thins a subscription, a pick
//! plugin balances a group.

use std::time::Duration;

use switchyard_router::{GroupOptions, GroupStart, Hook, MemberOptions, Source, Start, Strategy};

use crate::common::{
    bind, collect, header, info, join, msg, open, patterns, payloads, publish, receive_all, reopen,
    spec,
};

#[tokio::test]
async fn a_route_plugin_reroutes_by_a_payload_field() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let bound = bind(
        &router,
        spec(
            "by-region",
            Hook::Route,
            &["orders"],
            r#"{"field": "/region"}"#,
        ),
        "field_router",
    );
    assert_eq!((bound.version, bound.source), (1, Source::Api));

    let published = router
        .publish(vec![
            msg("orders", r#"{"region": "eu", "n": 1}"#),
            msg("orders", r#"{"region": "us", "n": 2}"#),
            msg("orders", r#"{"n": 3}"#),
            msg("invoices", r#"{"region": "eu"}"#),
        ])
        .await
        .unwrap();
    let topics: Vec<&str> = published
        .iter()
        .map(|p| p.results[0].topic.as_str())
        .collect();
    assert_eq!(topics, ["orders.eu", "orders.us", "orders", "invoices"]);
    assert_eq!(
        published[0].routed_from.as_ref().unwrap().as_str(),
        "orders"
    );
    assert!(published[2].routed_from.is_none(), "fallback: stored as is");
    assert!(published[3].routed_from.is_none(), "another topic");

    let mut eu = router
        .subscribe(patterns(&["orders.eu"]), &Start::Earliest)
        .await
        .unwrap();
    assert_eq!(
        payloads(&collect(&mut eu, 1).await),
        [r#"{"region": "eu", "n": 1}"#]
    );
    let stats = router.plugins().info("by-region").unwrap().stats;
    assert_eq!(stats.calls, 3, "{stats:?}");
}

#[tokio::test]
async fn a_route_plugin_drops_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    bind(
        &router,
        spec(
            "strict-region",
            Hook::Route,
            &["orders"],
            r#"{"field": "/region", "fallback": "drop"}"#,
        ),
        "field_router",
    );
    let published = router
        .publish(vec![
            msg("orders", r#"{"n": 1}"#),
            msg("orders", "not json"),
        ])
        .await
        .unwrap();
    for p in &published {
        assert!(p.results.is_empty(), "{p:?}");
        let (plugin, reason) = p.dropped.as_ref().expect("dropped");
        assert_eq!(plugin, "strict-region");
        assert!(!reason.is_empty());
    }
    let b = router
        .pull(patterns(&[">"]), &Start::Earliest, 10, Duration::ZERO, None)
        .await
        .unwrap();
    assert!(b.messages.is_empty(), "{:?}", b.messages);
}

#[tokio::test]
async fn a_filter_plugin_thins_a_subscription_and_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    bind(
        &router,
        spec(
            "big",
            Hook::Filter,
            &[">"],
            r#"{"field": "/amount", "op": "gt", "value": 100}"#,
        ),
        "json_filter",
    );
    let amounts = [50, 150, 20, 300, 100];
    let texts: Vec<String> = amounts
        .iter()
        .map(|a| format!(r#"{{"amount": {a}}}"#))
        .collect();
    publish(&router, "payments", &crate::common::strs(&texts)).await;

    let mut sub = router
        .subscribe(patterns(&["payments"]), &Start::Earliest)
        .await
        .unwrap();
    sub.set_filter(router.plugins().filter("big", None).await.unwrap());
    let d = sub.next().await.unwrap();
    assert_eq!(payloads(&d.messages), [texts[1].as_str(), &texts[3]]);
    assert_eq!(d.skipped, 3);
    assert_eq!(
        sub.cursor(),
        &router.latest(),
        "skipped messages are passed"
    );

    // The same binding with the subscription's own configuration.
    let own = r#"{"field": "/amount", "op": "lt", "value": 60}"#;
    let b = router
        .pull(
            patterns(&["payments"]),
            &Start::Earliest,
            10,
            Duration::ZERO,
            Some(
                router
                    .plugins()
                    .filter("big", Some(own.into()))
                    .await
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(payloads(&b.messages), [texts[0].as_str(), &texts[2]]);
}

#[tokio::test]
async fn a_pick_plugin_splits_a_group_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    bind(
        &router,
        spec("balance", Hook::Pick, &[">"], ""),
        "weighted_balancer",
    );
    let options = GroupOptions {
        strategy: Some(Strategy::Plugin("balance".into())),
        start: GroupStart::Earliest,
        ..GroupOptions::default()
    };
    let member = |weight| MemberOptions {
        weight,
        max_inflight: 1000,
        ..MemberOptions::default()
    };
    let mut heavy = join(&router, "picked", &["pick"], options.clone(), member(3)).await;
    let mut light = join(&router, "picked", &["pick"], options, member(1)).await;
    let texts = crate::common::texts("p", 40);
    publish(&router, "pick", &crate::common::strs(&texts)).await;
    let got = receive_all(&mut [&mut heavy, &mut light], 40).await;
    let (h, l) = (got[0].len(), got[1].len());
    assert_eq!(h + l, 40);
    assert_eq!((h, l), (30, 10), "smooth weighted round-robin, 3:1");
    let i = info(&router, "picked").await;
    assert_eq!(i.strategy, "plugin:balance");
    assert_eq!(i.counters.pick_errors, 0, "{i:?}");

    // A pick strategy needs a pick binding.
    let err = router
        .groups()
        .join(
            "other",
            patterns(&["pick"]),
            GroupOptions {
                strategy: Some(Strategy::Plugin("missing".into())),
                ..GroupOptions::default()
            },
            MemberOptions::default(),
        )
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, switchyard_router::RouterError::PluginNotFound(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rebound_plugin_applies_its_new_version_and_both_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let router = open(dir.path());
    let tag = |value: &str| {
        spec(
            "tagger",
            Hook::Route,
            &["t.>"],
            &format!(r#"{{"name": "x-version", "value": "{value}"}}"#),
        )
    };
    bind(&router, tag("v1"), "header_tagger");
    router.publish(vec![msg("t.a", "one")]).await.unwrap();
    let v2 = bind(&router, tag("v2"), "header_tagger");
    assert_eq!(v2.version, 2);
    router.publish(vec![msg("t.a", "two")]).await.unwrap();

    let router = reopen(router, dir.path()).await;
    let info = router.plugins().info("tagger").expect("binding persisted");
    assert_eq!((info.version, info.hook), (2, Hook::Route));
    router.publish(vec![msg("t.a", "three")]).await.unwrap();
    let b = router
        .pull(
            patterns(&["t.>"]),
            &Start::Earliest,
            10,
            Duration::ZERO,
            None,
        )
        .await
        .unwrap();
    let tags: Vec<(String, Option<&str>)> = b
        .messages
        .iter()
        .map(|m| (crate::common::text(m), header(m, "x-version")))
        .collect();
    assert_eq!(
        tags,
        [
            ("one".into(), Some("v1")),
            ("two".into(), Some("v2")),
            ("three".into(), Some("v2"))
        ]
    );
    router.plugins().remove("tagger").unwrap();
    router.publish(vec![msg("t.a", "four")]).await.unwrap();
    let b = router
        .pull(
            patterns(&["t.>"]),
            &Start::After(b.cursor),
            10,
            Duration::ZERO,
            None,
        )
        .await
        .unwrap();
    assert_eq!(header(&b.messages[0], "x-version"), None);
}

/// Two nodes' plugin bindings exchanging cluster table entries by hand
/// (what the sync does over the network): a peer's entry is stored, waits
/// for its component, refuses one of another hash, binds with the right
/// one, survives a restart, and a tombstone unbinds it.
#[tokio::test]
async fn cluster_entries_apply_on_another_node_and_survive_a_restart() {
    use switchyard_router::{Applied, NEED_COMPONENT};

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(dir_a.path());
    let mut b = open(dir_b.path());
    let wasm = switchyard_testkit::guest_plugin("field_router");
    let bound = a
        .plugins()
        .bind(
            spec(
                "region",
                Hook::Route,
                &["orders"],
                r#"{"field": "/region"}"#,
            ),
            Some(&wasm),
            Source::Cluster,
        )
        .unwrap();
    assert_eq!((bound.source, bound.version), (Source::Cluster, 1));
    let stamp = bound.stamp.unwrap();

    // B takes A's entry; it waits for its component.
    let entries = a.plugins().table_newer_than(&b.plugins().table_digest());
    assert_eq!(entries.len(), 1);
    assert!(b.plugins().table_behind(&a.plugins().table_digest()));
    assert_eq!(b.plugins().merge_entries(entries.clone()), 1);
    assert_eq!(b.plugins().merge_entries(entries.clone()), 0, "not newer");
    let todo = b.plugins().to_apply();
    assert_eq!(todo, entries);
    assert_eq!(
        b.plugins().apply_entry(&todo[0], None),
        Applied::Pending(NEED_COMPONENT.into())
    );
    let other = switchyard_testkit::guest_plugin("passthrough");
    assert!(matches!(
        b.plugins().apply_entry(&todo[0], Some(&other)),
        Applied::Pending(_)
    ));
    assert!(b.plugins().info("region").is_none());
    let sha = &entries[0].binding.as_ref().unwrap().sha256;
    let bytes = a.plugins().component_by_sha256(sha).unwrap().unwrap();
    assert_eq!(
        b.plugins().apply_entry(&todo[0], Some(&bytes)),
        Applied::Done
    );
    assert!(b.plugins().to_apply().is_empty());
    let on_b = b.plugins().info("region").unwrap();
    assert_eq!(
        (on_b.source, on_b.version, on_b.stamp, on_b.sha256.as_str()),
        (Source::Cluster, 1, Some(stamp), sha.as_str())
    );
    let routed = b
        .publish(vec![msg("orders", r#"{"region": "eu"}"#)])
        .await
        .unwrap();
    assert_eq!(routed[0].results[0].topic.as_str(), "orders.eu");
    assert!(!a.plugins().table_behind(&b.plugins().table_digest()));

    // B's status tells what runs.
    let status = b.plugins().node_status(&[]);
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].state.as_str(), status[0].version),
        ("running", 1)
    );

    // B comes back from a restart with the binding, from its own copy.
    b = reopen(b, dir_b.path()).await;
    let on_b = b.plugins().info("region").unwrap();
    assert_eq!((on_b.source, on_b.stamp), (Source::Cluster, Some(stamp)));
    assert_eq!(b.plugins().table_digest(), a.plugins().table_digest());

    // A deletes it: the tombstone unbinds it on B and frees the component.
    a.plugins().remove("region").unwrap();
    let tomb = a.plugins().table_newer_than(&b.plugins().table_digest());
    assert_eq!(tomb.len(), 1);
    assert!(tomb[0].binding.is_none());
    assert_eq!(b.plugins().merge_entries(tomb.clone()), 1);
    assert_eq!(b.plugins().apply_entry(&tomb[0], None), Applied::Done);
    assert!(b.plugins().info("region").is_none());
    assert!(b.plugins().component_by_sha256(sha).unwrap().is_none());
    assert_eq!(b.plugins().node_status(&[])[0].state, "deleted");
    // An older entry does not bring it back.
    assert_eq!(b.plugins().merge_entries(entries), 0);
    assert!(b.plugins().to_apply().is_empty());
}

/// A binding made on a node alone shadows a cluster binding of the same
/// name there; the cluster binding runs once it is gone.
#[tokio::test]
async fn a_node_scoped_binding_shadows_a_cluster_binding_until_it_goes() {
    use switchyard_router::Applied;

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(dir_a.path());
    let b = open(dir_b.path());
    let wasm = switchyard_testkit::guest_plugin("field_router");
    let local = bind(
        &b,
        spec("region", Hook::Route, &["orders"], ""),
        "passthrough",
    );
    assert_eq!(local.source, Source::Api);
    // A cluster push of that name is refused on B itself...
    let err = b
        .plugins()
        .bind(
            spec("region", Hook::Route, &["orders"], ""),
            Some(&wasm),
            Source::Cluster,
        )
        .unwrap_err();
    assert!(err.to_string().contains("scope=node"), "{err}");
    // ...and one from A is shadowed there.
    a.plugins()
        .bind(
            spec(
                "region",
                Hook::Route,
                &["orders"],
                r#"{"field": "/region"}"#,
            ),
            Some(&wasm),
            Source::Cluster,
        )
        .unwrap();
    let entries = a.plugins().table_newer_than(&[]);
    b.plugins().merge_entries(entries.clone());
    assert!(matches!(
        b.plugins().apply_entry(&entries[0], Some(&wasm)),
        Applied::Shadowed(_)
    ));
    assert_eq!(b.plugins().info("region").unwrap().source, Source::Api);
    assert!(b.plugins().to_apply().is_empty(), "still shadowed");
    b.plugins().remove("region").unwrap();
    let todo = b.plugins().to_apply();
    assert_eq!(todo, entries);
    assert_eq!(
        b.plugins().apply_entry(&todo[0], Some(&wasm)),
        Applied::Done
    );
    assert_eq!(b.plugins().info("region").unwrap().source, Source::Cluster);
}
