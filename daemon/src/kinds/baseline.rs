//! `baselineCSV`: each data row of an uploaded CSV becomes a baseline record of the
//! submitting user. The header must name a `date` column.
//!
//! Parsing, validation and encoding run ahead on a reader thread, in chunks of rows,
//! while the worker thread applies them to the store: ingest uses both cores. The
//! reader only ever works ahead of the cursor; what it read but the worker did not
//! apply is simply read again after a pause or crash.

use super::csv_input::{CsvInput, Record, Row};
use super::{field_count_error, spool_path, utf8_fields, JobContext, JobRun, KindError, Unit};
use crate::dates;
use crate::store::StoreError;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Rows per chunk handed from the reader thread to the worker.
const CHUNK_ROWS: usize = 2048;
/// Chunks the reader may be ahead.
const CHUNKS_AHEAD: usize = 4;

#[derive(Serialize, Deserialize)]
struct Cursor {
    offset: u64,
    row: u64,
    width: usize,
    date_col: usize,
    /// Records committed so far (cursors from before it was kept: counted).
    #[serde(default)]
    stored: Option<u64>,
}

#[derive(Clone, Copy)]
struct Layout {
    width: usize,
    date_col: usize,
}

/// A data row as the reader thread prepared it.
enum Parsed {
    Record {
        date: [u8; 10],
        /// The row's non-date fields as a JSON array, in the chunk's arena.
        data: Range<usize>,
        /// Offset of the next row in the file.
        end: u64,
    },
    Rejected {
        message: String,
        end: u64,
    },
}

struct Chunk {
    rows: Vec<Parsed>,
    arena: String,
}

pub struct Baseline {
    seq: i64,
    layout: Layout,
    /// The header's columns, to be recorded by the first step of a fresh job.
    new_columns: Option<String>,
    offset: u64,
    row: u64,
    /// Records of this job in the store once the open batch commits.
    stored: u64,
    chunks: Option<Receiver<Result<Chunk, KindError>>>,
    reader: Option<JoinHandle<()>>,
    chunk: Chunk,
    next_in_chunk: usize,
    /// Rows applied since the last commit, written out sorted by date in `sync`
    /// (see the schema: each date of a batch becomes one range of ids).
    pending: Vec<Pending>,
    /// The pending rows' data, back to back.
    arena: String,
}

struct Pending {
    /// The date's digits as one number (YYYYMMDD): sorts as the date does.
    day: u32,
    row: u64,
    data: Range<usize>,
}

/// `YYYYMMDD` of a validated `YYYY-MM-DD`.
fn day_key(date: &[u8; 10]) -> u32 {
    date.iter()
        .filter(|b| b.is_ascii_digit())
        .fold(0, |acc, &b| acc * 10 + u32::from(b - b'0'))
}

/// Records per INSERT statement: one statement keeps its cursor at the end of the
/// table across rows, where one per row seeks from the root every time.
const ROWS_PER_INSERT: usize = 64;

impl Baseline {
    pub fn open(ctx: &JobContext<'_>, conn: &Connection) -> Result<Baseline, KindError> {
        let cursor: Option<Cursor> = match ctx.cursor {
            Some(c) => Some(
                serde_json::from_str(c)
                    .map_err(|e| KindError::Fatal(format!("corrupt cursor: {e}")))?,
            ),
            None => None,
        };
        let stored = match &cursor {
            None => 0,
            Some(Cursor {
                stored: Some(n), ..
            }) => *n,
            Some(_) => conn
                .query_row(
                    "SELECT COUNT(*) FROM baseline_records WHERE id BETWEEN ?1 AND ?2",
                    params![record_id(ctx.seq, 0), record_id(ctx.seq, MAX_RECORDS)],
                    |r| r.get::<_, i64>(0),
                )?
                .unsigned_abs(),
        };
        let (mut input, layout, new_columns, row) = match cursor {
            Some(c) => (
                CsvInput::open(&spool_path(ctx), c.offset)?,
                Layout {
                    width: c.width,
                    date_col: c.date_col,
                },
                None,
                c.row,
            ),
            None => {
                let mut input = CsvInput::open(&spool_path(ctx), 0)?;
                let (layout, columns) = read_header(&mut input)?;
                (input, layout, Some(columns), 0)
            }
        };
        let offset = input.offset();
        let (tx, rx) = sync_channel(CHUNKS_AHEAD);
        let reader = std::thread::Builder::new()
            .name(format!("jobd-read-{}", ctx.seq))
            .spawn(move || read_ahead(&mut input, layout, &tx))
            .map_err(|e| KindError::io("cannot start the reader thread", e))?;
        Ok(Baseline {
            seq: ctx.seq,
            layout,
            new_columns,
            offset,
            row,
            stored,
            chunks: Some(rx),
            reader: Some(reader),
            chunk: Chunk {
                rows: Vec::new(),
                arena: String::new(),
            },
            next_in_chunk: 0,
            pending: Vec::new(),
            arena: String::new(),
        })
    }

