//! Tests of the group state machine with hand-fed time: a fixture here,
//! the tests by subject in the submodules.

mod settling;
mod strategies;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_model::{Cursor, Message, MessageId, NodeId, Timestamp, TopicSet};
use switchyard_plugin_host::Candidate;

pub(super) use super::*;
pub(super) use crate::groups::types::{AckMode, GroupCounters, MemberOptions, Settle, Strategy};

pub(super) const ORIGIN: NodeId = NodeId(7);
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn settings(strategy: Strategy, max_deliveries: u32) -> Settings {
    Settings {
        topics: TopicSet::new(vec!["t.>".parse().expect("pattern")]),
        strategy,
        ack_timeout: TIMEOUT,
        max_deliveries,
        created_ms: 0,
        epoch: 0,
    }
}

pub(super) fn id(seq: u64) -> MessageId {
    MessageId {
        origin: ORIGIN,
        seq,
    }
}

pub(super) fn msg(seq: u64, key: Option<&str>) -> Arc<Message> {
    Arc::new(Message {
        id: id(seq),
        topic: "t.a".parse().expect("topic"),
        stream_seq: seq,
        timestamp: Timestamp::from_millis(seq),
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        headers: Vec::new(),
        payload: Bytes::from_static(b"x"),
    })
}

pub(super) fn msgs(range: std::ops::RangeInclusive<u64>) -> Vec<Arc<Message>> {
    range.map(|s| msg(s, None)).collect()
}

pub(super) fn end(seq: u64) -> Cursor {
    let mut c = Cursor::earliest();
    c.advance(ORIGIN, seq);
    c
}

/// A picker for groups that use no plugin: never called.
pub(super) struct NoPicker;

impl Picker for NoPicker {
    fn pick(&mut self, _: &str, _: &Message, _: &[Candidate]) -> Result<Option<usize>, String> {
        panic!("no pick plugin in this group")
    }
}

/// A pick plugin stand-in answering from a script and recording its calls.
pub(super) struct ScriptedPicker {
    answer: Result<Option<usize>, String>,
    pub(super) calls: Vec<Vec<Candidate>>,
}

impl ScriptedPicker {
    pub(super) fn new(answer: Result<Option<usize>, String>) -> Self {
        ScriptedPicker {
            answer,
            calls: Vec::new(),
        }
    }
}

impl Picker for ScriptedPicker {
    fn pick(
        &mut self,
        plugin: &str,
        _: &Message,
        candidates: &[Candidate],
    ) -> Result<Option<usize>, String> {
        assert_eq!(plugin, "weights");
        self.calls.push(candidates.to_vec());
        self.answer.clone()
    }
}

/// A group with its clock.
pub(super) struct Fixture {
    pub(super) g: GroupState,
    pub(super) t0: Instant,
}

impl Fixture {
    pub(super) fn new(strategy: Strategy) -> Self {
        Self::with(strategy, 3)
    }

    pub(super) fn with(strategy: Strategy, max_deliveries: u32) -> Self {
        let t0 = Instant::now();
        let g = GroupState::restore(
            "g",
            settings(strategy, max_deliveries),
            Cursor::earliest(),
            GroupCounters::default(),
            Vec::new(),
            t0,
        );
        Fixture { g, t0 }
    }

    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    pub(super) fn join(&mut self, key: MemberKey, max_inflight: u32) {
        self.join_with(
            key,
            MemberOptions {
                max_inflight,
                ..MemberOptions::default()
            },
        );
    }

    pub(super) fn join_with(&mut self, key: MemberKey, options: MemberOptions) {
        let cmd = GroupCommand::Join {
            key,
            id: format!("m-{key}"),
            options,
        };
        assert_eq!(self.g.apply(cmd, self.t0).expect("join"), Applied::Joined);
    }

    pub(super) fn offer(&mut self, m: &[Arc<Message>], now: Instant) -> bool {
        let last = m.last().map_or(0, |m| m.id.seq);
        self.g.offer(m, &end(last), &mut NoPicker, now)
    }

    /// Member keys of this round's deliveries, in order.
    pub(super) fn delivered_to(&mut self) -> Vec<MemberKey> {
        self.g.take_deliveries().iter().map(|o| o.member).collect()
    }

    pub(super) fn settle(
        &mut self,
        member: Option<MemberKey>,
        seqs: &[u64],
        op: Settle,
        now: Instant,
    ) -> Result<Settled, RouterError> {
        let cmd = GroupCommand::Settle {
            member: member.map(|k| format!("m-{k}")),
            ids: seqs.iter().map(|&s| id(s)).collect(),
            op,
        };
        self.g.apply(cmd, now).map(|a| match a {
            Applied::Settled(s) => s,
            other => panic!("unexpected {other:?}"),
        })
    }

    /// Looks up every ready message (all are in the log) and redelivers.
    pub(super) fn redeliver(&mut self, now: Instant) -> bool {
        let found = self
            .g
            .ready_ids(None, usize::MAX)
            .into_iter()
            .map(|i| (i, Lookup::Found(msg(i.seq, None))))
            .collect();
        self.g.redeliver(found, &mut NoPicker, now)
    }

    pub(super) fn member_of(&self, seq: u64) -> Option<MemberKey> {
        self.g.due(id(seq)).and_then(|d| d.0)
    }
}
