//! Job records in PostgreSQL: creation, claims and leases, state changes, row
//! errors. Every change a client could see is announced by the table's trigger.

use crate::store::{now_ms, JobRow, NewJob, StoreError, StoredState};
use deadpool_postgres::{GenericClient, Object};
use jobd_protocol::{Action, JobState, RowError};
use std::time::Duration;
use tokio_postgres::Row;

pub const JOB_COLUMNS: &str = "seq, id, kind, owner_uid, owner, state, processed, failed, total, \
                               created_at, updated_at, error, rate, input, cursor, node, control, epoch";

/// The claim's epoch, in [`JOB_COLUMNS`].
const EPOCH: usize = 17;

pub fn job_of(r: &Row) -> Result<JobRow, StoreError> {
    let kind: String = r.try_get(2)?;
    let state: String = r.try_get(5)?;
    let total: Option<i64> = r.try_get(8)?;
    let control: Option<String> = r.try_get(16)?;
    Ok(JobRow {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        kind: kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown job kind {kind:?}")))?,
        owner_uid: r.try_get::<_, i64>(3)? as u32,
        owner: r.try_get(4)?,
        state: StoredState::parse(&state)?,
        processed: r.try_get::<_, i64>(6)? as u64,
        failed: r.try_get::<_, i64>(7)? as u64,
        total: total.map(|t| t as u64),
        created_at: r.try_get::<_, i64>(9)? as u64,
        updated_at: r.try_get::<_, i64>(10)? as u64,
        error: r.try_get(11)?,
        rate: r.try_get(12)?,
        input: r.try_get(13)?,
        cursor: r.try_get(14)?,
        node: r.try_get(15)?,
        pending: control.as_deref().and_then(Action::parse),
        epoch: r.try_get(EPOCH)?,
    })
}

/// Inserts a queued job reading `input`. The id is taken in `job_ids` in the same
/// statement: an id used once, even by a job pruned since, is refused.
pub async fn insert(
    c: &impl GenericClient,
    job: &NewJob<'_>,
    input: &str,
) -> Result<JobRow, StoreError> {
    let sql = format!(
        "WITH taken AS (INSERT INTO jobd.job_ids (id) VALUES ($1))
         INSERT INTO jobd.jobs (id, kind, owner_uid, owner, state, total, created_at, updated_at, rate, input)
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $6, $7, $8) RETURNING {JOB_COLUMNS}"
    );
    let stmt = c.prepare_cached(&sql).await?;
    let inserted = c
        .query_one(
            &stmt,
            &[
                &job.id,
                &job.kind.as_str(),
                &i64::from(job.owner_uid),
                &job.owner,
                &job.total.map(|t| t as i64),
                &(job.created_at as i64),
                &job.rate,
                &input,
            ],
        )
        .await;
    match inserted {
        Ok(row) => job_of(&row),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::DuplicateId(job.id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every job, in creation order.
pub async fn load_all(c: &impl GenericClient) -> Result<Vec<JobRow>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {JOB_COLUMNS} FROM jobd.jobs ORDER BY seq"),
            &[],
        )
        .await?;
    rows.iter().map(job_of).collect()
}

pub async fn load(c: &impl GenericClient, seq: i64) -> Result<JobRow, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobd.jobs WHERE seq = $1"
        ))
        .await?;
    match c.query_opt(&stmt, &[&seq]).await? {
        Some(row) => job_of(&row),
        None => Err(StoreError::Gone(seq)),
    }
}

pub async fn find(c: &impl GenericClient, id: &str) -> Result<Option<JobRow>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobd.jobs WHERE id = $1"
        ))
        .await?;
    c.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(job_of)
        .transpose()
}

/// These jobs as committed now (those gone are left out).
pub async fn load_many(c: &impl GenericClient, seqs: &[i64]) -> Result<Vec<JobRow>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobd.jobs WHERE seq = ANY($1) ORDER BY seq"
        ))
        .await?;
    c.query(&stmt, &[&seqs]).await?.iter().map(job_of).collect()
}

