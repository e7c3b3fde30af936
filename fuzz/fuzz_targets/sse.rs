//! The CLI's Server-Sent Events parser (crates/switchyard/src/sse.rs).
//!
//! Input: one byte N, then N little-endian u16 split points, then the
//! stream. A differential property: the events, and the last id, do not
//! depend on how the stream is split into chunks (whole, at the given
//! points, or one byte at a time).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sse::{Event, SseParser};

fn parse<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Event>, Option<String>) {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(p.push(chunk));
    }
    (events, p.last_id().map(str::to_owned))
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16);
    if rest.len() < 2 * n {
        return;
    }
    let (splits, stream) = rest.split_at(2 * n);
    let mut points: Vec<usize> = splits
        .chunks_exact(2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(&stream[start..p]);
        start = p;
    }
    chunks.push(&stream[start..]);

    let whole = parse([stream]);
    let split = parse(chunks);
    assert_eq!(whole, split, "split at the given points");
    let bytes = parse(stream.chunks(1));
    assert_eq!(whole, bytes, "one byte at a time");
    for e in &whole.0 {
        assert!(!e.event.is_empty());
    }
});
