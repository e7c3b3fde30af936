use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BufMut;
use smallvec::SmallVec;

use crate::error::{ModelError, shown};
use crate::message::{NodeId, limits::MAX_CURSOR_ENTRIES};
use crate::varint;

const VERSION: u8 = 1;

/// A subscription position: for each origin node, the origin sequence of the
/// last message delivered (or passed over) from that origin. Because each
/// origin's messages are delivered in origin order, this is exact for any set
/// of patterns; its size grows with the number of origins, not of topics.
///
/// Encoded as an opaque base64url string: a version byte, then pairs of
/// varints (origin, sequence) sorted by origin. A missing origin means
/// "nothing seen from it yet".
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Sorted by origin, no duplicates, no zero sequences. Up to
    /// [`INLINE_ORIGINS`] entries live in the cursor itself, so that
    /// copying the cursor of a node or a small cluster (every delivery
    /// copies one) allocates nothing.
    entries: SmallVec<[(NodeId, u64); INLINE_ORIGINS]>,
}

/// Origins a [`Cursor`] holds without a heap allocation.
const INLINE_ORIGINS: usize = 3;

impl Cursor {
    /// The empty cursor: nothing seen from any origin (start of every log).
    pub fn earliest() -> Self {
        Cursor::default()
    }

    /// The last origin sequence seen from `origin` (0 when none).
    pub fn get(&self, origin: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&origin, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Moves the position for `origin` forward to `seq`; never moves it back.
    pub fn advance(&mut self, origin: NodeId, seq: u64) {
        match self.entries.binary_search_by_key(&origin, |e| e.0) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(seq),
            Err(i) if seq > 0 => self.entries.insert(i, (origin, seq)),
            Err(_) => {}
        }
    }

