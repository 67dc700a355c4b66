//! Read-only views of what a daemon committed, for exact effects: its SQLite store
//! (`STATE/jobd.db` and the spool and export files beside it) or its PostgreSQL
//! database. Both answer the same questions the same way.

use crate::data::{BaselineRecord, TeamRow};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};

pub enum StoreView {
    Sqlite {
        conn: Connection,
        state_dir: PathBuf,
    },
    Postgres(RefCell<postgres::Client>),
}

/// One job as committed, read in a single read transaction so that the counters
/// and the effects belong to the same commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub kind: String,
    pub state: String,
    pub processed: u64,
    pub failed: u64,
    /// Baseline records or teams the job wrote (0 for exports).
    pub effects: u64,
    pub row_errors: u64,
    /// Team members whose team no longer exists (any job).
    pub orphan_members: u64,
    /// The committed length of an export's output.
    pub output_len: u64,
    /// The output the store holds, in the same snapshot (PostgreSQL only: the
    /// SQLite store's file is not part of its transactions).
    pub stored_output: Option<u64>,
    pub cursor: Option<Value>,
}

/// Column `i` as a non-negative integer (the stores keep counts as integers).
fn u(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    r.get::<_, i64>(i).map(|v| v as u64)
}

fn pu(r: &postgres::Row, i: usize) -> u64 {
    r.get::<_, i64>(i) as u64
}

/// Parses `row<TAB>json` lines of a PostgreSQL baseline block.
fn block_lines(records: &str) -> Vec<(u64, Vec<String>)> {
    records
        .lines()
        .map(|l| {
            let (row, data) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("baseline block line {l:?}"));
            let fields: Vec<String> = serde_json::from_str(data).unwrap_or_else(|e| {
                panic!("baseline data {data:?} is not a JSON string array: {e}")
            });
            (row.parse().expect("row number"), fields)
        })
        .collect()
}

impl StoreView {
    pub fn sqlite(state_dir: &Path) -> StoreView {
        let path = state_dir.join("jobd.db");
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("busy timeout");
        StoreView::Sqlite {
            conn,
            state_dir: state_dir.to_path_buf(),
        }
    }

