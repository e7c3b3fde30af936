//! Cursor and varint decoding (crates/model/src/cursor.rs, varint.rs).
//!
//! The input is read three ways: as varints (decoding, then encoding and
//! decoding again, gives the same values, and the canonical encoding is
//! never longer than what was read); as a cursor string (one that parses
//! encodes to a string that parses to the same cursor, and that encoding is
//! stable); and as the bytes inside a version-1 cursor (so the fuzzer
//! reaches the varint pairs without having to produce base64). Cursors
//! built with `advance` from the decoded values round-trip too.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use switchyard_model::{Cursor, NodeId, varint};

fn check_cursor(c: &Cursor) {
    let entries = c.entries();
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "{c:?}");
    assert!(entries.iter().all(|e| e.1 > 0), "{c:?}");
    let encoded = c.encode();
    let back: Cursor = encoded.parse().expect("an encoded cursor parses");
    assert_eq!(&back, c);
    assert_eq!(back.encode(), encoded);
    for &(origin, seq) in entries {
        assert_eq!(c.get(origin), seq);
    }
}

fuzz_target!(|data: &[u8]| {
    // Varints.
    let mut rest = data;
    let mut values = Vec::new();
    while values.len() < 256 {
        let Some(v) = varint::get(&mut rest) else {
            break;
        };
        values.push(v);
    }
    let read = data.len() - rest.len();
    let mut encoded = Vec::new();
    for &v in &values {
        varint::put(&mut encoded, v);
    }
    assert!(encoded.len() <= read);
    let mut again = &encoded[..];
    for &v in &values {
        assert_eq!(varint::get(&mut again), Some(v));
    }
    assert!(again.is_empty());

    // A cursor string.
    if let Ok(text) = std::str::from_utf8(data) {
        match text.parse::<Cursor>() {
            Ok(c) => check_cursor(&c),
            Err(e) => assert!(e.to_string().len() < 1024),
        }
    }

    // The bytes inside a version-1 cursor.
    let mut raw = vec![1u8];
    raw.extend_from_slice(data);
    if let Ok(c) = URL_SAFE_NO_PAD.encode(&raw).parse::<Cursor>() {
        check_cursor(&c);
    }

    // A cursor built from (origin, sequence) pairs.
    let mut c = Cursor::earliest();
    for pair in values.chunks_exact(2) {
        let (origin, seq) = (NodeId(pair[0]), pair[1]);
        let before = c.get(origin);
        c.advance(origin, seq);
        assert_eq!(c.get(origin), before.max(seq));
    }
    check_cursor(&c);
});
