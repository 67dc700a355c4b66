//! The store: where jobs, their effects, their input and their output live.
//!
//! This module is the interface; `sqlite/` (the embedded default: a database file
//! with spool and export files beside it) and `postgres/` (everything in one
//! database, shared by every node) implement it. No other part of the daemon names
//! a database crate or writes SQL.
//!
//! A job kind reads its input through [`Source`] and turns units into typed effects
//! ([`Batch`]); the worker hands a batch to [`Store::commit`], which applies it
//! together with the job's progress and cursor in one transaction. Everything here
//! blocks: call it from a blocking thread, never from async code.

mod batch;
pub mod postgres;
pub mod sqlite;
mod url;

pub use batch::{tally, Batch, Record, Team};
pub use url::StoreUrl;

use jobd_protocol::{Action, JobKind, JobState, NodeInfo, RowError};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A date as days since 1970-01-01 (see [`crate::dates`]).
pub type Day = i64;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be reached right now (server down, network cut); the same
    /// call may succeed later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A file of the store (spool, export) could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(String),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store as configured cannot be used: a bad URL, a wrong password, a
    /// missing database, a database that is not jobd's, a newer layout.
    #[error("{0}")]
    Config(String),
    /// The server turned us away (permissions, no connection slots).
    #[error("{0}")]
    Refused(String),
    /// The job outgrew what the store keeps for one job; the message says what.
    #[error("{0}")]
    TooLarge(String),
    /// Another job already has this id (ids are allocated without the store).
    #[error("job id {0} is already taken")]
    DuplicateId(String),
    /// The job was claimed again since this claim (a newer worker has it): what
    /// this one has not committed must never be.
    #[error("job {0} was claimed by another worker")]
    Fenced(i64),
    /// The job is not in the store (any more): it was pruned.
    #[error("job {0} vanished")]
    Gone(i64),
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced(_))
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, StoreError::Gone(_))
    }
}

/// Why a commit did not happen; the batch is untouched and may be committed again.
#[derive(Debug, Error)]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A control is waiting: the long write gave up.
    #[error("interrupted by a control")]
    Interrupted,
    /// The batch's row errors, with those the store found (existing team names),
    /// would pass the job's limit; `0` is the first one past it.
    #[error("row error limit reached at row {}", .0.row)]
    OverLimit(RowError),
}

/// A job state as stored. `Terminating` marks a terminate whose rollback has not
/// committed yet; recovery finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    Public(JobState),
    Terminating,
}

impl StoredState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredState::Public(s) => s.as_str(),
            StoredState::Terminating => "terminating",
        }
    }

    pub fn parse(s: &str) -> Result<StoredState, StoreError> {
        if s == "terminating" {
            return Ok(StoredState::Terminating);
        }
        s.parse()
            .map(StoredState::Public)
            .map_err(|_| StoreError::Corrupt(format!("unknown job state {s:?}")))
    }
}

/// A job to create.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: JobKind,
    pub owner_uid: u32,
    pub owner: &'a str,
    pub rate: Option<f64>,
    pub total: Option<u64>,
    /// What the job reads: the export range as JSON; an upload's job gets its
    /// input from the upload.
    pub input: &'a str,
    pub created_at: u64,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub kind: JobKind,
    pub owner_uid: u32,
    pub owner: String,
    pub state: StoredState,
    pub processed: u64,
    pub failed: u64,
    pub total: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
    pub error: Option<String>,
    pub rate: Option<f64>,
    /// The upload's name in the store, or the export range as JSON.
    pub input: String,
    /// Where the kind resumes (its own JSON), once a batch has committed.
    pub cursor: Option<String>,
    /// The node running the job (on a shared store), while one does.
    pub node: Option<String>,
    /// A stop or terminate asked of the node running the job, not obeyed yet.
    pub pending: Option<Action>,
    /// The job's latest claim (0 on a store of one node): a pending control
    /// is for the worker holding this one.
    pub epoch: i64,
}