    /// The next prepared row, or `None` at the end of the file.
    fn next_parsed(&mut self) -> Result<Option<usize>, KindError> {
        if self.next_in_chunk == self.chunk.rows.len() {
            let Some(rx) = &self.chunks else {
                return Ok(None);
            };
            match rx.recv() {
                Ok(chunk) => self.chunk = chunk?,
                Err(_) => {
                    self.chunks = None;
                    return Ok(None);
                }
            }
            self.next_in_chunk = 0;
            if self.chunk.rows.is_empty() {
                return Ok(None);
            }
        }
        self.next_in_chunk += 1;
        Ok(Some(self.next_in_chunk - 1))
    }
}

/// Reads the header: the `date` column's position and the other columns as JSON.
fn read_header(input: &mut CsvInput) -> Result<(Layout, String), KindError> {
    let header = input.header()?;
    let date_col = header
        .iter()
        .position(|h| h.eq_ignore_ascii_case("date"))
        .ok_or_else(|| {
            KindError::Fatal(format!(
                "the header has no `date` column (found: {})",
                header.join(",")
            ))
        })?;
    let columns: Vec<&str> = header
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != date_col)
        .map(|(_, h)| h.as_str())
        .collect();
    let columns = serde_json::to_string(&columns)
        .map_err(|e| KindError::Fatal(format!("cannot encode the header: {e}")))?;
    Ok((
        Layout {
            width: header.len(),
            date_col,
        },
        columns,
    ))
}

