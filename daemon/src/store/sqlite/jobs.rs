//! Job records: creation, state changes, progress with cursor, row errors.

use crate::store::{now_ms, JobRow, NewJob, Progress, StoreError, StoredState};
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

/// Inserts a queued job reading `input` and returns its `seq`.
pub fn insert(conn: &Connection, job: &NewJob<'_>, input: &str) -> Result<i64, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO jobs (id, kind, owner_uid, owner, state, total, created_at, updated_at, rate, input)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6, ?7, ?8)",
        params![
            job.id,
            job.kind.as_str(),
            job.owner_uid,
            job.owner,
            job.total.map(|t| t as i64),
            job.created_at as i64,
            job.rate,
            input
        ],
    );
    match inserted {
        Ok(_) => Ok(conn.last_insert_rowid()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::DuplicateId(job.id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
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
        .ok_or_else(|| StoreError::Corrupt(format!("job {seq} vanished")))?;
    finish_row(row)
}

/// Sets a job's state (and error). Completion also takes the next `finished_seq`,
/// which orders completed jobs for export snapshots.
pub fn set_state(
    conn: &Connection,
    seq: i64,
    state: StoredState,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let completing = state == StoredState::Public(JobState::Completed);
    conn.execute(
        "UPDATE jobs SET state = ?2, error = COALESCE(?3, error), updated_at = ?4,
             finished_seq = CASE WHEN ?5 THEN (SELECT COALESCE(MAX(finished_seq), 0) + 1 FROM jobs)
                                 ELSE finished_seq END
         WHERE seq = ?1",
        params![seq, state.as_str(), error, now_ms() as i64, completing],
    )?;
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
