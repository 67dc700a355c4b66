//! The one run loop every job goes through: take the next units from the job kind,
//! batch them in a transaction, commit each batch together with the job's cursor,
//! and obey controls between units.
//!
//! A worker runs on a blocking thread and owns its input file and store connection.
//! Pausing ends the worker — thread, file and connection are released — and starting
//! again creates a new one that resumes from the committed cursor.

use crate::kinds::{self, JobContext, JobRun, KindError, Paths, Unit};
use crate::store::{self, JobRow, Store, StoredState, WriteLock};
use jobd_protocol::JobState;
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Units per transaction at most; a batch also commits once it is this old.
const BATCH_UNITS: u64 = 50_000;
const BATCH_AGE: Duration = Duration::from_millis(250);
/// A worker's first batch commits once it is this old, and each next one may grow
/// twice as old, up to [`BATCH_AGE`]. A control rolls back the open batch, so a
/// job stopped less than [`BATCH_AGE`] after every start would otherwise never
/// commit; this way it advances whenever it runs longer than this between
/// controls, for a few extra commits per worker. Not shorter: a stop that lands
/// on a commit waits for its fsync, and storms of stops a few ms apart should stay
/// fast (they make no progress, as a stop takes effect at the last commit).
const FIRST_BATCH_AGE: Duration = Duration::from_millis(16);
/// A batch of this many units has the WAL copied back at once, off this thread;
/// smaller ones leave it to `wal_autocheckpoint` (see `store::checkpoint`).
const CHECKPOINT_AFTER: u64 = 1024;

/// A running worker's control line: the flag tells long operations inside a batch
/// (a kind's `sync`) that a control is waiting, so they give up at once; the
/// channel carries the control itself.
#[derive(Clone)]
pub struct ControlLine {
    pub tx: Sender<Control>,
    pub interrupt: Arc<AtomicBool>,
}

impl ControlLine {
    pub fn new() -> (ControlLine, Receiver<Control>, Arc<AtomicBool>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        (
            ControlLine {
                tx,
                interrupt: Arc::clone(&interrupt),
            },
            rx,
            interrupt,
        )
    }

    /// Raises the flag, then sends; a worker that already ended ignores both.
    pub fn send(&self, control: Control) {
        self.interrupt.store(true, Ordering::SeqCst);
        let _ = self.tx.send(control);
    }
}

/// What the registry asks of a running worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Commit and park as `paused`.
    Pause,
    /// Roll the job back and end it as `terminated`.
    Terminate,
    /// Commit and end, leaving the job `running` so that a restart resumes it.
    Shutdown,
}

/// How a worker ended; the store already says so when this is returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Exit {
    Completed,
    Paused,
    Terminated,
    Failed(String),
    Shutdown,
}

/// Committed progress, reported after every commit.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub processed: u64,
    pub failed: u64,
    pub total: Option<u64>,
}

pub struct Worker {
    pub store: Store,
    pub seq: i64,
    pub paths: Paths,
    pub controls: Receiver<Control>,
    pub interrupt: Arc<AtomicBool>,
    pub report: Box<dyn Fn(Progress) + Send>,
    pub max_row_errors: u64,
}

/// Why the batch loop stopped.
enum Stop {
    Done,
    /// The row-error limit was crossed: what was done is committed, the job fails.
    TooManyErrors(String),
    Control(Control),
}

impl Worker {
    pub fn run(self) -> Exit {
        let conn = match self.store.conn() {
            Ok(c) => c,
            Err(e) => return Exit::Failed(format!("cannot open the store: {e}")),
        };
        let job = match store::jobs::load(&conn, self.seq) {
            Ok(j) => j,
            Err(e) => return Exit::Failed(format!("cannot load the job: {e}")),
        };
        let mut held = None;
        match self.run_job(&conn, &job, &mut held) {
            Ok(exit) => exit,
            Err(e) => self.fail(&conn, &job, e, held),
        }
    }

