//! Stable error codes carried by [`crate::Response::Error`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why the daemon refused a request. The names keep the original service's codes
/// where they exist; [`ErrorCode::as_str`] gives the stable string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    InvalidId,
    IdDoesntExist,
    InvalidAction,
    InvalidJson,
    InvalidFromDate,
    InvalidToDate,
    InvalidDateRange,
    WorkerUnresponsive,
    JobFinished,
    PermissionDenied,
    FrameTooLarge,
    UnsupportedProtocol,
    BadRequest,
    InvalidRate,
    NoOutput,
    UploadIncomplete,
    StorageError,
    ShuttingDown,
    Internal,
    /// The daemon's store (PostgreSQL) cannot be reached right now; try again.
    StorageUnavailable,
    /// A revert of a job that is still queued, running or paused (terminate is
    /// for those).
    JobNotFinished,
    /// A revert of a job that was reverted already.
    AlreadyReverted,
    /// A revert of a job that has nothing to undo: an export, or a terminated job.
    NotRevertible,
}

impl ErrorCode {
    /// The stable name, as shown to users and sent by the HTTP shim.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::IdDoesntExist => "id_doesn't_exist",
            ErrorCode::InvalidAction => "invalid_action",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFromDate => "invalid_from_date",
            ErrorCode::InvalidToDate => "invalid_to_date",
            ErrorCode::InvalidDateRange => "invalid_date_range",
            ErrorCode::WorkerUnresponsive => "worker_unresponsive",
            ErrorCode::JobFinished => "job_finished",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidRate => "invalid_rate",
            ErrorCode::NoOutput => "no_output",
            ErrorCode::UploadIncomplete => "upload_incomplete",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::JobNotFinished => "job_not_finished",
            ErrorCode::AlreadyReverted => "already_reverted",
            ErrorCode::NotRevertible => "not_revertible",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
