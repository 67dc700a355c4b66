//! The embedded store: one SQLite database (WAL) in the state directory, with the
//! uploads (`spool/`) and export outputs (`exports/`) as files beside it.
//!
//! Connections are pooled; a caller takes one for the length of a call and gives it
//! back on drop. The pool's lock is held only to pop or push, never across I/O.
//! Writers queue on a FIFO lock of their own (see [`Inner::writes`]).

mod checkpoint;
mod effects;
mod export;
mod files;
mod jobs;
mod schema;

use super::{
    Batch, Claim, CommitError, Day, DayQuery, DayRecord, Effects, Expect, ExportPlan, Forgotten,
    Input, JobRow, NewJob, Owner, Progress, PruneQuery, Reader, Seal, Source, Store, StoreError,
    StoredState, Upload,
};
use jobd_protocol::{JobState, RowError};
use rusqlite::Connection;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Layout of the state directory.
#[derive(Debug, Clone)]
struct Dirs {
    spool: PathBuf,
    exports: PathBuf,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    dirs: Dirs,
    pool: Mutex<Vec<Connection>>,
    /// Held for the whole of a write transaction. SQLite lets one writer in at a
    /// time but does not queue the others: a worker that commits and begins again
    /// at once would starve every other writer until its busy timeout. This is FIFO.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Started at the first bulk commit: never before `--daemon` forks (a thread
    /// holding a lock across the fork would deadlock the child).
    checkpointer: OnceLock<Option<checkpoint::Checkpointer>>,
}

type WriteLock = tokio::sync::OwnedMutexGuard<()>;

/// A batch of this many units has the WAL copied back at once, off the committing
/// thread; smaller ones leave it to `wal_autocheckpoint` (see [`checkpoint`]).
const CHECKPOINT_AFTER: u64 = 1024;

impl SqliteStore {
    /// Opens (creating if needed) the store in `state_dir` and brings its layout up
    /// to date.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let dirs = Dirs {
            spool: state_dir.join("spool"),
            exports: state_dir.join("exports"),
        };
        for dir in [state_dir, &dirs.spool, &dirs.exports] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let path = state_dir.join("jobd.db");
        let conn = open_connection(&path)?;
        schema::apply(&conn)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                dirs,
                pool: Mutex::new(vec![conn]),
                writes: Arc::new(tokio::sync::Mutex::new(())),
                checkpointer: OnceLock::new(),
            }),
        })
    }

    /// Tells the checkpoint thread that a bulk write committed.
    fn committed_bulk(&self) {
        let checkpointer = self.inner.checkpointer.get_or_init(|| {
            checkpoint::Checkpointer::start(&self.inner.path)
                .map_err(|e| tracing::warn!(error = %e, "cannot start the checkpoint thread"))
                .ok()
        });
        if let Some(c) = checkpointer {
            c.nudge();
        }
    }

    /// Waits for this process's turn to write.
    fn lock_writes(&self) -> WriteLock {
        Arc::clone(&self.inner.writes).blocking_lock_owned()
    }

    /// A connection from the pool, or a new one.
    fn conn(&self) -> Result<PooledConn, StoreError> {
        let pooled = self.inner.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.inner.path)?,
        };
        Ok(PooledConn {
            conn: Some(conn),
            store: self.clone(),
        })
    }

    /// Runs `f` in a write transaction (`BEGIN IMMEDIATE`), committing on `Ok`.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn()?;
        let _w = self.lock_writes();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let done = f(&conn).and_then(|v| {
            conn.execute_batch("COMMIT")?;
            Ok(v)
        });
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        done
    }
}

/// `wal_autocheckpoint` is 16384 pages (64 MiB): a bound, not the usual way (see
/// [`checkpoint`]); a WAL that grew past 64 MiB is cut back when it starts over.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // FULL: an acknowledged commit survives power loss, not only a crash.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=16384; PRAGMA journal_size_limit=67108864;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A pooled connection; returns to the pool when dropped.
struct PooledConn {
    conn: Option<Connection>,
    store: SqliteStore,
}

impl Deref for PooledConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut pool)) = (self.conn.take(), self.store.inner.pool.lock()) {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
    }
}

impl Source for SqliteStore {
    fn input(&self, input: &str) -> Result<Box<dyn Input>, StoreError> {
        Ok(Box::new(files::FileInput::open(
            &self.inner.dirs.spool,
            input,
        )?))
    }

    fn export_plan(&self, owner: Owner<'_>, from: Day, to: Day) -> Result<ExportPlan, StoreError> {
        export::plan(&*self.conn()?, owner, from, to)
    }

    fn day_records(&self, q: &DayQuery<'_>, out: &mut Vec<DayRecord>) -> Result<(), StoreError> {
        export::day_records(&*self.conn()?, q, out)
    }