    pub fn postgres(url: &str) -> StoreView {
        let c = postgres::Client::connect(url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        StoreView::Postgres(RefCell::new(c))
    }

    /// The job's `seq` (its key in the effect tables), if the store knows the job.
    pub fn job_seq(&self, id: &str) -> Option<i64> {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row("SELECT seq FROM jobs WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()
                .expect("query jobs"),
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query_opt("SELECT seq FROM jobd.jobs WHERE id = $1", &[&id])
                .expect("query jobs")
                .map(|r| r.get(0)),
        }
    }

    #[track_caller]
    fn seq(&self, id: &str) -> i64 {
        self.job_seq(id)
            .unwrap_or_else(|| panic!("job {id} is not in the store"))
    }

    /// `(state, processed, failed)` of the job as committed.
    #[track_caller]
    pub fn job_progress(&self, id: &str) -> (String, u64, u64) {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT state, processed, failed FROM jobs WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, u(r, 1)?, u(r, 2)?)),
                )
                .unwrap_or_else(|e| panic!("job {id} in the store: {e}")),
            StoreView::Postgres(c) => {
                let r = c
                    .borrow_mut()
                    .query_one(
                        "SELECT state, processed, failed FROM jobd.jobs WHERE id = $1",
                        &[&id],
                    )
                    .unwrap_or_else(|e| panic!("job {id} in the store: {e}"));
                (r.get(0), pu(&r, 1), pu(&r, 2))
            }
        }
    }

    /// The uid that owns the job.
    #[track_caller]
    pub fn owner_uid(&self, id: &str) -> u32 {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT owner_uid FROM jobs WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .expect("owner of the job"),
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query_one("SELECT owner_uid FROM jobd.jobs WHERE id = $1", &[&id])
                .map(|r| r.get::<_, i64>(0) as u32)
                .expect("owner of the job"),
        }
    }

    /// Every baseline record written by the job, sorted (duplicates kept, so that a
    /// comparison with the expected rows also catches a row stored twice).
    #[track_caller]
    pub fn baseline_records(&self, id: &str) -> Vec<BaselineRecord> {
        let seq = self.seq(id);
        let mut out = Vec::new();
        match self {
            StoreView::Sqlite { conn, .. } => {
                let mut stmt = conn
                    .prepare(
                        "SELECT r.row, g.date, r.data FROM baseline_records r \
                         LEFT JOIN baseline_groups g ON g.job_seq = r.id >> 32 \
                                                    AND r.id BETWEEN g.first AND g.last \
                         WHERE r.id >= ?1 AND r.id < ?2 ORDER BY r.id",
                    )
                    .expect("prepare baseline query");
                let rows = stmt
                    .query_map(params![seq << 32, (seq + 1) << 32], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })
                    .expect("query baseline_records");
                for row in rows {
                    let (row, date, data) = row.expect("baseline row");
                    let fields: Vec<String> = serde_json::from_str(&data).unwrap_or_else(|e| {
                        panic!("baseline data {data:?} is not a JSON string array: {e}")
                    });
                    out.push(BaselineRecord {
                        row: row as u64,
                        date: date
                            .unwrap_or_else(|| panic!("record of row {row} is in no date group")),
                        fields,
                    });
                }
            }
            StoreView::Postgres(c) => {
                let rows = c
                    .borrow_mut()
                    .query(
                        "SELECT to_char(date '1970-01-01' + day, 'YYYY-MM-DD'), records
                           FROM jobd.baseline_blocks WHERE job_seq = $1 ORDER BY first",
                        &[&seq],
                    )
                    .expect("query baseline_blocks");
                for r in rows {
                    let date: String = r.get(0);
                    for (row, fields) in block_lines(r.get(1)) {
                        out.push(BaselineRecord {
                            row,
                            date: date.clone(),
                            fields,
                        });
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Number of baseline records the job wrote.
    #[track_caller]
    pub fn baseline_count(&self, id: &str) -> u64 {
        let seq = self.seq(id);
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT COUNT(*) FROM baseline_records WHERE id >= ?1 AND id < ?2",
                    params![seq << 32, (seq + 1) << 32],
                    |r| u(r, 0),
                )
                .expect("count baseline_records"),
            StoreView::Postgres(c) => pu(
                &c.borrow_mut()
                    .query_one(
                        "SELECT COALESCE(SUM(count), 0)::bigint FROM jobd.baseline_blocks
                          WHERE job_seq = $1",
                        &[&seq],
                    )
                    .expect("count baseline records"),
                0,
            ),
        }
    }

    /// The non-date columns stored for a baseline job, if any.
    #[track_caller]
    pub fn baseline_columns(&self, id: &str) -> Option<Vec<String>> {
        let seq = self.seq(id);
        let json: Option<String> = match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT columns FROM baseline_columns WHERE job_seq = ?1",
                    params![seq],
                    |r| r.get(0),
                )
                .optional()
                .expect("query baseline_columns"),
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query_opt(
                    "SELECT columns FROM jobd.baseline_columns WHERE job_seq = $1",
                    &[&seq],
                )
                .expect("query baseline_columns")
                .map(|r| r.get(0)),
        };
        json.map(|c| serde_json::from_str(&c).expect("columns are a JSON string array"))
    }

    /// The teams created by the job with their members in order, sorted by row.
    #[track_caller]
    pub fn teams_of_job(&self, id: &str) -> Vec<TeamRow> {
        let seq = self.seq(id);
        match self {
            StoreView::Sqlite { conn, .. } => {
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
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query(
                    "SELECT row, name, members FROM jobd.teams WHERE job_seq = $1 ORDER BY row",
                    &[&seq],
                )
                .expect("query teams")
                .iter()
                .map(|r| TeamRow {
                    row: pu(r, 0),
                    name: r.get(1),
                    members: serde_json::from_str(r.get(2)).expect("members are a JSON array"),
                })
                .collect(),
        }
    }

    /// Number of teams the job created.
    #[track_caller]
    pub fn team_count(&self, id: &str) -> u64 {
        let seq = self.seq(id);
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT COUNT(*) FROM teams WHERE job_seq = ?1",
                    params![seq],
                    |r| u(r, 0),
                )
                .expect("count teams"),
            StoreView::Postgres(c) => pu(
                &c.borrow_mut()
                    .query_one(
                        "SELECT COUNT(*) FROM jobd.teams WHERE job_seq = $1",
                        &[&seq],
                    )
                    .expect("count teams"),
                0,
            ),
        }
    }

    /// Members whose team no longer exists (left behind by a rollback). The
    /// PostgreSQL store keeps members inside their team's row: always 0 there.
    pub fn orphan_members(&self) -> u64 {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT COUNT(*) FROM team_members WHERE team_id NOT IN (SELECT id FROM teams)",
                    [],
                    |r| u(r, 0),
                )
                .expect("count orphan members"),
            StoreView::Postgres(_) => 0,
        }
    }

    /// All team names created by jobs of a uid, sorted.
    pub fn team_names(&self, owner_uid: u32) -> Vec<String> {
        match self {
            StoreView::Sqlite { conn, .. } => {
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
            // Teams belong to user names there (and outlive a pruned job's row).
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query(
                    "SELECT name FROM jobd.teams WHERE owner = $1 ORDER BY name",
                    &[&user_name(owner_uid)],
                )
                .expect("query team names")
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    /// `(row, message)` of the job's row errors as stored, by row.
    #[track_caller]
    pub fn row_errors(&self, id: &str) -> Vec<(u64, String)> {
        let seq = self.seq(id);
        match self {
            StoreView::Sqlite { conn, .. } => {
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
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query(
                    "SELECT row, message FROM jobd.row_errors WHERE job_seq = $1 ORDER BY row",
                    &[&seq],
                )
                .expect("query row_errors")
                .iter()
                .map(|r| (pu(r, 0), r.get(1)))
                .collect(),
        }
    }

    /// The output the store holds for an export (its file, or its chunks), if any.
    #[track_caller]
    pub fn output(&self, id: &str) -> Option<Vec<u8>> {
        match self {
            StoreView::Sqlite { state_dir, .. } => {
                fs::read(state_dir.join("exports").join(format!("{id}.csv"))).ok()
            }
            StoreView::Postgres(c) => {
                let seq = self.seq(id);
                let rows = c
                    .borrow_mut()
                    .query(
                        "SELECT data FROM jobd.output_chunks WHERE job_seq = $1 ORDER BY pos",
                        &[&seq],
                    )
                    .expect("query output_chunks");
                (!rows.is_empty())
                    .then(|| rows.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect())
            }
        }
    }

    /// Uploads the store holds: spool files, or upload rows plus uploads being
    /// written right now (a transaction of jobd holding written rows).
    pub fn uploads(&self) -> usize {
        match self {
            StoreView::Sqlite { state_dir, .. } => fs::read_dir(state_dir.join("spool"))
                .map(|d| d.count())
                .unwrap_or(0),
            StoreView::Postgres(c) => {
                let mut c = c.borrow_mut();
                let rows = pu(
                    &c.query_one("SELECT COUNT(*) FROM jobd.uploads", &[])
                        .expect("count uploads"),
                    0,
                );
                rows as usize + uploads_in_progress(&mut c)
            }
        }
    }

    /// Checks the store's own consistency: SQLite's `integrity_check`; for
    /// PostgreSQL (which keeps its own files sound) that no upload outlives its
    /// job and no output holds more than its committed length.
    #[track_caller]
    pub fn assert_integrity(&self) {
        match self {
            StoreView::Sqlite { conn, state_dir } => {
                let mut stmt = conn
                    .prepare("PRAGMA integrity_check")
                    .expect("prepare integrity_check");
                let rows: Vec<String> = stmt
                    .query_map([], |r| r.get(0))
                    .expect("run integrity_check")
                    .map(|r| r.expect("integrity_check row"))
                    .collect();
                assert_eq!(
                    rows,
                    ["ok"],
                    "PRAGMA integrity_check of {}",
                    state_dir.display()
                );
            }
            StoreView::Postgres(c) => {
                let mut c = c.borrow_mut();
                let stray: i64 = c
                    .query_one(
                        "SELECT COUNT(*) FROM jobd.uploads u WHERE NOT EXISTS
                           (SELECT 1 FROM jobd.jobs j WHERE j.kind <> 'createExport'
                               AND j.input = u.id::text
                               AND j.state NOT IN ('completed', 'failed', 'terminated', 'reverted'))",
                        &[],
                    )
                    .expect("count stray uploads")
                    .get(0);
                assert_eq!(stray, 0, "uploads that no unfinished job reads");
                let over: i64 = c
                    .query_one(
                        "SELECT COUNT(*) FROM jobd.jobs j WHERE j.output_len <>
                           (SELECT COALESCE(SUM(length(data)), 0) FROM jobd.output_chunks o
                             WHERE o.job_seq = j.seq)",
                        &[],
                    )
                    .expect("compare outputs")
                    .get(0);
                assert_eq!(
                    over, 0,
                    "outputs whose chunks differ from their committed length"
                );
            }
        }
    }

    /// The job `id` as committed, read in one transaction.
    #[track_caller]
    pub fn committed(&self, id: &str) -> Committed {
        let seq = self.seq(id);
        let parse_cursor = |c: Option<String>| {
            c.map(|c| {
                serde_json::from_str(&c).unwrap_or_else(|e| panic!("cursor {c:?} of {id}: {e}"))
            })
        };
        match self {
            StoreView::Sqlite { conn, .. } => {
                conn.execute_batch("BEGIN").expect("read transaction");
                let (kind, state, processed, failed, output_len, cursor): (
                    String,
                    String,
                    i64,
                    i64,
                    i64,
                    Option<String>,
                ) = conn
                    .query_row(
                        "SELECT kind, state, processed, failed, output_len, cursor FROM jobs WHERE seq = ?1",
                        params![seq],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                    )
                    .unwrap_or_else(|e| panic!("job {id} in the store: {e}"));
                let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> u64 {
                    conn.query_row(sql, p, |r| r.get::<_, i64>(0))
                        .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
                };
                let records = count(
                    "SELECT COUNT(*) FROM baseline_records WHERE id >= ?1 AND id < ?2",
                    &[&(seq << 32), &((seq + 1) << 32)],
                );
                let teams = count("SELECT COUNT(*) FROM teams WHERE job_seq = ?1", &[&seq]);
                let row_errors = count(
                    "SELECT COUNT(*) FROM row_errors WHERE job_seq = ?1",
                    &[&seq],
                );
                let orphan_members = count(
                    "SELECT COUNT(*) FROM team_members WHERE team_id NOT IN (SELECT id FROM teams)",
                    &[],
                );
                conn.execute_batch("COMMIT").expect("end read transaction");
                Committed {
                    kind,
                    state,
                    processed: processed as u64,
                    failed: failed as u64,
                    effects: records + teams,
                    row_errors,
                    orphan_members,
                    output_len: output_len as u64,
                    stored_output: None,
                    cursor: parse_cursor(cursor),
                }
            }
            StoreView::Postgres(c) => {
                let mut c = c.borrow_mut();
                let mut tx = c
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .expect("read transaction");
                let r = tx
                    .query_one(
                        "SELECT kind, state, processed, failed, output_len, cursor,
                           (SELECT COALESCE(SUM(count), 0)::bigint FROM jobd.baseline_blocks WHERE job_seq = $1),
                           (SELECT COUNT(*) FROM jobd.teams WHERE job_seq = $1),
                           (SELECT COUNT(*) FROM jobd.row_errors WHERE job_seq = $1),
                           (SELECT COALESCE(SUM(length(data)), 0)::bigint FROM jobd.output_chunks
                             WHERE job_seq = $1)
                         FROM jobd.jobs WHERE seq = $1",
                        &[&seq],
                    )
                    .unwrap_or_else(|e| panic!("job {id} in the store: {e}"));
                let committed = Committed {
                    kind: r.get(0),
                    state: r.get(1),
                    processed: pu(&r, 2),
                    failed: pu(&r, 3),
                    output_len: pu(&r, 4),
                    cursor: parse_cursor(r.get(5)),
                    effects: pu(&r, 6) + pu(&r, 7),
                    row_errors: pu(&r, 8),
                    stored_output: Some(pu(&r, 9)),
                    orphan_members: 0,
                };
                tx.commit().expect("end read transaction");
                committed
            }
        }
    }
}

/// The user name of a uid (its number when it has none), as the daemon names owners.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

impl StoreView {
    /// Whether the store still keeps `id` as taken (in `job_ids`), whether or not
    /// the job itself is still there: a pruned job's id stays taken for ever.
    pub fn id_taken(&self, id: &str) -> bool {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row("SELECT 1 FROM job_ids WHERE id = ?1", params![id], |_| {
                    Ok(())
                })
                .optional()
                .expect("query job_ids")
                .is_some(),
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query_opt("SELECT 1 FROM jobd.job_ids WHERE id = $1", &[&id])
                .expect("query job_ids")
                .is_some(),
        }
    }

    /// Number of rows the store keeps for jobs (finished or not).
    pub fn job_rows(&self) -> u64 {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row("SELECT COUNT(*) FROM jobs", [], |r| u(r, 0))
                .expect("count jobs"),
            StoreView::Postgres(c) => pu(
                &c.borrow_mut()
                    .query_one("SELECT COUNT(*) FROM jobd.jobs", &[])
                    .expect("count jobs"),
                0,
            ),
        }
    }

    /// Row errors the store keeps for the job with this seq (0 once it is pruned).
    pub fn row_errors_of_seq(&self, seq: i64) -> u64 {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT COUNT(*) FROM row_errors WHERE job_seq = ?1",
                    params![seq],
                    |r| u(r, 0),
                )
                .expect("count row errors"),
            StoreView::Postgres(c) => pu(
                &c.borrow_mut()
                    .query_one(
                        "SELECT COUNT(*) FROM jobd.row_errors WHERE job_seq = $1",
                        &[&seq],
                    )
                    .expect("count row errors"),
                0,
            ),
        }
    }

    /// Whether the store still holds output of the export `id` (seq `seq`): its
    /// file, or its chunks.
    pub fn has_output_of(&self, seq: i64, id: &str) -> bool {
        match self {
            StoreView::Sqlite { state_dir, .. } => {
                state_dir.join("exports").join(format!("{id}.csv")).exists()
            }
            StoreView::Postgres(c) => c
                .borrow_mut()
                .query_opt(
                    "SELECT 1 FROM jobd.output_chunks WHERE job_seq = $1 LIMIT 1",
                    &[&seq],
                )
                .expect("query output_chunks")
                .is_some(),
        }
    }

    /// Baseline records and teams written by the job with this seq (they stay
    /// when the job is pruned), as `(records, teams)`.
    pub fn effects_of_seq(&self, seq: i64) -> (u64, u64) {
        match self {
            StoreView::Sqlite { conn, .. } => conn
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM baseline_records WHERE id >= ?1 AND id < ?2),
                            (SELECT COUNT(*) FROM teams WHERE job_seq = ?3)",
                    params![seq << 32, (seq + 1) << 32, seq],
                    |r| Ok((u(r, 0)?, u(r, 1)?)),
                )
                .expect("count effects"),
            StoreView::Postgres(c) => {
                let r = c
                    .borrow_mut()
                    .query_one(
                        "SELECT (SELECT COALESCE(SUM(count), 0)::bigint FROM jobd.baseline_blocks
                                  WHERE job_seq = $1),
                                (SELECT COUNT(*) FROM jobd.teams WHERE job_seq = $1)",
                        &[&seq],
                    )
                    .expect("count effects");
                (pu(&r, 0), pu(&r, 1))
            }
        }
    }
}

