//! What a feed answer may claim. The envelope proves an answer came from a
//! node with the cluster key, for this request; these checks keep a peer
//! that is faulty (or holds the key and lies) from making this node skip
//! messages, drop a stream or move its clock into the future. An answer
//! that fails any of them is refused as a whole: nothing of it is stored.
//!
//! The rules follow from how a node answers (see `answer` in this module's
//! parent and `docs/api.md`, "POST /cluster/v1/feed"):
//!
//! - `origin` is the origin asked for (the peer itself, or `origin` of the
//!   request).
//! - A head request (`limit` 0) carries no messages and no trims, and
//!   `through` equals `head`.
//! - `after <= through <= head`: the answering node reads its log, then
//!   reads its end (`head`), so it looked no further than the end. With
//!   `until` set, `through <= max(until, after)`.
//! - At most `limit` messages (taken as 1 to [`FEED_LIMIT`]), each with an
//!   origin sequence in `(after, through]`, strictly increasing, and with
//!   strictly increasing timestamps (one origin's timestamps increase with
//!   its sequence).
//! - `through` may pass the last message sent (or `after` when none is
//!   sent): the answering node also looked at messages that do not match,
//!   and a read cut by its limit ends just before the next message it
//!   found, past any that retention removed; so the bound on `through` is
//!   the head, not the last message.
//! - Each stream sequence is at least 1 and at most the message's origin
//!   sequence (a stream counts only some of its origin's messages), and
//!   within one answer the messages of one topic have increasing stream
//!   sequences. Not necessarily consecutive: a node answering for another
//!   origin holds what it was given of that origin's streams, which may
//!   lack messages (the store reads a stream that resumes past its next
//!   sequence as one with a gap, and tells readers so). Refusing such an
//!   answer would stop the pull from that peer for good, since every
//!   retry gets the same answer.
//! - Every sequence is at most [`MAX_SEQ`].
//!
//! A timestamp far ahead of this node's clock is not refused: a node whose
//! wall clock was stepped forward and back keeps stamping ahead (its
//! hybrid logical clock never goes back) until its wall clock catches up,
//! and refusing its messages would stop its replication for that long.
//! The store keeps them as stamped, and lets them move this node's clock
//! at most a bounded step past its wall clock (see the store's ingest).

use std::collections::HashMap;

use switchyard_cluster::transport::{FeedRequest, FeedResponse};

use super::FEED_LIMIT;

/// Largest origin or stream sequence accepted: at a million messages a
/// second an origin reaches it after more than 2,000 years, so a larger
/// value can only be a fault.
pub const MAX_SEQ: u64 = 1 << 56;

/// Why a feed answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(detail: String) -> Result<(), Violation> {
    Err(Violation(detail))
}

