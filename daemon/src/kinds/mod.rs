//! Job kinds. A kind says only how to open its input at a cursor and how to turn
//! the next unit into typed effects (see [`Batch`]); the worker does the rest
//! (batching, commits, controls, pacing) and the store applies the effects and
//! undoes them. A kind never sees SQL. A new kind touches this folder and
//! `JobKind` (and the store, if it brings a new kind of effect).

mod baseline;
mod bulk_team;
mod csv_input;
mod export;

pub use export::ExportRange;

use crate::store::{Batch, Source, StoreError};
use jobd_protocol::JobKind;
use thiserror::Error;

/// What a job kind needs to know about its job.
pub struct JobContext<'a> {
    pub seq: i64,
    pub owner_uid: u32,
    pub owner: &'a str,
    /// The upload's name in the store, or the export range as JSON.
    pub input: &'a str,
    pub cursor: Option<&'a str>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One unit was handled: its effects, or its row error, are in the batch.
    Unit,
    /// Part of a unit (a big date of an export): its effects so far are in the
    /// batch, and the cursor says where inside the unit to go on.
    Part,
    /// The input is exhausted.
    Done,
}

#[derive(Debug, Error)]
pub enum KindError {
    /// The job cannot go on; the message says why in the user's terms.
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KindError {
    /// The store could not be reached: the job is not at fault and goes on later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, KindError::Store(e) if e.is_unavailable())
    }

    /// The job was claimed by another worker: this one must stop touching it.
    pub fn is_fenced(&self) -> bool {
        matches!(self, KindError::Store(e) if e.is_fenced())
    }
}

/// A job being worked on. Its input is open; dropping it closes everything.
pub trait JobRun: Send {
    /// Adds the next unit's effects (or its row error) to `batch`.
    fn step(&mut self, src: &dyn Source, batch: &mut Batch) -> Result<Step, KindError>;
    /// Where to resume after the units stepped so far (JSON, stored with the batch).
    fn cursor(&self) -> String;
    /// Units in all, when known.
    fn total(&self) -> Option<u64>;
}

/// Opens a job's input at its cursor. A fresh job may put its first effects (a
/// header) into `batch`.
pub fn open(
    kind: JobKind,
    ctx: &JobContext<'_>,
    src: &dyn Source,
    batch: &mut Batch,
) -> Result<Box<dyn JobRun>, KindError> {
    Ok(match kind {
        JobKind::BaselineCsv => Box::new(baseline::Baseline::open(ctx, src, batch)?),
        JobKind::BulkTeam => Box::new(bulk_team::BulkTeam::open(ctx, src)?),
        JobKind::CreateExport => Box::new(export::Export::open(ctx, src, batch)?),
    })
}

/// The units in all, known at submit time (exports), or `None`.
pub fn total_at_submit(kind: JobKind, input: &str) -> Option<u64> {
    match kind {
        JobKind::CreateExport => ExportRange::from_input(input).ok().map(|r| r.days()),
        _ => None,
    }
}

fn field_count_error(expected: usize, found: usize) -> String {
    format!("expected {expected} fields as in the header, found {found}")
}

/// Parses a kind's cursor.
fn parse_cursor<T: serde::de::DeserializeOwned>(c: Option<&str>) -> Result<Option<T>, KindError> {
    c.map(|c| serde_json::from_str(c).map_err(|e| KindError::Fatal(format!("corrupt cursor: {e}"))))
        .transpose()
}
