//! `bulkTeam`: each data row creates a team (first column, trimmed) with the other
//! non-empty fields as its members. Team names are unique per user: the store
//! refuses a name that exists, and that row becomes a row error.

use super::csv_input::{CsvInput, Row};
use super::{field_count_error, parse_cursor, JobContext, JobRun, KindError, Step};
use crate::store::{Batch, Source};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Cursor {
    offset: u64,
    row: u64,
    width: usize,
}

pub struct BulkTeam {
    input: CsvInput,
    /// Fields per row, once the header has been read.
    width: Option<usize>,
    row: u64,
}

impl BulkTeam {
    pub fn open(ctx: &JobContext<'_>, src: &dyn Source) -> Result<BulkTeam, KindError> {
        let cursor: Option<Cursor> = parse_cursor(ctx.cursor)?;
        let offset = cursor.as_ref().map_or(0, |c| c.offset);
        Ok(BulkTeam {
            input: CsvInput::open(src.input(ctx.input)?, offset)?,
            width: cursor.as_ref().map(|c| c.width),
            row: cursor.map_or(0, |c| c.row),
        })
    }
}

impl JobRun for BulkTeam {
    fn step(&mut self, _src: &dyn Source, batch: &mut Batch) -> Result<Step, KindError> {
        let width = match self.width {
            Some(w) => w,
            None => {
                let w = self.input.header()?.len();
                self.width = Some(w);
                w
            }
        };
        let Some(next) = self.input.next()? else {
            return Ok(Step::Done);
        };
        self.row += 1;
        let row = self.row;
        let rec = match next {
            Row::Fields(rec) => rec,
            Row::Malformed(message) => {
                batch.reject(row, message);
                return Ok(Step::Unit);
            }
        };
        if rec.len() != width {
            batch.reject(row, field_count_error(width, rec.len()));
            return Ok(Step::Unit);
        }
        let fields = match rec.text() {
            Ok(f) => f,
            Err(message) => {
                batch.reject(row, message);
                return Ok(Step::Unit);
            }
        };
        let name = fields.get(0).trim();
        if name.is_empty() {
            batch.reject(row, "empty team name".into());
            return Ok(Step::Unit);
        }
        let members = fields
            .iter()
            .skip(1)
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect();
        batch.add_team(row, name.to_string(), members);
        Ok(Step::Unit)
    }

    fn cursor(&self) -> String {
        serde_json::json!({
            "offset": self.input.offset(),
            "row": self.row,
            "width": self.width.unwrap_or(0),
        })
        .to_string()
    }

    fn total(&self) -> Option<u64> {
        None
    }
}
