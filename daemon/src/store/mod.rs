//! The store: an embedded SQLite database (WAL) behind a narrow interface —
//! create jobs, commit a batch of effects with the job's cursor, roll a job back,
//! read what clients ask for.
//!
//! Connections are pooled; a caller takes one, uses it on a blocking thread and gives
//! it back on drop. The pool's lock is held only to pop or push, never across I/O.

mod checkpoint;
pub mod jobs;
mod schema;

pub use jobs::{JobRow, NewJob, StoredState};

use rusqlite::Connection;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Started at the first bulk commit: never before `--daemon` forks (a thread
    /// holding a lock across the fork would deadlock the child).
    checkpointer: OnceLock<Option<checkpoint::Checkpointer>>,
}

/// Held for the whole of a write transaction. SQLite lets one writer in at a time
/// but does not queue the others: a worker that commits and begins again at once
/// would starve every other writer until its busy timeout. This lock is FIFO.
pub type WriteLock = tokio::sync::OwnedMutexGuard<()>;

impl Store {
    /// Opens (creating if needed) the database and applies the schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        schema::apply(&conn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                pool: Mutex::new(vec![conn]),
                writes: Arc::new(tokio::sync::Mutex::new(())),
                checkpointer: OnceLock::new(),
            }),
        })
    }

    /// Tells the checkpoint thread that a bulk write committed.
    pub fn committed_bulk(&self) {
        let checkpointer = self.inner.checkpointer.get_or_init(|| {
            checkpoint::Checkpointer::start(&self.inner.path)
                .map_err(|e| tracing::warn!(error = %e, "cannot start the checkpoint thread"))
                .ok()
        });
        if let Some(c) = checkpointer {
            c.nudge();
        }
    }

    /// Waits for this process's turn to write. Call from a blocking thread only.
    pub fn lock_writes(&self) -> WriteLock {
        Arc::clone(&self.inner.writes).blocking_lock_owned()
    }

    /// Lets idle pooled connections drop their page caches (each may hold up to
    /// `cache_size` of pages a burst of work read).
    pub fn shrink(&self) {
        let Ok(pool) = self.inner.pool.lock() else {
            return;
        };
        for conn in pool.iter() {
            let _ = conn.execute_batch("PRAGMA shrink_memory");
        }
    }

    /// A connection from the pool, or a new one.
    pub fn conn(&self) -> Result<PooledConn, StoreError> {
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
pub struct PooledConn {
    conn: Option<Connection>,
    store: Store,
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
