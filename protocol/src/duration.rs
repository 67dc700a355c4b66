//! Durations as people write them for retention: `30d`, `12h`, `90m`, `0s`,
//! `1w`, or several parts (`1d12h`). Shared by `jobctl prune --older-than` and
//! `jobd --retention`, so that both read the same text the same way.

use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// The longest duration accepted (100 years): far past any retention, and far
/// from overflowing milliseconds.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, such as 30d, 12h or 0s")]
    Empty,
    #[error("{0:?} is not a duration: write a number and a unit (s, m, h, d, w), such as 30d, 12h or 0s")]
    Malformed(String),
    #[error("{0:?} is longer than 100 years")]
    TooLong(String),
}

/// Parses `<number><unit>` parts (units `s`, `m`, `h`, `d`, `w`; whole numbers).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(malformed());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| malformed())?;
        let unit = rest[digits..].chars().next().ok_or_else(malformed)?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(malformed()),
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::TooLong(text.to_string()))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    if total > MAX.as_secs() {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration in the largest unit that divides it (`30d`, `36h`, `0s`);
/// [`parse`] reads it back. Sub-second parts are dropped.
pub fn format(d: Duration) -> String {
    Shown(d).to_string()
}

struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        for (unit, secs) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s > 0 && s.is_multiple_of(secs) {
                return write!(f, "{}{unit}", s / secs);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        let d = |s| parse(s).map(|d| d.as_secs());
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d("30d"), Ok(30 * 86_400));
        assert_eq!(d("12h"), Ok(12 * 3600));
        assert_eq!(d("90m"), Ok(5400));
        assert_eq!(d("2w"), Ok(14 * 86_400));
        assert_eq!(d(" 1d12h "), Ok(36 * 3600));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "", " ", "30", "d", "1x", "1.5h", "-1d", "1d 2h", "1dh", "h1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse("101000d"), Err(DurationError::TooLong(_))));
        assert!(matches!(
            parse("999999999999w"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn formats_in_the_largest_unit() {
        for (secs, text) in [(0, "0s"), (59, "59s"), (120, "2m"), (86_400 * 30, "30d")] {
            let d = Duration::from_secs(secs);
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
        assert_eq!(format(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(format(Duration::from_secs(36 * 3600)), "36h");
    }
}