/// The lease as PostgreSQL reads it (`now() + $n::interval`).
pub fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Claims the job for `node`: raises its epoch, marks it running there with a
/// lease, and returns it with the epoch — if it is queued or running and no other
/// node holds it (its lease still good), or, claiming again `after` an epoch, if
/// that is still the job's. The update waits for the row lock of any commit in
/// flight, so what it returns includes that commit. It commits without waiting
/// for the disk: a claim lost in a crash of the server is no claim, and the first
/// batch committed under it (durably) makes it durable too.
pub async fn claim(
    client: &mut Object,
    seq: i64,
    node: &str,
    lease: Duration,
    after: Option<i64>,
) -> Result<Option<(JobRow, i64)>, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let claimed = claim_in(&tx, seq, node, lease, after).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// [`claim`] inside the caller's transaction.
pub async fn claim_in(
    c: &impl GenericClient,
    seq: i64,
    node: &str,
    lease: Duration,
    after: Option<i64>,
) -> Result<Option<(JobRow, i64)>, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "UPDATE jobd.jobs SET epoch = epoch + 1, state = 'running', updated_at = $2,
                 node = $3, lease_until = now() + $4::text::interval
             WHERE seq = $1 AND CASE WHEN $5::bigint IS NULL
                 THEN state IN ('queued', 'running')
                      AND (node IS NULL OR node = $3 OR lease_until < now())
                 ELSE state = 'running' AND epoch = $5 END
             RETURNING {JOB_COLUMNS}, epoch"
        ))
        .await?;
    let row = c
        .query_opt(
            &stmt,
            &[&seq, &(now_ms() as i64), &node, &interval(lease), &after],
        )
        .await?;
    row.map(|r| Ok((job_of(&r)?, r.try_get(EPOCH)?)))
        .transpose()
}

/// `SET LOCAL`s that bound a transaction holding a job's row lock, so that a node
/// frozen or cut off in the middle of one cannot keep its job from being taken
/// over: the server ends the session once it is idle in the transaction, or its
/// statement (a COPY waiting for data) has run, for longer than `limit`.
pub fn guard(limit: Duration) -> String {
    let ms = limit.as_millis();
    format!(
        "SET LOCAL idle_in_transaction_session_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
    )
}

/// What a commit needs of its job's row.
pub struct Locked {
    pub owner: String,
    pub output_len: i64,
    pub records: i64,
}

/// Reads what a commit needs of the job's row, without locking it, and checks
/// that `epoch` is still its claim. Only the claim's holder changes these
/// figures; [`lock_unchanged`] confirms them under the row's lock at the end.
pub async fn read_claimed(
    c: &impl GenericClient,
    seq: i64,
    epoch: i64,
) -> Result<Locked, StoreError> {
    claimed_row(c, seq, epoch, false).await
}

/// The figures of the job's row if `epoch` is still its claim, locked for the
/// caller's transaction when `lock`.
async fn claimed_row(
    c: &impl GenericClient,
    seq: i64,
    epoch: i64,
    lock: bool,
) -> Result<Locked, StoreError> {
    let sql = if lock {
        "SELECT owner, output_len, records, epoch FROM jobd.jobs WHERE seq = $1 FOR UPDATE"
    } else {
        "SELECT owner, output_len, records, epoch FROM jobd.jobs WHERE seq = $1"
    };
    let stmt = c.prepare_cached(sql).await?;
    let row = c
        .query_opt(&stmt, &[&seq])
        .await?
        .ok_or(StoreError::Gone(seq))?;
    if row.try_get::<_, i64>(3)? != epoch {
        return Err(StoreError::Fenced(seq));
    }
    Ok(Locked {
        owner: row.try_get(0)?,
        output_len: row.try_get(1)?,
        records: row.try_get(2)?,
    })
}

/// Locks the job's row for the rest of the caller's transaction and checks that
/// `epoch` is still its claim and that the figures `seen` earlier still hold.
/// Taken last, the lock is held only while the commit itself is written: a
/// control from another node waits for that, not for the whole batch.
pub async fn lock_unchanged(
    c: &impl GenericClient,
    seq: i64,
    epoch: i64,
    seen: &Locked,
) -> Result<(), StoreError> {
    let now = lock_claimed(c, seq, epoch).await?;
    if now.output_len != seen.output_len || now.records != seen.records {
        return Err(StoreError::Fenced(seq));
    }
    Ok(())
}