    /// `held` is the write lock while a batch is open; on an error it is still held,
    /// so that `fail` rolls back before another writer can be let in.
    fn run_job(
        &self,
        conn: &Connection,
        job: &JobRow,
        held: &mut Option<WriteLock>,
    ) -> Result<Exit, KindError> {
        if job.state != StoredState::Public(JobState::Running) {
            let _w = self.store.lock_writes();
            store::jobs::set_state(conn, job.seq, StoredState::Public(JobState::Running), None)?;
        }
        let ctx = context(job, &self.paths);
        let mut run = kinds::open(job.kind, &ctx, conn)?;
        let mut progress = Progress {
            processed: job.processed,
            failed: job.failed,
            total: run.total().or(job.total),
        };
        let pace = job.rate.map(|rate| (Instant::now(), rate));
        let mut paced_units = 0u64;
        let mut batch_started = Instant::now();
        let mut units = 0u64;
        let mut batch_age = FIRST_BATCH_AGE;

        let end = loop {
            match self.controls.try_recv() {
                Ok(c) => break Stop::Control(c),
                Err(TryRecvError::Disconnected) => break Stop::Control(Control::Shutdown),
                Err(TryRecvError::Empty) => {}
            }
            if let Some((t0, rate)) = pace {
                let due = t0 + Duration::from_secs_f64(paced_units as f64 / rate);
                let now = Instant::now();
                if due > now {
                    // Never wait inside a transaction: commit what is done first.
                    if !conn.is_autocommit() {
                        if let Some(c) =
                            self.commit(conn, held, &mut *run, progress, units, None)?
                        {
                            break Stop::Control(c);
                        }
                    }
                    match self.controls.recv_timeout(due - now) {
                        Ok(c) => break Stop::Control(c),
                        Err(RecvTimeoutError::Disconnected) => {
                            break Stop::Control(Control::Shutdown)
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
            }
            if conn.is_autocommit() {
                *held = Some(self.store.lock_writes());
                // Deferred: the transaction reads the WAL from its first statement,
                // not from now. A kind that writes only at the end of the batch
                // (baseline) then starts after the checkpoint of the last batch, and
                // SQLite starts the WAL over instead of letting it grow. No other
                // writer can slip in between: `held` keeps them out.
                conn.execute_batch("BEGIN")?;
                batch_started = Instant::now();
                units = 0;
            }
            match run.step(conn)? {
                None => break Stop::Done,
                Some(Unit::Applied) => progress.processed += 1,
                Some(Unit::Rejected { row, message }) => {
                    progress.failed += 1;
                    if progress.failed > self.max_row_errors {
                        progress.failed -= 1;
                        break Stop::TooManyErrors(format!(
                            "too many row errors: more than {} (the next at row {row}: {message})",
                            self.max_row_errors
                        ));
                    }
                    store::jobs::add_row_error(conn, job.seq, row, &message)?;
                }
            }
            units += 1;
            paced_units += 1;
            if units >= BATCH_UNITS || batch_started.elapsed() >= batch_age {
                if let Some(c) = self.commit(conn, held, &mut *run, progress, units, None)? {
                    break Stop::Control(c);
                }
                batch_age = (batch_age * 2).min(BATCH_AGE);
            }
        };

        let control = match end {
            Stop::Control(c) => c,
            Stop::Done => {
                progress.total = Some(
                    progress
                        .total
                        .unwrap_or(progress.processed + progress.failed),
                );
                let done = Some((JobState::Completed, None));
                match self.commit(conn, held, &mut *run, progress, units, done)? {
                    Some(c) => c,
                    None => {
                        drop(run);
                        kinds::remove_files(&kinds::files_to_remove(job.kind, &ctx, true));
                        return Ok(Exit::Completed);
                    }
                }
            }
            Stop::TooManyErrors(message) => {
                let failed = Some((JobState::Failed, Some(message.as_str())));
                match self.commit(conn, held, &mut *run, progress, units, failed)? {
                    Some(c) => c,
                    None => {
                        drop(run);
                        kinds::remove_files(&kinds::files_to_remove(job.kind, &ctx, false));
                        return Ok(Exit::Failed(message));
                    }
                }
            }
        };
        // A control takes effect at the last commit: the open batch is rolled back
        // (its units are done again on resume), so a stop costs no batch commit.
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        *held = None;
        drop(run);
        Ok(match control {
            Control::Pause => {
                let _w = self.store.lock_writes();
                store::jobs::set_state(conn, job.seq, StoredState::Public(JobState::Paused), None)?;
                Exit::Paused
            }
            Control::Shutdown => Exit::Shutdown,
            Control::Terminate => {
                terminate(&self.store, conn, job, &self.paths)?;
                Exit::Terminated
            }
        })
    }

    /// Commits the open batch with the cursor after it, optionally ending in a state.
    /// Returns the control that interrupted it instead, with the batch still open.
    fn commit(
        &self,
        conn: &Connection,
        held: &mut Option<WriteLock>,
        run: &mut dyn JobRun,
        progress: Progress,
        units: u64,
        end: Option<(JobState, Option<&str>)>,
    ) -> Result<Option<Control>, KindError> {
        if conn.is_autocommit() {
            *held = Some(self.store.lock_writes());
            conn.execute_batch("BEGIN")?;
        }
        match run.sync(conn, &self.interrupt) {
            // The flag is raised before the control is sent: it is on its way.
            Err(KindError::Interrupted) => {
                return Ok(Some(self.controls.recv().unwrap_or(Control::Shutdown)))
            }
            other => other?,
        }
        store::jobs::save_progress(
            conn,
            self.seq,
            progress.processed,
            progress.failed,
            progress.total,
            &run.cursor(),
        )?;
        if let Some((state, error)) = end {
            store::jobs::set_state(conn, self.seq, StoredState::Public(state), error)?;
        }
        conn.execute_batch("COMMIT")?;
        *held = None;
        if units >= CHECKPOINT_AFTER {
            self.store.committed_bulk();
        }
        (self.report)(progress);
        Ok(None)
    }

    /// Ends the job as failed: the open batch is dropped, the error recorded.
    fn fail(&self, conn: &Connection, job: &JobRow, e: KindError, held: Option<WriteLock>) -> Exit {
        let message = e.to_string();
        let _w = held.unwrap_or_else(|| self.store.lock_writes());
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = store::jobs::set_state(
            conn,
            job.seq,
            StoredState::Public(JobState::Failed),
            Some(&message),
        ) {
            tracing::error!(job = %job.id, error = %e, "cannot record the failure");
        }
        kinds::remove_files(&kinds::files_to_remove(
            job.kind,
            &context(job, &self.paths),
            false,
        ));
        Exit::Failed(message)
    }
}

/// The kind's view of a job.
pub fn context<'a>(job: &'a JobRow, paths: &'a Paths) -> JobContext<'a> {
    JobContext {
        seq: job.seq,
        id: &job.id,
        owner_uid: job.owner_uid,
        input: &job.input,
        cursor: job.cursor.as_deref(),
        paths,
    }
}

/// Rolls back everything `job` wrote and ends it as `terminated`. The intent is
/// committed first, so a crash during the rollback is finished at the next start.
pub fn terminate(
    store: &Store,
    conn: &Connection,
    job: &JobRow,
    paths: &Paths,
) -> Result<(), KindError> {
    let _w = store.lock_writes();
    store::jobs::set_state(conn, job.seq, StoredState::Terminating, None)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let undo = (|| {
        kinds::rollback(job.kind, conn, job.seq)?;
        store::jobs::delete_row_errors(conn, job.seq)?;
        store::jobs::set_state(
            conn,
            job.seq,
            StoredState::Public(JobState::Terminated),
            None,
        )
    })();
    match undo {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
    }
    kinds::remove_files(&kinds::files_to_remove(
        job.kind,
        &context(job, paths),
        false,
    ));
    Ok(())
}
