//! Applying a batch's effects with the job's cursor, and undoing all of a job's
//! effects.
//!
//! Baseline records are appended, never inserted in the middle: a batch's records
//! are written sorted by date, and id = (job seq << 32) | the record's ordinal in
//! its job, so every (batch, date) of a job is one contiguous id range, which
//! `baseline_groups` lists. A batch redone after a crash gets the same ids, so it
//! cannot be applied twice.

use super::{files, jobs, SqliteStore};
use crate::dates;
use crate::store::{
    tally, Batch, CommitError, Effects, End, Expect, Forgotten, Progress, PruneQuery, Seal,
    StoreError, StoredState,
};
use jobd_protocol::{JobKind, JobState};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicBool, Ordering};

/// Records one job may hold: ordinals fill the low 32 bits of a record's id.
pub const MAX_RECORDS: u64 = 0xffff_ffff;

/// The id of a job's record with ordinal `n` (from 1): a job's records form one
/// contiguous range, after those of every earlier job.
pub fn record_id(seq: i64, n: u64) -> i64 {
    (seq << 32) | (n & MAX_RECORDS) as i64
}

/// Records per INSERT statement: one statement keeps its cursor at the end of the
/// table across rows, where one per row seeks from the root every time.
const ROWS_PER_INSERT: usize = 64;

/// What a commit needs to know of its job.
struct JobFiles {
    id: String,
    kind: JobKind,
    input: String,
}

pub fn commit(
    store: &SqliteStore,
    seq: i64,
    batch: &mut Batch,
    seal: &Seal<'_>,
    interrupt: &AtomicBool,
) -> Result<Progress, CommitError> {
    let conn = store.conn()?;
    let job = conn
        .query_row(
            "SELECT id, kind, input FROM jobs WHERE seq = ?1",
            [seq],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
        )
        .map_err(StoreError::from)?;
    let job = JobFiles {
        kind: job
            .1
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown job kind {:?}", job.1)))?,
        id: job.0,
        input: job.2,
    };
    // An export's bytes go to its file first, made durable; the length committed
    // with the cursor says how much of the file counts.
    let output_len = if batch.output().is_empty() {
        None
    } else {
        let committed = jobs::output_len(&conn, seq)?;
        Some(files::append_output(
            &store.inner.dirs,
            &job.id,
            committed,
            batch.output(),
        )?)
    };
    batch.sort_records_by_day();
    let writing = store.lock_writes();
    // Deferred: the transaction reads the WAL from its first statement; no other
    // writer can slip in before it, as the write lock keeps them out.
    conn.execute_batch("BEGIN").map_err(StoreError::from)?;
    let committed = apply(&conn, seq, batch, seal, interrupt, output_len).and_then(|p| {
        conn.execute_batch("COMMIT").map_err(StoreError::from)?;
        Ok(p)
    });
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    drop(writing);
    let progress = committed?;
    match seal.end {
        Some(End::Completed) => files::remove_input(&store.inner.dirs, job.kind, &job.input),
        Some(End::Failed(_)) => {
            files::remove_input(&store.inner.dirs, job.kind, &job.input);
            files::remove_output(&store.inner.dirs, job.kind, &job.id);
        }
        None => {}
    }
    Ok(progress)
}

fn apply(
    conn: &Connection,
    seq: i64,
    batch: &Batch,
    seal: &Seal<'_>,
    interrupt: &AtomicBool,
    output_len: Option<u64>,
) -> Result<Progress, CommitError> {
    insert_records(conn, seq, batch, interrupt)?;
    let conflicts = insert_teams(conn, seq, batch)?;
    let progress = tally(batch, &conflicts, seal)?;
    let mut add_error = conn
        .prepare_cached("INSERT INTO row_errors (job_seq, row, message) VALUES (?1, ?2, ?3)")
        .map_err(StoreError::from)?;
    let conflicts = conflicts.iter().map(|&t| batch.conflict(t));
    for e in batch.rejects().iter().cloned().chain(conflicts) {
        add_error
            .execute(params![seq, e.row as i64, e.message])
            .map_err(StoreError::from)?;
    }
    if let Some(columns) = batch.columns() {
        let columns = serde_json::to_string(columns)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode columns: {e}")))?;
        conn.execute(
            "INSERT INTO baseline_columns (job_seq, columns, owner_uid)
             VALUES (?1, ?2, (SELECT owner_uid FROM jobs WHERE seq = ?1))",
            params![seq, columns],
        )
        .map_err(StoreError::from)?;
    }
    jobs::save_progress(conn, seq, &progress, seal.cursor, output_len)?;
    match seal.end {
        Some(End::Completed) => {
            jobs::set_state(conn, seq, StoredState::Public(JobState::Completed), None)?
        }
        Some(End::Failed(message)) => jobs::set_state(
            conn,
            seq,
            StoredState::Public(JobState::Failed),
            Some(message),
        )?,
        None => {}
    }
    Ok(progress)
}

