//! The async client every jobd client uses: connect, handshake, then one request
//! at a time. Streams (uploads, outputs, watches, lists) are driven to their end here
//! so that callers only see whole results or a typed error.

use crate::error::ErrorCode;
use crate::frame::{self, FrameError, DEFAULT_MAX_FRAME};
use crate::job::{JobInfo, JobState, RowError, UndoSummary, UploadKind};
use crate::message::{Request, Response};
use crate::metrics::Metrics;
use crate::node::NodeInfo;
use crate::{CHUNK_SIZE, PROTOCOL_VERSION};
use std::io;
use std::path::Path;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens at the socket path (missing or stale).
    #[error("no daemon at {path}: {source}")]
    Unreachable { path: String, source: io::Error },
    /// The process listening at the socket is not a daemon this client may trust
    /// (see [`crate::peer`]); nothing was sent to it.
    #[error(
        "refusing to talk to the daemon at {path}: it runs as uid {uid}{}, {reason}; nothing was sent to it",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Untrusted {
        path: String,
        uid: u32,
        pid: Option<i32>,
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("{code}: {message}")]
    Daemon { code: ErrorCode, message: String },
    #[error("connection to the daemon failed: {0}")]
    Frame(#[from] FrameError),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
    /// Reading the caller's input or writing its output failed.
    #[error("{0}")]
    Local(io::Error),
}

impl ClientError {
    /// The daemon's error code, if the daemon refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the daemon could not be reached, was not trusted, or the
    /// connection broke.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Untrusted { .. }
                | ClientError::Frame(_)
                | ClientError::Closed
        )
    }
}

/// Connects to the socket at `path` and checks the listening process's credentials
/// ([`crate::peer::check`]) before anything is written: an untrusted peer gets
/// [`ClientError::Untrusted`] and not a byte.
pub async fn connect_trusted(path: &Path) -> Result<UnixStream, ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Unreachable {
            path: path.display().to_string(),
            source,
        })?;
    let cred = stream.peer_cred().map_err(|e| ClientError::Unreachable {
        path: path.display().to_string(),
        source: io::Error::new(
            e.kind(),
            format!("cannot read the credentials of the process listening there: {e}"),
        ),
    })?;
    let me = nix::unistd::geteuid().as_raw();
    crate::peer::check(path, me, cred.uid()).map_err(|reason| ClientError::Untrusted {
        path: path.display().to_string(),
        uid: cred.uid(),
        pid: cred.pid(),
        reason,
    })?;
    Ok(stream)
}

fn unexpected(r: Response) -> ClientError {
    match r {
        Response::Error { code, message } => ClientError::Daemon { code, message },
        other => ClientError::Unexpected(format!("{other:?}")),
    }
}

/// One connection to jobd, after a successful handshake.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    max_frame: u32,
    /// The user the daemon sees on the other end (from the socket's credentials).
    pub user: String,
    pub daemon_version: String,
}

