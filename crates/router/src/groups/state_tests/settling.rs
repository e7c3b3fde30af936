//! Acknowledgements, timeouts, dead letters, membership, rounds and restore.

use std::time::Duration;

use super::*;

// ---- acknowledgements -----------------------------------------------------

#[test]
fn ack_settles_and_is_persisted_as_a_removal() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=2), f.t0));
    let c = f.g.take_changes();
    assert_eq!(c.put, vec![(id(1), 1), (id(2), 1)]);
    let s = f.settle(Some(1), &[1], Settle::Ack, f.t0).expect("ack");
    assert_eq!(s.applied, vec![id(1).to_string()]);
    assert!(s.stale.is_empty());
    let c = f.g.take_changes();
    assert_eq!(c.remove, vec![id(1)]);
    assert!(c.put.is_empty());
    assert_eq!(c.counters.expect("counters").acked, 1);
    assert!(f.g.take_changes().is_empty(), "changes are taken once");
    let info = f.g.info(f.t0);
    assert_eq!(info.inflight, 1);
    assert_eq!(info.members[0].acked, 1);
}

#[test]
fn ack_timeout_redelivers_to_another_member() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    assert_eq!(f.delivered_to(), vec![1]);
    f.join(2, 10);
    assert_eq!(f.g.next_timer(), Some(f.at(10)));
    f.g.tick(f.at(10));
    assert_eq!(f.g.counters().expired, 1);
    assert!(f.redeliver(f.at(10)));
    let out = f.g.take_deliveries();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].member, out[0].delivery), (2, 2));
    assert_eq!(f.g.counters().redelivered, 1);
    assert_eq!(f.g.next_timer(), Some(f.at(20)));
}

#[test]
fn ack_timeout_redelivers_to_the_same_member_when_it_is_alone() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.tick(f.at(10));
    assert!(f.redeliver(f.at(10)));
    assert_eq!(f.member_of(1), Some(1));
}

#[test]
fn nothing_expires_before_its_deadline() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.tick(f.at(9));
    assert_eq!(f.g.counters().expired, 0);
    assert!(f.g.ready_ids(None, 10).is_empty());
    assert_eq!(f.member_of(1), Some(1));
}

#[test]
fn max_deliveries_sends_a_message_to_the_dead_letters() {
    let mut f = Fixture::with(Strategy::LeastInflight, 2);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.tick(f.at(10));
    assert!(f.redeliver(f.at(10)));
    f.g.tick(f.at(20));
    let dead = f.g.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].deliveries), (id(1), 2));
    assert!(
        dead[0].reason.contains("2 times") && dead[0].reason.contains("ack timeout"),
        "{}",
        dead[0].reason
    );
    assert_eq!(f.g.unsettled(), 0);
    f.g.dead_letters_stored(DeadLetterOutcome {
        stored: 1,
        ..DeadLetterOutcome::default()
    });
    let c = f.g.take_changes();
    assert_eq!(c.remove, vec![id(1)]);
    assert_eq!(c.counters.expect("counters").dead_lettered, 1);
}

#[test]
fn nack_with_a_delay_waits_until_it_is_due() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.settle(Some(1), &[1], Settle::Nack(Duration::from_secs(5)), f.at(1))
        .expect("nack");
    assert_eq!(f.g.counters().nacked, 1);
    assert_eq!(f.g.next_timer(), Some(f.at(6)));
    f.g.tick(f.at(5));
    assert!(f.g.ready_ids(None, 10).is_empty());
    f.g.tick(f.at(6));
    assert_eq!(f.g.ready_ids(None, 10), vec![id(1)]);
}

#[test]
fn nack_without_a_delay_is_ready_at_once() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.settle(Some(1), &[1], Settle::Nack(Duration::ZERO), f.t0)
        .expect("nack");
    assert_eq!(f.g.ready_ids(None, 10), vec![id(1)]);
    assert_eq!(f.g.info(f.t0).pending_redelivery, 1);
}

#[test]
fn progress_extends_the_deadline() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.settle(Some(1), &[1], Settle::Progress, f.at(8))
        .expect("progress");
    f.g.tick(f.at(10));
    assert_eq!(f.g.counters().expired, 0);
    assert_eq!(f.g.next_timer(), Some(f.at(18)));
    f.g.tick(f.at(18));
    assert_eq!(f.g.counters().expired, 1);
}

#[test]
fn progress_after_the_deadline_is_stale() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.tick(f.at(10));
    let err = f
        .settle(Some(1), &[1], Settle::Progress, f.at(11))
        .expect_err("stale");
    assert!(
        matches!(err, RouterError::StaleAck { op: "progress", .. }),
        "{err:?}"
    );
    // A progress is not an acknowledgement: not counted as a stale ack.
    assert_eq!(f.g.counters().stale_acks, 0);
}

