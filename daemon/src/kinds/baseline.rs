//! `baselineCSV`: each data row of an uploaded CSV becomes a baseline record of the
//! submitting user. The header must name a `date` column.
//!
//! Parsing, validation and encoding run ahead on a reader thread, in chunks of rows,
//! while the worker thread batches them for the store: ingest uses both cores. The
//! reader only ever works ahead of the cursor; what it read but the worker did not
//! commit is simply read again after a pause or crash.

use super::csv_input::{CsvInput, Record, Row};
use super::{field_count_error, parse_cursor, JobContext, JobRun, KindError, Step};
use crate::dates;
use crate::store::{Batch, Day, Source};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::ops::Range;
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
}

#[derive(Clone, Copy)]
struct Layout {
    width: usize,
    date_col: usize,
}

/// A data row as the reader thread prepared it.
enum Parsed {
    Record {
        day: Day,
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
    layout: Layout,
    offset: u64,
    row: u64,
    chunks: Option<Receiver<Result<Chunk, KindError>>>,
    reader: Option<JoinHandle<()>>,
    chunk: Chunk,
    next_in_chunk: usize,
}

impl Baseline {
    /// Opens the upload at the cursor; a fresh job reads the header and records
    /// its columns with the first batch.
    pub fn open(
        ctx: &JobContext<'_>,
        src: &dyn Source,
        batch: &mut Batch,
    ) -> Result<Baseline, KindError> {
        let cursor: Option<Cursor> = parse_cursor(ctx.cursor)?;
        let upload = src.input(ctx.input)?;
        let (mut input, layout, row) = match cursor {
            Some(c) => (
                CsvInput::open(upload, c.offset)?,
                Layout {
                    width: c.width,
                    date_col: c.date_col,
                },
                c.row,
            ),
            None => {
                let mut input = CsvInput::open(upload, 0)?;
                let (layout, columns) = read_header(&mut input)?;
                batch.set_columns(columns);
                (input, layout, 0)
            }
        };
        let offset = input.offset();
        let (tx, rx) = sync_channel(CHUNKS_AHEAD);
        let reader = std::thread::Builder::new()
            .name(format!("jobd-read-{}", ctx.seq))
            .spawn(move || read_ahead(&mut input, layout, &tx))
            .map_err(|e| KindError::Fatal(format!("cannot start the reader thread: {e}")))?;
        Ok(Baseline {
            layout,
            offset,
            row,
            chunks: Some(rx),
            reader: Some(reader),
            chunk: Chunk {
                rows: Vec::new(),
                arena: String::new(),
            },
            next_in_chunk: 0,
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

/// Reads the header: the `date` column's position and the other columns.
fn read_header(input: &mut CsvInput) -> Result<(Layout, Vec<String>), KindError> {
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
    let width = header.len();
    let columns = header
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != date_col)
        .map(|(_, h)| h)
        .collect();
    Ok((Layout { width, date_col }, columns))
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
                Ok((day, data)) => Parsed::Record { day, data, end },
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
) -> Result<(Day, Range<usize>), String> {
    if rec.len() != layout.width {
        return Err(field_count_error(layout.width, rec.len()));
    }
    let fields = rec.text()?;
    let date = fields.get(layout.date_col);
    let Some(day) = dates::parse(date) else {
        return Err(format!("date {date:?} is not a valid YYYY-MM-DD date"));
    };
    let start = arena.len();
    encode_json_array(
        arena,
        fields
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != layout.date_col)
            .map(|(_, f)| f),
    );
    Ok((day, start..arena.len()))
}

impl JobRun for Baseline {
    fn step(&mut self, _src: &dyn Source, batch: &mut Batch) -> Result<Step, KindError> {
        let Some(i) = self.next_parsed()? else {
            return Ok(Step::Done);
        };
        self.row += 1;
        match &self.chunk.rows[i] {
            Parsed::Record { day, data, end } => {
                batch.add_record(self.row, *day, &self.chunk.arena[data.clone()]);
                self.offset = *end;
            }
            Parsed::Rejected { message, end } => {
                batch.reject(self.row, message.clone());
                self.offset = *end;
            }
        }
        Ok(Step::Unit)
    }

    fn cursor(&self) -> String {
        serde_json::json!({
            "offset": self.offset,
            "row": self.row,
            "width": self.layout.width,
            "date_col": self.layout.date_col,
        })
        .to_string()
    }

    fn total(&self) -> Option<u64> {
        None
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

/// Appends `["a","b",...]` to `out`. Only ASCII needs escaping, so runs of other
/// bytes are copied whole.
fn encode_json_array<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        let mut clean = 0;
        for (at, b) in f.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0..=0x1f => "",
                _ => continue,
            };
            out.push_str(&f[clean..at]);
            if escape.is_empty() {
                let _ = write!(out, "\\u{b:04x}");
            } else {
                out.push_str(escape);
            }
            clean = at + 1;
        }
        out.push_str(&f[clean..]);
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
