//! Seeded benchmark data: a xorshift generator and a streaming CSV writer, so that
//! files of any size are written without being held in memory.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The test suite's seeded generator: the same sequence on every machine.
pub use jobd_tests::data::Rng as XorShift;

const CITIES: &[&str] = &[
    "Amsterdam",
    "Berlin",
    "Cairo",
    "Dakar",
    "Edinburgh",
    "Florence",
    "Geneva",
    "Hanoi",
    "Istanbul",
    "Jakarta",
    "Kyoto",
    "Lima",
    "Madrid",
    "Nairobi",
    "Oslo",
    "Porto",
    "Quito",
    "Riga",
    "Seoul",
    "Tallinn",
    "Utrecht",
    "Vienna",
    "Warsaw",
    "Xiamen",
    "York",
    "Zagreb",
    "Lyon",
    "Turin",
    "Bergen",
    "Graz",
    "Ghent",
    "Basel",
];

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "red", "green", "blue", "amber",
    "steady", "ready", "late", "early", "north", "south",
];

/// The header of every generated baseline file: `date` and five other columns.
pub const HEADER: &str = "date,name,city,amount,count,note\n";

/// Dates 2020-01-01 .. 2023-12-31, formatted once.
fn date_table() -> Vec<String> {
    let mut out = Vec::new();
    for y in 2020..=2023 {
        for m in 1..=12u32 {
            let days = match m {
                2 if y % 4 == 0 => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            for d in 1..=days {
                out.push(format!("{y:04}-{m:02}-{d:02}"));
            }
        }
    }
    out
}

/// Writes one data row (about 100 bytes) to `w`.
fn write_row(w: &mut impl Write, rng: &mut XorShift, dates: &[String]) -> std::io::Result<()> {
    let date = &dates[rng.below(dates.len() as u64) as usize];
    let mut name = [0u8; 12];
    let len = 6 + rng.below(7) as usize;
    for b in name.iter_mut().take(len) {
        *b = b'a' + rng.below(26) as u8;
    }
    let name = std::str::from_utf8(&name[..len]).unwrap_or("x");
    let city = CITIES[rng.below(CITIES.len() as u64) as usize];
    let whole = rng.below(100_000);
    let cents = rng.below(100);
    let count = rng.below(1_000_000);
    write!(w, "{date},{name},{city},{whole}.{cents:02},{count},")?;
    let words = 6 + rng.below(7);
    // One row in 50 has a quoted note with a comma, as real exports do.
    let quoted = rng.below(50) == 0;
    if quoted {
        w.write_all(b"\"")?;
    }
    for i in 0..words {
        if i > 0 {
            w.write_all(if quoted && i == 2 { b", " } else { b" " })?;
        }
        w.write_all(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes())?;
    }
    if quoted {
        w.write_all(b"\"")?;
    }
    w.write_all(b"\n")
}

/// What a generated file holds.
#[derive(Debug, Clone, Copy)]
pub struct CsvFile {
    pub rows: u64,
    pub bytes: u64,
}

/// Writes a baseline CSV to `path`: the header, then rows until `rows` rows or
/// `min_bytes` bytes are written (whichever limit is given; both: the first reached).
pub fn write_csv(
    path: &Path,
    seed: u64,
    rows: Option<u64>,
    min_bytes: Option<u64>,
) -> Result<CsvFile> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = CountingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        bytes: 0,
    };
    let dates = date_table();
    let mut rng = XorShift::new(seed);
    w.write_all(HEADER.as_bytes())?;
    let mut n = 0u64;
    loop {
        if rows.is_some_and(|r| n >= r) || min_bytes.is_some_and(|b| w.bytes >= b) {
            break;
        }
        write_row(&mut w, &mut rng, &dates)?;
        n += 1;
    }
    w.inner.flush()?;
    w.inner.get_ref().sync_all().ok();
    Ok(CsvFile {
        rows: n,
        bytes: w.bytes,
    })
}

/// A small baseline CSV in memory (for the many-jobs scenarios).
pub fn small_csv(seed: u64, rows: u64) -> Vec<u8> {
    let mut out = HEADER.as_bytes().to_vec();
    let dates = date_table();
    let mut rng = XorShift::new(seed);
    for _ in 0..rows {
        write_row(&mut out, &mut rng, &dates).expect("writing to a Vec");
    }
    out
}

struct CountingWriter<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
