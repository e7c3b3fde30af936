//! Node-to-node bodies and the gossip envelope (crates/cluster/src/
//! transport.rs, seal.rs).
//!
//! The first byte picks what the rest is:
//! - 0 to 8: a transport body of one of the request and answer types.
//!   Decoding never panics; what decodes encodes to a body that decodes to
//!   the same value; wire messages turn into messages or are refused.
//! - 9: a gossip packet opened with a fixed key: refused, since nothing
//!   but a sealer with that key can produce one that opens.
//! - 10: a gossip body sealed and opened: the body comes back, a second
//!   open is refused as a replay, and the packet altered in one byte (the
//!   body's first two bytes pick where and how) is refused.
//! - 11: a node-to-node request: an auth header parsed from the input
//!   never panics and, when it parses, prints back as itself; the rest of
//!   the input opened as a sealed body under a fixed key is refused; a
//!   body sealed for the path in the input opens to itself once, and is
//!   refused when replayed, sent to another path, or altered in a byte.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use switchyard_cluster::envelope::{Envelope, HttpStats, RequestId, Target};
use switchyard_cluster::seal::{Refusal, Sealer};
use switchyard_cluster::transport::{
    self, FeedRequest, FeedResponse, GroupGive, GroupTake, GroupTaken, IdempotencyFound,
    IdempotencyLookup,
};
use switchyard_model::NodeId;

const KEY: &[u8] = b"fuzzing cluster key";
const CLUSTER: &str = "fuzz";

fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + Debug,
{
    let v: T = transport::decode(body).ok()?;
    let again = transport::encode(&v);
    let back: T = transport::decode(&again).expect("an encoded body decodes");
    assert_eq!(back, v);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind {
        0 => {
            round_trip::<FeedRequest>(body);
        }
        1 => {
            if let Some(r) = round_trip::<FeedResponse>(body) {
                for m in r.messages {
                    let topic = m.topic.clone();
                    match m.into_message(NodeId(r.origin)) {
                        Some(msg) => assert_eq!(msg.topic.as_str(), topic),
                        None => assert!(topic.parse::<switchyard_model::Topic>().is_err()),
                    }
                }
            }
        }
        2 => {
            round_trip::<GroupTake>(body);
        }
        3 => {
            round_trip::<GroupGive>(body);
        }
        4 => {
            round_trip::<GroupTaken>(body);
        }
        5 => {
            round_trip::<IdempotencyLookup>(body);
        }
        6 => {
            round_trip::<IdempotencyFound>(body);
        }
        7 => {
            round_trip::<bool>(body);
        }
        8 => {
            round_trip::<Vec<transport::WireMessage>>(body);
        }
        9 => {
            let mut receiver = Sealer::new(KEY, CLUSTER, 2);
            assert!(receiver.open(body).is_err(), "an unsealed packet opened");
        }
        10 => {
            let sender = Sealer::new(KEY, CLUSTER, 1);
            let mut receiver = Sealer::new(KEY, CLUSTER, 2);
            let packet = sender.seal(body);
            let (from, opened) = receiver.open(&packet).expect("a sealed packet opens");
            assert_eq!((from.node, opened.as_slice()), (1, body));
            assert_eq!(
                receiver.open(&packet).map(|_| ()).unwrap_err().0,
                Refusal::Replayed
            );
            let (at, flip) = match body {
                [a, b, ..] => (usize::from(*a) % packet.len(), (*b).max(1)),
                _ => (packet.len() - 1, 1),
            };
            let mut altered = sender.seal(body);
            altered[at] ^= flip;
            let mut fresh = Sealer::new(KEY, CLUSTER, 3);
            assert!(fresh.open(&altered).is_err(), "an altered packet opened");
            assert!(fresh.open(&altered[..at]).is_err(), "a cut packet opened");
        }
        11 => {
            let text = String::from_utf8_lossy(body);
            let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
            if let Ok(id) = RequestId::parse(header) {
                assert_eq!(RequestId::parse(&id.header()), Ok(id));
            }
            let sender = Envelope::new(KEY, CLUSTER, 7, Default::default());
            let receiver =
                Envelope::new(KEY, CLUSTER, 9, std::sync::Arc::new(HttpStats::default()));
            let path = format!("/cluster/v1/feed?{}", rest.len());
            let target = Target {
                method: "POST",
                to: "10.0.0.9:7070",
                path: &path,
            };
            if let Ok(id) = RequestId::parse(header) {
                assert!(
                    receiver.open_request(&id, target, rest.as_bytes()).is_err(),
                    "a forged request opened"
                );
            }
            let (id, sealed) = sender.seal_request(target, rest.as_bytes());
            let other = Target {
                path: "/cluster/v1/groups/take",
                ..target
            };
            assert!(receiver.open_request(&id, other, &sealed).is_err());
            let mut altered = sealed.clone();
            if let Some(b) = altered.first_mut() {
                *b ^= 1;
                assert!(receiver.open_request(&id, target, &altered).is_err());
            }
            assert_eq!(
                receiver.open_request(&id, target, &sealed).as_deref(),
                Ok(rest.as_bytes())
            );
            assert!(
                receiver.open_request(&id, target, &sealed).is_err(),
                "a replay opened"
            );
        }
        _ => {}
    }
});
