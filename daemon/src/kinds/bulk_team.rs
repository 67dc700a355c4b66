//! `bulkTeam`: each data row creates a team (first column, trimmed) with the other
//! non-empty fields as its members. Team names are unique per user.

use super::csv_input::{CsvInput, Row};
use super::{field_count_error, spool_path, utf8_fields, JobContext, JobRun, KindError, Unit};
use crate::store::StoreError;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Cursor {
    offset: u64,
    row: u64,
    width: usize,
}

pub struct BulkTeam {
    input: CsvInput,
    seq: i64,
    owner_uid: u32,
    /// Fields per row, once the header has been read.
    width: Option<usize>,
    row: u64,
}

impl BulkTeam {
    pub fn open(ctx: &JobContext<'_>) -> Result<BulkTeam, KindError> {
        let cursor: Option<Cursor> = match ctx.cursor {
            Some(c) => Some(
                serde_json::from_str(c)
                    .map_err(|e| KindError::Fatal(format!("corrupt cursor: {e}")))?,
            ),
            None => None,
        };
        Ok(BulkTeam {
            input: CsvInput::open(&spool_path(ctx), cursor.as_ref().map_or(0, |c| c.offset))?,
            seq: ctx.seq,
            owner_uid: ctx.owner_uid,
            width: cursor.as_ref().map(|c| c.width),
            row: cursor.map_or(0, |c| c.row),
        })
    }
}

impl JobRun for BulkTeam {
    fn step(&mut self, conn: &Connection) -> Result<Option<Unit>, KindError> {
        let width = match self.width {
            Some(w) => w,
            None => {
                let w = self.input.header()?.len();
                self.width = Some(w);
                w
            }
        };
        let Some(next) = self.input.next()? else {
            return Ok(None);
        };
        self.row += 1;
        let row = self.row;
        let rejected = |message: String| Ok(Some(Unit::Rejected { row, message }));
        let rec = match next {
            Row::Fields(rec) => rec,
            Row::Malformed(message) => return rejected(message),
        };
        if rec.len() != width {
            return rejected(field_count_error(width, rec.len()));
        }
        let fields = match utf8_fields(rec) {
            Ok(f) => f,
            Err(message) => return rejected(message),
        };
        let name = fields[0].trim();
        if name.is_empty() {
            return rejected("empty team name".into());
        }
        let inserted = conn
            .prepare_cached(
                "INSERT INTO teams (owner_uid, name, job_seq, row) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner_uid, name) DO NOTHING",
            )?
            .execute(params![self.owner_uid, name, self.seq, row as i64])?;
        if inserted == 0 {
            return rejected(format!("team {name:?} already exists"));
        }
        let team_id = conn.last_insert_rowid();
        let mut add = conn.prepare_cached(
            "INSERT INTO team_members (team_id, position, member) VALUES (?1, ?2, ?3)",
        )?;
        let members = fields[1..]
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty());
        for (position, member) in members.enumerate() {
            add.execute(params![team_id, position as i64, member])?;
        }
        Ok(Some(Unit::Applied))
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

pub fn rollback(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM team_members WHERE team_id IN (SELECT id FROM teams WHERE job_seq = ?1)",
        [seq],
    )?;
    conn.execute("DELETE FROM teams WHERE job_seq = ?1", [seq])?;
    Ok(())
}
