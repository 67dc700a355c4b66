//! A small pool of persistent connections to the daemon.
//!
//! Short conversations (a control, a submit, a status) borrow an idle connection,
//! or open one, and give it back when the conversation ended cleanly; at most
//! `size` of them run at once and at most `size` connections are kept idle. Long
//! conversations (uploads, watches, output streams) take a connection of their own
//! for as long as they last, outside that bound.
//!
//! When the daemon restarts, or closes a connection that stayed idle past its
//! idle timeout, a pooled connection is dead without anyone knowing. The first
//! request that tries it fails; it is then retried once on a fresh connection, and
//! every other idle connection is dropped. If no daemon answers at all, the error
//! is returned (the HTTP layer answers 503) and the next request tries again: the
//! shim reconnects by itself.

use jobd_protocol::{
    Client, ClientError, ErrorCode, JobInfo, Metrics, Request, Response, RowError, UndoSummary,
};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often the same refusal of an untrusted daemon is logged again.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Name sent in `Hello`.
pub(crate) const CLIENT_NAME: &str = concat!("jobd-http/", env!("CARGO_PKG_VERSION"));

pub struct Pool {
    socket: PathBuf,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    size: usize,
}

impl Pool {
    pub fn new(socket: PathBuf, size: usize) -> Pool {
        let size = size.max(1);
        Pool {
            socket,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            size,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket, CLIENT_NAME)
            .await
            .inspect_err(log_refusal)
    }

    /// An idle connection (`true`: it may be stale) or a new one.
    async fn take(&self) -> Result<(Client, bool), ClientError> {
        let pooled = self.idle().pop();
        match pooled {
            Some(c) => Ok((c, true)),
            None => Ok((self.connect().await?, false)),
        }
    }

    /// Gives back a connection whose last conversation ended cleanly.
    pub fn give_back(&self, client: Client) {
        let mut idle = self.idle();
        if idle.len() < self.size {
            idle.push(client);
        }
    }

    /// Drops every idle connection (after one was found dead).
    fn forget_idle(&self) {
        let old = std::mem::take(&mut *self.idle());
        drop(old);
    }

    /// Keeps the connection if the conversation ended at a frame boundary: on
    /// success, or with the daemon's single `Error` answer.
    fn settle<T>(&self, client: Client, result: &Result<T, ClientError>) {
        if matches!(result, Ok(_) | Err(ClientError::Daemon { .. })) {
            self.give_back(client);
        }
    }

    /// Runs a short conversation on a pooled connection, retried once on a fresh
    /// connection if the pooled one turns out to be dead.
    async fn run(&self, op: Op<'_>) -> Result<Done, ClientError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        let (mut client, reused) = self.take().await?;
        let result = op.run(&mut client).await;
        if reused && is_stale(&result) {
            drop(client);
            self.forget_idle();
            let mut client = self.connect().await?;
            let result = op.run(&mut client).await;
            self.settle(client, &result);
            return result;
        }
        self.settle(client, &result);
        result
    }

    /// Applies `action` to the job `id`.
    pub async fn control(&self, id: &str, action: &str) -> Result<JobInfo, ClientError> {
        match self.run(Op::Control { id, action }).await? {
            Done::Job(info) => Ok(info),
            other => Err(other.unexpected()),
        }
    }

    /// Reverts the job `id`, or with `dry_run` says what that would undo.
    pub async fn revert(
        &self,
        id: &str,
        dry_run: bool,
    ) -> Result<Result<JobInfo, UndoSummary>, ClientError> {
        match self.run(Op::Revert { id, dry_run }).await? {
            Done::Job(info) => Ok(Ok(info)),
            Done::Undo(summary) => Ok(Err(*summary)),
            other => Err(other.unexpected()),
        }
    }

    /// Submits an export of `from..=to`.
    pub async fn submit_export(
        &self,
        from: &str,
        to: &str,
        rate: Option<f64>,
    ) -> Result<JobInfo, ClientError> {
        match self.run(Op::Export { from, to, rate }).await? {
            Done::Job(info) => Ok(info),
            other => Err(other.unexpected()),
        }
    }

    /// The jobs `ids`, or all the caller's when empty.
    pub async fn status(&self, ids: &[String]) -> Result<Vec<JobInfo>, ClientError> {
        match self.run(Op::Status(ids)).await? {
            Done::Jobs(jobs) => Ok(jobs),
            other => Err(other.unexpected()),
        }
    }

    /// The row errors of the job `id`.
    pub async fn errors(&self, id: &str) -> Result<Vec<RowError>, ClientError> {
        match self.run(Op::Errors(id)).await? {
            Done::Errors(errors) => Ok(errors),
            other => Err(other.unexpected()),
        }
    }

