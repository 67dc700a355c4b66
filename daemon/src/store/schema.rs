//! The SQLite schema. Effects of a job carry the job's `seq` so that one statement
//! finds (and a terminate removes) everything a job wrote.

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
    finished_seq INTEGER
);

-- Clustered by what exports read: one user's records of one date, in job and row
-- order. id = (job seq << 32) | data row, so a row applied twice is a constraint
-- violation. `baseline_days` lists the dates each job touched, so that a terminate
-- deletes its records by key ranges instead of scanning.
CREATE TABLE IF NOT EXISTS baseline_records (
    owner_uid INTEGER NOT NULL,
    date      TEXT    NOT NULL,
    id        INTEGER NOT NULL,
    data      TEXT    NOT NULL,
    PRIMARY KEY (owner_uid, date, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS baseline_days (
    job_seq INTEGER NOT NULL,
    date    TEXT    NOT NULL,
    PRIMARY KEY (job_seq, date)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS baseline_columns (
    job_seq INTEGER PRIMARY KEY,
    columns TEXT NOT NULL
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
"#;
