//! Requests and responses. The variant order is part of the wire format: bincode
//! writes the variant index, so new variants go at the end and none is ever removed.

use crate::error::ErrorCode;
use crate::job::{JobInfo, JobState, RowError, UndoSummary, UploadKind};
use crate::metrics::Metrics;
use crate::node::NodeInfo;
use serde::{Deserialize, Serialize};

/// What a client sends. One request at a time per connection; `Chunk` and `End`
/// only follow a submit that the daemon answered with `Ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First frame of every connection.
    Hello {
        protocol_version: u32,
        client: String,
    },
    Ping,
    /// Start an upload; the daemon answers `Ready`, then the client sends `Chunk`s
    /// and `End`, and the daemon answers `Job` once the file is spooled and the job exists.
    SubmitUpload {
        kind: UploadKind,
        rate: Option<f64>,
    },
    Chunk {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of an upload, with the number of bytes sent (checked by the daemon).
    End {
        bytes: u64,
    },
    SubmitExport {
        from: String,
        to: String,
        rate: Option<f64>,
    },
    /// `action` is `stop`, `start` or `terminate`; anything else is `invalid_action`.
    Control {
        id: String,
        action: String,
    },
    /// Status of these jobs, or of all the caller's jobs when `ids` is empty.
    Status {
        ids: Vec<String>,
    },
    /// A `Job` frame now and at every progress step or state change until the job ends.
    Watch {
        id: String,
    },
    /// Answers once every job has finished, with their final states.
    Wait {
        ids: Vec<String>,
    },
    /// The output file of a completed export, as `Chunk`s then `End`.
    Output {
        id: String,
    },
    /// The row errors of a job, as `RowErrors` pages then `End`.
    Errors {
        id: String,
    },
    /// Every change of every job the caller may see, new jobs included: `Ready`
    /// once subscribed, then a `Job` frame per change until the client sends
    /// anything or goes away. A client that falls too far behind gets
    /// `End { count: <changes it missed> }`, which ends the stream.
    Events,
    /// The daemon's counters, answered by one `Metrics` frame.
    Metrics,
    /// At most `limit` row errors of a job whose row is after `after`, in row
    /// order: one `RowErrors` page (the daemon caps `limit` at 500), then `End`.
    ErrorsPage {
        id: String,
        after: u64,
        limit: u32,
    },
    /// The nodes sharing the daemon's store (one, the daemon itself, on SQLite),
    /// answered by one `Nodes` frame.
    Nodes,
    /// Undoes every effect of a finished (completed or failed) upload or
    /// bulk-team job in one transaction; answered by `Job` in state `reverted`.
    /// With `dry_run`, nothing changes and the answer is `Undo`.
    Revert {
        id: String,
        dry_run: bool,
    },
    /// What a terminate of this unfinished job would roll back now, answered by
    /// `Undo`; nothing changes.
    PreviewTerminate {
        id: String,
    },
    /// Forgets finished jobs that ended at least `older_than_ms` ago and are in
    /// one of `states` (every final state when empty): the caller's, or every
    /// user's for root. Answered by `Pruned` once done.
    Prune {
        older_than_ms: u64,
        states: Vec<JobState>,
    },
}

/// What the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Welcome {
        protocol_version: u32,
        daemon_version: String,
        user: String,
    },
    Pong,
    /// The daemon accepts the upload's chunks now.
    Ready,
    /// One job: the answer to a submit, a control, or a step of a watch.
    Job(JobInfo),
    /// A page of jobs; a list of pages ends with `End`.
    Jobs(Vec<JobInfo>),
    Chunk {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A page of row errors; the list ends with `End`.
    RowErrors(Vec<RowError>),
    /// End of a stream: the number of items (jobs, errors) or bytes sent.
    End {
        count: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The answer to `Metrics`.
    Metrics(Metrics),
    /// The answer to `Nodes`.
    Nodes(Vec<NodeInfo>),
    /// What an undo would remove: the answer to a dry-run `Revert` and to
    /// `PreviewTerminate` (boxed only to keep `Response` small; the encoding is
    /// that of the struct).
    Undo(Box<UndoSummary>),
    /// The answer to `Prune`: how many jobs were forgotten.
    Pruned {
        count: u64,
    },
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}
