//! Strategies, `max_inflight` and the group's position.

use std::time::Duration;

use super::*;

// ---- strategies -----------------------------------------------------------

#[test]
fn least_inflight_spreads_messages_evenly() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=4), f.t0));
    let to = f.delivered_to();
    assert_eq!(to.iter().filter(|&&k| k == 1).count(), 2);
    assert_eq!(to.iter().filter(|&&k| k == 2).count(), 2);
}

#[test]
fn least_inflight_fills_the_least_loaded_member_first() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    assert!(f.offer(&msgs(1..=3), f.t0));
    f.join(2, 10);
    assert!(f.offer(&msgs(4..=6), f.t0));
    let to = f.delivered_to();
    assert_eq!(to, vec![1, 1, 1, 2, 2, 2]);
}

#[test]
fn least_inflight_rotates_ties() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=1), f.t0));
    assert_eq!(f.delivered_to(), vec![1]);
    f.settle(None, &[1], Settle::Ack, f.t0).expect("ack");
    // Both have nothing in flight again; the other member's turn.
    assert!(f.offer(&msgs(2..=2), f.t0));
    assert_eq!(f.delivered_to(), vec![2]);
}

#[test]
fn round_robin_takes_turns() {
    let mut f = Fixture::new(Strategy::RoundRobin);
    for k in 1..=3 {
        f.join(k, 10);
    }
    assert!(f.offer(&msgs(1..=6), f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2, 3, 1, 2, 3]);
}

#[test]
fn round_robin_skips_a_full_member() {
    let mut f = Fixture::new(Strategy::RoundRobin);
    f.join(1, 1);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=4), f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2, 2, 2]);
}

#[test]
fn key_hash_sends_each_key_to_one_member() {
    let mut f = Fixture::new(Strategy::KeyHash);
    for k in 1..=3 {
        f.join(k, 1000);
    }
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let batch: Vec<_> = (1..=80)
        .map(|s| msg(s, Some(keys[(s as usize) % keys.len()])))
        .collect();
    assert!(f.g.offer(&batch, &end(80), &mut NoPicker, f.t0));
    let mut owner = std::collections::HashMap::new();
    for o in f.g.take_deliveries() {
        let key = o.message.key.clone().expect("key");
        let prev = owner.insert(key.clone(), o.member);
        assert!(prev.is_none_or(|p| p == o.member), "key {key:?} moved");
    }
    let members: std::collections::HashSet<_> = owner.values().collect();
    assert!(members.len() > 1, "every key went to one member");
}

#[test]
fn key_hash_without_a_key_goes_to_the_least_loaded_member() {
    let mut f = Fixture::new(Strategy::KeyHash);
    f.join(1, 10);
    f.join(2, 10);
    assert!(f.offer(&msgs(1..=4), f.t0));
    let to = f.delivered_to();
    assert_eq!(to.iter().filter(|&&k| k == 1).count(), 2);
}

#[test]
fn key_hash_waits_for_the_owner_instead_of_passing_it() {
    let mut f = Fixture::new(Strategy::KeyHash);
    f.join(1, 1);
    f.join(2, 1);
    let batch = vec![msg(1, Some("k")), msg(2, Some("k")), msg(3, Some("other"))];
    // The key's owner takes the first; the second waits for it and the
    // third must not pass it.
    assert!(!f.g.offer(&batch, &end(3), &mut NoPicker, f.t0));
    assert_eq!(f.g.cursor(), &end(1));
    assert_eq!(f.delivered_to().len(), 1);
}

#[test]
fn key_hash_reads_nothing_new_while_messages_wait_for_redelivery() {
    let mut f = Fixture::new(Strategy::KeyHash);
    f.join(1, 5);
    assert!(f.g.offer(&[msg(1, Some("k"))], &end(1), &mut NoPicker, f.t0));
    f.settle(Some(1), &[1], Settle::Nack(Duration::ZERO), f.t0)
        .expect("nack");
    assert_eq!(f.g.room(), 0);
    assert!(f.redeliver(f.t0));
    assert_eq!(f.g.room(), 4);
}

#[test]
fn pick_plugin_chooses_among_members_with_room() {
    let mut f = Fixture::new(Strategy::Plugin("weights".into()));
    f.join(1, 1);
    f.join_with(
        2,
        MemberOptions {
            weight: 5,
            labels: vec![("zone".into(), "eu".into())],
            ..MemberOptions::default()
        },
    );
    f.join(3, 10);
    let mut picker = ScriptedPicker::new(Ok(Some(1)));
    assert!(f.g.offer(&msgs(1..=2), &end(2), &mut picker, f.t0));
    assert_eq!(f.delivered_to(), vec![2, 2]);
    let first = &picker.calls[0];
    assert_eq!(first.len(), 3);
    assert_eq!(first[1].id, "m-2");
    assert_eq!(first[1].weight, 5);
    assert_eq!(first[1].labels[0].name, "zone");
    // Member 2 got the first message; all three still have room, and the
    // plugin sees the new count.
    assert_eq!(picker.calls[1].len(), 3);
    assert_eq!(picker.calls[1][1].inflight, 1);
}

#[test]
fn pick_plugin_sees_only_members_with_room() {
    let mut f = Fixture::new(Strategy::Plugin("weights".into()));
    f.join(1, 1);
    f.join(2, 10);
    let mut picker = ScriptedPicker::new(Ok(Some(0)));
    assert!(f.g.offer(&msgs(1..=3), &end(3), &mut picker, f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2, 2]);
    assert_eq!(picker.calls[1].len(), 1);
    assert_eq!(picker.calls[1][0].id, "m-2");
}