    fn columns_of(&self, job_seq: i64) -> Result<Vec<String>, StoreError> {
        export::columns_of(&*self.conn()?, job_seq)
    }
}

impl Store for SqliteStore {
    fn recover(&self) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.conn()?;
        let mut rows = jobs::load_all(&conn)?;
        for row in rows.iter_mut() {
            if row.state == StoredState::Terminating {
                tracing::info!(job = %row.id, "finishing an interrupted terminate");
                effects::finish_terminate(self, row.seq)?;
                *row = jobs::load(&conn, row.seq)?;
            }
        }
        files::remove_strays(&self.inner.dirs, &rows);
        Ok(rows)
    }

    fn insert_job(&self, job: &NewJob<'_>) -> Result<JobRow, StoreError> {
        self.write(|conn| {
            let seq = jobs::insert(conn, job, job.input)?;
            jobs::load(conn, seq)
        })
    }

    fn create_upload(&self) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(files::SpoolUpload::create(self.clone())?))
    }

    fn load_job(&self, seq: i64) -> Result<JobRow, StoreError> {
        jobs::load(&*self.conn()?, seq)
    }

    fn set_state(
        &self,
        seq: i64,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        // A failing job gives its files up first: on a full disk, that is what
        // makes room to record the failure.
        let failing = state == StoredState::Public(JobState::Failed);
        if failing {
            let job = jobs::load(&conn, seq)?;
            files::remove_input(&self.inner.dirs, job.kind, &job.input);
            files::remove_output(&self.inner.dirs, job.kind, &job.id);
        }
        {
            let _w = self.lock_writes();
            jobs::set_state(&conn, seq, state, error)?;
        }
        // A job that ends otherwise loses its upload once that is recorded.
        if let StoredState::Public(s) = state {
            if s.is_finished() && !failing {
                let job = jobs::load(&conn, seq)?;
                files::remove_input(&self.inner.dirs, job.kind, &job.input);
                if s != JobState::Completed {
                    files::remove_output(&self.inner.dirs, job.kind, &job.id);
                }
            }
        }
        Ok(())
    }

    /// One daemon holds the state directory (its lock), and a killed process
    /// commits nothing more: claims need no epoch here.
    /// One daemon owns the database (its state directory lock): nobody else
    /// changes a claimed job, so `after` needs no check.
    fn claim(&self, seq: i64, _after: Option<&Claim>) -> Result<(JobRow, Claim), StoreError> {
        let job = self.write(|conn| {
            conn.execute(
                "UPDATE jobs SET state = 'running', updated_at = ?2
                 WHERE seq = ?1 AND state <> 'running'",
                rusqlite::params![seq, super::now_ms() as i64],
            )?;
            jobs::load(conn, seq)
        })?;
        Ok((job, Claim { seq, epoch: 0 }))
    }

    fn release(
        &self,
        claim: &Claim,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.set_state(claim.seq, state, error)
    }

    fn commit(
        &self,
        claim: &Claim,
        batch: &mut Batch,
        seal: &Seal<'_>,
        interrupt: &AtomicBool,
    ) -> Result<Progress, CommitError> {
        let committed = effects::commit(self, claim.seq, batch, seal, interrupt)?;
        if batch.units() >= CHECKPOINT_AFTER {
            self.committed_bulk();
        }
        Ok(committed)
    }

    fn terminate(&self, seq: i64, expect: Expect<'_>) -> Result<bool, StoreError> {
        effects::terminate(self, seq, expect)
    }

    fn effects(&self, seq: i64, names: usize) -> Result<Effects, StoreError> {
        effects::effects(self, seq, names)
    }

    fn revert(&self, seq: i64, from: &[JobState], at: u64) -> Result<bool, StoreError> {
        effects::revert(self, seq, from, at)
    }

    fn prune(&self, q: &PruneQuery<'_>) -> Result<Vec<Forgotten>, StoreError> {
        effects::prune(self, q)
    }

    fn transition(&self, seq: i64, from: JobState, to: JobState) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let _w = self.lock_writes();
        jobs::transition(&conn, seq, from, to)
    }

    fn row_errors(&self, seq: i64, after: u64, limit: usize) -> Result<Vec<RowError>, StoreError> {
        jobs::row_errors(&*self.conn()?, seq, after, limit)
    }

    fn output(&self, seq: i64) -> Result<Box<dyn Reader>, StoreError> {
        let job = jobs::load(&*self.conn()?, seq)?;
        Ok(Box::new(files::open_output(&self.inner.dirs, &job.id)?))
    }

    fn shrink(&self) {
        let Ok(pool) = self.inner.pool.lock() else {
            return;
        };
        for conn in pool.iter() {
            let _ = conn.execute_batch("PRAGMA shrink_memory");
        }
    }
}
