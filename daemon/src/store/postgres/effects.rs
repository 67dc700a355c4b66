//! Applying a batch's effects with the job's cursor in one transaction, and undoing
//! all of a job's effects.

use super::{blobs, jobs};
use crate::store::{
    tally, Batch, Claim, CommitError, Effects, End, Expect, Forgotten, Progress, PruneQuery, Seal,
    StoreError, StoredState,
};
use deadpool_postgres::{GenericClient, Object, Transaction};
use futures_util::pin_mut;
use jobd_protocol::{JobKind, JobState};
use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Commits the batch with the job's counts and cursor. A control raising
/// `interrupt` while the statements run cancels the one running (the connection
/// then leaves the pool: a cancel that comes late must not hit someone else's
/// query); once they are done, nothing stops the commit. `guard` (see
/// [`jobs::guard`]) bounds how long the transaction may hold the job's row.
pub async fn commit(
    mut client: Object,
    claim: &Claim,
    batch: &Batch,
    seal: &Seal<'_>,
    interrupt: &AtomicBool,
    guard: &str,
) -> Result<Progress, CommitError> {
    let cancel = client.cancel_token();
    let tx = client.transaction().await.map_err(StoreError::from)?;
    tx.batch_execute(guard).await.map_err(StoreError::from)?;
    let applied = {
        let work = apply(&tx, claim, batch, seal);
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tokio::time::sleep(INTERRUPT_POLL) => {
                    if interrupt.load(Ordering::Relaxed) {
                        break Err(CommitError::Interrupted);
                    }
                }
            }
        }
    };
    match applied {
        Ok(progress) => {
            tx.commit().await.map_err(StoreError::from)?;
            Ok(progress)
        }
        Err(CommitError::Interrupted) => {
            drop(tx);
            let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
            let _ = Object::take(client);
            Err(CommitError::Interrupted)
        }
        // A worker that lost its claim mid-batch may collide with the new
        // holder's effects (the same record numbers) before it reaches the
        // epoch check: that is being fenced, not a failure of the job.
        Err(CommitError::Store(e)) if !matches!(e, StoreError::Fenced(_)) => {
            drop(tx);
            match jobs::epoch(&client, claim.seq).await {
                Ok(Some(now)) if now != claim.epoch => Err(StoreError::Fenced(claim.seq).into()),
                _ => Err(CommitError::Store(e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// How often a running commit looks at its interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(2);

/// The batch's statements, in the caller's transaction.
async fn apply(
    tx: &Transaction<'_>,
    claim: &Claim,
    batch: &Batch,
    seal: &Seal<'_>,
) -> Result<Progress, CommitError> {
    let seq = claim.seq;
    // The job's row is locked only at the end, before its counts are written:
    // from there a new claim waits for this commit, and this commit happens
    // only if no new claim came first (else everything here rolls back).
    let job = jobs::read_claimed(tx, seq, claim.epoch).await?;
    let records = insert_blocks(tx, seq, job.records, batch).await?;
    let conflicts = insert_teams(tx, seq, &job.owner, batch).await?;
    let progress = tally(batch, &conflicts, seal)?;
    let errors: Vec<_> = batch
        .rejects()
        .iter()
        .cloned()
        .chain(conflicts.iter().map(|&t| batch.conflict(t)))
        .collect();
    if !errors.is_empty() {
        let rows: Vec<i64> = errors.iter().map(|e| e.row as i64).collect();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        tx.execute(
            "INSERT INTO jobd.row_errors (job_seq, row, message)
             SELECT $1, r, m FROM unnest($2::int8[], $3::text[]) AS t(r, m)",
            &[&seq, &rows, &messages],
        )
        .await
        .map_err(StoreError::from)?;
    }
    if let Some(columns) = batch.columns() {
        let columns = serde_json::to_string(columns)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode columns: {e}")))?;
        tx.execute(
            "INSERT INTO jobd.baseline_columns (job_seq, columns, owner) VALUES ($1, $2, $3)",
            &[&seq, &columns, &job.owner],
        )
        .await
        .map_err(StoreError::from)?;
    }
    let output_len = if batch.output().is_empty() {
        None
    } else {
        Some(blobs::append_output(tx, seq, job.output_len as u64, batch.output()).await? as i64)
    };
    jobs::lock_unchanged(tx, seq, claim.epoch, &job).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE jobd.jobs SET processed = $2, failed = $3, total = $4, cursor = $5,
                 updated_at = $6, output_len = COALESCE($7, output_len), records = $8
             WHERE seq = $1",
        )
        .await
        .map_err(StoreError::from)?;
    tx.execute(
        &stmt,
        &[
            &seq,
            &(progress.processed as i64),
            &(progress.failed as i64),
            &progress.total.map(|t| t as i64),
            &seal.cursor,
            &(crate::store::now_ms() as i64),
            &output_len,
            &records,
        ],
    )
    .await
    .map_err(StoreError::from)?;
    match seal.end {
        Some(End::Completed) => {
            jobs::set_state(tx, seq, StoredState::Public(JobState::Completed), None).await?
        }
        Some(End::Failed(message)) => {
            jobs::set_state(
                tx,
                seq,
                StoredState::Public(JobState::Failed),
                Some(message),
            )
            .await?
        }
        None => {}
    }
    Ok(progress)
}

/// Text in a block at most (plus one record): PostgreSQL moves a row over ~2 KiB
/// out of line (TOAST), which costs a second table and index per block.
const BLOCK_TEXT: usize = 1800;

/// The batch's records (sorted by date) in blocks of their date, numbered after
/// the job's `stored` records so far (a batch redone after a crash gets the same
/// numbers), written with COPY; returns the job's records after them.
async fn insert_blocks(
    tx: &Transaction<'_>,
    seq: i64,
    stored: i64,
    batch: &Batch,
) -> Result<i64, StoreError> {
    let records = batch.records();
    if records.is_empty() {
        return Ok(stored);
    }
    let mut days: Vec<i32> = Vec::new();
    for r in records {
        let day = i32::try_from(r.day)
            .map_err(|_| StoreError::Corrupt(format!("date {} out of range", r.day)))?;
        if days.last() != Some(&day) {
            days.push(day);
        }
    }
    tx.execute(
        "INSERT INTO jobd.baseline_days (day, job_seq) SELECT d, $2 FROM unnest($1::int4[]) AS d
         ON CONFLICT DO NOTHING",
        &[&days, &seq],
    )
    .await?;
    let sink = tx
        .copy_in(
            "COPY jobd.baseline_blocks (job_seq, day, first, count, records) FROM STDIN BINARY",
        )
        .await?;
    let types = [Type::INT8, Type::INT4, Type::INT8, Type::INT4, Type::TEXT];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut text = String::with_capacity(2 * BLOCK_TEXT);
    let (mut first, mut count) = (stored + 1, 0i32);
    for (i, r) in records.iter().enumerate() {
        let _ = writeln!(text, "{}\t{}", r.row, batch.data(r));
        count += 1;
        let next_day = records.get(i + 1).map(|n| n.day);
        if text.len() >= BLOCK_TEXT || next_day != Some(r.day) {
            let day = r.day as i32;
            writer
                .as_mut()
                .write(&[&seq, &day, &first, &count, &text])
                .await?;
            first += i64::from(count);
            count = 0;
            text.clear();
        }
    }
    writer.finish().await?;
    Ok(first - 1)
}

/// Creates the batch's teams; returns those refused (their name exists, or came
/// earlier in the batch), in row order.
async fn insert_teams(
    tx: &impl GenericClient,
    seq: i64,
    owner: &str,
    batch: &Batch,
) -> Result<Vec<usize>, StoreError> {
    let teams = batch.teams();
    if teams.is_empty() {
        return Ok(Vec::new());
    }
    // A name twice in the batch: the first is created, the second refused.
    let mut seen = HashSet::new();
    let (mut names, mut rows, mut members) = (vec![], vec![], vec![]);
    for t in teams {
        if !seen.insert(t.name.as_str()) {
            continue;
        }
        names.push(t.name.as_str());
        rows.push(t.row as i64);
        members.push(
            serde_json::to_string(&t.members)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode members: {e}")))?,
        );
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO jobd.teams (owner, name, job_seq, row, members)
             SELECT $1, n, $2, r, m FROM unnest($3::text[], $4::int8[], $5::text[]) AS t(n, r, m)
             ON CONFLICT (owner, name) DO NOTHING
             RETURNING row",
        )
        .await?;
    let created: HashSet<i64> = tx
        .query(&stmt, &[&owner, &seq, &names, &rows, &members])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((0..teams.len())
        .filter(|&i| !created.contains(&(teams[i].row as i64)))
        .collect())
}

/// Rolls back everything the job wrote and ends it as `terminated`, if it is as
/// `expect`ed. The intent is committed first, so that a crash during the rollback
/// is finished by recovery.
pub async fn terminate(
    client: &mut Object,
    seq: i64,
    expect: Expect<'_>,
) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    let ok = match expect {
        Expect::Claim(claim) => match jobs::lock_claimed(&tx, seq, claim.epoch).await {
            Ok(_) => true,
            Err(StoreError::Fenced(_)) => false,
            Err(e) => return Err(e),
        },
        Expect::States(states) => {
            let row = tx
                .query_opt(
                    "SELECT state FROM jobd.jobs WHERE seq = $1 FOR UPDATE",
                    &[&seq],
                )
                .await?;
            let state: Option<String> = row.map(|r| r.get(0));
            states.iter().any(|s| Some(s.as_str()) == state.as_deref())
        }
    };
    if !ok {
        return Ok(false);
    }
    jobs::set_state(&tx, seq, StoredState::Terminating, None).await?;
    tx.commit().await?;
    undo_and_end(client, seq).await?;
    Ok(true)
}

/// The rollback of a job marked `terminating`, in one transaction.
pub async fn undo_and_end(client: &mut Object, seq: i64) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    undo_effects(&tx, seq).await?;
    tx.execute("DELETE FROM jobd.row_errors WHERE job_seq = $1", &[&seq])
        .await?;
    jobs::set_state(&tx, seq, StoredState::Public(JobState::Terminated), None).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes every effect of the job: its records (blocks, days, columns) and teams.
async fn undo_effects(tx: &impl GenericClient, seq: i64) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM jobd.baseline_blocks WHERE job_seq = $1",
        "DELETE FROM jobd.baseline_days WHERE job_seq = $1",
        "DELETE FROM jobd.baseline_columns WHERE job_seq = $1",
        "DELETE FROM jobd.teams WHERE job_seq = $1",
    ] {
        tx.execute(sql, &[&seq]).await?;
    }
    Ok(())
}

/// Undoes a finished job's effects and marks it `reverted` in one transaction,
/// whose first statement checks (and changes) the state under the row's lock: a
/// crash leaves the job reverted or untouched, and a revert never races a claim
/// or another revert. Counts and row errors stay.
pub async fn revert(
    client: &mut Object,
    seq: i64,
    from: &[JobState],
    at: u64,
) -> Result<bool, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE jobd.jobs SET state = 'reverted', updated_at = $3
              WHERE seq = $1 AND state = ANY($2)",
            &[&seq, &from, &(at.min(i64::MAX as u64) as i64)],
        )
        .await?;
    if n == 0 {
        let exists = tx
            .query_opt("SELECT 1 FROM jobd.jobs WHERE seq = $1", &[&seq])
            .await?
            .is_some();
        return if exists {
            Ok(false)
        } else {
            Err(StoreError::Gone(seq))
        };
    }
    undo_effects(&tx, seq).await?;
    tx.commit().await?;
    Ok(true)
}