    /// At most `limit` row errors of the job `id` after row `after`.
    pub async fn errors_page(
        &self,
        id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RowError>, ClientError> {
        match self.run(Op::ErrorsPage { id, after, limit }).await? {
            Done::Errors(errors) => Ok(errors),
            other => Err(other.unexpected()),
        }
    }

    /// The daemon's counters.
    pub async fn metrics(&self) -> Result<Metrics, ClientError> {
        match self.run(Op::Metrics).await? {
            Done::Metrics(m) => Ok(*m),
            other => Err(other.unexpected()),
        }
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.run(Op::Ping).await? {
            Done::Pong => Ok(()),
            other => Err(other.unexpected()),
        }
    }

    /// Starts a long conversation: sends `req` on a connection of its own and
    /// returns it with the first answer (an `Error` answer included). The caller
    /// gives the connection back ([`Pool::give_back`]) once the conversation ended
    /// cleanly, or drops it.
    pub async fn open(&self, req: &Request) -> Result<(Client, Response), ClientError> {
        let (mut client, reused) = self.take().await?;
        let first = exchange(&mut client, req).await;
        let stale = match &first {
            Ok(Response::Error { code, .. }) => *code == ErrorCode::BadRequest,
            Ok(_) => false,
            Err(e) => e.is_unavailable(),
        };
        if reused && stale {
            drop(client);
            self.forget_idle();
            let mut client = self.connect().await?;
            let first = exchange(&mut client, req).await?;
            return Ok((client, first));
        }
        Ok((client, first?))
    }
}

/// Logs a daemon refused by the peer check (a squatted socket) at `warn`: once, then
/// again only once a minute while it stays the same, as requests keep retrying.
pub(crate) fn log_refusal(e: &ClientError) {
    static LAST: Mutex<Option<(String, Instant)>> = Mutex::new(None);
    if !matches!(e, ClientError::Untrusted { .. }) {
        return;
    }
    let message = e.to_string();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if let Some((m, at)) = last.as_ref() {
        if *m == message && now.duration_since(*at) < REFUSAL_LOG_EVERY {
            return;
        }
    }
    tracing::warn!("{message}");
    *last = Some((message, now));
}

/// A short conversation.
#[derive(Clone, Copy)]
enum Op<'a> {
    Control {
        id: &'a str,
        action: &'a str,
    },
    Revert {
        id: &'a str,
        dry_run: bool,
    },
    Export {
        from: &'a str,
        to: &'a str,
        rate: Option<f64>,
    },
    Status(&'a [String]),
    Errors(&'a str),
    ErrorsPage {
        id: &'a str,
        after: u64,
        limit: u32,
    },
    Metrics,
    Ping,
}

/// Its result.
#[derive(Debug)]
enum Done {
    Job(JobInfo),
    Jobs(Vec<JobInfo>),
    Errors(Vec<RowError>),
    Metrics(Box<Metrics>),
    Undo(Box<UndoSummary>),
    Pong,
}

impl Done {
    fn unexpected(self) -> ClientError {
        ClientError::Unexpected(format!("{self:?}"))
    }
}

impl Op<'_> {
    async fn run(self, client: &mut Client) -> Result<Done, ClientError> {
        Ok(match self {
            Op::Control { id, action } => Done::Job(client.control(id, action).await?),
            Op::Revert { id, dry_run: false } => Done::Job(client.revert(id).await?),
            Op::Revert { id, dry_run: true } => {
                Done::Undo(Box::new(client.revert_dry_run(id).await?))
            }
            Op::Export { from, to, rate } => Done::Job(client.submit_export(from, to, rate).await?),
            Op::Status(ids) => Done::Jobs(client.status(ids).await?),
            Op::Errors(id) => Done::Errors(client.errors(id).await?),
            Op::ErrorsPage { id, after, limit } => {
                Done::Errors(client.errors_page(id, after, limit).await?)
            }
            Op::Metrics => Done::Metrics(Box::new(client.metrics().await?)),
            Op::Ping => {
                client.ping().await?;
                Done::Pong
            }
        })
    }
}

async fn exchange(client: &mut Client, req: &Request) -> Result<Response, ClientError> {
    client.send(req).await?;
    client.recv().await
}

/// A failure that a dead pooled connection explains: the connection broke, or the
/// daemon had already refused it (`bad_request`: it closed the connection after its
/// idle timeout, and that refusal was still waiting to be read). Well-formed
/// requests are never `bad_request` otherwise.
fn is_stale<T>(result: &Result<T, ClientError>) -> bool {
    match result {
        Ok(_) => false,
        Err(e) => e.is_unavailable() || e.code() == Some(ErrorCode::BadRequest),
    }
}
