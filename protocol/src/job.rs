//! What a job is, as the wire describes it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The three kinds of job, named as in the original service (they appear in job ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    BaselineCsv,
    BulkTeam,
    CreateExport,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::BaselineCsv => "baselineCSV",
            JobKind::BulkTeam => "bulkTeam",
            JobKind::CreateExport => "createExport",
        }
    }

    pub fn all() -> [JobKind; 3] {
        [
            JobKind::BaselineCsv,
            JobKind::BulkTeam,
            JobKind::CreateExport,
        ]
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        JobKind::all()
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// The kinds whose input is an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadKind {
    BaselineCsv,
    BulkTeam,
}

impl From<UploadKind> for JobKind {
    fn from(k: UploadKind) -> JobKind {
        match k {
            UploadKind::BaselineCsv => JobKind::BaselineCsv,
            UploadKind::BulkTeam => JobKind::BulkTeam,
        }
    }
}

/// `queued -> running <-> paused -> completed | failed | terminated`; a finished
/// upload or bulk-team job (completed or failed) can later become `reverted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Terminated,
    /// Its effects were undone after it finished (protocol version 3).
    Reverted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Terminated => "terminated",
            JobState::Reverted => "reverted",
        }
    }

    /// Every state, in wire order.
    pub const fn all() -> [JobState; 7] {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Paused,
            JobState::Completed,
            JobState::Failed,
            JobState::Terminated,
            JobState::Reverted,
        ]
    }

    /// The final states. A finished job runs no more and takes no control; the
    /// only change left to it is a revert (completed or failed to reverted).
    pub const fn finished() -> [JobState; 4] {
        [
            JobState::Completed,
            JobState::Failed,
            JobState::Terminated,
            JobState::Reverted,
        ]
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Terminated | JobState::Reverted
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        JobState::all()
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// A control action. On the wire the action travels as text so that the daemon,
/// not each client, decides what is valid (`invalid_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Stop,
    Start,
    Terminate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Terminate => "terminate",
        }
    }

    /// Exact, case-sensitive names, as the original service accepted them.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "stop" => Some(Action::Stop),
            "start" => Some(Action::Start),
            "terminate" => Some(Action::Terminate),
            _ => None,
        }
    }
}

/// A job as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// User name of the owner.
    pub owner: String,
    pub owner_uid: u32,
    /// Units applied.
    pub processed: u64,
    /// Units rejected as row errors.
    pub failed: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds.
    pub updated_at: u64,
    /// Why the job failed.
    pub error: Option<String>,
    /// Units per second, if throttled.
    pub rate: Option<f64>,
    /// The node running the job, while one does (protocol version 2).
    pub node: Option<String>,
}

/// One rejected unit: its 1-based data row (the header is not counted) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub row: u64,
    pub message: String,
}

/// What undoing a job would remove, as committed now: the answer to a dry run of
/// `Revert`, and to `PreviewTerminate` (protocol version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoSummary {
    /// The job as it is now.
    pub job: JobInfo,
    /// Baseline records the job wrote.
    pub records: u64,
    /// The first and last date of those records (`YYYY-MM-DD`), if any.
    pub first_date: Option<String>,
    pub last_date: Option<String>,
    /// Teams the job created (their names become free again).
    pub teams: u64,
    /// The first of those teams' names in row order (at most [`UNDO_NAMES`]).
    pub team_names: Vec<String>,
    /// Bytes of export output that would go (a terminate only: a revert never
    /// touches exports).
    pub output_bytes: u64,
}

/// Team names an [`UndoSummary`] lists at most.
pub const UNDO_NAMES: usize = 10;