#[test]
fn term_dead_letters_with_the_reason_and_never_redelivers() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.settle(Some(1), &[1], Settle::Term(Some("bad input".into())), f.t0)
        .expect("term");
    let dead = f.g.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "terminated by a member: bad input");
    assert_eq!(f.g.counters().terminated, 1);
    f.g.tick(f.at(100));
    assert!(f.g.ready_ids(None, 10).is_empty());
    assert_eq!(f.g.unsettled(), 0);
}

// ---- stale and unknown settles --------------------------------------------

#[test]
fn an_ack_after_redelivery_to_another_member_is_stale() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.join(2, 10);
    f.g.tick(f.at(10));
    assert!(f.redeliver(f.at(10)));
    assert_eq!(f.member_of(1), Some(2));
    let err = f
        .settle(Some(1), &[1], Settle::Ack, f.at(11))
        .expect_err("stale");
    match err {
        RouterError::StaleAck { stale, .. } => {
            assert_eq!(stale[0].reason, "delivered to another member since");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(f.g.counters().stale_acks, 1);
    assert_eq!(f.member_of(1), Some(2), "the new member keeps it");
}

#[test]
fn an_ack_of_an_acknowledged_message_is_stale() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=2), f.t0));
    f.settle(Some(1), &[1], Settle::Ack, f.t0).expect("ack");
    let s = f
        .settle(Some(1), &[1, 2], Settle::Ack, f.t0)
        .expect("one applies");
    assert_eq!(s.applied, vec![id(2).to_string()]);
    assert_eq!(
        s.stale[0].reason,
        "not in flight: already acknowledged or terminated"
    );
    assert_eq!(f.g.counters().stale_acks, 1);
}

#[test]
fn ids_never_delivered_are_refused_and_nothing_changes() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.take_changes();
    let err = f
        .settle(Some(1), &[1, 5], Settle::Ack, f.t0)
        .expect_err("unknown");
    assert!(matches!(err, RouterError::NotInFlight { ref ids, .. } if ids == &[id(5).to_string()]));
    assert_eq!(f.member_of(1), Some(1), "the known id was not acknowledged");
    assert!(f.g.take_changes().is_empty());
}

#[test]
fn a_departed_member_may_still_settle_what_waits_for_redelivery() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    f.g.apply(GroupCommand::Leave { key: 1 }, f.t0)
        .expect("leave");
    let s = f.settle(Some(1), &[1], Settle::Ack, f.t0).expect("ack");
    assert_eq!(s.applied.len(), 1);
    assert_eq!(f.g.unsettled(), 0);
}

// ---- membership -----------------------------------------------------------

#[test]
fn a_member_leaving_mid_flight_hands_its_messages_to_the_others() {
    let mut f = Fixture::new(Strategy::RoundRobin);
    f.join(1, 10);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=4), f.t0));
    f.g.take_deliveries();
    f.g.apply(GroupCommand::Leave { key: 1 }, f.at(1))
        .expect("leave");
    assert_eq!(f.g.ready_ids(None, 10), vec![id(1), id(3)]);
    assert!(f.redeliver(f.at(1)));
    assert_eq!(f.member_of(1), Some(2));
    assert_eq!(f.member_of(3), Some(2));
    assert_eq!(f.g.info(f.at(1)).members[0].inflight, 4);
    assert_eq!(f.g.member_count(), 1);
}

#[test]
fn a_member_joins_once_and_the_member_limit_holds() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    let again = GroupCommand::Join {
        key: 1,
        id: "m-1".into(),
        options: MemberOptions::default(),
    };
    assert!(matches!(
        f.g.apply(again, f.t0),
        Err(RouterError::GroupConflict(_))
    ));
    for k in 2..=MAX_MEMBERS as u64 {
        f.join(k, 1);
    }
    let one_more = GroupCommand::Join {
        key: 99_999,
        id: "m-99999".into(),
        options: MemberOptions::default(),
    };
    assert!(matches!(
        f.g.apply(one_more, f.t0),
        Err(RouterError::GroupConflict(_))
    ));
}

#[test]
fn a_delivery_that_cannot_reach_its_member_is_delivered_again() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    let out = f.g.take_deliveries();
    f.g.undeliverable(out[0].member, id(1), f.t0);
    assert!(f.redeliver(f.t0));
    assert_eq!(
        f.member_of(1),
        Some(2),
        "it avoids the member it failed to reach"
    );
}

// ---- rounds, persistence, restore -----------------------------------------

#[test]
fn a_delivery_settled_within_its_round_is_not_sent() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=2), f.t0));
    f.settle(None, &[1], Settle::Ack, f.t0).expect("ack");
    let out = f.g.take_deliveries();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].message.id, id(2));
}

