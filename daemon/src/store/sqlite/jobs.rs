//! Job records: creation, state changes, progress with cursor, row errors.

use crate::store::{now_ms, JobRow, NewJob, Progress, PruneQuery, StoreError, StoredState};
use jobd_protocol::{JobKind, JobState, RowError};
use rusqlite::{params, Connection, OptionalExtension};

const JOB_COLUMNS: &str = "seq, id, kind, owner_uid, owner, state, processed, failed, total, \
                           created_at, updated_at, error, rate, input, cursor";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JobRow, String, String)> {
    Ok((
        JobRow {
            seq: r.get(0)?,
            id: r.get(1)?,
            kind: JobKind::BaselineCsv,
            owner_uid: r.get(3)?,
            owner: r.get(4)?,
            state: StoredState::Terminating,
            processed: r.get::<_, i64>(6)? as u64,
            failed: r.get::<_, i64>(7)? as u64,
            total: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
            created_at: r.get::<_, i64>(9)? as u64,
            updated_at: r.get::<_, i64>(10)? as u64,
            error: r.get(11)?,
            rate: r.get(12)?,
            input: r.get(13)?,
            cursor: r.get(14)?,
            node: None,
            pending: None,
            epoch: 0,
        },
        r.get(2)?,
        r.get(5)?,
    ))
}

fn finish_row((mut job, kind, state): (JobRow, String, String)) -> Result<JobRow, StoreError> {
    job.kind = kind
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown job kind {kind:?}")))?;
    job.state = StoredState::parse(&state)?;
    Ok(job)
}

/// Inserts a queued job reading `input` and returns its `seq`. The id is taken in
/// `job_ids` first, which keeps it (and its seq) after the job is pruned: an id
/// used once is refused for ever, and seqs only grow.
pub fn insert(conn: &Connection, job: &NewJob<'_>, input: &str) -> Result<i64, StoreError> {
    let taken = conn
        .prepare_cached("INSERT INTO job_ids (id) VALUES (?1)")
        .and_then(|mut s| s.execute(params![job.id]));
    match taken {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(StoreError::DuplicateId(job.id.to_string()))
        }
        Err(e) => return Err(e.into()),
    }
    let seq = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO jobs (seq, id, kind, owner_uid, owner, state, total, created_at, updated_at, rate, input)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?7, ?8, ?9)",
    )?
    .execute(params![
        seq,
        job.id,
        job.kind.as_str(),
        job.owner_uid,
        job.owner,
        job.total.map(|t| t as i64),
        job.created_at as i64,
        job.rate,
        input
    ])?;
    Ok(seq)
}

/// Every job, in creation order.
pub fn load_all(conn: &Connection) -> Result<Vec<JobRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY seq"))?;
    let rows = stmt.query_map([], job_from_row)?;
    rows.map(|r| finish_row(r?)).collect()
}

pub fn load(conn: &Connection, seq: i64) -> Result<JobRow, StoreError> {
    let row = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?1"),
            [seq],
            job_from_row,
        )
        .optional()?
        .ok_or(StoreError::Gone(seq))?;
    finish_row(row)
}

/// Sets a job's state (and error). Completion also takes the next completion
/// number, which orders completed jobs for export snapshots (kept with a
/// baseline job's columns too, where exports read it).
pub fn set_state(
    conn: &Connection,
    seq: i64,
    state: StoredState,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let finished = if state == StoredState::Public(JobState::Completed) {
        let n: i64 = conn
            .prepare_cached(
                "UPDATE counters SET value = value + 1 WHERE name = 'finished' RETURNING value",
            )?
            .query_row([], |r| r.get(0))?;
        conn.prepare_cached("UPDATE baseline_columns SET finished_seq = ?2 WHERE job_seq = ?1")?
            .execute(params![seq, n])?;
        Some(n)
    } else {
        None
    };
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, error = COALESCE(?3, error), updated_at = ?4,
             finished_seq = COALESCE(?5, finished_seq)
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        state.as_str(),
        error,
        now_ms() as i64,
        finished
    ])?;
    Ok(())
}