/// What undoing the job would remove, read in one snapshot.
pub async fn effects(client: &mut Object, seq: i64, names: usize) -> Result<Effects, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let row = tx
        .query_opt(
            "SELECT (SELECT COALESCE(SUM(count), 0)::bigint FROM jobd.baseline_blocks
                      WHERE job_seq = $1),
                    (SELECT MIN(day) FROM jobd.baseline_days WHERE job_seq = $1),
                    (SELECT MAX(day) FROM jobd.baseline_days WHERE job_seq = $1),
                    (SELECT COUNT(*) FROM jobd.teams WHERE job_seq = $1),
                    output_len
               FROM jobd.jobs WHERE seq = $1",
            &[&seq],
        )
        .await?
        .ok_or(StoreError::Gone(seq))?;
    let team_names = tx
        .query(
            "SELECT name FROM jobd.teams WHERE job_seq = $1 ORDER BY row LIMIT $2",
            &[&seq, &(names as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await?;
    let first: Option<i32> = row.try_get(1)?;
    let last: Option<i32> = row.try_get(2)?;
    Ok(Effects {
        records: row.try_get::<_, i64>(0)? as u64,
        first_day: first.map(i64::from),
        last_day: last.map(i64::from),
        teams: row.try_get::<_, i64>(3)? as u64,
        team_names,
        output_bytes: row.try_get::<_, i64>(4)? as u64,
    })
}

/// Forgets one batch of finished jobs in one transaction: their rows (which
/// tells every node), row errors, and any upload or output left. Jobs another
/// transaction holds (a revert in flight, another node's prune) are skipped.
pub async fn prune(client: &mut Object, q: &PruneQuery<'_>) -> Result<Vec<Forgotten>, StoreError> {
    let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
    let tx = client.transaction().await?;
    // The literal list lets the partial index `jobs_finished` serve the scan.
    let rows = tx
        .query(
            "WITH gone AS (
                DELETE FROM jobd.jobs WHERE seq IN (
                    SELECT seq FROM jobd.jobs
                     WHERE seq > $1 AND seq <= $6
                       AND state IN ('completed', 'failed', 'terminated', 'reverted')
                       AND state = ANY($2) AND updated_at <= $3
                       AND ($4::text IS NULL OR owner = $4)
                     ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED)
                AND state IN ('completed', 'failed', 'terminated', 'reverted')
                RETURNING seq, id, kind, input)
             SELECT seq, id, kind, input FROM gone ORDER BY seq",
            &[
                &q.after,
                &states,
                &(q.ended_before.min(i64::MAX as u64) as i64),
                &q.owner,
                &(q.limit as i64),
                &q.through,
            ],
        )
        .await?;
    let mut seqs = Vec::with_capacity(rows.len());
    let mut uploads = Vec::new();
    let mut gone = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.try_get(0)?;
        let kind: &str = r.try_get(2)?;
        if kind != JobKind::CreateExport.as_str() {
            if let Ok(upload) = r.try_get::<_, &str>(3)?.parse::<i64>() {
                uploads.push(upload);
            }
        }
        seqs.push(seq);
        gone.push(Forgotten {
            seq,
            id: r.try_get(1)?,
        });
    }
    // Each delete also bounds its key to the batch's range: on tables never
    // analyzed (autovacuum off) a list of a few hundred keys alone looks like
    // the whole table to the planner, which then reads all of it per batch.
    if let (Some(&lo), Some(&hi)) = (seqs.iter().min(), seqs.iter().max()) {
        for sql in [
            "DELETE FROM jobd.row_errors
              WHERE job_seq BETWEEN $2 AND $3 AND job_seq = ANY($1)",
            "DELETE FROM jobd.output_chunks
              WHERE job_seq BETWEEN $2 AND $3 AND job_seq = ANY($1)",
        ] {
            tx.execute(sql, &[&seqs, &lo, &hi]).await?;
        }
    }
    // A job's upload is deleted in the transaction that ends it: the prune
    // removes one only if it is still there, and looks for its chunks only then
    // (a range of upload ids may hold a big upload that is still running).
    if let (Some(&lo), Some(&hi)) = (uploads.iter().min(), uploads.iter().max()) {
        let left: Vec<i64> = tx
            .query(
                "DELETE FROM jobd.uploads WHERE id BETWEEN $2 AND $3 AND id = ANY($1) RETURNING id",
                &[&uploads, &lo, &hi],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for id in left {
            tx.execute(
                "DELETE FROM jobd.upload_chunks WHERE upload_id = $1",
                &[&id],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(gone)
}
