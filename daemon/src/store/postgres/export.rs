//! What exports read in PostgreSQL: the completed baseline jobs of a user (by user
//! name), a date's records in export order (job, then ordinal = row order), and
//! each job's columns. Owner and completion come from `baseline_columns`, which
//! outlives a pruned job's row: its records are still the user's data.

use crate::store::{Day, DayQuery, DayRecord, ExportPlan, Owner, RecordKey, StoreError};
use deadpool_postgres::GenericClient;
use std::collections::HashSet;

/// Blocks read per query (a block holds about 20 records).
const BLOCKS: i64 = 256;

pub async fn plan(
    c: &impl GenericClient,
    owner: Owner<'_>,
    from: Day,
    to: Day,
) -> Result<ExportPlan, StoreError> {
    let snapshot: i64 = c
        .query_one(
            "SELECT value FROM jobd.counters WHERE name = 'finished'",
            &[],
        )
        .await?
        .get(0);
    let rows = c
        .query(
            "SELECT c.columns FROM
                (SELECT d.job_seq, MIN(d.day) AS first FROM jobd.baseline_days d
                   JOIN jobd.baseline_columns c ON c.job_seq = d.job_seq
                  WHERE d.day BETWEEN $2 AND $3 AND c.owner = $1 AND c.finished_seq <= $4
                  GROUP BY d.job_seq) AS x
             JOIN jobd.baseline_columns c ON c.job_seq = x.job_seq
             ORDER BY x.first, x.job_seq",
            &[&owner.name, &day(from)?, &day(to)?, &snapshot],
        )
        .await?;
    let mut columns = Vec::new();
    let mut seen = HashSet::new();
    for row in rows {
        for c in parse_columns(row.get(0))? {
            if seen.insert(c.clone()) {
                columns.push(c);
            }
        }
    }
    Ok(ExportPlan { snapshot, columns })
}

pub async fn day_records(
    c: &impl GenericClient,
    q: &DayQuery<'_>,
    out: &mut Vec<DayRecord>,
) -> Result<(), StoreError> {
    let mut after = q.after.unwrap_or(RecordKey {
        job_seq: 0,
        ordinal: 0,
    });
    let stmt = c
        .prepare_cached(
            "SELECT b.job_seq, b.first, b.records FROM jobd.baseline_days d
               JOIN jobd.baseline_columns c ON c.job_seq = d.job_seq
               JOIN jobd.baseline_blocks b ON b.job_seq = d.job_seq AND b.day = d.day
              WHERE d.day = $1 AND c.owner = $2 AND c.finished_seq <= $3
                AND (b.job_seq, b.first + b.count - 1) > ($4, $5)
              ORDER BY b.job_seq, b.first LIMIT $6",
        )
        .await?;
    let start = out.len();
    // Fewer than `limit` records means the date is done: read on until either.
    while out.len() - start < q.limit {
        let rows = c
            .query(
                &stmt,
                &[
                    &day(q.day)?,
                    &q.owner.name,
                    &q.snapshot,
                    &after.job_seq,
                    &(after.ordinal as i64),
                    &BLOCKS,
                ],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let job_seq: i64 = row.get(0);
            let first: i64 = row.get(1);
            let records: &str = row.get(2);
            for (i, line) in records.lines().enumerate() {
                let key = RecordKey {
                    job_seq,
                    ordinal: (first + i as i64) as u64,
                };
                if key <= after {
                    continue;
                }
                let (_, data) = line.split_once('\t').ok_or_else(|| {
                    StoreError::Corrupt(format!("baseline block of job {job_seq}"))
                })?;
                out.push(DayRecord {
                    key,
                    data: data.to_string(),
                });
            }
        }
        match out.last() {
            Some(last) if out.len() > start => after = last.key,
            _ => break,
        }
    }
    Ok(())
}

pub async fn columns_of(c: &impl GenericClient, job_seq: i64) -> Result<Vec<String>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT columns FROM jobd.baseline_columns WHERE job_seq = $1")
        .await?;
    let row = c
        .query_opt(&stmt, &[&job_seq])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no columns for job {job_seq}")))?;
    parse_columns(row.get(0))
}

fn parse_columns(json: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("columns of a baseline: {e}")))
}

fn day(d: Day) -> Result<i32, StoreError> {
    i32::try_from(d).map_err(|_| StoreError::Corrupt(format!("date {d} out of range")))
}
