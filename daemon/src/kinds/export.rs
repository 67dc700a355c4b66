//! `createExport`: for each date of an inclusive range, the caller's baseline records
//! of that date are appended to the job's CSV file.
//!
//! What an export sees is fixed when it starts: the baseline jobs completed by then
//! (`finished_seq <= snapshot`), and the header they make — `date`, then the union
//! of their columns in first-seen order. The file is truncated back to the length
//! recorded with the cursor on every resume, so a date is never written twice.

use super::{JobContext, JobRun, KindError, Unit};
use crate::dates;
use csv::{Writer, WriterBuilder};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The inclusive range, as stored in the job's `input`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExportRange {
    pub from: i64,
    pub to: i64,
}

impl ExportRange {
    pub fn from_input(input: &str) -> Result<ExportRange, KindError> {
        serde_json::from_str(input)
            .map_err(|e| KindError::Fatal(format!("corrupt export range: {e}")))
    }

    pub fn to_input(self) -> String {
        serde_json::json!({ "from": self.from, "to": self.to }).to_string()
    }

    pub fn days(self) -> u64 {
        (self.to - self.from + 1).max(0) as u64
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    next: i64,
    file_len: u64,
    snapshot: i64,
    columns: Vec<String>,
}

/// A field of a stored record, borrowed unless it had escapes.
#[derive(Deserialize)]
struct Field<'a>(#[serde(borrow)] Cow<'a, str>);

pub struct Export {
    range: ExportRange,
    owner_uid: u32,
    path: PathBuf,
    writer: Writer<File>,
    cursor: Cursor,
    /// Output position of each column, by name.
    column_index: HashMap<String, usize>,
    /// For each source job: where each of its columns goes in the output.
    job_maps: HashMap<i64, Arc<[Option<usize>]>>,
    out: Vec<String>,
}

impl Export {
    pub fn open(ctx: &JobContext<'_>, conn: &Connection) -> Result<Export, KindError> {
        let range = ExportRange::from_input(ctx.input)?;
        let path = ctx.paths.export_file(ctx.id);
        let saved: Option<Cursor> = match ctx.cursor {
            Some(c) => Some(
                serde_json::from_str(c)
                    .map_err(|e| KindError::Fatal(format!("corrupt cursor: {e}")))?,
            ),
            None => None,
        };
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |e| KindError::io(what, e)
        };
        let fresh = saved.is_none();
        let cursor = match saved {
            Some(c) => c,
            None => fresh_cursor(conn, range, ctx.owner_uid)?,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open"))?;
        // Whatever was written after the last commit is not part of the export.
        let keep = if fresh { 0 } else { cursor.file_len };
        file.set_len(keep).map_err(io("cannot truncate"))?;
        file.seek(SeekFrom::Start(keep))
            .map_err(io("cannot seek in"))?;
        let mut writer = WriterBuilder::new().from_writer(file);
        if fresh {
            let header = std::iter::once("date").chain(cursor.columns.iter().map(String::as_str));
            writer
                .write_record(header)
                .map_err(|e| KindError::Fatal(format!("cannot write the header: {e}")))?;
        }
        let column_index = cursor
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i + 1))
            .collect();
        let width = cursor.columns.len() + 1;
        let mut export = Export {
            range,
            owner_uid: ctx.owner_uid,
            path,
            writer,
            cursor,
            column_index,
            job_maps: HashMap::new(),
            out: vec![String::new(); width],
        };
        if fresh {
            export.sync(conn, &AtomicBool::new(false))?;
        }
        Ok(export)
    }

    fn job_map(
        &mut self,
        conn: &Connection,
        job_seq: i64,
    ) -> Result<Arc<[Option<usize>]>, KindError> {
        if let Some(map) = self.job_maps.get(&job_seq) {
            return Ok(Arc::clone(map));
        }
        let columns: String = conn.query_row(
            "SELECT columns FROM baseline_columns WHERE job_seq = ?1",
            [job_seq],
            |r| r.get(0),
        )?;
        let columns: Vec<String> = serde_json::from_str(&columns)
            .map_err(|e| KindError::Fatal(format!("corrupt columns of a baseline: {e}")))?;
        let map: Arc<[Option<usize>]> = columns
            .iter()
            .map(|c| self.column_index.get(c).copied())
            .collect();
        self.job_maps.insert(job_seq, Arc::clone(&map));
        Ok(map)
    }
}