/// Records of the job committed so far: its highest ordinal.
fn stored_records(conn: &Connection, seq: i64) -> Result<u64, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT MAX(id) FROM baseline_records WHERE id BETWEEN ?1 AND ?2")?
        .query_row(
            params![record_id(seq, 0), record_id(seq, MAX_RECORDS)],
            |r| r.get(0),
        )?;
    Ok(max.map_or(0, |m| (m as u64) & MAX_RECORDS))
}

/// The batch's records (sorted by date), their groups and days.
fn insert_records(
    conn: &Connection,
    seq: i64,
    batch: &Batch,
    interrupt: &AtomicBool,
) -> Result<(), CommitError> {
    let records = batch.records();
    if records.is_empty() {
        return Ok(());
    }
    let stored = stored_records(conn, seq)?;
    if stored + records.len() as u64 > MAX_RECORDS {
        return Err(StoreError::TooLarge(format!(
            "more than {MAX_RECORDS} records in one upload: split the file"
        ))
        .into());
    }
    let base = record_id(seq, stored);
    let mut many = conn
        .prepare_cached(&insert_sql(ROWS_PER_INSERT))
        .map_err(StoreError::from)?;
    let mut one = conn
        .prepare_cached(&insert_sql(1))
        .map_err(StoreError::from)?;
    for (n, rows) in records.chunks(ROWS_PER_INSERT).enumerate() {
        if n % 16 == 15 && interrupt.load(Ordering::Relaxed) {
            return Err(CommitError::Interrupted);
        }
        let first = base + 1 + (n * ROWS_PER_INSERT) as i64;
        if rows.len() == ROWS_PER_INSERT {
            for (i, r) in rows.iter().enumerate() {
                many.raw_bind_parameter(3 * i + 1, first + i as i64)
                    .map_err(StoreError::from)?;
                many.raw_bind_parameter(3 * i + 2, r.row as i64)
                    .map_err(StoreError::from)?;
                many.raw_bind_parameter(3 * i + 3, batch.data(r))
                    .map_err(StoreError::from)?;
            }
            many.raw_execute().map_err(StoreError::from)?;
        } else {
            for (i, r) in rows.iter().enumerate() {
                one.execute(params![first + i as i64, r.row as i64, batch.data(r)])
                    .map_err(StoreError::from)?;
            }
        }
    }
    let mut group = conn
        .prepare_cached(
            "INSERT INTO baseline_groups (job_seq, date, first, last) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(StoreError::from)?;
    let mut day = conn
        .prepare_cached("INSERT OR IGNORE INTO baseline_days (date, job_seq) VALUES (?1, ?2)")
        .map_err(StoreError::from)?;
    let mut first = 0;
    for (i, r) in records.iter().enumerate() {
        if records.get(i + 1).is_none_or(|n| n.day != r.day) {
            let date = dates::format(r.day);
            let (lo, hi) = (base + 1 + first as i64, base + 1 + i as i64);
            group
                .execute(params![seq, date, lo, hi])
                .map_err(StoreError::from)?;
            day.execute(params![date, seq]).map_err(StoreError::from)?;
            first = i + 1;
        }
    }
    Ok(())
}

/// `INSERT INTO baseline_records` of `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO baseline_records (id, row, data) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
    }
    sql
}

