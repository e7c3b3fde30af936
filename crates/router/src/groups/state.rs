//! The group state machine: which member gets which message, when a
//! message is delivered again, when it is dead-lettered, and what must be
//! persisted. It does no I/O, reads no clock and knows nothing of tokio:
//! the coordinator task feeds it commands, messages read from the log and
//! the current time, and carries out what it asks for.
//!
//! A round of the coordinator looks like this:
//!
//! 1. [`GroupState::apply`] for each waiting command (join, leave, settle),
//!    then [`GroupState::tick`] with the current time (ack deadlines pass,
//!    redelivery delays end);
//! 2. [`GroupState::ready_ids`] names messages due for redelivery; the
//!    coordinator looks them up in the store and hands the results to
//!    [`GroupState::redeliver`]; then, while [`GroupState::room`] is not
//!    zero, it reads new messages after [`GroupState::cursor`] and offers
//!    them with [`GroupState::offer`];
//! 3. it dead-letters [`GroupState::take_dead_letters`] and reports the
//!    outcome with [`GroupState::dead_letters_stored`], persists
//!    [`GroupState::take_changes`] in one atomic write, and only then sends
//!    [`GroupState::take_deliveries`] to the members' connections (a member
//!    whose connection is gone is reported with
//!    [`GroupState::undeliverable`]).
//!
//! So a member never sees a delivery the store does not know is in flight,
//! and the commands, being plain data, can be logged or replicated and
//! replayed into another copy of the state machine.
//!
//! This file is longer than most (about 850 lines, half of them doc
//! comments) because it is one type with one set of invariants: which
//! member holds a message, the timers, the ready set and the members'
//! in-flight counts change together, and splitting the methods across
//! files would hide that. Its inputs and outputs live in [`super::effects`],
//! its tests in `state_tests/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use switchyard_model::{Cursor, Header, Message, MessageId};
use switchyard_plugin_host::Candidate;

pub use super::effects::{
    Applied, DeadLetter, DeadLetterOutcome, GroupChanges, GroupCommand, Lookup, MemberKey,
    Outgoing, Picker,
};
use super::settings::{Settings, topic_names};
use super::types::{
    AckMode, GroupCounters, GroupInfo, MemberInfo, MemberOptions, Settle, Settled, StaleId,
    Strategy,
};
use super::{MAX_MEMBERS, MAX_UNSETTLED};
use crate::RouterError;

/// A member as the state machine sees it.
#[derive(Clone, Debug)]
struct Slot {
    id: String,
    ack: AckMode,
    max_inflight: u32,
    inflight: u32,
    max_inflight_bytes: u64,
    inflight_bytes: u64,
    delivered: u64,
    acked: u64,
    weight: u32,
    labels: Vec<(String, String)>,
    joined: Instant,
    /// The delivery turn in which it last got a message (rotates ties).
    last_turn: u64,
    /// Rendezvous hash seed for key-hash.
    seed: u64,
}

impl Slot {
    fn has_room(&self) -> bool {
        self.inflight < self.max_inflight && self.inflight_bytes < self.max_inflight_bytes
    }

    /// Whether it may take a message of `bytes` now: within both bounds,
    /// or any message when it holds none.
    fn has_room_for(&self, bytes: u64) -> bool {
        self.inflight == 0
            || (self.inflight < self.max_inflight
                && self.inflight_bytes.saturating_add(bytes) <= self.max_inflight_bytes)
    }

    /// Takes back a message of `bytes` it held.
    fn take_back(&mut self, bytes: u64) {
        self.inflight = self.inflight.saturating_sub(1);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
    }

    fn free(&self) -> usize {
        if self.inflight > 0 && self.inflight_bytes >= self.max_inflight_bytes {
            return 0;
        }
        self.max_inflight.saturating_sub(self.inflight) as usize
    }
}

/// A message the group delivered and has not seen settled.
#[derive(Clone, Debug)]
struct Entry {
    deliveries: u32,
    /// Its size as counted against a member's `max_inflight_bytes` (set
    /// when it is delivered).
    bytes: u64,
    state: EntryState,
    /// The member it was delivered to last.
    last_member: Option<MemberKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    /// With a member until the deadline.
    Delivered {
        member: MemberKey,
        deadline: Instant,
    },
    /// Waiting to be delivered again from `due`.
    Waiting { due: Instant },
}