    /// The (origin, sequence) entries, sorted by origin.
    pub fn entries(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// Appends the encoded form ([`Cursor::encode`]) to `out`. A cursor of
    /// up to three origins is encoded on the stack: this runs for every
    /// event a stream sends.
    pub fn encode_into(&self, out: &mut impl BufMut) {
        const RAW: usize = 1 + 3 * 20;
        if 1 + self.entries.len() * 20 > RAW {
            let mut raw = Vec::with_capacity(1 + self.entries.len() * 20);
            self.put_raw(&mut raw);
            let mut text = vec![0u8; raw.len().div_ceil(3) * 4];
            let len = base64url(&raw, &mut text);
            out.put_slice(&text[..len]);
            return;
        }
        let mut raw = [0u8; RAW];
        let mut rest: &mut [u8] = &mut raw;
        self.put_raw(&mut rest);
        let n = RAW - rest.len();
        let mut text = [0u8; RAW.div_ceil(3) * 4];
        let len = base64url(&raw[..n], &mut text);
        out.put_slice(&text[..len]);
    }

    /// The encoded form sent as an SSE `id:`.
    pub fn encode(&self) -> String {
        let mut text = Vec::new();
        self.encode_into(&mut text);
        // base64url is ASCII.
        text.into_iter().map(char::from).collect()
    }

    /// The bytes the encoded form is the base64url of: the version, then
    /// each entry's origin and sequence as varints (at most 20 bytes each).
    fn put_raw(&self, out: &mut impl BufMut) {
        out.put_u8(VERSION);
        for &(origin, seq) in &self.entries {
            varint::put(out, origin.0);
            varint::put(out, seq);
        }
    }
}

/// Writes `raw` as base64url without padding into `text`, which holds at
/// least `raw.len().div_ceil(3) * 4` bytes, and returns the length written.
/// The same text as `URL_SAFE_NO_PAD`, for the few bytes of a cursor,
/// without the general engine's setup, which cost more than the encoding
/// itself (every SSE event carries a cursor).
fn base64url(raw: &[u8], text: &mut [u8]) -> usize {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let sym = |v: u32| ALPHABET[(v & 63) as usize];
    let groups = raw.chunks_exact(3);
    let tail = groups.remainder();
    let mut n = 0;
    for (g, t) in groups.zip(text.chunks_exact_mut(4)) {
        let v = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
        t.copy_from_slice(&[sym(v >> 18), sym(v >> 12), sym(v >> 6), sym(v)]);
        n += 4;
    }
    // One byte left is two symbols, two are three.
    let v = match *tail {
        [a] => u32::from(a) << 16,
        [a, b] => (u32::from(a) << 16) | (u32::from(b) << 8),
        _ => return n,
    };
    let k = tail.len() + 1;
    if let Some(t) = text.get_mut(n..n + k) {
        t.copy_from_slice(&[sym(v >> 18), sym(v >> 12), sym(v >> 6)][..k]);
        n += k;
    }
    n
}

impl FromStr for Cursor {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = |reason| ModelError::InvalidCursor {
            cursor: shown(s),
            reason,
        };
        if s.len() > MAX_CURSOR_ENTRIES * 28 {
            return Err(bad("too long"));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| bad("not base64url"))?;
        let (&version, mut rest) = raw.split_first().ok_or(bad("empty"))?;
        if version != VERSION {
            return Err(bad("unknown cursor version"));
        }
        let mut entries: SmallVec<[(NodeId, u64); INLINE_ORIGINS]> = SmallVec::new();
        while !rest.is_empty() {
            let origin = varint::get(&mut rest).ok_or(bad("truncated"))?;
            let seq = varint::get(&mut rest).ok_or(bad("truncated"))?;
            if seq == 0 {
                return Err(bad("zero sequence"));
            }
            if entries.last().is_some_and(|e| e.0.0 >= origin) {
                return Err(bad("origins not sorted"));
            }
            if entries.len() == MAX_CURSOR_ENTRIES {
                return Err(bad("too many origins"));
            }
            entries.push((NodeId(origin), seq));
        }
        Ok(Cursor { entries })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(o, s)| (o, s)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_advance() {
        let mut c = Cursor::earliest();
        c.advance(NodeId(7), 3);
        c.advance(NodeId(u64::MAX), 1 << 40);
        c.advance(NodeId(1), 9);
        c.advance(NodeId(7), 2);
        assert_eq!(c.get(NodeId(7)), 3);
        assert_eq!(c.get(NodeId(8)), 0);
        let back: Cursor = c.encode().parse().unwrap();
        assert_eq!(back, c);
        assert_eq!(back.entries()[0], (NodeId(1), 9));
        assert!(c.encode().len() < 48);
    }

    #[test]
    fn base64url_is_the_standard_encoding_without_padding() {
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        for len in 0..64 {
            let raw = &bytes[..len];
            let mut text = [0u8; 88];
            let n = base64url(raw, &mut text);
            assert_eq!(
                &text[..n],
                URL_SAFE_NO_PAD.encode(raw).as_bytes(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn encode_into_writes_what_encode_returns() {
        let mut c = Cursor::earliest();
        let mut sizes = Vec::new();
        for i in 0..6u64 {
            let mut out = bytes::BytesMut::from(&b"id: "[..]);
            c.encode_into(&mut out);
            assert_eq!(
                &out[4..],
                c.encode().as_bytes(),
                "{} origins",
                c.entries().len()
            );
            // Both read back through the standard decoder.
            assert_eq!(c.encode().parse::<Cursor>().unwrap(), c);
            sizes.push(out.len());
            // The largest varints: origin and sequence near u64::MAX.
            c.advance(NodeId(u64::MAX - i), u64::MAX - i);
        }
        assert!(sizes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "!!", "AA", "Ag", "AQE", "AYAB", "not a cursor at all"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
        // Unsorted origins.
        let mut buf = vec![VERSION];
        for (o, s) in [(5u64, 1u64), (3, 1)] {
            varint::put(&mut buf, o);
            varint::put(&mut buf, s);
        }
        assert!(URL_SAFE_NO_PAD.encode(buf).parse::<Cursor>().is_err());
        assert_eq!("AQ".parse::<Cursor>().unwrap(), Cursor::earliest());
    }
}
