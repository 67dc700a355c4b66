//! Read-only views of the daemon's SQLite store (`STATE/jobd.db`), for exact effects.

use crate::data::{BaselineRecord, TeamRow};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// Column `i` as a non-negative integer (the store keeps counts as INTEGER).
fn u(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    r.get::<_, i64>(i).map(|v| v as u64)
}

/// The job's `seq` (its key in the effect tables), if the store knows the job.
pub fn job_seq(conn: &Connection, id: &str) -> Option<i64> {
    conn.query_row("SELECT seq FROM jobs WHERE id = ?1", params![id], |r| {
        r.get(0)
    })
    .optional()
    .expect("query jobs")
}

#[track_caller]
fn seq(conn: &Connection, id: &str) -> i64 {
    job_seq(conn, id).unwrap_or_else(|| panic!("job {id} is not in the store"))
}

/// `(state, processed, failed)` of the job as committed in the store.
#[track_caller]
pub fn job_progress(conn: &Connection, id: &str) -> (String, u64, u64) {
    conn.query_row(
        "SELECT state, processed, failed FROM jobs WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, u(r, 1)?, u(r, 2)?)),
    )
    .unwrap_or_else(|e| panic!("job {id} in the store: {e}"))
}

/// Every baseline record written by the job, sorted by row (duplicates kept, so a
/// comparison with the expected rows also catches a row stored twice).
#[track_caller]
pub fn baseline_records(conn: &Connection, id: &str) -> Vec<BaselineRecord> {
    let seq = seq(conn, id);
    let mut stmt = conn
        .prepare(
            "SELECT r.row, g.date, r.data FROM baseline_records r \
             LEFT JOIN baseline_groups g ON g.job_seq = r.id >> 32 \
                                        AND r.id BETWEEN g.first AND g.last \
             WHERE r.id >= ?1 AND r.id < ?2 ORDER BY r.id",
        )
        .expect("prepare baseline query");
    let lo = seq << 32;
    let hi = (seq + 1) << 32;
    let rows = stmt
        .query_map(params![lo, hi], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("query baseline_records");
    let mut out = Vec::new();
    for row in rows {
        let (row, date, data) = row.expect("baseline row");
        let fields: Vec<String> = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("baseline data {data:?} is not a JSON string array: {e}"));
        out.push(BaselineRecord {
            row: row as u64,
            date: date.unwrap_or_else(|| panic!("record of row {row} is in no date group")),
            fields,
        });
    }
    out.sort();
    out
}

/// Number of baseline records the job wrote.
#[track_caller]
pub fn baseline_count(conn: &Connection, id: &str) -> u64 {
    let seq = seq(conn, id);
    conn.query_row(
        "SELECT COUNT(*) FROM baseline_records WHERE id >= ?1 AND id < ?2",
        params![seq << 32, (seq + 1) << 32],
        |r| u(r, 0),
    )
    .expect("count baseline_records")
}

/// The non-date columns stored for a baseline job, if any.
#[track_caller]
pub fn baseline_columns(conn: &Connection, id: &str) -> Option<Vec<String>> {
    let seq = seq(conn, id);
    conn.query_row(
        "SELECT columns FROM baseline_columns WHERE job_seq = ?1",
        params![seq],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .expect("query baseline_columns")
    .map(|c| serde_json::from_str(&c).expect("columns are a JSON string array"))
}

/// The teams created by the job with their members in position order, sorted by row.
#[track_caller]
pub fn teams_of_job(conn: &Connection, id: &str) -> Vec<TeamRow> {
    let seq = seq(conn, id);
    let mut stmt = conn
        .prepare("SELECT id, name, row FROM teams WHERE job_seq = ?1 ORDER BY row")
        .expect("prepare teams query");
    let teams: Vec<(i64, String, u64)> = stmt
        .query_map(params![seq], |r| Ok((r.get(0)?, r.get(1)?, u(r, 2)?)))
        .expect("query teams")
        .map(|r| r.expect("team row"))
        .collect();
    let mut members = conn
        .prepare("SELECT member FROM team_members WHERE team_id = ?1 ORDER BY position")
        .expect("prepare members query");
    teams
        .into_iter()
        .map(|(tid, name, row)| TeamRow {
            row,
            name,
            members: members
                .query_map(params![tid], |r| r.get(0))
                .expect("query team_members")
                .map(|m| m.expect("member"))
                .collect(),
        })
        .collect()
}

/// Number of teams the job created.
#[track_caller]
pub fn team_count(conn: &Connection, id: &str) -> u64 {
    let seq = seq(conn, id);
    conn.query_row(
        "SELECT COUNT(*) FROM teams WHERE job_seq = ?1",
        params![seq],
        |r| u(r, 0),
    )
    .expect("count teams")
}

/// Members whose team no longer exists (left behind by a rollback).
pub fn orphan_members(conn: &Connection) -> u64 {
    conn.query_row(
        "SELECT COUNT(*) FROM team_members WHERE team_id NOT IN (SELECT id FROM teams)",
        [],
        |r| u(r, 0),
    )
    .expect("count orphan members")
}

/// All team names of a user, sorted.
pub fn team_names(conn: &Connection, owner_uid: u32) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM teams WHERE owner_uid = ?1 ORDER BY name")
        .expect("prepare team names");
    let names = stmt
        .query_map(params![owner_uid], |r| r.get(0))
        .expect("query team names")
        .map(|r| r.expect("team name"))
        .collect();
    names
}

/// `(row, message)` of the job's row errors as stored, by row.
#[track_caller]
pub fn row_errors(conn: &Connection, id: &str) -> Vec<(u64, String)> {
    let seq = seq(conn, id);
    let mut stmt = conn
        .prepare("SELECT row, message FROM row_errors WHERE job_seq = ?1 ORDER BY row")
        .expect("prepare row errors");
    let errs = stmt
        .query_map(params![seq], |r| Ok((u(r, 0)?, r.get(1)?)))
        .expect("query row_errors")
        .map(|r| r.expect("row error"))
        .collect();
    errs
}