#[test]
fn a_restored_group_delivers_its_in_flight_messages_again() {
    let t0 = Instant::now();
    let mut g = GroupState::restore(
        "g",
        settings(Strategy::LeastInflight, 3),
        end(10),
        GroupCounters::default(),
        vec![(id(4), 1), (id(6), 3)],
        t0,
    );
    // The one delivered 3 times (the group's maximum) is dead now.
    let dead = g.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id(6));
    assert!(dead[0].reason.contains("the node stopped"));
    assert_eq!(
        g.ready_ids(None, 10),
        Vec::<MessageId>::new(),
        "no member yet"
    );
    g.apply(
        GroupCommand::Join {
            key: 1,
            id: "m-1".into(),
            options: MemberOptions::default(),
        },
        t0,
    )
    .expect("join");
    assert_eq!(g.ready_ids(None, 10), vec![id(4)]);
    let found = vec![(id(4), Lookup::Found(msg(4, None)))];
    assert!(g.redeliver(found, &mut NoPicker, t0));
    let out = g.take_deliveries();
    assert_eq!(out[0].delivery, 2);
}

#[test]
fn lookups_not_here_wait_and_gone_ones_count_as_lost() {
    let t0 = Instant::now();
    let mut g = GroupState::restore(
        "g",
        settings(Strategy::LeastInflight, 5),
        end(10),
        GroupCounters::default(),
        vec![(id(2), 1), (id(3), 1), (id(4), 1)],
        t0,
    );
    g.apply(
        GroupCommand::Join {
            key: 1,
            id: "m-1".into(),
            options: MemberOptions::default(),
        },
        t0,
    )
    .expect("join");
    let found = vec![
        (id(2), Lookup::NotHere),
        (id(3), Lookup::Gone),
        (id(4), Lookup::Found(msg(4, None))),
    ];
    assert!(g.redeliver(found, &mut NoPicker, t0));
    assert_eq!(g.ready_ids(None, 10), vec![id(2)]);
    assert_eq!(g.counters().lost_to_retention, 1);
    // Paging past the message that is not here reaches later ones.
    assert!(g.ready_ids(Some(id(2)), 10).is_empty());
    let c = g.take_changes();
    assert_eq!(c.remove, vec![id(3)]);
    assert_eq!(c.put, vec![(id(4), 2)]);
}

#[test]
fn dead_letter_outcomes_are_counted() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.g.dead_letters_stored(DeadLetterOutcome {
        stored: 2,
        dropped: 1,
        lost: 3,
    });
    let c = f.g.take_changes().counters.expect("counters");
    assert_eq!(
        (c.dead_lettered, c.dead_letters_dropped, c.lost_to_retention),
        (2, 1, 3)
    );
}

#[test]
fn info_reports_members_and_messages() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join_with(
        1,
        MemberOptions {
            ack: AckMode::Auto,
            max_inflight: 3,
            weight: 2,
            labels: vec![("zone".into(), "eu".into())],
            ..MemberOptions::default()
        },
    );
    assert!(f.offer(&msgs(1..=2), f.t0));
    let info = f.g.info(f.at(3));
    assert_eq!(info.inflight, 2);
    assert_eq!(info.members[0].id, "m-1");
    assert_eq!(info.members[0].ack, AckMode::Auto);
    assert_eq!(info.members[0].connected_ms, 3000);
    assert_eq!(info.members[0].labels["zone"], "eu");
    assert_eq!(info.counters.delivered, 2);
    assert_eq!(info.position, end(2).encode());
}

#[test]
fn commands_are_plain_data() {
    let cmds = vec![
        GroupCommand::Join {
            key: 3,
            id: "n-3".into(),
            options: MemberOptions {
                ack: AckMode::Auto,
                max_inflight: 7,
                weight: 2,
                labels: vec![("a".into(), "b".into())],
                ..MemberOptions::default()
            },
        },
        GroupCommand::Settle {
            member: Some("n-3".into()),
            ids: vec![id(1), id(2)],
            op: Settle::Nack(Duration::from_millis(1500)),
        },
        GroupCommand::Settle {
            member: None,
            ids: vec![id(9)],
            op: Settle::Term(Some("why".into())),
        },
        GroupCommand::Leave { key: 3 },
    ];
    let text = serde_json::to_string(&cmds).expect("serialise");
    let back: Vec<GroupCommand> = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, cmds);
}

#[test]
fn replaying_the_same_commands_gives_the_same_state() {
    let run = || {
        let mut f = Fixture::new(Strategy::RoundRobin);
        f.join(1, 2);
        f.join(2, 2);
        assert!(!f.offer(&msgs(1..=6), f.t0));
        f.settle(Some(1), &[1], Settle::Ack, f.at(1)).expect("ack");
        f.settle(Some(2), &[2], Settle::Nack(Duration::ZERO), f.at(1))
            .expect("nack");
        f.g.tick(f.at(11));
        f.redeliver(f.at(11));
        let info = f.g.info(f.at(11));
        (f.g.take_changes(), info.position, info.counters.delivered)
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0.put, b.0.put);
    assert_eq!(a.0.remove, b.0.remove);
    assert_eq!((a.1, a.2), (b.1, b.2));
}
