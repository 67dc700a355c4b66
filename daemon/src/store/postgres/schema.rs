//! The PostgreSQL schema, in its own schema `jobd`, created or migrated at start in
//! one transaction (DDL is transactional here: never half a schema), under an
//! advisory lock so that nodes starting together do it once.
//!
//! Baseline records are kept in blocks: a few records of one (batch, date) of a job
//! per row, their ordinals `first ..= first + count - 1` in row order, each record a
//! line `row<TAB>json` (JSON never holds a raw tab or newline). Blocks stay under
//! the size PostgreSQL would move out of line (TOAST), and an ingest writes them
//! with COPY: a row per ~20 records instead of one per record, and an export reads
//! a date as a range of its jobs' blocks.

use crate::store::StoreError;
use tokio_postgres as pg;

/// The layout this jobd writes, kept in `jobd.meta`.
pub const LAYOUT: i64 = 3;

/// Serializes schema changes across nodes (any constant unlikely to collide).
const MIGRATION_LOCK: i64 = 0x6a6f_6264_5343_4831;

const SCHEMA: &str = r#"
CREATE SCHEMA jobd;

CREATE TABLE jobd.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE jobd.jobs (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text   NOT NULL UNIQUE,
    kind         text   NOT NULL,
    owner_uid    bigint NOT NULL,
    owner        text   NOT NULL,
    state        text   NOT NULL,
    processed    bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    total        bigint,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    error        text,
    rate         double precision,
    input        text   NOT NULL,
    cursor       text,
    finished_seq bigint,
    output_len   bigint NOT NULL DEFAULT 0,
    -- Baseline records committed so far: the next one's ordinal follows.
    records      bigint NOT NULL DEFAULT 0,
    -- Raised by every claim of the job by a worker; commits check it (fencing).
    epoch        bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_finish ON jobd.jobs (finished_seq);
-- Completions are numbered under this row's lock, so that every number up to the
-- committed value belongs to a committed completion (export snapshots).
CREATE TABLE jobd.counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO jobd.counters VALUES ('finished', 0);

CREATE TABLE jobd.uploads (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bytes      bigint NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE jobd.upload_chunks (
    upload_id bigint NOT NULL,
    pos       bigint NOT NULL,
    data      bytea  NOT NULL,
    PRIMARY KEY (upload_id, pos)
);

CREATE TABLE jobd.output_chunks (
    job_seq bigint NOT NULL,
    pos     bigint NOT NULL,
    data    bytea  NOT NULL,
    PRIMARY KEY (job_seq, pos)
);

CREATE TABLE jobd.baseline_blocks (
    job_seq bigint  NOT NULL,
    day     integer NOT NULL,
    first   bigint  NOT NULL,
    count   integer NOT NULL,
    records text    NOT NULL,
    PRIMARY KEY (job_seq, day, first)
);

-- Which jobs hold records of a date, for exports to find them by date.
CREATE TABLE jobd.baseline_days (
    day     integer NOT NULL,
    job_seq bigint  NOT NULL,
    PRIMARY KEY (day, job_seq)
);
CREATE INDEX baseline_days_by_job ON jobd.baseline_days (job_seq);

CREATE TABLE jobd.baseline_columns (
    job_seq bigint PRIMARY KEY,
    columns text   NOT NULL
);

-- Team names are unique per user name: one person is the same user on every node.
CREATE TABLE jobd.teams (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner   text   NOT NULL,
    name    text   NOT NULL,
    job_seq bigint NOT NULL,
    row     bigint NOT NULL,
    members text   NOT NULL,
    UNIQUE (owner, name)
);
CREATE INDEX teams_by_job ON jobd.teams (job_seq);

CREATE TABLE jobd.row_errors (
    job_seq bigint NOT NULL,
    row     bigint NOT NULL,
    message text   NOT NULL,
    PRIMARY KEY (job_seq, row)
);
"#;

/// Layout 2: nodes sharing the database — who runs each job, its lease, a
/// control asked of its node, the announcement of every change, the nodes.
const NODES: &str = r#"
ALTER TABLE jobd.jobs
    -- The node running the job, and until when its claim holds unless renewed.
    ADD COLUMN node        text,
    ADD COLUMN lease_until timestamptz,
    -- A stop or terminate asked of that node, not obeyed yet.
    ADD COLUMN control     text;

-- What nodes claim, first in first out, and what each renews.
CREATE INDEX jobs_claimable ON jobd.jobs (seq) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_by_node ON jobd.jobs (node) WHERE state = 'running';

-- Every change of a job that a client could see is announced to every node
-- (LISTEN jobd_jobs) with the job's seq (negative: it is gone). A lease renewal
-- is not such a change.
CREATE FUNCTION jobd.announce_job() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('jobd_jobs', (-OLD.seq)::text);
    ELSE
        PERFORM pg_notify('jobd_jobs', NEW.seq::text);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER jobs_announce
    AFTER INSERT OR DELETE OR UPDATE OF state, processed, failed, total, error, node, control
    ON jobd.jobs FOR EACH ROW EXECUTE FUNCTION jobd.announce_job();

-- The nodes that share this database.
CREATE TABLE jobd.nodes (
    name         text PRIMARY KEY,
    started_at   bigint      NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    max_running  integer     NOT NULL,
    stopped      boolean     NOT NULL DEFAULT false
);
"#;

/// Layout 3: jobs can be pruned. Every id ever given stays in `job_ids` (so that
/// it is never handed out again), and exports read a baseline job's owner and
/// completion from its columns' row, which outlives the job's own row.
const RETENTION: &str = r#"
CREATE TABLE jobd.job_ids (
    id text PRIMARY KEY
);
INSERT INTO jobd.job_ids (id) SELECT id FROM jobd.jobs;

ALTER TABLE jobd.baseline_columns
    ADD COLUMN owner        text,
    ADD COLUMN finished_seq bigint;
UPDATE jobd.baseline_columns c
   SET owner = j.owner,
       finished_seq = CASE WHEN j.state = 'completed' THEN j.finished_seq END
  FROM jobd.jobs j WHERE j.seq = c.job_seq;

-- What a prune looks for: finished jobs in seq order.
CREATE INDEX jobs_finished ON jobd.jobs (seq)
    WHERE state IN ('completed', 'failed', 'terminated', 'reverted');
"#;

/// Connects once and brings the schema to [`LAYOUT`].
pub async fn connect_and_migrate(config: &pg::Config) -> Result<(), StoreError> {
    let (mut client, connection) = config.connect(pg::NoTls).await.map_err(at_connect)?;
    let driver = tokio::spawn(connection);
    let done = migrate(&mut client).await;
    drop(client);
    let _ = driver.await;
    done
}

/// Errors of a first connection: which are the user's to fix (exit 2), which the
/// server's refusal (exit 1), which mean "not up yet" (wait).
fn at_connect(e: pg::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return super::classify(e);
    };
    let code = db.code().code();
    let message = format!("{} ({code})", db.message());
    match &code[..2] {
        // Bad password, unknown role, no such database.
        "28" | "3D" => StoreError::Config(message),
        "57" | "08" => StoreError::Unavailable(message),
        _ => StoreError::Refused(message),
    }
}

/// Errors while checking or changing the schema.
fn in_migration(e: pg::Error) -> StoreError {
    match super::classify(e) {
        StoreError::Database(m) => StoreError::Refused(format!("cannot set up jobd's schema: {m}")),
        other => other,
    }
}

async fn migrate(client: &mut pg::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(in_migration)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(in_migration)?;
    let db: String = tx
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(in_migration)?
        .get(0);
    let has_meta: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                             WHERE table_schema = 'jobd' AND table_name = 'meta')",
            &[],
        )
        .await
        .map_err(in_migration)?
        .get(0);
    if has_meta {
        let layout = tx
            .query_opt("SELECT value FROM jobd.meta WHERE key = 'layout'", &[])
            .await
            .map_err(in_migration)?
            .and_then(|r| r.get::<_, String>(0).parse::<i64>().ok())
            .ok_or_else(|| {
                StoreError::Config(format!(
                    "database {db} has a schema `jobd` without a layout number: it is not jobd's"
                ))
            })?;
        if layout > LAYOUT {
            return Err(StoreError::Config(format!(
                "database {db} has jobd's layout {layout}, newer than this jobd's {LAYOUT}: \
                 it was written by a later version of jobd"
            )));
        }
        if layout < 2 {
            tx.batch_execute(NODES).await.map_err(in_migration)?;
        }
        if layout < 3 {
            tx.batch_execute(RETENTION).await.map_err(in_migration)?;
        }
        if layout < LAYOUT {
            tracing::info!("migrated jobd's schema from layout {layout} to {LAYOUT}");
        }
        tx.execute(
            "UPDATE jobd.meta SET value = $1 WHERE key = 'layout'",
            &[&LAYOUT.to_string()],
        )
        .await
        .map_err(in_migration)?;
        return tx.commit().await.map_err(in_migration);
    }
    let foreign: Vec<String> = tx
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables
              WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
              ORDER BY 1 LIMIT 4",
            &[],
        )
        .await
        .map_err(in_migration)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !foreign.is_empty() {
        return Err(StoreError::Config(format!(
            "database {db} is not jobd's: it holds tables of another application ({}); \
             give jobd an empty database of its own",
            foreign.join(", ")
        )));
    }
    tx.batch_execute(SCHEMA).await.map_err(in_migration)?;
    tx.batch_execute(NODES).await.map_err(in_migration)?;
    tx.batch_execute(RETENTION).await.map_err(in_migration)?;
    tx.execute(
        "INSERT INTO jobd.meta VALUES ('layout', $1), ('created_by', $2)",
        &[
            &LAYOUT.to_string(),
            &format!("jobd {}", env!("CARGO_PKG_VERSION")),
        ],
    )
    .await
    .map_err(in_migration)?;
    tx.commit().await.map_err(in_migration)
}
