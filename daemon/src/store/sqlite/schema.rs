//! The SQLite schema. Effects of a job carry the job's `seq` so that one statement
//! finds (and a terminate removes) everything a job wrote.

use crate::store::StoreError;
use rusqlite::Connection;

/// Applied at every start; each statement is idempotent.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    owner_uid    INTEGER NOT NULL,
    owner        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    processed    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    total        INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    error        TEXT,
    rate         REAL,
    input        TEXT    NOT NULL,
    cursor       TEXT,
    finished_seq INTEGER,
    -- An export's output committed so far: the file may be longer after a crash.
    output_len   INTEGER NOT NULL DEFAULT 0
);

-- Baseline records are appended, never inserted in the middle: within a job, each
-- batch is written sorted by date, and id = (job seq << 32) | the record's ordinal
-- in its job. So every (batch, date) of a job is one contiguous id range, which
-- `baseline_groups` lists; exports read a date as those ranges, in job then id
-- order (= job then row). `row` is the record's data row in the uploaded file.
-- A batch redone after a crash gets the same ids, so it cannot be applied twice.
CREATE TABLE IF NOT EXISTS baseline_records (
    id   INTEGER PRIMARY KEY,
    row  INTEGER NOT NULL,
    data TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS baseline_groups (
    job_seq INTEGER NOT NULL,
    date    TEXT    NOT NULL,
    first   INTEGER NOT NULL,
    last    INTEGER NOT NULL,
    PRIMARY KEY (job_seq, date, first)
) WITHOUT ROWID;

-- Which jobs hold records of a date, for exports to find them by date.
CREATE TABLE IF NOT EXISTS baseline_days (
    date    TEXT    NOT NULL,
    job_seq INTEGER NOT NULL,
    PRIMARY KEY (date, job_seq)
) WITHOUT ROWID;

-- A baseline job's columns, and what exports need of it even once the job itself
-- is pruned: its owner, and its completion number (NULL until it completes).
CREATE TABLE IF NOT EXISTS baseline_columns (
    job_seq      INTEGER PRIMARY KEY,
    columns      TEXT NOT NULL,
    owner_uid    INTEGER,
    finished_seq INTEGER
);

CREATE TABLE IF NOT EXISTS teams (
    id        INTEGER PRIMARY KEY,
    owner_uid INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    job_seq   INTEGER NOT NULL,
    row       INTEGER NOT NULL,
    UNIQUE (owner_uid, name)
);
CREATE INDEX IF NOT EXISTS teams_by_job ON teams(job_seq);

CREATE TABLE IF NOT EXISTS team_members (
    team_id  INTEGER NOT NULL,
    position INTEGER NOT NULL,
    member   TEXT    NOT NULL,
    PRIMARY KEY (team_id, position)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS row_errors (
    job_seq INTEGER NOT NULL,
    row     INTEGER NOT NULL,
    message TEXT    NOT NULL,
    PRIMARY KEY (job_seq, row)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs(finished_seq);

-- Every id ever given to a job, kept when the job is pruned: an id is never handed
-- out again, and a job's seq (taken from here) is never reused, so effects that
-- outlive a pruned job never mix with a later job's.
CREATE TABLE IF NOT EXISTS job_ids (
    seq INTEGER PRIMARY KEY,
    id  TEXT    NOT NULL UNIQUE
);

-- Counters that only grow: 'finished' numbers completions (export snapshots).
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#;

/// The layout [`SCHEMA`] describes, kept in `PRAGMA user_version`. 0 is a new
/// database or one from before layouts were numbered; 1 was never used; 3 keeps
/// an export's committed output length in `jobs` (2 kept it in the cursor); 4
/// lets jobs be pruned (ids kept in `job_ids`, completions counted in
/// `counters`, exports reading owners from `baseline_columns`).
pub const LAYOUT: i64 = 4;

/// Brings the database to [`LAYOUT`]: creates what is missing, and converts a
/// store of the first layout (baseline records clustered by owner and date).
pub fn apply(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > LAYOUT {
        return Err(StoreError::Config(format!(
            "the store has layout {version}, newer than this jobd's {LAYOUT}: \
             it was written by a later version of jobd"
        )));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        let from_layout_0 = version < LAYOUT && has_column(conn, "baseline_records", "owner_uid")?;
        if from_layout_0 {
            conn.execute_batch(
                "ALTER TABLE baseline_records RENAME TO baseline_records_0;
                 ALTER TABLE baseline_days RENAME TO baseline_days_0;",
            )?;
        }
        conn.execute_batch(SCHEMA)?;
        if from_layout_0 {
            conn.execute_batch(FROM_LAYOUT_0)?;
        }
        if !has_column(conn, "jobs", "output_len")? {
            conn.execute_batch(FROM_LAYOUT_2)?;
        }
        if !has_column(conn, "baseline_columns", "finished_seq")? {
            conn.execute_batch(
                "ALTER TABLE baseline_columns ADD COLUMN owner_uid INTEGER;
                 ALTER TABLE baseline_columns ADD COLUMN finished_seq INTEGER;",
            )?;
        }
        if version < 4 {
            conn.execute_batch(FROM_LAYOUT_3)?;
        }
        conn.execute_batch(&format!("PRAGMA user_version = {LAYOUT}"))?;
        Ok(())
    })();
    match done {
        Ok(()) => conn.execute_batch("COMMIT").map_err(StoreError::from),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// First layout → this one, once [`SCHEMA`] has created the new tables beside the
/// renamed old ones: each job's records get ordinals in (date, row) order, so that
/// each (job, date) is one id range; ids keep the job's seq on top.
const FROM_LAYOUT_0: &str = r#"
CREATE TEMP TABLE renumbered AS
    SELECT ((id >> 32) << 32)
             | ROW_NUMBER() OVER (PARTITION BY id >> 32 ORDER BY date, id) AS new_id,
           id >> 32 AS job_seq, id & 4294967295 AS row, date, data
    FROM baseline_records_0;
INSERT INTO baseline_records (id, row, data)
    SELECT new_id, row, data FROM renumbered ORDER BY new_id;
INSERT INTO baseline_groups (job_seq, date, first, last)
    SELECT job_seq, date, MIN(new_id), MAX(new_id) FROM renumbered GROUP BY job_seq, date;
INSERT INTO baseline_days (date, job_seq)
    SELECT DISTINCT date, job_seq FROM renumbered;
DROP TABLE renumbered;
DROP TABLE baseline_records_0;
DROP TABLE baseline_days_0;
"#;

/// Layout 2 → 3: the committed length of an export's file moves from its cursor
/// into the job's row.
const FROM_LAYOUT_2: &str = r#"
ALTER TABLE jobs ADD COLUMN output_len INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET output_len = COALESCE(json_extract(cursor, '$.file_len'), 0)
 WHERE kind = 'createExport' AND cursor IS NOT NULL;
"#;

/// Layout 3 → 4, once the new tables and columns exist (idempotent): every job's
/// id and seq go to `job_ids`, the completion counter starts at the highest
/// completion, and each baseline job's owner and completion are copied to its
/// columns' row.
const FROM_LAYOUT_3: &str = r#"
INSERT OR IGNORE INTO job_ids (seq, id) SELECT seq, id FROM jobs;
INSERT OR IGNORE INTO counters (name, value)
    SELECT 'finished', COALESCE(MAX(finished_seq), 0) FROM jobs;
UPDATE baseline_columns SET
    owner_uid = (SELECT owner_uid FROM jobs WHERE seq = job_seq),
    finished_seq = (SELECT finished_seq FROM jobs WHERE seq = job_seq AND state = 'completed');
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of the first layout: jobs 1 and 2, rows out of date order.
    const LAYOUT_0: &str = r#"
        CREATE TABLE baseline_records (
            owner_uid INTEGER NOT NULL, date TEXT NOT NULL, id INTEGER NOT NULL,
            data TEXT NOT NULL, PRIMARY KEY (owner_uid, date, id)) WITHOUT ROWID;
        CREATE TABLE baseline_days (
            job_seq INTEGER NOT NULL, date TEXT NOT NULL,
            PRIMARY KEY (job_seq, date)) WITHOUT ROWID;
        INSERT INTO baseline_records VALUES
            (7, '2020-01-02', (1 << 32) | 1, '["a"]'),
            (7, '2020-01-01', (1 << 32) | 2, '["b"]'),
            (7, '2020-01-02', (1 << 32) | 4, '["c"]'),
            (7, '2020-01-01', (2 << 32) | 1, '["d"]');
        INSERT INTO baseline_days VALUES
            (1, '2020-01-01'), (1, '2020-01-02'), (2, '2020-01-01');
    "#;

    #[test]
    fn a_store_of_the_first_layout_is_converted() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(LAYOUT_0).expect("old layout");
        apply(&conn).expect("converted");
        let records: Vec<(i64, i64, i64, String)> = conn
            .prepare(
                "SELECT id >> 32, id & 4294967295, row, data FROM baseline_records ORDER BY id",
            )
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let want = [
            (1, 1, 2, r#"["b"]"#),
            (1, 2, 1, r#"["a"]"#),
            (1, 3, 4, r#"["c"]"#),
            (2, 1, 1, r#"["d"]"#),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|&(j, n, row, d)| (j, n, row, d.to_string()))
            .collect();
        assert_eq!(records, want);
        let groups: Vec<(i64, String, i64, i64)> = conn
            .prepare(
                "SELECT job_seq, date, first & 4294967295, last & 4294967295
                 FROM baseline_groups ORDER BY job_seq, date",
            )
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let d = |s: &str| s.to_string();
        assert_eq!(
            groups,
            [
                (1, d("2020-01-01"), 1, 1),
                (1, d("2020-01-02"), 2, 3),
                (2, d("2020-01-01"), 1, 1)
            ]
        );
        let days: i64 = conn
            .query_row("SELECT COUNT(*) FROM baseline_days", [], |r| r.get(0))
            .expect("days");
        assert_eq!(days, 3);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, LAYOUT);
        // Applying again changes nothing.
        apply(&conn).expect("idempotent");
    }

    #[test]
    fn a_store_from_a_later_version_is_refused() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("PRAGMA user_version = 99")
            .expect("version");
        let e = apply(&conn).expect_err("refused");
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
