//! Applying a batch's effects with the job's cursor in one transaction, and undoing
//! all of a job's effects.

use super::{blobs, jobs};
use crate::store::{
    tally, Batch, Claim, CommitError, End, Expect, Progress, Seal, StoreError, StoredState,
};
use deadpool_postgres::{GenericClient, Object, Transaction};
use futures_util::pin_mut;
use jobd_protocol::JobState;
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
            "INSERT INTO jobd.baseline_columns (job_seq, columns) VALUES ($1, $2)",
            &[&seq, &columns],
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
    for sql in [
        "DELETE FROM jobd.baseline_blocks WHERE job_seq = $1",
        "DELETE FROM jobd.baseline_days WHERE job_seq = $1",
        "DELETE FROM jobd.baseline_columns WHERE job_seq = $1",
        "DELETE FROM jobd.teams WHERE job_seq = $1",
        "DELETE FROM jobd.row_errors WHERE job_seq = $1",
    ] {
        tx.execute(sql, &[&seq]).await?;
    }
    jobs::set_state(&tx, seq, StoredState::Public(JobState::Terminated), None).await?;
    tx.commit().await?;
    Ok(())
}
