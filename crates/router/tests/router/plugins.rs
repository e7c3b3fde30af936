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