/// A worker's hold on a job. Each claim of a job has a higher epoch than the last;
/// commits and state changes made under an older one are refused, so a worker
/// whose process was killed mid-commit (or that lost the job) can never land
/// work over its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub seq: i64,
    pub epoch: i64,
}

/// What a state change expects of the job: to be held by this claim, or to be in
/// one of these states. A job that is not is left alone.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    Claim(&'a Claim),
    States(&'a [JobState]),
}

/// Committed counts of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub processed: u64,
    pub failed: u64,
    pub total: Option<u64>,
}

/// How a commit ends the job, if it does.
#[derive(Debug, Clone, Copy)]
pub enum End<'a> {
    Completed,
    Failed(&'a str),
}

/// What is committed with a batch besides its effects.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    /// The job's committed counts before this batch.
    pub before: Progress,
    /// Units in all, when the kind knows.
    pub total: Option<u64>,
    /// Where to resume after this batch.
    pub cursor: &'a str,
    pub end: Option<End<'a>>,
    /// Row errors the job may have in all.
    pub max_failed: u64,
}

/// Whose data an export reads.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub uid: u32,
    pub name: &'a str,
}

/// What an export sees, fixed when it starts: the baseline jobs completed by then
/// (`snapshot`), and the columns their records in the range have, in order of
/// first appearance in the output (date, then job).
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub snapshot: i64,
    pub columns: Vec<String>,
}

/// A baseline record's place in the export order: its job, then its ordinal.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RecordKey {
    pub job_seq: i64,
    pub ordinal: u64,
}

/// Which records of a date an export asks for next.
#[derive(Debug, Clone, Copy)]
pub struct DayQuery<'a> {
    pub owner: Owner<'a>,
    pub snapshot: i64,
    pub day: Day,
    /// Only records after this one.
    pub after: Option<RecordKey>,
    /// About this many records; a store may return a few more.
    pub limit: usize,
}

/// One record of a date, its fields as the JSON array of its job's columns.
#[derive(Debug, Clone)]
pub struct DayRecord {
    pub key: RecordKey,
    pub data: String,
}

/// What undoing a job would remove, as committed now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Baseline records, and the first and last of their dates.
    pub records: u64,
    pub first_day: Option<Day>,
    pub last_day: Option<Day>,
    pub teams: u64,
    /// The first team names in row order, as many as were asked for.
    pub team_names: Vec<String>,
    /// Export output committed so far.
    pub output_bytes: u64,
}

/// Which finished jobs one batch of a prune forgets.
#[derive(Debug, Clone, Copy)]
pub struct PruneQuery<'a> {
    /// Final states only: a job in another state is never touched.
    pub states: &'a [JobState],
    /// Jobs that ended (last changed) at or before this time, unix milliseconds.
    pub ended_before: u64,
    /// Only this user's jobs (by name, as ownership goes), or everyone's.
    pub owner: Option<&'a str>,
    /// Only jobs after this seq and up to `through`: the range of one batch's
    /// candidates, so that a batch reads a bounded part of the jobs whatever
    /// the planner believes of the table.
    pub after: i64,
    pub through: i64,
    pub limit: usize,
}

/// A job a prune forgot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub seq: i64,
    pub id: String,
}

/// Reads bytes kept by the store (an upload, an export's output).
pub trait Reader: Send {
    /// Like `std::io::Read::read`: 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StoreError>;
}

/// An upload as the store keeps it.
pub trait Input: Send {
    /// Its size in bytes.
    fn size(&self) -> u64;
    /// A reader from byte `offset` on.
    fn open_at(&self, offset: u64) -> Result<Box<dyn Reader>, StoreError>;
}

