//! Strict `YYYY-MM-DD` dates (zero-padded, leap-aware, years 0000-9999) as day numbers.

/// Days since 1970-01-01 of a strictly formatted, existing calendar date.
pub fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// The `YYYY-MM-DD` form of a day number.
pub fn format(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms, valid for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        assert_eq!(parse("1970-01-01"), Some(0));
        assert_eq!(
            parse("2020-02-29").map(format).as_deref(),
            Some("2020-02-29")
        );
        for bad in [
            "2021-02-29",
            "2020-13-01",
            "2020-1-1",
            "2020/01/01",
            " 2020-01-01",
            "2020-01-01T00:00:00Z",
            "tomorrow",
            "",
            "2020-02-30",
            "2020-00-10",
            "+020-01-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse("0000-01-01").map(format).as_deref(),
            Some("0000-01-01")
        );
        assert_eq!(
            parse("9999-12-31").map(format).as_deref(),
            Some("9999-12-31")
        );
    }

    #[test]
    fn round_trip_every_day_of_four_centuries() {
        let start = parse("1900-01-01").unwrap();
        for d in start..start + 146_097 {
            assert_eq!(parse(&format(d)), Some(d));
        }
    }
}
