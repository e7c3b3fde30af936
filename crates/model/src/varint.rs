//! LEB128 unsigned varints, the building block of every compact encoding in
//! Switchyard (cursors, stored records, node-to-node frames).

/// Appends `v` as an unsigned LEB128 varint (at most 10 bytes; a slice
/// given as `out` must have room for them).
pub fn put(out: &mut impl bytes::BufMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads one varint from the front of `buf`, advancing it. Returns `None` on
/// a truncated or over-long (more than 64 bits) encoding.
pub fn get(buf: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut s = &out[..];
            assert_eq!(get(&mut s), Some(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(get(&mut &[0x80u8][..]), None);
        assert_eq!(get(&mut &[][..]), None);
        assert_eq!(get(&mut &[0xffu8; 11][..]), None);
        assert_eq!(
            get(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]),
            None
        );
    }
}