/// The job's claim as committed now (outside any transaction of the caller's).
pub async fn epoch(c: &impl GenericClient, seq: i64) -> Result<Option<i64>, StoreError> {
    let row = c
        .query_opt("SELECT epoch FROM jobd.jobs WHERE seq = $1", &[&seq])
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Locks the job's row for the caller's transaction and checks that `epoch` is
/// still its claim.
pub async fn lock_claimed(
    c: &impl GenericClient,
    seq: i64,
    epoch: i64,
) -> Result<Locked, StoreError> {
    claimed_row(c, seq, epoch, true).await
}

/// Takes the next completion number: under the counter row's lock, held until
/// the caller's transaction ends.
pub async fn next_finished(c: &impl GenericClient) -> Result<i64, StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE jobd.counters SET value = value + 1 WHERE name = 'finished' RETURNING value",
        )
        .await?;
    Ok(c.query_one(&stmt, &[]).await?.get(0))
}

/// Sets a job's state (and error), inside the caller's transaction. A job that
/// leaves `running` leaves its node too (no claim, no lease, no pending control);
/// completion takes the next completion number; a job that ends loses its
/// upload, and a failed one its output too.
pub async fn set_state(
    c: &impl GenericClient,
    seq: i64,
    state: StoredState,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let finished = match state {
        StoredState::Public(JobState::Completed) => Some(next_finished(c).await?),
        _ => None,
    };
    if let Some(n) = finished {
        // Where exports look for it, even once the job itself is pruned.
        let stmt = c
            .prepare_cached("UPDATE jobd.baseline_columns SET finished_seq = $2 WHERE job_seq = $1")
            .await?;
        c.execute(&stmt, &[&seq, &n]).await?;
    }
    let stmt = c
        .prepare_cached(
            "UPDATE jobd.jobs SET state = $2, error = COALESCE($3, error), updated_at = $4,
                 finished_seq = COALESCE($5, finished_seq),
                 node = CASE WHEN $2 = 'running' THEN node END,
                 lease_until = CASE WHEN $2 = 'running' THEN lease_until END,
                 control = CASE WHEN $2 = 'running' THEN control END
             WHERE seq = $1",
        )
        .await?;
    c.execute(
        &stmt,
        &[&seq, &state.as_str(), &error, &(now_ms() as i64), &finished],
    )
    .await?;
    match state {
        StoredState::Public(JobState::Completed) => super::blobs::drop_input(c, seq).await,
        StoredState::Public(JobState::Failed | JobState::Terminated) => {
            super::blobs::drop_input(c, seq).await?;
            super::blobs::drop_output(c, seq).await
        }
        _ => Ok(()),
    }
}

/// Moves the job from `from` to `to` if it is in `from`, locking its row.
pub async fn transition(
    c: &impl GenericClient,
    seq: i64,
    from: JobState,
    to: JobState,
) -> Result<bool, StoreError> {
    let stmt = c
        .prepare_cached("SELECT state FROM jobd.jobs WHERE seq = $1 FOR UPDATE")
        .await?;
    let state: Option<String> = c.query_opt(&stmt, &[&seq]).await?.map(|r| r.get(0));
    if state.as_deref() != Some(from.as_str()) {
        return Ok(false);
    }
    set_state(c, seq, StoredState::Public(to), None).await?;
    Ok(true)
}

/// Up to `limit` row errors after row `after`, in row order.
pub async fn row_errors(
    c: &impl GenericClient,
    seq: i64,
    after: u64,
    limit: usize,
) -> Result<Vec<RowError>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT row, message FROM jobd.row_errors WHERE job_seq = $1 AND row > $2
             ORDER BY row LIMIT $3",
        )
        .await?;
    let rows = c
        .query(&stmt, &[&seq, &(after as i64), &(limit as i64)])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RowError {
                row: r.try_get::<_, i64>(0)? as u64,
                message: r.try_get(1)?,
            })
        })
        .collect()
}
