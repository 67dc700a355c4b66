//! Job kinds. A kind says only how to open its input at a cursor, how to apply the
//! next unit inside the store transaction the worker holds, and how to undo all of
//! a job's effects; the worker does the rest (batching, commits, controls, pacing).
//! A new kind touches this folder and `JobKind`, nothing else.

mod baseline;
mod bulk_team;
mod csv_input;
mod export;

pub use export::ExportRange;

use crate::store::StoreError;
use jobd_protocol::JobKind;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use thiserror::Error;

/// Where a job's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub spool_dir: PathBuf,
    pub export_dir: PathBuf,
}

impl Paths {
    pub fn export_file(&self, job_id: &str) -> PathBuf {
        self.export_dir.join(format!("{job_id}.csv"))
    }
}

/// What a job kind needs to know about its job.
pub struct JobContext<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub owner_uid: u32,
    /// The spool file name, or the export range as JSON.
    pub input: &'a str,
    pub cursor: Option<&'a str>,
    pub paths: &'a Paths,
}

/// The outcome of one unit of work.
#[derive(Debug)]
pub enum Unit {
    Applied,
    /// A row error: recorded with its row number, and the job goes on.
    Rejected {
        row: u64,
        message: String,
    },
}

#[derive(Debug, Error)]
pub enum KindError {
    /// The job cannot go on; the message says why in the user's terms.
    #[error("{0}")]
    Fatal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A control is waiting; the batch is abandoned, not failed.
    #[error("interrupted by a control")]
    Interrupted,
}

impl From<rusqlite::Error> for KindError {
    fn from(e: rusqlite::Error) -> Self {
        KindError::Store(StoreError::Sqlite(e))
    }
}

impl KindError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> KindError {
        KindError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A job being worked on. Its input is open; dropping it closes everything.
pub trait JobRun: Send {
    /// Applies the next unit inside the worker's open transaction on `conn`;
    /// `None` once the input is exhausted.
    fn step(&mut self, conn: &Connection) -> Result<Option<Unit>, KindError>;
    /// Where to resume after the units stepped so far (JSON, stored with the batch).
    fn cursor(&self) -> String;
    /// Units in all, when known.
    fn total(&self) -> Option<u64>;
    /// Called inside the transaction just before the batch commits: writes out
    /// what the kind buffered and makes effects outside the database durable.
    /// A long `sync` checks `interrupt` and gives up with `KindError::Interrupted`.
    fn sync(&mut self, _conn: &Connection, _interrupt: &AtomicBool) -> Result<(), KindError> {
        Ok(())
    }
}

/// Opens a job's input at its cursor.
pub fn open(
    kind: JobKind,
    ctx: &JobContext<'_>,
    conn: &Connection,
) -> Result<Box<dyn JobRun>, KindError> {
    Ok(match kind {
        JobKind::BaselineCsv => Box::new(baseline::Baseline::open(ctx, conn)?),
        JobKind::BulkTeam => Box::new(bulk_team::BulkTeam::open(ctx)?),
        JobKind::CreateExport => Box::new(export::Export::open(ctx, conn)?),
    })
}

/// Deletes every database effect of the job; runs inside the caller's transaction.
pub fn rollback(kind: JobKind, conn: &Connection, seq: i64) -> Result<(), StoreError> {
    match kind {
        JobKind::BaselineCsv => baseline::rollback(conn, seq),
        JobKind::BulkTeam => bulk_team::rollback(conn, seq),
        JobKind::CreateExport => Ok(()),
    }
}

/// The units in all, known at submit time (exports), or `None`.
pub fn total_at_submit(kind: JobKind, input: &str) -> Option<u64> {
    match kind {
        JobKind::CreateExport => ExportRange::from_input(input).ok().map(|r| r.days()),
        _ => None,
    }
}

/// Files to delete once a job has ended in `outcome`.
pub fn files_to_remove(kind: JobKind, ctx: &JobContext<'_>, completed: bool) -> Vec<PathBuf> {
    match kind {
        JobKind::BaselineCsv | JobKind::BulkTeam => vec![ctx.paths.spool_dir.join(ctx.input)],
        // A completed export keeps its file for `output`; anything else is half-done.
        JobKind::CreateExport if completed => vec![],
        JobKind::CreateExport => vec![ctx.paths.export_file(ctx.id)],
    }
}

/// Removes files, ignoring those already gone.
pub fn remove_files(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %f.display(), error = %e, "cannot remove file");
            }
        }
    }
}

/// Checks that every field is UTF-8; the row error message names the field.
fn utf8_fields(rec: &csv_input::Record) -> Result<Vec<&str>, String> {
    rec.iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f).map_err(|_| format!("field {} is not valid UTF-8", i + 1))
        })
        .collect()
}

fn field_count_error(expected: usize, found: usize) -> String {
    format!("expected {expected} fields as in the header, found {found}")
}

fn spool_path(ctx: &JobContext<'_>) -> PathBuf {
    Path::new(&ctx.paths.spool_dir).join(ctx.input)
}