/// Uploads being received: transactions of jobd that wrote an upload's rows and
/// have not committed.
fn uploads_in_progress(c: &mut postgres::Client) -> usize {
    let n: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'jobd'
                AND backend_xid IS NOT NULL
                AND (query LIKE 'COPY jobd.upload_chunks%' OR query LIKE 'INSERT INTO jobd.uploads%')",
            &[],
        )
        .expect("query pg_stat_activity")
        .get(0);
    n as usize
}

/// Overwrites a job's committed state, with its daemon stopped (to simulate a
/// crash at a moment too short to hit by timing, such as inside a terminate's
/// rollback).
pub fn set_state(view: &StoreView, id: &str, state: &str) {
    let n = match view {
        StoreView::Sqlite { state_dir, .. } => {
            let path = state_dir.join("jobd.db");
            let conn = Connection::open(&path)
                .unwrap_or_else(|e| panic!("open {} read-write: {e}", path.display()));
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .expect("busy timeout");
            conn.execute(
                "UPDATE jobs SET state = ?2 WHERE id = ?1",
                params![id, state],
            )
            .expect("update the job's state") as u64
        }
        StoreView::Postgres(c) => c
            .borrow_mut()
            .execute(
                "UPDATE jobd.jobs SET state = $2 WHERE id = $1",
                &[&id, &state],
            )
            .expect("update the job's state"),
    };
    assert_eq!(n, 1, "job {id} not in the store");
}