/// The reader thread: parses, validates and encodes rows until the file ends, an
/// error occurs, or the worker hangs up (pause, terminate, shutdown).
fn read_ahead(input: &mut CsvInput, layout: Layout, tx: &SyncSender<Result<Chunk, KindError>>) {
    loop {
        let mut chunk = Chunk {
            rows: Vec::with_capacity(CHUNK_ROWS),
            arena: String::new(),
        };
        let mut eof = false;
        while chunk.rows.len() < CHUNK_ROWS {
            let row = match input.next() {
                Ok(Some(row)) => row,
                Ok(None) => {
                    eof = true;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let parsed = match row {
                Row::Fields(rec) => parse_row(rec, layout, &mut chunk.arena),
                Row::Malformed(message) => Err(message),
            };
            let end = input.offset();
            chunk.rows.push(match parsed {
                Ok((date, data)) => Parsed::Record { date, data, end },
                Err(message) => Parsed::Rejected { message, end },
            });
        }
        let last = eof || chunk.rows.is_empty();
        if tx.send(Ok(chunk)).is_err() || last {
            return;
        }
    }
}

/// Checks one row and appends its data to `arena`; the error is the row error message.
fn parse_row(
    rec: &Record,
    layout: Layout,
    arena: &mut String,
) -> Result<([u8; 10], Range<usize>), String> {
    if rec.len() != layout.width {
        return Err(field_count_error(layout.width, rec.len()));
    }
    let fields = utf8_fields(rec)?;
    let date = fields[layout.date_col];
    if dates::parse(date).is_none() {
        return Err(format!("date {date:?} is not a valid YYYY-MM-DD date"));
    }
    let mut day = [0u8; 10];
    day.copy_from_slice(date.as_bytes());
    let start = arena.len();
    encode_json_array(
        arena,
        fields
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != layout.date_col)
            .map(|(_, f)| *f),
    );
    Ok((day, start..arena.len()))
}

impl JobRun for Baseline {
    fn step(&mut self, conn: &Connection) -> Result<Option<Unit>, KindError> {
        if let Some(columns) = self.new_columns.take() {
            conn.execute(
                "INSERT INTO baseline_columns (job_seq, columns) VALUES (?1, ?2)",
                params![self.seq, columns],
            )?;
        }
        let Some(i) = self.next_parsed()? else {
            return Ok(None);
        };
        self.row += 1;
        match &self.chunk.rows[i] {
            Parsed::Record { date, data, end } => {
                let start = self.arena.len();
                self.arena.push_str(&self.chunk.arena[data.clone()]);
                self.pending.push(Pending {
                    day: day_key(date),
                    row: self.row,
                    data: start..self.arena.len(),
                });
                self.offset = *end;
                Ok(Some(Unit::Applied))
            }
            Parsed::Rejected { message, end } => {
                self.offset = *end;
                Ok(Some(Unit::Rejected {
                    row: self.row,
                    message: message.clone(),
                }))
            }
        }
    }

    fn cursor(&self) -> String {
        serde_json::json!({
            "offset": self.offset,
            "row": self.row,
            "width": self.layout.width,
            "date_col": self.layout.date_col,
            "stored": self.stored,
        })
        .to_string()
    }

    fn total(&self) -> Option<u64> {
        None
    }

    fn sync(&mut self, conn: &Connection, interrupt: &AtomicBool) -> Result<(), KindError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let stored = self.stored + self.pending.len() as u64;
        if stored > MAX_RECORDS {
            return Err(KindError::Fatal(format!(
                "more than {MAX_RECORDS} records in one upload: split the file"
            )));
        }
        // Pending rows are in row order: a stable sort by date gives (date, row).
        self.pending.sort_by_key(|p| p.day);
        let base = record_id(self.seq, self.stored);
        let mut many = conn.prepare_cached(&insert_sql(ROWS_PER_INSERT))?;
        let mut one = conn.prepare_cached(&insert_sql(1))?;
        for (n, rows) in self.pending.chunks(ROWS_PER_INSERT).enumerate() {
            if n % 16 == 15 && interrupt.load(Ordering::Relaxed) {
                return Err(KindError::Interrupted);
            }
            let first = base + 1 + (n * ROWS_PER_INSERT) as i64;
            let data = |p: &Pending| &self.arena[p.data.clone()];
            if rows.len() == ROWS_PER_INSERT {
                for (i, p) in rows.iter().enumerate() {
                    many.raw_bind_parameter(3 * i + 1, first + i as i64)?;
                    many.raw_bind_parameter(3 * i + 2, p.row as i64)?;
                    many.raw_bind_parameter(3 * i + 3, data(p))?;
                }
                many.raw_execute()?;
            } else {
                for (i, p) in rows.iter().enumerate() {
                    one.execute(params![first + i as i64, p.row as i64, data(p)])?;
                }
            }
        }
        let mut group = conn.prepare_cached(
            "INSERT INTO baseline_groups (job_seq, date, first, last) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut day = conn.prepare_cached(
            "INSERT OR IGNORE INTO baseline_days (date, job_seq) VALUES (?1, ?2)",
        )?;
        let mut first = 0;
        for (i, p) in self.pending.iter().enumerate() {
            if self.pending.get(i + 1).is_none_or(|n| n.day != p.day) {
                let date = format!(
                    "{:04}-{:02}-{:02}",
                    p.day / 10_000,
                    p.day / 100 % 100,
                    p.day % 100
                );
                let (lo, hi) = (base + 1 + first as i64, base + 1 + i as i64);
                group.execute(params![self.seq, date, lo, hi])?;
                day.execute(params![date, self.seq])?;
                first = i + 1;
            }
        }
        self.stored = stored;
        self.pending.clear();
        self.arena.clear();
        Ok(())
    }
}

impl Drop for Baseline {
    /// Hangs up on the reader thread and waits for it, so that a paused job holds
    /// no thread and no open file once the worker has returned.
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// `INSERT INTO baseline_records` of `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO baseline_records (id, row, data) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
    }
    sql
}

/// Records one job may hold: ordinals fill the low 32 bits of a record's id.
const MAX_RECORDS: u64 = 0xffff_ffff;

/// The id of a job's record with ordinal `n` (from 1): a job's records form one
/// contiguous range, after those of every earlier job.
fn record_id(seq: i64, n: u64) -> i64 {
    (seq << 32) | (n & MAX_RECORDS) as i64
}

pub fn rollback(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM baseline_records WHERE id BETWEEN ?1 AND ?2",
        params![record_id(seq, 0), record_id(seq, MAX_RECORDS)],
    )?;
    conn.execute(
        "DELETE FROM baseline_days WHERE job_seq = ?1
           AND date IN (SELECT date FROM baseline_groups WHERE job_seq = ?1)",
        [seq],
    )?;
    conn.execute("DELETE FROM baseline_groups WHERE job_seq = ?1", [seq])?;
    conn.execute("DELETE FROM baseline_columns WHERE job_seq = ?1", [seq])?;
    Ok(())
}

/// Appends `["a","b",...]` to `out`.
fn encode_json_array<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in f.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_matches_serde() {
        let fields = ["plain", "quo\"te", "back\\slash", "nl\nx\u{1}", "ünï"];
        let mut out = String::new();
        encode_json_array(&mut out, fields.iter().copied());
        let back: Vec<String> = serde_json::from_str(&out).unwrap();
        assert_eq!(back, fields);
    }
}