#[test]
fn pick_plugin_that_declines_leaves_it_to_the_least_loaded() {
    let mut f = Fixture::new(Strategy::Plugin("weights".into()));
    f.join(1, 10);
    f.join(2, 10);
    let mut picker = ScriptedPicker::new(Ok(None));
    assert!(f.g.offer(&msgs(1..=4), &end(4), &mut picker, f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2, 1, 2]);
    assert_eq!(f.g.counters().pick_errors, 0);
}

#[test]
fn pick_plugin_failure_is_counted_and_the_least_loaded_gets_it() {
    let mut f = Fixture::new(Strategy::Plugin("weights".into()));
    f.join(1, 10);
    f.join(2, 10);
    let mut picker = ScriptedPicker::new(Err("trap".into()));
    assert!(f.g.offer(&msgs(1..=2), &end(2), &mut picker, f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2]);
    assert_eq!(f.g.counters().pick_errors, 2);
}

#[test]
fn pick_plugin_answer_out_of_range_falls_back() {
    let mut f = Fixture::new(Strategy::Plugin("weights".into()));
    f.join(1, 10);
    let mut picker = ScriptedPicker::new(Ok(Some(9)));
    assert!(f.g.offer(&msgs(1..=1), &end(1), &mut picker, f.t0));
    assert_eq!(f.delivered_to(), vec![1]);
}

// ---- max_inflight and the position ----------------------------------------

#[test]
fn max_inflight_caps_what_a_member_holds() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 2);
    assert_eq!(f.g.room(), 2);
    assert!(!f.offer(&msgs(1..=5), f.t0));
    assert_eq!(f.delivered_to(), vec![1, 1]);
    assert_eq!(
        f.g.cursor(),
        &end(2),
        "the position stops after what was taken"
    );
    assert_eq!(f.g.room(), 0);
    assert!(!f.g.has_room());
    f.settle(Some(1), &[1], Settle::Ack, f.t0).expect("ack");
    assert_eq!(f.g.room(), 1);
}

/// A message of `bytes` payload bytes on `t.a` (3 bytes of topic).
fn sized(seq: u64, bytes: usize) -> Arc<Message> {
    let mut m = (*msg(seq, None)).clone();
    m.payload = Bytes::from(vec![b'x'; bytes]);
    Arc::new(m)
}

#[test]
fn max_inflight_bytes_caps_what_a_member_holds_in_bytes() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join_with(
        1,
        MemberOptions {
            max_inflight: 100,
            max_inflight_bytes: 1_000,
            ..MemberOptions::default()
        },
    );
    // 3 × (297 + 3) = 900 bytes fit; a fourth would make 1,200.
    let batch: Vec<_> = (1..=5).map(|s| sized(s, 297)).collect();
    assert!(!f.offer(&batch, f.t0));
    assert_eq!(f.delivered_to(), vec![1, 1, 1]);
    assert_eq!(f.g.cursor(), &end(3));
    let info = f.g.info(f.t0);
    assert_eq!(info.members[0].inflight_bytes, 900);
    assert_eq!(info.members[0].max_inflight_bytes, 1_000);
    // An ack gives back its bytes.
    f.settle(Some(1), &[1], Settle::Ack, f.t0).expect("ack");
    assert_eq!(f.g.info(f.t0).members[0].inflight_bytes, 600);
    assert!(!f.offer(&batch[3..], f.t0));
    assert_eq!(f.delivered_to(), vec![1]);
    // An expired deadline gives back its bytes too.
    f.g.tick(f.at(TIMEOUT.as_secs() + 1));
    assert_eq!(f.g.info(f.t0).members[0].inflight_bytes, 0);
}

#[test]
fn a_member_holding_nothing_takes_a_message_over_its_byte_bound() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join_with(
        1,
        MemberOptions {
            max_inflight_bytes: 100,
            ..MemberOptions::default()
        },
    );
    assert!(!f.offer(&[sized(1, 5_000), sized(2, 1)], f.t0));
    assert_eq!(f.delivered_to(), vec![1], "one, however large");
    assert_eq!(f.g.room(), 0, "a member over its bound has no room");
    assert!(!f.g.has_room());
}

#[test]
fn a_message_goes_to_a_member_with_room_for_its_bytes() {
    let mut f = Fixture::new(Strategy::RoundRobin);
    f.join_with(
        1,
        MemberOptions {
            max_inflight_bytes: 1_000,
            ..MemberOptions::default()
        },
    );
    f.join_with(
        2,
        MemberOptions {
            max_inflight_bytes: 10_000,
            ..MemberOptions::default()
        },
    );
    // Member 1 takes 500; the next 800 fit only member 2, and so on.
    assert!(f.offer(&[sized(1, 497), sized(2, 797), sized(3, 797)], f.t0));
    assert_eq!(f.delivered_to(), vec![1, 2, 2]);
}

#[test]
fn a_batch_taken_whole_moves_the_position_to_its_end() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    f.join(1, 10);
    // The read looked at messages up to 9 and found two of the group's topics.
    assert!(f.g.offer(&msgs(3..=4), &end(9), &mut NoPicker, f.t0));
    assert_eq!(f.g.cursor(), &end(9));
    assert_eq!(f.g.take_changes().cursor, Some(end(9)));
}

#[test]
fn without_members_nothing_is_taken() {
    let mut f = Fixture::new(Strategy::LeastInflight);
    assert_eq!(f.g.room(), 0);
    assert!(!f.offer(&msgs(1..=1), f.t0));
    assert_eq!(f.g.cursor(), &Cursor::earliest());
}
