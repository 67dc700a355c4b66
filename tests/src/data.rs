//! Seeded test data and the effects the daemon must produce from it, computed here,
//! independently of the daemon.

use std::collections::BTreeSet;
use std::fmt;

/// xorshift64*: a tiny deterministic generator; every test seeds it with a constant.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is a fixed point of xorshift; mix the seed so every seed works.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A calendar date (proleptic Gregorian), printed `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub y: i32,
    pub m: u32,
    pub d: u32,
}

impl Date {
    /// Panics on a date that does not exist.
    pub fn new(y: i32, m: u32, d: u32) -> Date {
        assert!(Date::exists(y, m, d), "no such date {y}-{m}-{d}");
        Date { y, m, d }
    }

    pub fn is_leap(y: i32) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    pub fn days_in_month(y: i32, m: u32) -> u32 {
        match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if Date::is_leap(y) => 29,
            2 => 28,
            _ => 0,
        }
    }

    pub fn exists(y: i32, m: u32, d: u32) -> bool {
        (1..=12).contains(&m) && d >= 1 && d <= Date::days_in_month(y, m)
    }

    /// Strict `YYYY-MM-DD` of a real date.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = &s[r];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let y = y as i32;
        Date::exists(y, m, d).then_some(Date { y, m, d })
    }

    /// Days since 1970-01-01 (H. Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let y = i64::from(self.y) - i64::from(self.m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(z: i64) -> Date {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
        Date { y, m, d }
    }

    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.days() + n)
    }

    /// Dates from `self` to `to`, inclusive.
    pub fn through(self, to: Date) -> Vec<Date> {
        (self.days()..=to.days()).map(Date::from_days).collect()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

/// One field as the csv crate writes it by default (`QuoteStyle::Necessary`): quoted,
/// with `"` doubled, only if it contains a comma, a quote, CR or LF.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// One data row of a baseline CSV and the record it must become.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaselineRecord {
    /// 1-based data row (the header is not counted).
    pub row: u64,
    pub date: String,
    /// The non-date fields, in header order.
    pub fields: Vec<String>,
}

/// A baseline CSV: its header and rows, all valid.
#[derive(Debug, Clone)]
pub struct BaselineFile {
    /// The header, `date` included.
    pub header: Vec<String>,
    pub date_col: usize,
    pub records: Vec<BaselineRecord>,
}

const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
];

impl BaselineFile {
    /// The non-date column names, in header order.
    pub fn columns(&self) -> Vec<String> {
        self.header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.date_col)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The file's bytes: header, then one line per record, `\n` line ends.
    pub fn bytes(&self) -> Vec<u8> {
        let mut s = csv_line(&self.header);
        for r in &self.records {
            let mut fields = r.fields.clone();
            fields.insert(self.date_col, r.date.clone());
            s.push_str(&csv_line(&fields));
        }
        s.into_bytes()
    }

    /// The records the store must hold for this file, each exactly once.
    pub fn expected_set(&self) -> BTreeSet<BaselineRecord> {
        self.records.iter().cloned().collect()
    }

    /// Sets the field of column `col` in data row `row` (for deliberate edge cases).
    pub fn set_field(&mut self, row: u64, col: &str, value: &str) {
        let idx = self
            .columns()
            .iter()
            .position(|c| c == col)
            .unwrap_or_else(|| panic!("no column {col}"));
        let rec = self
            .records
            .iter_mut()
            .find(|r| r.row == row)
            .unwrap_or_else(|| panic!("no row {row}"));
        rec.fields[idx] = value.to_string();
    }
}

/// `rows` valid data rows under `header` (which must contain `date`), dates drawn in
/// `first .. first + days`. Column `name` gets names; others numbers.
pub fn gen_baseline(
    seed: u64,
    header: &[&str],
    rows: usize,
    first: Date,
    days: u32,
) -> BaselineFile {
    let date_col = header
        .iter()
        .position(|c| *c == "date")
        .expect("header has a date column");
    let mut rng = Rng::new(seed);
    let mut records = Vec::with_capacity(rows);
    for row in 1..=rows as u64 {
        let date = first
            .add_days(rng.below(u64::from(days)) as i64)
            .to_string();
        let fields = header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != date_col)
            .map(|(_, c)| match *c {
                "name" => rng.pick(NAMES).to_string(),
                "note" => format!("{} {}", rng.pick(NAMES), rng.below(100)),
                _ => rng.below(100_000).to_string(),
            })
            .collect();
        records.push(BaselineRecord { row, date, fields });
    }
    BaselineFile {
        header: header.iter().map(|s| s.to_string()).collect(),
        date_col,
        records,
    }
}

