//! `createExport`: for each date of an inclusive range, the caller's baseline records
//! of that date are appended to the job's output (CSV).
//!
//! What an export sees is fixed when it starts: the baseline jobs completed by then
//! (the store's snapshot), and the header they make — `date`, then the union of
//! their columns in first-seen order. A date's records are read in pages; a date
//! with more records than fit in a batch is committed in parts, the cursor naming
//! the last record written, so memory stays flat however big a date is.

use super::{parse_cursor, JobContext, JobRun, KindError, Step};
use crate::store::{Batch, DayQuery, DayRecord, Owner, RecordKey, Source};
use csv::WriterBuilder;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Records asked of the store at a time.
const PAGE: usize = 4096;

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
    /// The date (day number) being exported.
    next: i64,
    snapshot: i64,
    columns: Vec<String>,
    /// The last record written of date `next`, when it is written in parts.
    #[serde(default)]
    after: Option<RecordKey>,
}

/// A field of a stored record, borrowed unless it had escapes.
#[derive(Deserialize)]
struct Field<'a>(#[serde(borrow)] Cow<'a, str>);

pub struct Export {
    range: ExportRange,
    owner_uid: u32,
    owner: String,
    cursor: Cursor,
    /// Output position of each column, by name.
    column_index: HashMap<String, usize>,
    /// For each source job: where each of its columns goes in the output.
    job_maps: HashMap<i64, Arc<[Option<usize>]>>,
    out: Vec<String>,
    page: Vec<DayRecord>,
}

impl Export {
    pub fn open(
        ctx: &JobContext<'_>,
        src: &dyn Source,
        batch: &mut Batch,
    ) -> Result<Export, KindError> {
        let range = ExportRange::from_input(ctx.input)?;
        let owner = Owner {
            uid: ctx.owner_uid,
            name: ctx.owner,
        };
        let cursor = match parse_cursor::<Cursor>(ctx.cursor)? {
            Some(c) => c,
            None => {
                let plan = src.export_plan(owner, range.from, range.to)?;
                let c = Cursor {
                    next: range.from,
                    snapshot: plan.snapshot,
                    columns: plan.columns,
                    after: None,
                };
                let header = std::iter::once("date").chain(c.columns.iter().map(String::as_str));
                write_csv(batch.output_mut(), [header])?;
                c
            }
        };
        let column_index = cursor
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i + 1))
            .collect();
        let width = cursor.columns.len() + 1;
        Ok(Export {
            range,
            owner_uid: ctx.owner_uid,
            owner: ctx.owner.to_string(),
            cursor,
            column_index,
            job_maps: HashMap::new(),
            out: vec![String::new(); width],
            page: Vec::new(),
        })
    }

    fn job_map(
        &mut self,
        src: &dyn Source,
        job_seq: i64,
    ) -> Result<Arc<[Option<usize>]>, KindError> {
        if let Some(map) = self.job_maps.get(&job_seq) {
            return Ok(Arc::clone(map));
        }
        let map: Arc<[Option<usize>]> = src
            .columns_of(job_seq)?
            .iter()
            .map(|c| self.column_index.get(c).copied())
            .collect();
        self.job_maps.insert(job_seq, Arc::clone(&map));
        Ok(map)
    }
}

/// Appends CSV records to `out`, as the `csv` crate writes them by default.
fn write_csv<R, I, F>(out: &mut Vec<u8>, records: R) -> Result<(), KindError>
where
    R: IntoIterator<Item = I>,
    I: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let mut w = WriterBuilder::new().from_writer(out);
    for r in records {
        w.write_record(r)
            .map_err(|e| KindError::Fatal(format!("cannot write the export: {e}")))?;
    }
    w.flush()
        .map_err(|e| KindError::Fatal(format!("cannot write the export: {e}")))
}

impl JobRun for Export {
    fn step(&mut self, src: &dyn Source, batch: &mut Batch) -> Result<Step, KindError> {
        if self.cursor.next > self.range.to {
            return Ok(Step::Done);
        }
        let date = crate::dates::format(self.cursor.next);
        let mut page = std::mem::take(&mut self.page);
        page.clear();
        src.day_records(
            &DayQuery {
                owner: Owner {
                    uid: self.owner_uid,
                    name: &self.owner,
                },
                snapshot: self.cursor.snapshot,
                day: self.cursor.next,
                after: self.cursor.after,
                limit: PAGE,
            },
            &mut page,
        )?;
        let mut w = WriterBuilder::new().from_writer(batch.output_mut());
        for rec in &page {
            let map = self.job_map(src, rec.key.job_seq)?;
            let corrupt = |e: &dyn std::fmt::Display| {
                KindError::Fatal(format!("corrupt baseline record: {e}"))
            };
            let values: Vec<Field<'_>> =
                serde_json::from_str(&rec.data).map_err(|e| corrupt(&e))?;
            for v in self.out.iter_mut() {
                v.clear();
            }
            self.out[0].push_str(&date);
            for (value, slot) in values.iter().zip(map.iter()) {
                if let Some(i) = slot {
                    self.out[*i].push_str(&value.0);
                }
            }
            w.write_record(&self.out)
                .map_err(|e| KindError::Fatal(format!("cannot write the export: {e}")))?;
        }
        w.flush()
            .map_err(|e| KindError::Fatal(format!("cannot write the export: {e}")))?;
        drop(w);
        let step = if page.len() < PAGE {
            self.cursor.next += 1;
            self.cursor.after = None;
            batch.day_done();
            Step::Unit
        } else {
            self.cursor.after = page.last().map(|r| r.key);
            Step::Part
        };
        self.page = page;
        Ok(step)
    }

    fn cursor(&self) -> String {
        serde_json::to_string(&self.cursor).unwrap_or_default()
    }

    fn total(&self) -> Option<u64> {
        Some(self.range.days())
    }
}
