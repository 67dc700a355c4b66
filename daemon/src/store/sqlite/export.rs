//! What exports read: the completed baseline jobs of a user, a date's records in
//! export order (job, then id = job then row), and each job's columns. Owner and
//! completion come from `baseline_columns`, not `jobs`: a pruned job's records
//! are still the user's data.

use super::effects::{record_id, MAX_RECORDS};
use crate::dates;
use crate::store::{Day, DayQuery, DayRecord, ExportPlan, Owner, RecordKey, StoreError};
use rusqlite::{params, Connection};
use std::collections::HashSet;

/// The snapshot (completions so far) and the union of the columns of the jobs with
/// records in the range, in the order their first record appears: date, then job.
pub fn plan(
    conn: &Connection,
    owner: Owner<'_>,
    from: Day,
    to: Day,
) -> Result<ExportPlan, StoreError> {
    let snapshot: i64 = conn.query_row(
        "SELECT COALESCE((SELECT value FROM counters WHERE name = 'finished'), 0)",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT c.columns, MIN(d.date) AS first FROM baseline_days d
           JOIN baseline_columns c ON c.job_seq = d.job_seq
          WHERE d.date BETWEEN ?2 AND ?3 AND c.owner_uid = ?1 AND c.finished_seq <= ?4
          GROUP BY d.job_seq
          ORDER BY first, d.job_seq",
    )?;
    let rows = stmt.query_map(
        params![owner.uid, dates::format(from), dates::format(to), snapshot],
        |r| r.get::<_, String>(0),
    )?;
    let mut columns: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for job_columns in rows {
        for c in parse_columns(&job_columns?)? {
            if seen.insert(c.clone()) {
                columns.push(c);
            }
        }
    }
    Ok(ExportPlan { snapshot, columns })
}

pub fn day_records(
    conn: &Connection,
    q: &DayQuery<'_>,
    out: &mut Vec<DayRecord>,
) -> Result<(), StoreError> {
    let date = dates::format(q.day);
    let after = q.after.unwrap_or(RecordKey {
        job_seq: 0,
        ordinal: 0,
    });
    let jobs: Vec<i64> = conn
        .prepare_cached(
            "SELECT d.job_seq FROM baseline_days d
               JOIN baseline_columns c ON c.job_seq = d.job_seq
             WHERE d.date = ?1 AND c.owner_uid = ?2 AND c.finished_seq <= ?3
               AND d.job_seq >= ?4
             ORDER BY d.job_seq",
        )?
        .query_map(params![date, q.owner.uid, q.snapshot, after.job_seq], |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.data FROM baseline_groups g
         JOIN baseline_records r ON r.id BETWEEN g.first AND g.last
         WHERE g.job_seq = ?1 AND g.date = ?2 AND r.id > ?3
         ORDER BY g.first, r.id LIMIT ?4",
    )?;
    let mut taken = 0;
    for job_seq in jobs {
        if taken >= q.limit {
            break;
        }
        let from = if job_seq == after.job_seq {
            record_id(job_seq, after.ordinal)
        } else {
            record_id(job_seq, 0)
        };
        let mut rows = stmt.query(params![job_seq, date, from, (q.limit - taken) as i64])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            out.push(DayRecord {
                key: RecordKey {
                    job_seq,
                    ordinal: id as u64 & MAX_RECORDS,
                },
                data: row.get(1)?,
            });
            taken += 1;
        }
    }
    Ok(())
}

pub fn columns_of(conn: &Connection, job_seq: i64) -> Result<Vec<String>, StoreError> {
    let columns: String = conn.query_row(
        "SELECT columns FROM baseline_columns WHERE job_seq = ?1",
        [job_seq],
        |r| r.get(0),
    )?;
    parse_columns(&columns)
}

fn parse_columns(json: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("columns of a baseline: {e}")))
}