/// An upload being received. Dropped without [`Upload::create_job`], it leaves
/// nothing behind.
pub trait Upload: Send {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    fn written(&self) -> u64;
    /// Makes the upload durable and creates its job reading it: afterwards both
    /// exist, or neither does. On `DuplicateId` the upload is intact and the
    /// call may be made again with another id.
    fn create_job(&mut self, job: &NewJob<'_>) -> Result<JobRow, StoreError>;
}

/// What job kinds read: their input, and for exports the baseline records.
pub trait Source: Send + Sync {
    /// The upload a job reads (`JobRow::input`).
    fn input(&self, input: &str) -> Result<Box<dyn Input>, StoreError>;
    fn export_plan(&self, owner: Owner<'_>, from: Day, to: Day) -> Result<ExportPlan, StoreError>;
    /// Appends to `out` the next records of a date, in export order.
    fn day_records(&self, q: &DayQuery<'_>, out: &mut Vec<DayRecord>) -> Result<(), StoreError>;
    /// The non-date columns of a baseline job, in its file's order.
    fn columns_of(&self, job_seq: i64) -> Result<Vec<String>, StoreError>;
}

/// The store as the registry, workers and handlers use it.
pub trait Store: Source {
    /// Finishes what a crash interrupted (terminates, files no job needs) and
    /// returns every job, in creation order.
    fn recover(&self) -> Result<Vec<JobRow>, StoreError>;
    /// Creates a job without an upload (an export).
    fn insert_job(&self, job: &NewJob<'_>) -> Result<JobRow, StoreError>;
    fn create_upload(&self) -> Result<Box<dyn Upload>, StoreError>;
    fn load_job(&self, seq: i64) -> Result<JobRow, StoreError>;
    /// Sets the state of a job no worker holds (queued, paused, failed). A job
    /// that ends loses its input, and a failed one its output too.
    fn set_state(
        &self,
        seq: i64,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Takes a job for a worker and marks it running: returns it as committed —
    /// after any commit of an earlier claim still in flight — with the new claim.
    /// (Nobody is told the job runs until its worker commits something, so the
    /// mark need not be durable by itself.) A worker claiming again `after` its
    /// claim (the store was out of reach) gets the job only if nobody changed
    /// that claim meanwhile (parked it, took it over): else `Fenced`.
    fn claim(&self, seq: i64, after: Option<&Claim>) -> Result<(JobRow, Claim), StoreError>;
    /// [`Store::set_state`] by the worker holding `claim`; refused (`Fenced`)
    /// once the job was claimed again.
    fn release(
        &self,
        claim: &Claim,
        state: StoredState,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Applies the batch's effects and stores the job's new counts and cursor (and
    /// its end, if any) in one transaction, if `claim` still holds; returns the
    /// counts committed.
    fn commit(
        &self,
        claim: &Claim,
        batch: &mut Batch,
        seal: &Seal<'_>,
        interrupt: &AtomicBool,
    ) -> Result<Progress, CommitError>;
    /// Undoes every effect of the job and ends it as `terminated`, in one
    /// transaction; its input and output go too. False when the job was not as
    /// expected (nothing happened).
    fn terminate(&self, seq: i64, expect: Expect<'_>) -> Result<bool, StoreError>;
    /// What undoing the job would remove now: its records (count and dates), its
    /// teams (count, and the first `names` names in row order), its output.
    fn effects(&self, seq: i64, names: usize) -> Result<Effects, StoreError>;
    /// Undoes every effect of a finished upload or bulk-team job and ends it as
    /// `reverted`, in one transaction that also checks it is still in one of
    /// `from` (so it never races a claim or another revert). Its counts and row
    /// errors stay, as the record of what it did; it was last changed `at`
    /// (unix milliseconds, the caller's clock, so that every view shows the
    /// same time). False when it was not in `from` (nothing happened); `Gone`
    /// when it is not in the store.
    fn revert(&self, seq: i64, from: &[JobState], at: u64) -> Result<bool, StoreError>;
    /// Forgets, in one short transaction, up to `q.limit` jobs that `q` selects,
    /// lowest seq first: their rows, row errors, and any input or output left.
    /// Their effects stay, and their ids are never handed out again. Returns the
    /// jobs forgotten, in seq order.
    fn prune(&self, q: &PruneQuery<'_>) -> Result<Vec<Forgotten>, StoreError>;
    /// Moves a job no worker holds from `from` to `to` (queued ⇄ paused); false
    /// when it was not in `from` any more (claimed meanwhile, or changed).
    fn transition(&self, seq: i64, from: JobState, to: JobState) -> Result<bool, StoreError>;
    /// Up to `limit` row errors after row `after`, in row order.
    fn row_errors(&self, seq: i64, after: u64, limit: usize) -> Result<Vec<RowError>, StoreError>;
    /// The output of a completed export.
    fn output(&self, seq: i64) -> Result<Box<dyn Reader>, StoreError>;
    /// False while the store is known to be unreachable.
    fn is_available(&self) -> bool {
        true
    }
    /// Gives back memory held for bursts of work; called when the daemon is idle.
    fn shrink(&self) {}
    /// The other nodes on the same store, when it is shared.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// This node among those sharing a store.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub max_running: usize,
    /// How long a claim lasts unless the node renews it.
    pub lease: Duration,
}

/// What the store hears of jobs changed by any node (this one included).
#[derive(Debug)]
pub enum Event {
    /// The job as committed now (new, changed, or taken by some node).
    Job(Box<JobRow>),
    /// The jobs with these seqs are gone (pruned): one event for many, so that
    /// a prune of thousands costs each node a few passes over its jobs.
    Gone(Vec<i64>),
    /// Changes may have been missed (the store was out of reach): reload all.
    Resync,
}

/// A store shared by several nodes (PostgreSQL). Each node claims queued work
/// first in, first out, holds a lease on each job it runs (renewed by the store
/// while the node lives), and hears of every change to any job.
pub trait Cluster: Send + Sync {
    fn node(&self) -> &NodeSettings;
    /// Claims the next job this node should run — queued, or running on a node
    /// whose lease ran out — and marks it running here. A job with a pending stop
    /// or terminate is parked or terminated instead, and the next one tried.
    fn claim_next(&self) -> Result<Option<(JobRow, Claim)>, StoreError>;
    /// Asks the node running a job to stop or terminate it (it hears of it as a
    /// change of the job); false when the job was no longer running.
    fn request_control(&self, seq: i64, action: Action) -> Result<bool, StoreError>;
    /// The job with this id as committed now: one another node created a moment
    /// ago may not have reached this node's events yet.
    fn find_job(&self, id: &str) -> Result<Option<JobRow>, StoreError>;
    /// Every node that ever joined, newest heartbeat first.
    fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;
    /// Gives this node's running jobs back to the queue at once, fencing any
    /// worker of this node that would still commit; a stop or terminate asked
    /// of them meanwhile still holds.
    fn release_all(&self) -> Result<(), StoreError>;
    /// [`Cluster::release_all`], and marks this node stopped (a clean stop).
    fn leave(&self) -> Result<(), StoreError>;
    /// How long until the lease of a job running on another node runs out, if
    /// any runs elsewhere: when to look for work to take over.
    fn next_expiry(&self) -> Result<Option<Duration>, StoreError>;
    /// The changes of every job, as they commit. Taken once.
    fn events(&self) -> Option<tokio::sync::mpsc::Receiver<Event>>;
}

/// The store every part of the daemon shares.
pub type SharedStore = Arc<dyn Store>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A store checked before the runtime exists (and before `--daemon` forks), so
/// that a bad store stops jobd with a message and an exit code.
pub enum Prepared {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::Checked>),
}

/// Opens the embedded store, or checks that the PostgreSQL database answers and
/// has jobd's schema (creating or migrating it), waiting while it is unreachable.
pub fn prepare(url: &StoreUrl, state_dir: &std::path::Path) -> Result<Prepared, StoreError> {
    match url {
        StoreUrl::Sqlite => Ok(Prepared::Sqlite(sqlite::SqliteStore::open(state_dir)?)),
        StoreUrl::Postgres(url) => Ok(Prepared::Postgres(Box::new(
            postgres::Checked::wait_and_check(url)?,
        ))),
    }
}

impl Prepared {
    /// The store the daemon runs on, as `node`; call inside the runtime.
    pub fn open(self, node: NodeSettings) -> Result<SharedStore, StoreError> {
        Ok(match self {
            Prepared::Sqlite(s) => Arc::new(s),
            Prepared::Postgres(c) => Arc::new(c.open(node)?),
        })
    }
}
