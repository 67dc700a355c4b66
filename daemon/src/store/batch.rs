//! A batch: the typed effects of the units a worker handled since its last commit.
//! Kinds add to it; a store applies all of it in one transaction, or none of it.

use super::{CommitError, Day, End, Progress, Seal};
use jobd_protocol::RowError;
use std::ops::Range;

/// A baseline record: a data row of an upload, its date, and its other fields as
/// a JSON array (in the batch's arena).
#[derive(Debug, Clone)]
pub struct Record {
    pub row: u64,
    pub day: Day,
    data: Range<usize>,
}

/// A team to create: names are unique per user, so the store may refuse it.
#[derive(Debug, Clone)]
pub struct Team {
    pub row: u64,
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<Record>,
    /// The records' data, back to back.
    arena: String,
    teams: Vec<Team>,
    team_bytes: usize,
    /// Row errors the kind found.
    rejects: Vec<RowError>,
    /// Bytes an export appends to its output.
    output: Vec<u8>,
    /// Dates an export completed.
    days: u64,
    /// A baseline job's non-date columns, recorded with its first batch.
    columns: Option<Vec<String>>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn add_record(&mut self, row: u64, day: Day, data: &str) {
        let start = self.arena.len();
        self.arena.push_str(data);
        self.records.push(Record {
            row,
            day,
            data: start..self.arena.len(),
        });
    }

    pub fn add_team(&mut self, row: u64, name: String, members: Vec<String>) {
        self.team_bytes += name.len() + members.iter().map(|m| m.len() + 24).sum::<usize>() + 64;
        self.teams.push(Team { row, name, members });
    }

    pub fn reject(&mut self, row: u64, message: String) {
        self.rejects.push(RowError { row, message });
    }

    /// Where an export writes what it appends to its output.
    pub fn output_mut(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// An export finished a date (one unit).
    pub fn day_done(&mut self) {
        self.days += 1;
    }

    pub fn set_columns(&mut self, columns: Vec<String>) {
        self.columns = Some(columns);
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn data(&self, r: &Record) -> &str {
        &self.arena[r.data.clone()]
    }

    /// Stable: records of a date stay in row order.
    pub fn sort_records_by_day(&mut self) {
        self.records.sort_by_key(|r| r.day);
    }

    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    pub fn rejects(&self) -> &[RowError] {
        &self.rejects
    }

    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub fn columns(&self) -> Option<&[String]> {
        self.columns.as_deref()
    }

    /// Units handled in this batch (applied or rejected).
    pub fn units(&self) -> u64 {
        (self.records.len() + self.teams.len() + self.rejects.len()) as u64 + self.days
    }

    pub fn is_empty(&self) -> bool {
        self.units() == 0 && self.output.is_empty() && self.columns.is_none()
    }

    /// Memory the batch holds, about.
    pub fn bytes(&self) -> usize {
        self.arena.len() + self.records.len() * 40 + self.team_bytes + self.output.len()
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.records.clear();
        self.arena.clear();
        self.teams.clear();
        self.team_bytes = 0;
        self.rejects.clear();
        self.output.clear();
        self.days = 0;
        self.columns = None;
    }

    /// Keeps only the units of rows before `row`.
    pub fn truncate_before(&mut self, row: u64) {
        self.records.retain(|r| r.row < row);
        self.teams.retain(|t| t.row < row);
        self.rejects.retain(|e| e.row < row);
    }

    /// The row error of a team the store refused because its name exists.
    pub fn conflict(&self, team: usize) -> RowError {
        let t = &self.teams[team];
        RowError {
            row: t.row,
            message: format!("team {:?} already exists", t.name),
        }
    }
}

/// The job's counts once `batch` commits, the teams at `conflicts` (indices, in
/// order) having been refused; or the first row error past the job's limit.
pub fn tally(batch: &Batch, conflicts: &[usize], seal: &Seal<'_>) -> Result<Progress, CommitError> {
    let applied = (batch.records.len() + batch.teams.len() - conflicts.len()) as u64 + batch.days;
    let failed = seal.before.failed + (batch.rejects.len() + conflicts.len()) as u64;
    if failed > seal.max_failed {
        return Err(CommitError::OverLimit(first_over(batch, conflicts, seal)));
    }
    let processed = seal.before.processed + applied;
    let total = match seal.end {
        Some(End::Completed) => Some(seal.total.unwrap_or(processed + failed)),
        _ => seal.total,
    };
    Ok(Progress {
        processed,
        failed,
        total,
    })
}

/// Row errors of the batch in row order (the kind's and the store's merged); the
/// one that takes the job past its limit.
fn first_over(batch: &Batch, conflicts: &[usize], seal: &Seal<'_>) -> RowError {
    let budget = seal.max_failed.saturating_sub(seal.before.failed) as usize;
    let (mut r, mut c) = (batch.rejects.iter().peekable(), conflicts.iter().peekable());
    let mut n = 0;
    loop {
        let next = match (r.peek(), c.peek()) {
            (Some(e), Some(&&t)) if e.row < batch.teams[t].row => r.next().cloned(),
            (_, Some(&&t)) => {
                c.next();
                Some(batch.conflict(t))
            }
            (Some(_), None) => r.next().cloned(),
            (None, None) => None,
        };
        match next {
            Some(e) if n == budget => return e,
            Some(_) => n += 1,
            // Unreachable when the counts say the limit is passed.
            None => {
                return RowError {
                    row: 0,
                    message: "too many row errors".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(failed: u64, max_failed: u64) -> Seal<'static> {
        Seal {
            before: Progress {
                processed: 10,
                failed,
                total: None,
            },
            total: None,
            cursor: "{}",
            end: None,
            max_failed,
        }
    }

    #[test]
    fn counts_and_the_first_error_past_the_limit() {
        let mut b = Batch::new();
        b.add_team(1, "a".into(), vec![]);
        b.reject(2, "bad".into());
        b.add_team(3, "b".into(), vec![]);
        b.add_team(4, "c".into(), vec![]);
        b.reject(5, "worse".into());
        let p = tally(&b, &[1], &seal(0, 10)).expect("within the limit");
        assert_eq!((p.processed, p.failed), (12, 3));
        // Budget 1: the reject at row 2 fits, the conflict at row 3 does not.
        match tally(&b, &[1], &seal(0, 1)) {
            Err(CommitError::OverLimit(e)) => {
                assert_eq!(e.row, 3);
                assert_eq!(e.message, "team \"b\" already exists");
            }
            other => panic!("{other:?}"),
        }
        match tally(&b, &[1], &seal(1, 3)) {
            Err(CommitError::OverLimit(e)) => assert_eq!(e.row, 5),
            other => panic!("{other:?}"),
        }
        b.truncate_before(3);
        let p = tally(&b, &[], &seal(0, 1)).expect("truncated");
        assert_eq!((p.processed, p.failed), (11, 1));
    }

    #[test]
    fn completion_sets_the_total() {
        let mut b = Batch::new();
        b.add_record(1, 0, "[]");
        b.reject(2, "x".into());
        let mut s = seal(0, 10);
        s.end = Some(End::Completed);
        let p = tally(&b, &[], &s).expect("ok");
        assert_eq!(p.total, Some(12));
    }
}