impl Client {
    /// Connects to the daemon at `path`, checks who it is ([`connect_trusted`]) and
    /// performs the `Hello`/`Welcome` handshake.
    pub async fn connect(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        let stream = connect_trusted(path).await?;
        let (r, w) = stream.into_split();
        let mut client = Client {
            reader: BufReader::with_capacity(CHUNK_SIZE + 64, r),
            writer: BufWriter::with_capacity(CHUNK_SIZE + 64, w),
            max_frame: DEFAULT_MAX_FRAME,
            user: String::new(),
            daemon_version: String::new(),
        };
        client
            .send(&Request::Hello {
                protocol_version: PROTOCOL_VERSION,
                client: client_name.to_string(),
            })
            .await?;
        match client.recv().await? {
            Response::Welcome {
                user,
                daemon_version,
                ..
            } => {
                client.user = user;
                client.daemon_version = daemon_version;
                Ok(client)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and flushes it.
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        frame::write_message(&mut self.writer, req).await?;
        self.writer.flush().await.map_err(FrameError::Io)?;
        Ok(())
    }

    /// Receives one response; an end of stream is [`ClientError::Closed`].
    pub async fn recv(&mut self) -> Result<Response, ClientError> {
        frame::read_message(&mut self.reader, self.max_frame)
            .await?
            .ok_or(ClientError::Closed)
    }

    /// Sends a request and returns its single answer; `Error` becomes `Err`.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send(req).await?;
        match self.recv().await? {
            Response::Error { code, message } => Err(ClientError::Daemon { code, message }),
            r => Ok(r),
        }
    }

    async fn call_job(&mut self, req: &Request) -> Result<JobInfo, ClientError> {
        match self.call(req).await? {
            Response::Job(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Streams `input` to the daemon as an upload job; `on_progress` sees the bytes
    /// sent so far. The job exists only once this returns `Ok`.
    pub async fn upload<R: AsyncRead + Unpin>(
        &mut self,
        kind: UploadKind,
        rate: Option<f64>,
        mut input: R,
        mut on_progress: impl FnMut(u64),
    ) -> Result<JobInfo, ClientError> {
        match self.call(&Request::SubmitUpload { kind, rate }).await? {
            Response::Ready => {}
            other => return Err(unexpected(other)),
        }
        let mut sent = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = fill(&mut input, &mut buf)
                .await
                .map_err(ClientError::Local)?;
            if n == 0 {
                break;
            }
            let chunk = Request::Chunk {
                data: buf[..n].to_vec(),
            };
            if let Err(e) = frame::write_message(&mut self.writer, &chunk).await {
                // The daemon may have refused mid-upload (disk full); its reason wins.
                return Err(self.reason_after_write_error(e).await);
            }
            sent += n as u64;
            on_progress(sent);
        }
        self.send(&Request::End { bytes: sent }).await?;
        match self.recv().await? {
            Response::Job(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    async fn reason_after_write_error(&mut self, e: FrameError) -> ClientError {
        match self.recv().await {
            Ok(Response::Error { code, message }) => ClientError::Daemon { code, message },
            _ => ClientError::Frame(e),
        }
    }

    pub async fn submit_export(
        &mut self,
        from: &str,
        to: &str,
        rate: Option<f64>,
    ) -> Result<JobInfo, ClientError> {
        self.call_job(&Request::SubmitExport {
            from: from.to_string(),
            to: to.to_string(),
            rate,
        })
        .await
    }

    /// Applies `action` (`stop`, `start`, `terminate`) and returns the job's state after it.
    pub async fn control(&mut self, id: &str, action: &str) -> Result<JobInfo, ClientError> {
        self.call_job(&Request::Control {
            id: id.to_string(),
            action: action.to_string(),
        })
        .await
    }

    /// Undoes a finished upload job's effects; returns the job, now `reverted`.
    pub async fn revert(&mut self, id: &str) -> Result<JobInfo, ClientError> {
        self.call_job(&Request::Revert {
            id: id.to_string(),
            dry_run: false,
        })
        .await
    }

    /// What a revert of the job would undo; nothing changes.
    pub async fn revert_dry_run(&mut self, id: &str) -> Result<UndoSummary, ClientError> {
        self.call_undo(&Request::Revert {
            id: id.to_string(),
            dry_run: true,
        })
        .await
    }

    /// What a terminate of the job would roll back now; nothing changes.
    pub async fn preview_terminate(&mut self, id: &str) -> Result<UndoSummary, ClientError> {
        self.call_undo(&Request::PreviewTerminate { id: id.to_string() })
            .await
    }

    async fn call_undo(&mut self, req: &Request) -> Result<UndoSummary, ClientError> {
        match self.call(req).await? {
            Response::Undo(summary) => Ok(*summary),
            other => Err(unexpected(other)),
        }
    }

    /// Forgets finished jobs that ended at least `older_than_ms` ago, in `states`
    /// (all final states when empty); returns how many.
    pub async fn prune(
        &mut self,
        older_than_ms: u64,
        states: &[JobState],
    ) -> Result<u64, ClientError> {
        match self
            .call(&Request::Prune {
                older_than_ms,
                states: states.to_vec(),
            })
            .await?
        {
            Response::Pruned { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Status of the given jobs, or of all the caller's jobs when `ids` is empty.
    pub async fn status(&mut self, ids: &[String]) -> Result<Vec<JobInfo>, ClientError> {
        self.send(&Request::Status { ids: ids.to_vec() }).await?;
        self.collect_jobs().await
    }

    /// Waits until every job has finished; returns their final states.
    pub async fn wait(&mut self, ids: &[String]) -> Result<Vec<JobInfo>, ClientError> {
        self.send(&Request::Wait { ids: ids.to_vec() }).await?;
        self.collect_jobs().await
    }

    async fn collect_jobs(&mut self) -> Result<Vec<JobInfo>, ClientError> {
        let mut jobs = Vec::new();
        loop {
            match self.recv().await? {
                Response::Jobs(page) => jobs.extend(page),
                Response::End { .. } => return Ok(jobs),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Starts watching a job; call [`Client::next_event`] until it returns `None`.
    pub async fn watch(&mut self, id: &str) -> Result<(), ClientError> {
        self.send(&Request::Watch { id: id.to_string() }).await
    }

    /// The next step of a watch, or `None` once the job has finished.
    pub async fn next_event(&mut self) -> Result<Option<JobInfo>, ClientError> {
        match self.recv().await? {
            Response::Job(info) => Ok(Some(info)),
            Response::End { .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Copies the output file of a completed export into `out`; returns its size.
    pub async fn output<W: AsyncWrite + Unpin>(
        &mut self,
        id: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        self.send(&Request::Output { id: id.to_string() }).await?;
        let mut written = 0u64;
        loop {
            match self.recv().await? {
                Response::Chunk { data } => {
                    out.write_all(&data).await.map_err(ClientError::Local)?;
                    written += data.len() as u64;
                }
                Response::End { count } if count == written => {
                    out.flush().await.map_err(ClientError::Local)?;
                    return Ok(written);
                }
                Response::End { count } => {
                    return Err(ClientError::Unexpected(format!(
                        "output announced {count} bytes but {written} arrived"
                    )))
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// The daemon's counters.
    pub async fn metrics(&mut self) -> Result<Metrics, ClientError> {
        match self.call(&Request::Metrics).await? {
            Response::Metrics(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// The nodes sharing the daemon's store.
    pub async fn nodes(&mut self) -> Result<Vec<NodeInfo>, ClientError> {
        match self.call(&Request::Nodes).await? {
            Response::Nodes(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes to every change of the caller's jobs; call
    /// [`Client::next_change`] for each. Changes made after this returns are
    /// all delivered (or the stream ends, see `next_change`).
    pub async fn events(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Events).await? {
            Response::Ready => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The next change of an [`Client::events`] stream; `Err(missed)` when the
    /// daemon ended it because this client fell `missed` changes behind.
    pub async fn next_change(&mut self) -> Result<Result<JobInfo, u64>, ClientError> {
        match self.recv().await? {
            Response::Job(info) => Ok(Ok(info)),
            Response::End { count } => Ok(Err(count)),
            other => Err(unexpected(other)),
        }
    }

    /// Up to `limit` row errors of a job after row `after`, in row order.
    pub async fn errors_page(
        &mut self,
        id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RowError>, ClientError> {
        self.send(&Request::ErrorsPage {
            id: id.to_string(),
            after,
            limit,
        })
        .await?;
        let mut all = Vec::new();
        loop {
            match self.recv().await? {
                Response::RowErrors(page) => all.extend(page),
                Response::End { .. } => return Ok(all),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// The row errors of a job, in row order.
    pub async fn errors(&mut self, id: &str) -> Result<Vec<RowError>, ClientError> {
        self.send(&Request::Errors { id: id.to_string() }).await?;
        let mut all = Vec::new();
        loop {
            match self.recv().await? {
                Response::RowErrors(page) => all.extend(page),
                Response::End { .. } => return Ok(all),
                other => return Err(unexpected(other)),
            }
        }
    }
}

/// Reads until `buf` is full or the input ends, so chunks are full-sized.
async fn fill<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = input.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}