/// Fixes the snapshot and the header of a fresh export.
fn fresh_cursor(
    conn: &Connection,
    range: ExportRange,
    owner_uid: u32,
) -> Result<Cursor, KindError> {
    let snapshot: i64 =
        conn.query_row("SELECT COALESCE(MAX(finished_seq), 0) FROM jobs", [], |r| {
            r.get(0)
        })?;
    // Jobs in the order their first record appears in the output: date, then job.
    let mut stmt = conn.prepare(
        "SELECT c.columns FROM
            (SELECT d.job_seq, MIN(d.date) AS first FROM baseline_days d
               JOIN jobs j ON j.seq = d.job_seq
              WHERE d.date BETWEEN ?2 AND ?3 AND j.owner_uid = ?1
                AND j.state = 'completed' AND j.finished_seq <= ?4
              GROUP BY d.job_seq) AS x
         JOIN baseline_columns c ON c.job_seq = x.job_seq
         ORDER BY x.first, x.job_seq",
    )?;
    let rows = stmt.query_map(
        params![
            owner_uid,
            dates::format(range.from),
            dates::format(range.to),
            snapshot
        ],
        |r| r.get::<_, String>(0),
    )?;
    let mut columns: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for job_columns in rows {
        let job_columns: Vec<String> = serde_json::from_str(&job_columns?)
            .map_err(|e| KindError::Fatal(format!("corrupt columns of a baseline: {e}")))?;
        for c in job_columns {
            if seen.insert(c.clone()) {
                columns.push(c);
            }
        }
    }
    Ok(Cursor {
        next: range.from,
        file_len: 0,
        snapshot,
        columns,
    })
}

impl JobRun for Export {
    fn step(&mut self, conn: &Connection) -> Result<Option<Unit>, KindError> {
        if self.cursor.next > self.range.to {
            return Ok(None);
        }
        let date = dates::format(self.cursor.next);
        let jobs: Vec<i64> = conn
            .prepare_cached(
                "SELECT d.job_seq FROM baseline_days d JOIN jobs j ON j.seq = d.job_seq
                 WHERE d.date = ?1 AND j.owner_uid = ?2
                   AND j.state = 'completed' AND j.finished_seq <= ?3
                 ORDER BY d.job_seq",
            )?
            .query_map(params![date, self.owner_uid, self.cursor.snapshot], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        for job_seq in jobs {
            let map = self.job_map(conn, job_seq)?;
            let mut stmt = conn.prepare_cached(
                "SELECT r.data FROM baseline_groups g
                 JOIN baseline_records r ON r.id BETWEEN g.first AND g.last
                 WHERE g.job_seq = ?1 AND g.date = ?2
                 ORDER BY g.first, r.id",
            )?;
            let mut rows = stmt.query(params![job_seq, date])?;
            while let Some(row) = rows.next()? {
                let corrupt = |e: &dyn std::fmt::Display| {
                    KindError::Fatal(format!("corrupt baseline record: {e}"))
                };
                let data = row.get_ref(0)?.as_str().map_err(|e| corrupt(&e))?;
                let values: Vec<Field<'_>> = serde_json::from_str(data).map_err(|e| corrupt(&e))?;
                for v in self.out.iter_mut() {
                    v.clear();
                }
                self.out[0].push_str(&date);
                for (value, slot) in values.iter().zip(map.iter()) {
                    if let Some(i) = slot {
                        self.out[*i].push_str(&value.0);
                    }
                }
                self.writer.write_record(&self.out).map_err(|e| {
                    KindError::Fatal(format!("cannot write {}: {e}", self.path.display()))
                })?;
            }
        }
        self.cursor.next += 1;
        Ok(Some(Unit::Applied))
    }

    fn cursor(&self) -> String {
        serde_json::to_string(&self.cursor).unwrap_or_default()
    }

    fn total(&self) -> Option<u64> {
        Some(self.range.days())
    }

    fn sync(&mut self, _conn: &Connection, _interrupt: &AtomicBool) -> Result<(), KindError> {
        let path = self.path.display().to_string();
        self.writer
            .flush()
            .map_err(|e| KindError::io(format!("cannot write {path}"), e))?;
        let mut file: &File = self.writer.get_ref();
        file.sync_data()
            .map_err(|e| KindError::io(format!("cannot sync {path}"), e))?;
        self.cursor.file_len = file
            .stream_position()
            .map_err(|e| KindError::io(format!("cannot tell the size of {path}"), e))?;
        Ok(())
    }
}
