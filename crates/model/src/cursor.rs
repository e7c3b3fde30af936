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
            out.put_slice(self.encode().as_bytes());
            return;
        }
        let mut raw = [0u8; RAW];
        let mut rest: &mut [u8] = &mut raw;
        rest.put_u8(VERSION);
        for &(origin, seq) in &self.entries {
            varint::put(&mut rest, origin.0);
            varint::put(&mut rest, seq);
        }
        let n = RAW - rest.len();
        let mut text = [0u8; RAW.div_ceil(3) * 4];
        match URL_SAFE_NO_PAD.encode_slice(&raw[..n], &mut text) {
            Ok(len) => out.put_slice(&text[..len]),
            // The buffer holds any input of RAW bytes; kept total anyway.
            Err(_) => out.put_slice(self.encode().as_bytes()),
        }
    }

    /// The encoded form sent as an SSE `id:`.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(1 + self.entries.len() * 12);
        buf.push(VERSION);
        for &(origin, seq) in &self.entries {
            varint::put(&mut buf, origin.0);
            varint::put(&mut buf, seq);
        }
        URL_SAFE_NO_PAD.encode(buf)
    }
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