/// The rendezvous hash of `key` for the member with `seed`.
pub(crate) fn rendezvous(seed: u64, key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    seed.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// A consumer group's delivery state. See the module documentation.
pub struct GroupState {
    name: String,
    settings: Settings,
    /// Every message of the group's topics up to here was delivered.
    cursor: Cursor,
    entries: HashMap<MessageId, Entry>,
    /// Ack deadlines and redelivery delays, by time.
    timers: BTreeSet<(Instant, MessageId)>,
    /// Messages due for redelivery, oldest id first.
    ready: BTreeSet<MessageId>,
    members: BTreeMap<MemberKey, Slot>,
    by_id: HashMap<String, MemberKey>,
    turn: u64,
    counters: GroupCounters,
    /// In-flight changes not yet persisted: `Some(deliveries)` to write,
    /// `None` to remove.
    pending: HashMap<MessageId, Option<u32>>,
    cursor_dirty: bool,
    counters_dirty: bool,
    dead: Vec<DeadLetter>,
    outbox: Vec<(MemberKey, Arc<Message>)>,
}

impl GroupState {
    /// The state of a group restored from what was persisted: whatever was
    /// in flight is due for delivery again at once, and counts as delivered
    /// once more, so a message that had reached `max_deliveries` is
    /// dead-lettered now.
    pub fn restore(
        name: &str,
        settings: Settings,
        cursor: Cursor,
        counters: GroupCounters,
        inflight: Vec<(MessageId, u32)>,
        now: Instant,
    ) -> GroupState {
        let mut s = GroupState {
            name: name.to_owned(),
            settings,
            cursor,
            entries: HashMap::with_capacity(inflight.len()),
            timers: BTreeSet::new(),
            ready: BTreeSet::new(),
            members: BTreeMap::new(),
            by_id: HashMap::new(),
            turn: 0,
            counters,
            pending: HashMap::new(),
            cursor_dirty: false,
            counters_dirty: false,
            dead: Vec::new(),
            outbox: Vec::new(),
        };
        let max = s.settings.max_deliveries;
        for (id, deliveries) in inflight {
            if deliveries >= max {
                s.dead.push(DeadLetter {
                    id,
                    deliveries,
                    reason: format!(
                        "delivered {deliveries} times without acknowledgement (last: the node stopped)"
                    ),
                });
                s.pending.insert(id, None);
                continue;
            }
            s.entries.insert(
                id,
                Entry {
                    deliveries,
                    bytes: 0,
                    state: EntryState::Waiting { due: now },
                    last_member: None,
                },
            );
            s.ready.insert(id);
        }
        s
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every message of the group's topics up to this position was delivered.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The counters.
    #[cfg(test)]
    pub fn counters(&self) -> &GroupCounters {
        &self.counters
    }

    /// Connected members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether a member has room for a message.
    pub fn has_room(&self) -> bool {
        self.members.values().any(Slot::has_room)
    }

    /// The earliest ack deadline or end of a redelivery delay.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    /// How many new messages from the log the members can take now: their
    /// free room, within [`MAX_UNSETTLED`]; zero under key-hash while
    /// messages wait for redelivery (a key's earlier messages wait for
    /// their member, and newer ones must not pass them).
    pub fn room(&self) -> usize {
        if self.members.is_empty()
            || (self.settings.strategy == Strategy::KeyHash && !self.ready.is_empty())
        {
            return 0;
        }
        self.free()
            .min(MAX_UNSETTLED.saturating_sub(self.entries.len()))
    }

    fn free(&self) -> usize {
        self.members.values().map(Slot::free).sum()
    }

    /// Applies one command at time `now`.
    pub fn apply(&mut self, cmd: GroupCommand, now: Instant) -> Result<Applied, RouterError> {
        match cmd {
            GroupCommand::Join { key, id, options } => {
                self.join(key, id, options, now)?;
                Ok(Applied::Joined)
            }
            GroupCommand::Leave { key } => {
                self.leave(key, now);
                Ok(Applied::Left)
            }
            GroupCommand::Settle { member, ids, op } => self
                .settle(member.as_deref(), ids, &op, now)
                .map(Applied::Settled),
        }
    }

    fn join(
        &mut self,
        key: MemberKey,
        id: String,
        m: MemberOptions,
        now: Instant,
    ) -> Result<(), RouterError> {
        if self.members.len() >= MAX_MEMBERS {
            return Err(RouterError::GroupConflict(format!(
                "group {} has {MAX_MEMBERS} members already",
                self.name
            )));
        }
        if self.members.contains_key(&key) || self.by_id.contains_key(&id) {
            return Err(RouterError::GroupConflict(format!(
                "group {} has a member {id} already",
                self.name
            )));
        }
        self.by_id.insert(id.clone(), key);
        let seed = rendezvous(key, id.as_bytes());
        self.members.insert(
            key,
            Slot {
                id,
                ack: m.ack,
                max_inflight: m.max_inflight,
                inflight: 0,
                max_inflight_bytes: m.max_inflight_bytes,
                inflight_bytes: 0,
                delivered: 0,
                acked: 0,
                weight: m.weight,
                labels: m.labels,
                joined: now,
                last_turn: 0,
                seed,
            },
        );
        Ok(())
    }

    /// Removes member `key`; what it held is delivered again at once.
    /// Returns how many messages it held.
    fn leave(&mut self, key: MemberKey, now: Instant) -> usize {
        let Some(slot) = self.members.remove(&key) else {
            return 0;
        };
        self.by_id.remove(&slot.id);
        let mut held: Vec<MessageId> = self
            .entries
            .iter()
            .filter(
                |(_, e)| matches!(e.state, EntryState::Delivered { member, .. } if member == key),
            )
            .map(|(&id, _)| id)
            .collect();
        held.sort_unstable();
        for &id in &held {
            self.release(id);
            self.requeue(id, now, now, "its member disconnected");
        }
        held.len()
    }

    /// The member id of `key`, if connected.
    pub fn member_id(&self, key: MemberKey) -> Option<&str> {
        self.members.get(&key).map(|s| s.id.as_str())
    }

    /// Takes a delivered message back from its member (timer and count).
    fn release(&mut self, id: MessageId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        match e.state {
            EntryState::Delivered { member, deadline } => {
                self.timers.remove(&(deadline, id));
                if let Some(s) = self.members.get_mut(&member) {
                    s.take_back(e.bytes);
                }
            }
            EntryState::Waiting { due } => {
                self.timers.remove(&(due, id));
                self.ready.remove(&id);
            }
        }
    }

    /// Queues a released message for redelivery at `due`, or dead-letters
    /// it when it was delivered as often as the group allows.
    fn requeue(&mut self, id: MessageId, due: Instant, now: Instant, why: &str) {
        let max = self.settings.max_deliveries;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.deliveries >= max {
            let n = e.deliveries;
            self.entries.remove(&id);
            self.pending.insert(id, None);
            self.dead.push(DeadLetter {
                id,
                deliveries: n,
                reason: format!("delivered {n} times without acknowledgement (last: {why})"),
            });
            return;
        }
        e.state = EntryState::Waiting { due };
        if due <= now {
            self.ready.insert(id);
        } else {
            self.timers.insert((due, id));
        }
    }

    /// Handles every timer due at `now`: a passed ack deadline takes the
    /// message back from its member, an ended delay makes it ready.
    pub fn tick(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            match e.state {
                EntryState::Delivered { member, deadline } if deadline == t => {
                    if let Some(s) = self.members.get_mut(&member) {
                        s.take_back(e.bytes);
                    }
                    self.counters.expired += 1;
                    self.counters_dirty = true;
                    self.requeue(id, now, now, "the ack timeout passed");
                }
                EntryState::Waiting { due } if due == t => {
                    self.ready.insert(id);
                }
                _ => {}
            }
        }
    }

    fn settle(
        &mut self,
        member: Option<&str>,
        mut ids: Vec<MessageId>,
        op: &Settle,
        now: Instant,
    ) -> Result<Settled, RouterError> {
        ids.sort_unstable();
        ids.dedup();
        // A member id that is not connected any more: everything it held was
        // handed on, so only messages waiting for redelivery are its to settle.
        let acting = member.map(|m| self.by_id.get(m).copied());
        let mut held = Vec::new();
        let mut stale = Vec::new();
        let mut unknown = Vec::new();
        for id in ids {
            match self.entries.get(&id).map(|e| e.state) {
                Some(EntryState::Delivered { member: m, .. }) => match acting {
                    Some(a) if a != Some(m) => stale.push(StaleId {
                        id: id.to_string(),
                        reason: "delivered to another member since",
                    }),
                    _ => held.push(id),
                },
                Some(EntryState::Waiting { .. }) if *op == Settle::Progress => {
                    stale.push(StaleId {
                        id: id.to_string(),
                        reason: "its ack deadline passed; it waits for redelivery",
                    });
                }
                Some(EntryState::Waiting { .. }) => held.push(id),
                None if id.seq <= self.cursor.get(id.origin) => stale.push(StaleId {
                    id: id.to_string(),
                    reason: "not in flight: already acknowledged or terminated",
                }),
                None => unknown.push(id.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(RouterError::NotInFlight {
                group: self.name.clone(),
                ids: unknown,
            });
        }
        if !stale.is_empty() && matches!(op, Settle::Ack | Settle::Term(_)) {
            self.counters.stale_acks += stale.len() as u64;
            self.counters_dirty = true;
        }
        if held.is_empty() {
            return Err(RouterError::StaleAck {
                group: self.name.clone(),
                op: op.name(),
                stale,
            });
        }
        for &id in &held {
            let member = match self.entries.get(&id).map(|e| e.state) {
                Some(EntryState::Delivered { member, .. }) => Some(member),
                _ => None,
            };
            match op {
                Settle::Progress => {
                    let deadline = now + self.settings.ack_timeout;
                    if let Some(e) = self.entries.get_mut(&id)
                        && let EntryState::Delivered {
                            member,
                            deadline: old,
                        } = e.state
                    {
                        self.timers.remove(&(old, id));
                        e.state = EntryState::Delivered { member, deadline };
                        self.timers.insert((deadline, id));
                    }
                }
                Settle::Ack => {
                    self.release(id);
                    self.entries.remove(&id);
                    self.pending.insert(id, None);
                    self.counters.acked += 1;
                    if let Some(s) = member.and_then(|m| self.members.get_mut(&m)) {
                        s.acked += 1;
                    }
                }
                Settle::Nack(delay) => {
                    self.release(id);
                    self.counters.nacked += 1;
                    self.requeue(id, now + *delay, now, "a member asked for redelivery");
                }
                Settle::Term(reason) => {
                    self.release(id);
                    let n = self.entries.remove(&id).map_or(0, |e| e.deliveries);
                    self.pending.insert(id, None);
                    self.counters.terminated += 1;
                    let reason = match reason {
                        Some(r) => format!("terminated by a member: {r}"),
                        None => "terminated by a member".to_owned(),
                    };
                    self.dead.push(DeadLetter {
                        id,
                        deliveries: n,
                        reason,
                    });
                }
            }
        }
        self.counters_dirty = true;
        Ok(Settled {
            applied: held.iter().map(ToString::to_string).collect(),
            stale,
        })
    }

    /// Up to `limit` messages due for redelivery after `after`, oldest first.
    pub fn ready_ids(&self, after: Option<MessageId>, limit: usize) -> Vec<MessageId> {
        let limit = limit.min(self.free());
        match after {
            Some(a) => self
                .ready
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .take(limit)
                .copied()
                .collect(),
            None => self.ready.iter().take(limit).copied().collect(),
        }
    }

    /// Delivers again the messages [`GroupState::ready_ids`] named, as
    /// looked up in the log, in order. Returns `false` when it stopped
    /// because no member may take the next message (the rest stay ready).
    pub fn redeliver(
        &mut self,
        found: Vec<(MessageId, Lookup)>,
        picker: &mut dyn Picker,
        now: Instant,
    ) -> bool {
        for (id, lookup) in found {
            if !self.ready.contains(&id) {
                continue;
            }
            match lookup {
                // It stays ready until the pulls bring it.
                Lookup::NotHere => {}
                Lookup::Gone => {
                    self.ready.remove(&id);
                    self.entries.remove(&id);
                    self.pending.insert(id, None);
                    self.counters.lost_to_retention += 1;
                    self.counters_dirty = true;
                }
                Lookup::Found(m) => {
                    if self.free() == 0 {
                        return false;
                    }
                    let avoid = self.entries.get(&id).and_then(|e| e.last_member);
                    let Some(key) = self.choose(&m, avoid, picker) else {
                        return false;
                    };
                    self.ready.remove(&id);
                    self.deliver(key, &m, now);
                }
            }
        }
        true
    }

    /// Offers new messages read from the log after [`GroupState::cursor`],
    /// in log order; `end` is the read's position after them (it may lie
    /// beyond the last message). Members take them in order until one has
    /// no taker. Returns whether every message was taken (the position then
    /// moves to `end`).
    pub fn offer(
        &mut self,
        messages: &[Arc<Message>],
        end: &Cursor,
        picker: &mut dyn Picker,
        now: Instant,
    ) -> bool {
        let mut position = self.cursor.clone();
        let mut all = true;
        for m in messages {
            match self.choose(m, None, picker) {
                Some(key) => {
                    position.advance(m.id.origin, m.id.seq);
                    self.deliver(key, m, now);
                }
                None => {
                    all = false;
                    break;
                }
            }
        }
        let next = if all { end.clone() } else { position };
        if next != self.cursor {
            self.cursor = next;
            self.cursor_dirty = true;
        }
        all
    }

    /// Chooses the member for `m`: `None` when no member may take it now.
    /// A redelivery avoids `avoid` (the member that had it last) when
    /// another member has room, except under key-hash, where the key decides.
    fn choose(
        &mut self,
        m: &Message,
        avoid: Option<MemberKey>,
        picker: &mut dyn Picker,
    ) -> Option<MemberKey> {
        let bytes = weight(m);
        let skip = avoid.filter(|a| {
            self.settings.strategy != Strategy::KeyHash
                && self
                    .members
                    .iter()
                    .any(|(k, s)| k != a && s.has_room_for(bytes))
        });
        let open = move |k: &MemberKey, s: &Slot| s.has_room_for(bytes) && Some(*k) != skip;
        let least = |members: &BTreeMap<MemberKey, Slot>| {
            members
                .iter()
                .filter(|(k, s)| open(k, s))
                .min_by_key(|(_, s)| (s.inflight, s.last_turn))
                .map(|(&k, _)| k)
        };
        match &self.settings.strategy {
            Strategy::LeastInflight => least(&self.members),
            Strategy::RoundRobin => self
                .members
                .iter()
                .filter(|(k, s)| open(k, s))
                .min_by_key(|(_, s)| s.last_turn)
                .map(|(&k, _)| k),
            Strategy::KeyHash => match &m.key {
                Some(key) => self
                    .members
                    .iter()
                    .max_by_key(|(_, s)| rendezvous(s.seed, key))
                    .filter(|(_, s)| s.has_room_for(bytes))
                    .map(|(&k, _)| k),
                None => least(&self.members),
            },
            Strategy::Plugin(name) => {
                let (keys, candidates): (Vec<MemberKey>, Vec<Candidate>) = self
                    .members
                    .iter()
                    .filter(|(k, s)| open(k, s))
                    .map(|(&k, s)| (k, candidate(s)))
                    .unzip();
                if keys.is_empty() {
                    return None;
                }
                match picker.pick(name, m, &candidates) {
                    Ok(Some(i)) if i < keys.len() => Some(keys[i]),
                    Ok(_) => least(&self.members),
                    Err(e) => {
                        self.counters.pick_errors += 1;
                        self.counters_dirty = true;
                        tracing::debug!(group = %self.name, error = %e, "pick plugin failed");
                        least(&self.members)
                    }
                }
            }
        }
    }

    /// Hands `m` to member `key`.
    fn deliver(&mut self, key: MemberKey, m: &Arc<Message>, now: Instant) {
        let id = m.id;
        let deadline = now + self.settings.ack_timeout;
        let bytes = weight(m);
        let e = self.entries.entry(id).or_insert(Entry {
            deliveries: 0,
            bytes,
            state: EntryState::Waiting { due: deadline },
            last_member: None,
        });
        e.deliveries += 1;
        e.bytes = bytes;
        e.last_member = Some(key);
        e.state = EntryState::Delivered {
            member: key,
            deadline,
        };
        if e.deliveries > 1 {
            self.counters.redelivered += 1;
        }
        self.pending.insert(id, Some(e.deliveries));
        self.timers.insert((deadline, id));
        self.counters.delivered += 1;
        self.counters_dirty = true;
        self.turn += 1;
        if let Some(s) = self.members.get_mut(&key) {
            s.inflight += 1;
            s.inflight_bytes += bytes;
            s.delivered += 1;
            s.last_turn = self.turn;
        }
        self.outbox.push((key, m.clone()));
    }

    /// The messages to dead-letter that this round decided.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    /// Counts what became of the dead letters taken last.
    pub fn dead_letters_stored(&mut self, outcome: DeadLetterOutcome) {
        self.counters.dead_lettered += outcome.stored;
        self.counters.dead_letters_dropped += outcome.dropped;
        self.counters.lost_to_retention += outcome.lost;
        self.counters_dirty = true;
    }

    /// What changed since the last call, to persist atomically.
    pub fn take_changes(&mut self) -> GroupChanges {
        let mut c = GroupChanges {
            cursor: self.cursor_dirty.then(|| self.cursor.clone()),
            counters: self.counters_dirty.then_some(self.counters),
            ..GroupChanges::default()
        };
        for (id, v) in self.pending.drain() {
            match v {
                Some(n) => c.put.push((id, n)),
                None => c.remove.push(id),
            }
        }
        c.put.sort_unstable();
        c.remove.sort_unstable();
        self.cursor_dirty = false;
        self.counters_dirty = false;
        c
    }

    /// Forgets the changes not yet taken (the group was deleted).
    pub fn discard_changes(&mut self) {
        self.pending.clear();
        self.cursor_dirty = false;
        self.counters_dirty = false;
        self.dead.clear();
        self.outbox.clear();
    }

    /// The deliveries of this round that still stand (a message settled or
    /// taken back within the round is left out). Call once the round's
    /// changes are persisted.
    pub fn take_deliveries(&mut self) -> Vec<Outgoing> {
        let outbox = std::mem::take(&mut self.outbox);
        let mut out = Vec::with_capacity(outbox.len());
        for (key, message) in outbox {
            if let Some(Entry {
                deliveries,
                state: EntryState::Delivered { member, .. },
                ..
            }) = self.entries.get(&message.id)
                && *member == key
            {
                out.push(Outgoing {
                    member: key,
                    delivery: *deliveries,
                    message,
                });
            }
        }
        out
    }

    /// Drops the deliveries not yet taken (they were not persisted).
    pub fn drop_deliveries(&mut self) {
        self.outbox.clear();
    }

    /// A delivery could not reach member `key` (its connection is gone):
    /// the message is delivered again at once.
    pub fn undeliverable(&mut self, key: MemberKey, id: MessageId, now: Instant) {
        if matches!(
            self.entries.get(&id).map(|e| e.state),
            Some(EntryState::Delivered { member, .. }) if member == key
        ) {
            self.release(id);
            self.requeue(id, now, now, "its member disconnected");
        }
    }

    /// The group as reported by info (`coordinator` and `lag` are left to
    /// the caller).
    pub fn info(&self, now: Instant) -> GroupInfo {
        let inflight = self
            .entries
            .values()
            .filter(|e| matches!(e.state, EntryState::Delivered { .. }))
            .count() as u64;
        GroupInfo {
            name: self.name.clone(),
            topics: topic_names(&self.settings.topics),
            strategy: self.settings.strategy.to_string(),
            ack_timeout_ms: self.settings.ack_timeout.as_millis() as u64,
            max_deliveries: self.settings.max_deliveries,
            created_ms: self.settings.created_ms,
            coordinator: String::new(),
            epoch: self.settings.epoch,
            position: self.cursor.encode(),
            members: self
                .members
                .values()
                .map(|s| MemberInfo {
                    id: s.id.clone(),
                    ack: s.ack,
                    max_inflight: s.max_inflight,
                    inflight: s.inflight,
                    max_inflight_bytes: s.max_inflight_bytes,
                    inflight_bytes: s.inflight_bytes,
                    delivered: s.delivered,
                    acked: s.acked,
                    weight: s.weight,
                    labels: s.labels.iter().cloned().collect(),
                    connected_ms: now.saturating_duration_since(s.joined).as_millis() as u64,
                })
                .collect(),
            inflight,
            pending_redelivery: self.entries.len() as u64 - inflight,
            lag: 0,
            counters: self.counters,
        }
    }

    /// Messages in flight or waiting for redelivery.
    #[cfg(test)]
    fn unsettled(&self) -> usize {
        self.entries.len()
    }

    /// The ack deadline of a delivered message, or when a waiting one is due.
    #[cfg(test)]
    fn due(&self, id: MessageId) -> Option<(Option<MemberKey>, Instant)> {
        self.entries.get(&id).map(|e| match e.state {
            EntryState::Delivered { member, deadline } => (Some(member), deadline),
            EntryState::Waiting { due } => (None, due),
        })
    }
}

/// A message's size as counted against a member's `max_inflight_bytes`:
/// payload, topic and headers.
fn weight(m: &Message) -> u64 {
    let headers: usize = m.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    (m.payload.len() + m.topic.as_str().len() + headers) as u64
}

fn candidate(s: &Slot) -> Candidate {
    Candidate {
        id: s.id.clone(),
        inflight: s.inflight,
        weight: s.weight,
        labels: s
            .labels
            .iter()
            .map(|(n, v)| Header {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "state_tests/mod.rs"]
mod tests;
