//! `baselineCSV`: each data row of an uploaded CSV becomes a baseline record of the
//! submitting user. The header must name a `date` column.

use super::csv_input::CsvInput;
use super::{field_count_error, spool_path, utf8_fields, JobContext, JobRun, KindError, Unit};
use crate::dates;
use crate::store::StoreError;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Cursor {
    offset: u64,
    row: u64,
    width: usize,
    date_col: usize,
}

pub struct Baseline {
    input: CsvInput,
    seq: i64,
    owner_uid: u32,
    /// `None` until the header has been read (fresh job).
    layout: Option<(usize, usize)>,
    row: u64,
    /// Rows applied since the last commit, written out sorted by date in `sync`:
    /// the date index then takes its inserts in order instead of at random.
    pending: Vec<Pending>,
    /// The pending rows' data, back to back.
    arena: String,
}

struct Pending {
    date: [u8; 10],
    id: i64,
    data: std::ops::Range<usize>,
}

impl Baseline {
    pub fn open(ctx: &JobContext<'_>) -> Result<Baseline, KindError> {
        let cursor: Option<Cursor> = match ctx.cursor {
            Some(c) => Some(
                serde_json::from_str(c)
                    .map_err(|e| KindError::Fatal(format!("corrupt cursor: {e}")))?,
            ),
            None => None,
        };
        let offset = cursor.as_ref().map_or(0, |c| c.offset);
        Ok(Baseline {
            input: CsvInput::open(&spool_path(ctx), offset)?,
            seq: ctx.seq,
            owner_uid: ctx.owner_uid,
            layout: cursor.as_ref().map(|c| (c.width, c.date_col)),
            row: cursor.map_or(0, |c| c.row),
            pending: Vec::new(),
            arena: String::new(),
        })
    }

    fn read_header(&mut self, conn: &Connection) -> Result<(usize, usize), KindError> {
        let header = self.input.header()?;
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
        conn.execute(
            "INSERT INTO baseline_columns (job_seq, columns) VALUES (?1, ?2)",
            params![self.seq, columns],
        )?;
        Ok((header.len(), date_col))
    }
}

impl JobRun for Baseline {
    fn step(&mut self, conn: &Connection) -> Result<Option<Unit>, KindError> {
        let (width, date_col) = match self.layout {
            Some(l) => l,
            None => {
                let l = self.read_header(conn)?;
                self.layout = Some(l);
                l
            }
        };
        let Some(rec) = self.input.next()? else {
            return Ok(None);
        };
        self.row += 1;
        let row = self.row;
        let reject = |message: String| Ok(Some(Unit::Rejected { row, message }));
        if rec.len() != width {
            return reject(field_count_error(width, rec.len()));
        }
        let fields = match utf8_fields(rec) {
            Ok(f) => f,
            Err(message) => return reject(message),
        };
        let date = fields[date_col];
        if dates::parse(date).is_none() {
            return reject(format!("date {date:?} is not a valid YYYY-MM-DD date"));
        }
        let start = self.arena.len();
        encode_json_array(
            &mut self.arena,
            fields
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != date_col)
                .map(|(_, f)| *f),
        );
        let mut day = [0u8; 10];
        day.copy_from_slice(date.as_bytes());
        self.pending.push(Pending {
            date: day,
            id: record_id(self.seq, row),
            data: start..self.arena.len(),
        });
        Ok(Some(Unit::Applied))
    }

    fn cursor(&self) -> String {
        let (width, date_col) = self.layout.unwrap_or((0, 0));
        serde_json::json!({
            "offset": self.input.offset(),
            "row": self.row,
            "width": width,
            "date_col": date_col,
        })
        .to_string()
    }

    fn total(&self) -> Option<u64> {
        None
    }

    fn sync(&mut self, conn: &Connection) -> Result<(), KindError> {
        self.pending.sort_unstable_by_key(|p| (p.date, p.id));
        let mut insert = conn.prepare_cached(
            "INSERT INTO baseline_records (owner_uid, date, id, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut day = conn.prepare_cached(
            "INSERT OR IGNORE INTO baseline_days (job_seq, date) VALUES (?1, ?2)",
        )?;
        let mut last_date = None;
        for p in &self.pending {
            // Dates were validated as ASCII when the row was read.
            let date = std::str::from_utf8(&p.date).unwrap_or_default();
            if last_date != Some(p.date) {
                day.execute(params![self.seq, date])?;
                last_date = Some(p.date);
            }
            insert.execute(params![self.owner_uid, date, p.id, &self.arena[p.data.clone()]])?;
        }
        self.pending.clear();
        self.arena.clear();
        Ok(())
    }
}

/// A record's primary key: its job's rows form one contiguous range.
pub fn record_id(seq: i64, row: u64) -> i64 {
    (seq << 32) | (row as i64 & 0xffff_ffff)
}

pub fn rollback(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM baseline_records
         WHERE owner_uid = (SELECT owner_uid FROM jobs WHERE seq = ?1)
           AND date IN (SELECT date FROM baseline_days WHERE job_seq = ?1)
           AND id BETWEEN ?2 AND ?3",
        params![seq, record_id(seq, 0), record_id(seq, 0xffff_ffff)],
    )?;
    conn.execute("DELETE FROM baseline_days WHERE job_seq = ?1", [seq])?;
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