/// Checks `resp`, the answer of peer `peer` to `req`. See the module's
/// rules.
pub fn check_answer(peer: u64, req: &FeedRequest, resp: &FeedResponse) -> Result<(), Violation> {
    let origin = if req.origin != 0 { req.origin } else { peer };
    if resp.origin != origin {
        return bad(format!(
            "answered for origin {:016x}, not {origin:016x}",
            resp.origin
        ));
    }
    if resp.head > MAX_SEQ || resp.through > MAX_SEQ {
        return bad(format!(
            "through {} or head {} past {MAX_SEQ}",
            resp.through, resp.head
        ));
    }
    if let Some((o, t)) = resp.held.iter().find(|(_, t)| *t > MAX_SEQ) {
        return bad(format!("holds origin {o:016x} through {t}, past {MAX_SEQ}"));
    }
    if req.limit == 0 {
        if !resp.messages.is_empty() || !resp.trimmed.is_empty() || resp.through != resp.head {
            return bad("a head answer with messages, trims or through not at its head".into());
        }
        return Ok(());
    }
    if resp.through < req.after {
        return bad(format!(
            "through {} before the request's after {}",
            resp.through, req.after
        ));
    }
    // An answer of no progress (`through` at the request's `after`, no
    // messages) claims nothing, whatever the head: a node asked for
    // another origin from a position past what it holds answers so.
    let no_progress = resp.through == req.after && resp.messages.is_empty();
    if resp.through > resp.head && !no_progress {
        return bad(format!(
            "through {} past its head {}",
            resp.through, resp.head
        ));
    }
    if req.until != 0 && resp.through > req.until.max(req.after) {
        return bad(format!(
            "through {} past the request's until {}",
            resp.through, req.until
        ));
    }
    let limit = req.limit.clamp(1, FEED_LIMIT) as usize;
    if resp.messages.len() > limit {
        return bad(format!(
            "{} messages for a limit of {limit}",
            resp.messages.len()
        ));
    }
    let mut last_seq = req.after;
    let mut last_ts = 0u64;
    let mut streams: HashMap<&str, u64> = HashMap::new();
    for m in &resp.messages {
        if m.seq <= last_seq || m.seq > resp.through {
            return bad(format!(
                "message {} out of order or outside ({}, {}]",
                m.seq, req.after, resp.through
            ));
        }
        last_seq = m.seq;
        if m.timestamp <= last_ts {
            return bad(format!(
                "message {}: its timestamp does not increase",
                m.seq
            ));
        }
        last_ts = m.timestamp;
        if m.stream_seq == 0 || m.stream_seq > m.seq {
            return bad(format!(
                "message {}: stream sequence {} outside 1 to its origin sequence",
                m.seq, m.stream_seq
            ));
        }
        if let Some(prev) = streams.insert(m.topic.as_str(), m.stream_seq)
            && m.stream_seq <= prev
        {
            return bad(format!(
                "message {}: stream sequence {} of {} follows {prev}",
                m.seq, m.stream_seq, m.topic
            ));
        }
    }
    for (topic, stream_seq, origin_seq) in &resp.trimmed {
        if *origin_seq > resp.head.max(resp.through) || *stream_seq > *origin_seq {
            return bad(format!(
                "a trim of {topic} at stream sequence {stream_seq}, origin sequence {origin_seq}, past the head {}",
                resp.head
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_cluster::transport::WireMessage;
    use switchyard_model::Timestamp;

    const NOW: u64 = 1_800_000_000_000;

    fn req() -> FeedRequest {
        FeedRequest {
            patterns: vec!["a.>".into()],
            after: 10,
            until: 0,
            limit: 3,
            wait_ms: 5000,
            origin: 0,
            from: 0,
        }
    }

    fn msg(seq: u64, topic: &str, stream_seq: u64, ms: u64) -> WireMessage {
        WireMessage {
            seq,
            topic: topic.into(),
            stream_seq,
            timestamp: Timestamp::from_millis(ms).0,
            key: None,
            headers: Vec::new(),
            payload: Vec::new(),
        }
    }

    fn resp(through: u64, head: u64, messages: Vec<WireMessage>) -> FeedResponse {
        FeedResponse {
            origin: 7,
            through,
            messages,
            trimmed: Vec::new(),
            head,
            held: Vec::new(),
        }
    }

    fn ok(r: &FeedRequest, a: &FeedResponse) -> bool {
        check_answer(7, r, a).is_ok()
    }

    #[test]
    fn honest_answers_pass() {
        let r = req();
        // Nothing new at the end of the wait.
        assert!(ok(&r, &resp(10, 10, vec![])));
        // Only messages that do not match: through moves, up to the head.
        assert!(ok(&r, &resp(14, 14, vec![])));
        assert!(ok(&r, &resp(14, 20, vec![])));
        // Messages, then non-matching ones up to the head.
        let two = vec![msg(11, "a.x", 4, NOW - 5), msg(13, "a.x", 5, NOW - 4)];
        assert!(ok(&r, &resp(13, 13, two.clone())));
        assert!(ok(&r, &resp(15, 16, two)));
        // A full answer ends at its last message.
        let three = vec![
            msg(11, "a.x", 4, NOW - 5),
            msg(12, "a.y", 1, NOW - 4),
            msg(13, "a.x", 5, NOW + 59_000),
        ];
        assert!(ok(&r, &resp(13, 30, three)));
        // A stream with a gap (its holder lacks some of it).
        let gapped = vec![msg(11, "a.x", 4, NOW - 5), msg(14, "a.x", 7, NOW - 4)];
        assert!(ok(&r, &resp(14, 14, gapped)));
        // A peer whose clock was stepped ahead: stored as stamped.
        assert!(ok(
            &r,
            &resp(11, 11, vec![msg(11, "a.x", 1, NOW + 3_600_000)])
        ));
        // A holder behind the asker: no progress, its head below `after`.
        assert!(ok(
            &FeedRequest { origin: 9, ..req() },
            &FeedResponse {
                origin: 9,
                ..resp(10, 4, vec![])
            }
        ));
        // A catch-up stops at until; a head answer is its head.
        let r2 = FeedRequest { until: 12, ..req() };
        assert!(ok(&r2, &resp(12, 30, vec![msg(12, "a.x", 1, NOW)])));
        let h = FeedRequest { limit: 0, ..req() };
        assert!(ok(&h, &resp(99, 99, vec![])));
        // An answer for another origin, asked of its holder.
        let relayed = FeedRequest { origin: 9, ..req() };
        assert!(
            check_answer(
                7,
                &relayed,
                &FeedResponse {
                    origin: 9,
                    ..resp(10, 10, vec![])
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn answers_that_claim_too_much_are_refused() {
        let r = req();
        let m = |seq, ss, ms| vec![msg(seq, "a.x", ss, ms)];
        let cases: Vec<(&str, FeedRequest, FeedResponse)> = vec![
            (
                "another origin",
                r.clone(),
                FeedResponse {
                    origin: 8,
                    ..resp(10, 10, vec![])
                },
            ),
            ("huge through", r.clone(), resp(u64::MAX, u64::MAX, vec![])),
            ("through past head", r.clone(), resp(12, 11, vec![])),
            ("through before after", r.clone(), resp(9, 20, vec![])),
            (
                "through past until",
                FeedRequest { until: 12, ..req() },
                resp(13, 20, vec![]),
            ),
            ("message at after", r.clone(), resp(11, 11, m(10, 1, NOW))),
            (
                "message past through",
                r.clone(),
                resp(11, 12, m(12, 1, NOW)),
            ),
            (
                "stream_seq max",
                r.clone(),
                resp(11, 11, m(11, u64::MAX, NOW)),
            ),
            (
                "stream_seq past seq",
                r.clone(),
                resp(11, 11, m(11, 12, NOW)),
            ),
            ("stream_seq zero", r.clone(), resp(11, 11, m(11, 0, NOW))),
            (
                "timestamps not increasing",
                r.clone(),
                resp(12, 12, vec![msg(11, "a.x", 1, NOW), msg(12, "a.y", 1, NOW)]),
            ),
            (
                "seq not increasing",
                r.clone(),
                resp(
                    12,
                    12,
                    vec![msg(12, "a.x", 1, NOW), msg(11, "a.y", 1, NOW + 1)],
                ),
            ),
            (
                "a stream going back",
                r.clone(),
                resp(
                    12,
                    12,
                    vec![msg(11, "a.x", 3, NOW), msg(12, "a.x", 3, NOW + 1)],
                ),
            ),
            (
                "too many messages",
                FeedRequest { limit: 1, ..req() },
                resp(
                    12,
                    12,
                    vec![msg(11, "a.x", 1, NOW), msg(12, "a.y", 1, NOW + 1)],
                ),
            ),
            (
                "a head answer with messages",
                FeedRequest { limit: 0, ..req() },
                resp(11, 11, m(11, 1, NOW)),
            ),
            (
                "a trim past the head",
                r.clone(),
                FeedResponse {
                    trimmed: vec![("a.x".into(), 1, 50)],
                    ..resp(10, 10, vec![])
                },
            ),
            (
                "held past the bound",
                r.clone(),
                FeedResponse {
                    held: vec![(3, u64::MAX)],
                    ..resp(10, 10, vec![])
                },
            ),
        ];
        for (what, r, a) in cases {
            assert!(check_answer(7, &r, &a).is_err(), "{what}");
        }
    }
}