/// The export file a `createExport` over `from..=to` must produce, given the caller's
/// *completed* baseline jobs in creation order: header `date` + the union of the
/// exported records' columns in first-seen order, rows by date, then job, then row,
/// missing fields empty; csv crate default quoting, `\n` line ends.
///
/// "First seen" walks the records in output order. Tests that mix column sets make
/// every job have a record on the first exported date, so that this order is also
/// the order of the jobs (the other reading of the contract).
pub fn expected_export(jobs: &[&BaselineFile], from: Date, to: Date) -> Vec<u8> {
    let mut picked: Vec<(Date, usize, u64, &BaselineRecord)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        for r in &job.records {
            let d = Date::parse(&r.date).expect("generated dates are valid");
            if d >= from && d <= to {
                picked.push((d, j, r.row, r));
            }
        }
    }
    picked.sort_by_key(|&(d, j, row, _)| (d, j, row));
    let mut columns: Vec<String> = Vec::new();
    for &(_, j, _, _) in &picked {
        for c in jobs[j].columns() {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    let mut header = vec!["date".to_string()];
    header.extend(columns.iter().cloned());
    let mut out = csv_line(&header);
    for &(_, j, _, r) in &picked {
        let job_cols = jobs[j].columns();
        let mut line = vec![r.date.clone()];
        for c in &columns {
            let v = job_cols
                .iter()
                .position(|jc| jc == c)
                .map(|i| r.fields[i].clone())
                .unwrap_or_default();
            line.push(v);
        }
        out.push_str(&csv_line(&line));
    }
    out.into_bytes()
}

/// One team the daemon must create: its (trimmed) name, members, and input row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TeamRow {
    pub row: u64,
    pub name: String,
    pub members: Vec<String>,
}

/// A bulk-team CSV and the teams it must create.
#[derive(Debug, Clone)]
pub struct TeamFile {
    pub bytes: Vec<u8>,
    pub teams: Vec<TeamRow>,
}

/// `rows` teams named `<prefix>-team-<i>` (some padded with spaces that must be
/// trimmed), each with 0..width-1 members; every line has `width` fields (unused
/// member fields empty, sometimes between members).
pub fn gen_teams(seed: u64, prefix: &str, rows: usize, width: usize) -> TeamFile {
    assert!(width >= 2);
    let mut rng = Rng::new(seed);
    let mut header = vec!["team".to_string()];
    header.extend((1..width).map(|i| format!("member{i}")));
    let mut s = csv_line(&header);
    let mut teams = Vec::with_capacity(rows);
    for i in 1..=rows {
        let name = format!("{prefix}-team-{i:04}");
        let raw_name = match rng.below(4) {
            0 => format!("  {name}"),
            1 => format!("{name} "),
            _ => name.clone(),
        };
        let mut fields = vec![raw_name];
        let mut members = Vec::new();
        for _ in 1..width {
            if rng.chance(30) {
                fields.push(String::new());
            } else {
                let m = format!("{}{}", rng.pick(NAMES), rng.below(1000));
                members.push(m.clone());
                fields.push(m);
            }
        }
        s.push_str(&csv_line(&fields));
        teams.push(TeamRow {
            row: i as u64,
            name,
            members,
        });
    }
    TeamFile {
        bytes: s.into_bytes(),
        teams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_validate() {
        assert_eq!(Date::new(1970, 1, 1).days(), 0);
        assert_eq!(Date::new(2024, 3, 1).add_days(-1), Date::new(2024, 2, 29));
        assert_eq!(Date::new(2023, 3, 1).add_days(-1), Date::new(2023, 2, 28));
        assert_eq!(Date::new(2000, 2, 29).add_days(366), Date::new(2001, 3, 1));
        for z in -800_000..800_000 {
            if z % 997 == 0 {
                assert_eq!(Date::from_days(z).days(), z);
            }
        }
        assert_eq!(Date::parse("2024-02-29"), Some(Date::new(2024, 2, 29)));
        for bad in [
            "2023-02-29",
            "2024-1-01",
            "2024-13-01",
            "2024-04-31",
            "x",
            "2024-01-1a",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Date::new(2024, 1, 30).through(Date::new(2024, 2, 2)).len(),
            4
        );
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain text"), "plain text");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn expected_export_merges_columns() {
        let from = Date::new(2024, 1, 1);
        let mut a = gen_baseline(1, &["date", "x"], 3, from, 1);
        let mut b = gen_baseline(2, &["y", "date", "x"], 2, from, 1);
        a.records
            .iter_mut()
            .for_each(|r| r.fields = vec!["ax".into()]);
        b.records
            .iter_mut()
            .for_each(|r| r.fields = vec!["by".into(), "bx".into()]);
        let got = String::from_utf8(expected_export(&[&a, &b], from, from)).expect("utf8");
        assert_eq!(
            got,
            "date,x,y\n2024-01-01,ax,\n2024-01-01,ax,\n2024-01-01,ax,\n2024-01-01,bx,by\n2024-01-01,bx,by\n"
        );
    }
}
