use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ModelError, shown};

/// A hybrid logical clock timestamp: milliseconds since the Unix epoch in the
/// upper 48 bits and a logical counter in the lower 16. Timestamps from one
/// origin strictly increase with its origin sequence, which lets a reader find
/// the first message at or after a wall-clock time by binary search.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    const LOGICAL_BITS: u32 = 16;

    /// The smallest timestamp at the given wall-clock millisecond.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms << Self::LOGICAL_BITS)
    }

    /// The wall-clock millisecond part.
    pub fn millis(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// Parses an RFC 3339 time (`2026-01-31T12:00:00Z`, fractions allowed) into
    /// the smallest timestamp at or after it.
    pub fn parse_rfc3339(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::InvalidTime { value: shown(s) };
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
        let nanos = t.unix_timestamp_nanos();
        if nanos < 0 {
            return Err(bad());
        }
        let ms = (nanos + 999_999) / 1_000_000;
        u64::try_from(ms)
            .ok()
            .filter(|ms| *ms < (1 << 48))
            .map(Self::from_millis)
            .ok_or_else(bad)
    }

    /// RFC 3339 with millisecond precision in UTC, e.g. `2026-01-31T12:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(RFC3339_LEN);
        self.push_rfc3339(&mut out);
        out
    }

    /// Appends [`Timestamp::to_rfc3339`] to `out`. The digits are written
    /// by hand: this runs for every message published and delivered, and
    /// `format!` took a tenth of a publish's instructions.
    pub fn push_rfc3339(self, out: &mut String) {
        let ms = self.millis();
        let (secs, ms) = (ms / 1000, ms % 1000);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
        let year = match u64::try_from(y) {
            Ok(year) if year <= 9999 => year,
            _ => return Self::push_rfc3339_slow(out, (y, m, d), (hh, mm, ss, ms)),
        };
        let mut text = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[5..7], u64::from(m));
        put_digits(&mut text[8..10], u64::from(d));
        put_digits(&mut text[11..13], hh);
        put_digits(&mut text[14..16], mm);
        put_digits(&mut text[17..19], ss);
        put_digits(&mut text[20..23], ms);
        out.extend(text.iter().map(|&b| char::from(b)));
    }

    /// Years outside 0-9999, which RFC 3339 cannot write in four digits.
    fn push_rfc3339_slow(
        out: &mut String,
        (y, m, d): (i64, u32, u32),
        (hh, mm, ss, ms): (u64, u64, u64, u64),
    ) {
        use std::fmt::Write;
        let _ = write!(out, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z");
    }
}

/// Length of [`Timestamp::to_rfc3339`]'s text for years 0-9999.
const RFC3339_LEN: usize = 24;

/// Writes `v` in decimal into `dst`, right-aligned and zero-padded (the
/// highest digits are dropped if it does not fit).
fn put_digits(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(RFC3339_LEN);
        self.push_rfc3339(&mut text);
        f.write_str(&text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}+{})", self.to_rfc3339(), self.0 & 0xffff)
    }
}

/// A hybrid logical clock. The caller supplies wall-clock readings, so the
/// clock itself does no I/O and tests can drive it by hand.
#[derive(Debug, Default, Clone)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    /// A clock that will never issue a timestamp at or below `last`, used to
    /// continue after a restart.
    pub fn resume(last: Timestamp) -> Self {
        Hlc { last }
    }

    /// The next timestamp, given the current wall clock in milliseconds.
    /// Strictly greater than every timestamp issued or observed before.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        let wall = Timestamp::from_millis(wall_ms);
        self.last = if wall > self.last {
            wall
        } else {
            Timestamp(self.last.0 + 1)
        };
        self.last
    }

    /// Takes a timestamp seen from another node into account.
    pub fn observe(&mut self, remote: Timestamp) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_wall_clock_goes_back() {
        let mut c = Hlc::default();
        let a = c.now(1000);
        let b = c.now(1000);
        let d = c.now(900);
        let e = c.now(1001);
        assert!(a < b && b < d && d < e);
        assert_eq!(e, Timestamp::from_millis(1001));
        c.observe(Timestamp::from_millis(5000));
        assert!(c.now(1002) > Timestamp::from_millis(5000));
    }

    #[test]
    fn rfc3339_text_matches_the_general_formatter() {
        let reference = |t: Timestamp| {
            let ms = t.millis();
            let (secs, ms) = (ms / 1000, ms % 1000);
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        };
        let mut ms: u64 = 0;
        // From the epoch to past the last four-digit year, in uneven steps
        // that visit every month, leap days and the ends of days.
        while ms < (1 << 48) {
            let t = Timestamp::from_millis(ms);
            assert_eq!(t.to_rfc3339(), reference(t), "{ms}");
            ms = ms * 3 / 2 + 86_399_999;
        }
        for ms in [
            0,
            951_782_400_000,
            253_402_300_799_999,
            253_402_300_800_000,
            (1 << 48) - 1,
        ] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(t.to_rfc3339(), reference(t), "{ms}");
            assert_eq!(t.to_string(), reference(t), "{ms}");
        }
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-01-31T12:00:00.123Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-31T12:00:00.123Z");
        for text in [
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "2026-12-31T00:00:00.000Z",
            "2100-03-01T01:02:03.004Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text).unwrap().to_rfc3339(), text);
        }
        let t2 = Timestamp::parse_rfc3339("2026-01-31T13:00:00.1234+01:00").unwrap();
        assert_eq!(t2.to_rfc3339(), "2026-01-31T12:00:00.124Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("1969-01-01T00:00:00Z").is_err());
    }
}