/// Creates the batch's teams in row order; returns those refused because the
/// owner already has a team of that name.
fn insert_teams(conn: &Connection, seq: i64, batch: &Batch) -> Result<Vec<usize>, StoreError> {
    let mut conflicts = Vec::new();
    if batch.teams().is_empty() {
        return Ok(conflicts);
    }
    let owner_uid: u32 =
        conn.query_row("SELECT owner_uid FROM jobs WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })?;
    let mut team = conn.prepare_cached(
        "INSERT INTO teams (owner_uid, name, job_seq, row) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (owner_uid, name) DO NOTHING",
    )?;
    let mut member = conn.prepare_cached(
        "INSERT INTO team_members (team_id, position, member) VALUES (?1, ?2, ?3)",
    )?;
    for (i, t) in batch.teams().iter().enumerate() {
        if team.execute(params![owner_uid, t.name, seq, t.row as i64])? == 0 {
            conflicts.push(i);
            continue;
        }
        let team_id = conn.last_insert_rowid();
        for (position, m) in t.members.iter().enumerate() {
            member.execute(params![team_id, position as i64, m])?;
        }
    }
    Ok(conflicts)
}

/// Rolls back everything the job wrote and ends it as `terminated`, if it is as
/// `expect`s. The intent is committed first, so that a crash during the rollback
/// is finished by recovery. (One process holds the store: a claim always holds.)
pub fn terminate(store: &SqliteStore, seq: i64, expect: Expect<'_>) -> Result<bool, StoreError> {
    let marked = {
        let conn = store.conn()?;
        let _w = store.lock_writes();
        match expect {
            Expect::Claim(_) => {
                jobs::set_state(&conn, seq, StoredState::Terminating, None)?;
                true
            }
            Expect::States(states) => {
                let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
                let json = serde_json::to_string(&states)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                conn.execute(
                    "UPDATE jobs SET state = 'terminating', updated_at = ?3
                     WHERE seq = ?1 AND state IN (SELECT value FROM json_each(?2))",
                    params![seq, json, crate::store::now_ms() as i64],
                )? == 1
            }
        }
    };
    if marked {
        finish_terminate(store, seq)?;
    }
    Ok(marked)
}

/// The rollback of a job marked `terminating`.
pub fn finish_terminate(store: &SqliteStore, seq: i64) -> Result<(), StoreError> {
    let job = jobs::load(&*store.conn()?, seq)?;
    store.write(|conn| {
        undo(conn, seq)?;
        conn.execute("UPDATE jobs SET output_len = 0 WHERE seq = ?1", [seq])?;
        jobs::set_state(conn, seq, StoredState::Public(JobState::Terminated), None)
    })?;
    files::remove_input(&store.inner.dirs, job.kind, &job.input);
    files::remove_output(&store.inner.dirs, job.kind, &job.id);
    Ok(())
}

/// Undoes a finished job's effects and marks it `reverted`, in one transaction
/// that first checks (and changes) its state: a crash leaves it either reverted
/// or untouched. Its counts and row errors stay.
pub fn revert(
    store: &SqliteStore,
    seq: i64,
    from: &[JobState],
    at: u64,
) -> Result<bool, StoreError> {
    store.write(|conn| {
        if !jobs::transition_from(conn, seq, from, JobState::Reverted, at)? {
            return if jobs::exists(conn, seq)? {
                Ok(false)
            } else {
                Err(StoreError::Gone(seq))
            };
        }
        undo_effects(conn, seq)?;
        Ok(true)
    })
}

/// What undoing the job would remove, read in one transaction.
pub fn effects(store: &SqliteStore, seq: i64, names: usize) -> Result<Effects, StoreError> {
    let conn = store.conn()?;
    conn.execute_batch("BEGIN")?;
    let read = (|| {
        let (records, output_len): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM baseline_records WHERE id BETWEEN ?2 AND ?3),
                        output_len
                   FROM jobs WHERE seq = ?1",
                params![seq, record_id(seq, 0), record_id(seq, MAX_RECORDS)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or(StoreError::Gone(seq))?;
        let (first, last): (Option<String>, Option<String>) = conn.query_row(
            "SELECT MIN(date), MAX(date) FROM baseline_groups WHERE job_seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let teams: i64 = conn.query_row(
            "SELECT COUNT(*) FROM teams WHERE job_seq = ?1",
            [seq],
            |r| r.get(0),
        )?;
        let team_names = conn
            .prepare("SELECT name FROM teams WHERE job_seq = ?1 ORDER BY row LIMIT ?2")?
            .query_map(params![seq, names as i64], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        let day = |d: Option<String>| d.as_deref().and_then(dates::parse);
        Ok(Effects {
            records: records as u64,
            first_day: day(first),
            last_day: day(last),
            teams: teams as u64,
            team_names,
            output_bytes: output_len as u64,
        })
    })();
    let _ = conn.execute_batch("COMMIT");
    read
}

/// Forgets one batch of jobs in one transaction, then removes what files they
/// left (after the commit: a crash in between leaves strays, which recovery
/// removes).
pub fn prune(store: &SqliteStore, q: &PruneQuery<'_>) -> Result<Vec<Forgotten>, StoreError> {
    let gone = store.write(|conn| {
        let jobs = jobs::prunable(conn, q)?;
        for (seq, ..) in &jobs {
            jobs::forget(conn, *seq)?;
        }
        Ok(jobs)
    })?;
    // A prune of many batches writes much to the WAL: copied back on the
    // checkpoint thread, not inside a later commit that crosses
    // `wal_autocheckpoint` (which would hold every writer, a stop's too).
    if !gone.is_empty() {
        store.committed_bulk();
    }
    Ok(gone
        .into_iter()
        .map(|(seq, id, kind, input)| {
            files::remove_input(&store.inner.dirs, kind, &input);
            files::remove_output(&store.inner.dirs, kind, &id);
            Forgotten { seq, id }
        })
        .collect())
}

/// Deletes every effect of the job and its row errors.
fn undo(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    undo_effects(conn, seq)?;
    jobs::delete_row_errors(conn, seq)
}

/// Deletes every effect of the job: its records (with their groups, days and
/// columns) and its teams.
fn undo_effects(conn: &Connection, seq: i64) -> Result<(), StoreError> {
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
    conn.execute(
        "DELETE FROM team_members WHERE team_id IN (SELECT id FROM teams WHERE job_seq = ?1)",
        [seq],
    )?;
    conn.execute("DELETE FROM teams WHERE job_seq = ?1", [seq])?;
    Ok(())
}