/// Records progress and the cursor after the units it covers (and an export's
/// committed output length); part of the batch's transaction, so effects and
/// cursor commit together.
pub fn save_progress(
    conn: &Connection,
    seq: i64,
    p: &Progress,
    cursor: &str,
    output_len: Option<u64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET processed = ?2, failed = ?3, total = ?4, cursor = ?5, updated_at = ?6,
             output_len = COALESCE(?7, output_len)
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        p.processed as i64,
        p.failed as i64,
        p.total.map(|t| t as i64),
        cursor,
        now_ms() as i64,
        output_len.map(|l| l as i64)
    ])?;
    Ok(())
}

/// Moves the job from state `from` to `to`; false when it was not in `from`.
pub fn transition(
    conn: &Connection,
    seq: i64,
    from: JobState,
    to: JobState,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE jobs SET state = ?3, updated_at = ?4 WHERE seq = ?1 AND state = ?2",
        params![seq, from.as_str(), to.as_str(), now_ms() as i64],
    )?;
    Ok(n == 1)
}

/// The committed length of an export's output.
pub fn output_len(conn: &Connection, seq: i64) -> Result<u64, StoreError> {
    let len: i64 = conn.query_row("SELECT output_len FROM jobs WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })?;
    Ok(len as u64)
}

/// Up to `limit` row errors after row `after`, in row order.
pub fn row_errors(
    conn: &Connection,
    seq: i64,
    after: u64,
    limit: usize,
) -> Result<Vec<RowError>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT row, message FROM row_errors WHERE job_seq = ?1 AND row > ?2 ORDER BY row LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![seq, after as i64, limit as i64], |r| {
        Ok(RowError {
            row: r.get::<_, i64>(0)? as u64,
            message: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete_row_errors(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM row_errors WHERE job_seq = ?1", [seq])?;
    Ok(())
}

/// Up to `q.limit` jobs that `q` selects, in seq order: `(seq, id, kind, input)`.
pub fn prunable(
    conn: &Connection,
    q: &PruneQuery<'_>,
) -> Result<Vec<(i64, String, JobKind, String)>, StoreError> {
    let states = states_json(q.states)?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, kind, input FROM jobs
          WHERE seq > ?1 AND seq <= ?6 AND state IN (SELECT value FROM json_each(?2))
            AND updated_at <= ?3 AND (?4 IS NULL OR owner = ?4)
          ORDER BY seq LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            q.after,
            states,
            q.ended_before.min(i64::MAX as u64) as i64,
            q.owner,
            q.limit as i64,
            q.through
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, id, kind, input) = row?;
        let kind = kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown job kind {kind:?}")))?;
        out.push((seq, id, kind, input));
    }
    Ok(out)
}

/// Deletes a job's row and row errors (its id stays in `job_ids`).
pub fn forget(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    delete_row_errors(conn, seq)?;
    conn.prepare_cached("DELETE FROM jobs WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}

/// Moves the job to `to` (changed `at`) if it is in one of `from`; false when
/// it was not.
pub fn transition_from(
    conn: &Connection,
    seq: i64,
    from: &[JobState],
    to: JobState,
    at: u64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE jobs SET state = ?3, updated_at = ?4
          WHERE seq = ?1 AND state IN (SELECT value FROM json_each(?2))",
        params![
            seq,
            states_json(from)?,
            to.as_str(),
            at.min(i64::MAX as u64) as i64
        ],
    )?;
    Ok(n == 1)
}

/// Whether the store has the job.
pub fn exists(conn: &Connection, seq: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM jobs WHERE seq = ?1")?
        .query_row([seq], |_| Ok(()))
        .optional()?
        .is_some())
}

/// States as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn states_json(states: &[JobState]) -> Result<String, StoreError> {
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    serde_json::to_string(&names).map_err(|e| StoreError::Corrupt(e.to_string()))
}
