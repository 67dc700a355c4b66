//! The one run loop every job goes through: take the next units from the job kind
//! as effects in a batch, hand each batch to the store to commit together with the
//! job's cursor, and obey controls between units.
//!
//! A worker runs on a blocking thread and owns its input. Pausing ends the worker —
//! thread and input are released — and starting again creates a new one that
//! resumes from the committed cursor. When the store cannot be reached, the worker
//! drops what it has not committed, waits for the store with backoff, and resumes
//! from the committed cursor too.

mod committer;

use crate::kinds::{self, JobContext, JobRun, KindError, Step};
use crate::store::{
    Batch, Claim, CommitError, End, Expect, JobRow, Progress, Seal, SharedStore, StoreError,
    StoredState,
};
use committer::{Committer, SealedBatch};
use jobd_protocol::{JobState, RowError};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Units per batch at most; a batch also commits once it is this old or this big.
const BATCH_UNITS: u64 = 50_000;
const BATCH_AGE: Duration = Duration::from_millis(250);
const BATCH_BYTES: usize = 16 << 20;
/// A worker's first batch commits once it is this old, and each next one may grow
/// twice as old, up to [`BATCH_AGE`]. A control drops the open batch, so a job
/// stopped less than [`BATCH_AGE`] after every start would otherwise never
/// commit; this way it advances whenever it runs longer than this between
/// controls, for a few extra commits per worker. Not shorter: a stop that lands
/// on a commit waits for it, and storms of stops a few ms apart should stay fast
/// (they make no progress, as a stop takes effect at the last commit).
const FIRST_BATCH_AGE: Duration = Duration::from_millis(16);
/// Waits between attempts while the store is unreachable.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A running worker's control line: the flag tells a long commit that a control is
/// waiting, so it gives up at once; the channel carries the control itself.
#[derive(Clone)]
pub struct ControlLine {
    pub tx: Sender<Control>,
    pub interrupt: Arc<AtomicBool>,
    /// The epoch of the worker's claim, once made (-1 before).
    pub epoch: Arc<AtomicI64>,
}

impl ControlLine {
    pub fn new() -> (
        ControlLine,
        Receiver<Control>,
        Arc<AtomicBool>,
        Arc<AtomicI64>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicI64::new(-1));
        (
            ControlLine {
                tx,
                interrupt: Arc::clone(&interrupt),
                epoch: Arc::clone(&epoch),
            },
            rx,
            interrupt,
            epoch,
        )
    }

    /// Whether the worker holds the claim of this epoch: a control the store
    /// says is pending for an older claim (an event heard late, after a stop,
    /// a start and a new claim) is not this worker's to obey.
    pub fn holds(&self, epoch: i64) -> bool {
        self.epoch.load(Ordering::SeqCst) == epoch
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
    /// End, leaving the job `running` so that a restart resumes it.
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
    /// Another worker claimed the job: this one left it as it was.
    Lost,
}

pub struct Worker {
    pub store: SharedStore,
    pub seq: i64,
    pub controls: Receiver<Control>,
    pub interrupt: Arc<AtomicBool>,
    /// Where the worker shows its claim's epoch (see [`ControlLine::holds`]).
    pub epoch: Arc<AtomicI64>,
    pub report: Box<dyn Fn(Progress) + Send>,
    pub max_row_errors: u64,
    /// The latest claim on the job, once made.
    pub claim: Cell<Option<Claim>>,
    /// The job as claimed for this worker before it started (a shared store's
    /// claimer claims first); the first run uses it instead of claiming.
    pub claimed: Cell<Option<(JobRow, Claim)>>,
    /// Commit times are recorded here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How a run of the loop ended.
enum Outcome {
    Exit(Exit),
    Control(Control),
}

/// What a commit gave.
enum Committed {
    /// Committed; the batch comes back empty, for its allocations.
    Done(Batch),
    Control(Control),
    /// This row error, and those after it, are past the job's limit; the batch
    /// comes back as it was.
    OverLimit(RowError, Batch),
}

/// Reuses a committed batch's allocations while the open one is still empty.
fn recycle(batch: &mut Batch, spare: Batch) {
    if batch.is_empty() {
        *batch = spare;
    }
}

impl Worker {
    pub fn run(self) -> Exit {
        let mut retry = RETRY_FIRST;
        let mut pending = None;
        loop {
            let attempt = match pending {
                Some(c) => self.obey(c).map(Outcome::Exit),
                None => self.run_job(),
            };
            let e = match attempt {
                Ok(Outcome::Exit(exit)) => return exit,
                Ok(Outcome::Control(c)) => {
                    pending = Some(c);
                    continue;
                }
                Err(e) if e.is_unavailable() => e,
                Err(e) if e.is_fenced() => {
                    tracing::warn!(
                        job = self.seq,
                        "another worker claimed the job; this one lets go"
                    );
                    return Exit::Lost;
                }
                Err(e) => return self.fail(e.to_string()),
            };
            if retry == RETRY_FIRST {
                tracing::warn!(job = self.seq, error = %e, "the store is unavailable; the job waits for it");
            }
            // Whatever was not committed is dropped; the next attempt resumes at
            // the committed cursor. A control that arrives meanwhile is obeyed
            // once the store answers (a shutdown at once: it needs no store).
            match self.controls.recv_timeout(retry) {
                Ok(Control::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    return Exit::Shutdown
                }
                Ok(c) => pending = Some(c),
                Err(RecvTimeoutError::Timeout) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// Runs the job from its committed cursor until it ends or a control arrives.
    ///
    /// A full batch is committed on a thread of its own while the worker fills the
    /// next one (at most one commit in flight, as each starts from the counts the
    /// one before committed): reading and parsing go on while the store writes.
    fn run_job(&self) -> Result<Outcome, KindError> {
        let (job, claim) = match self.claimed.take() {
            Some(claimed) => claimed,
            None => self.store.claim(self.seq, self.claim.get().as_ref())?,
        };
        self.claim.set(Some(claim));
        self.epoch.store(claim.epoch, Ordering::SeqCst);
        self.interrupt.store(false, Ordering::SeqCst);
        // Asked of this node while it was away (or of the node before it).
        match job.pending {
            Some(jobd_protocol::Action::Stop) => return Ok(Outcome::Control(Control::Pause)),
            Some(jobd_protocol::Action::Terminate) => {
                return Ok(Outcome::Control(Control::Terminate))
            }
            _ => {}
        }
        let mut batch = Batch::new();
        let mut run = kinds::open(job.kind, &context(&job), &*self.store, &mut batch)?;
        let mut committed = Progress {
            processed: job.processed,
            failed: job.failed,
            total: run.total().or(job.total),
        };
        let pace = job.rate.map(|rate| (Instant::now(), rate));
        let mut paced_units = 0u64;
        let mut batch_started: Option<Instant> = None;
        let mut batch_age = FIRST_BATCH_AGE;
        let mut committer = Committer::start(&self.store, claim, &self.interrupt, self.seq);

        loop {
            match self.controls.try_recv() {
                Ok(c) => return Ok(self.settle(&mut committer, &mut committed, c)),
                Err(TryRecvError::Disconnected) => {
                    return Ok(self.settle(&mut committer, &mut committed, Control::Shutdown))
                }
                Err(TryRecvError::Empty) => {}
            }
            if let Some((t0, rate)) = pace {
                let due = t0 + Duration::from_secs_f64(paced_units as f64 / rate);
                let now = Instant::now();
                if due > now {
                    // Never wait with work in hand: commit what is done first.
                    if committer.busy() {
                        match self.finish(&mut committer, &mut committed)? {
                            Committed::Done(spare) => recycle(&mut batch, spare),
                            Committed::Control(c) => return Ok(Outcome::Control(c)),
                            Committed::OverLimit(e, b) => {
                                return self.over_limit(&claim, &*run, b, committed, e)
                            }
                        }
                    }
                    if batch.units() > 0 {
                        self.start_commit(&mut committer, &*run, &mut batch, committed, false);
                        match self.finish(&mut committer, &mut committed)? {
                            Committed::Done(spare) => {
                                recycle(&mut batch, spare);
                                batch_started = None;
                            }
                            Committed::Control(c) => return Ok(Outcome::Control(c)),
                            Committed::OverLimit(e, b) => {
                                return self.over_limit(&claim, &*run, b, committed, e)
                            }
                        }
                    }
                    match self.controls.recv_timeout(due - now) {
                        Ok(c) => return Ok(Outcome::Control(c)),
                        Err(RecvTimeoutError::Disconnected) => {
                            return Ok(Outcome::Control(Control::Shutdown))
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
            }
            let started = *batch_started.get_or_insert_with(Instant::now);
            match run.step(&*self.store, &mut batch)? {
                Step::Done => break,
                Step::Unit => paced_units += 1,
                Step::Part => {}
            }
            if committed.failed + batch.rejects().len() as u64 > self.max_row_errors {
                // The kind's last row error is past the limit; the commit says so.
                break;
            }
            // The clock is read every few units: a batch of fast units ages slowly.
            let units = batch.units();
            if units >= BATCH_UNITS
                || batch.bytes() >= BATCH_BYTES
                || (units.is_multiple_of(64) && started.elapsed() >= batch_age)
            {
                // The batch before must have committed: its counts are this one's start.
                if committer.busy() {
                    match self.finish(&mut committer, &mut committed)? {
                        Committed::Done(spare) => recycle(&mut batch, spare),
                        Committed::Control(c) => return Ok(Outcome::Control(c)),
                        Committed::OverLimit(e, b) => {
                            return self.over_limit(&claim, &*run, b, committed, e)
                        }
                    }
                }
                self.start_commit(&mut committer, &*run, &mut batch, committed, false);
                batch_started = None;
                batch_age = (batch_age * 2).min(BATCH_AGE);
            }
        }
        if committer.busy() {
            match self.finish(&mut committer, &mut committed)? {
                Committed::Done(spare) => recycle(&mut batch, spare),
                Committed::Control(c) => return Ok(Outcome::Control(c)),
                Committed::OverLimit(e, b) => {
                    return self.over_limit(&claim, &*run, b, committed, e)
                }
            }
        }
        self.start_commit(&mut committer, &*run, &mut batch, committed, true);
        match self.finish(&mut committer, &mut committed)? {
            Committed::Done(_) => Ok(Outcome::Exit(Exit::Completed)),
            Committed::Control(c) => Ok(Outcome::Control(c)),
            Committed::OverLimit(e, b) => self.over_limit(&claim, &*run, b, committed, e),
        }
    }

    /// Hands the batch, with the cursor after it, to the committer; `batch` is
    /// left empty.
    fn start_commit(
        &self,
        committer: &mut Committer,
        run: &dyn JobRun,
        batch: &mut Batch,
        committed: Progress,
        completes: bool,
    ) {
        committer.send(SealedBatch {
            batch: std::mem::take(batch),
            before: committed,
            total: run.total().or(committed.total),
            cursor: run.cursor(),
            completes,
            max_failed: self.max_row_errors,
            metrics: Arc::clone(&self.metrics),
        });
    }

    /// Waits for the batch handed to the committer.
    fn finish(
        &self,
        committer: &mut Committer,
        committed: &mut Progress,
    ) -> Result<Committed, KindError> {
        let (batch, result) = committer.wait()?;
        match result {
            Ok(p) => {
                *committed = p;
                (self.report)(p);
                Ok(Committed::Done(batch))
            }
            // The flag is raised before the control is sent: it is on its way.
            Err(CommitError::Interrupted) => Ok(Committed::Control(
                self.controls.recv().unwrap_or(Control::Shutdown),
            )),
            Err(CommitError::OverLimit(e)) => Ok(Committed::OverLimit(e, batch)),
            Err(CommitError::Store(e)) => Err(e.into()),
        }
    }

    /// A control arrived: the commit in flight (told to give up by the control's
    /// flag) ends first, then the control is obeyed whatever its outcome.
    fn settle(&self, committer: &mut Committer, committed: &mut Progress, c: Control) -> Outcome {
        if committer.busy() {
            if let Ok((_, Ok(p))) = committer.wait() {
                *committed = p;
                (self.report)(p);
            }
        }
        Outcome::Control(c)
    }

    /// The job has more row errors than allowed: what came before the first one
    /// past the limit is committed, and the job fails naming it.
    fn over_limit(
        &self,
        claim: &Claim,
        run: &dyn JobRun,
        mut batch: Batch,
        mut committed: Progress,
        e: RowError,
    ) -> Result<Outcome, KindError> {
        let message = format!(
            "too many row errors: more than {} (the next at row {}: {})",
            self.max_row_errors, e.row, e.message
        );
        batch.truncate_before(e.row);
        let cursor = run.cursor();
        let seal = Seal {
            before: committed,
            total: run.total().or(committed.total),
            cursor: &cursor,
            end: Some(End::Failed(&message)),
            max_failed: u64::MAX,
        };
        committed = match self
            .store
            .commit(claim, &mut batch, &seal, &AtomicBool::new(false))
        {
            Ok(p) => p,
            Err(CommitError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(KindError::Fatal(e.to_string())),
        };
        (self.report)(committed);
        Ok(Outcome::Exit(Exit::Failed(message)))
    }

    /// Obeys a control once the open batch is dropped and the input closed.
    fn obey(&self, control: Control) -> Result<Exit, KindError> {
        Ok(match control {
            Control::Pause => {
                let claim = self.held()?;
                self.store
                    .release(&claim, StoredState::Public(JobState::Paused), None)?;
                Exit::Paused
            }
            Control::Shutdown => Exit::Shutdown,
            Control::Terminate => {
                let claim = self.held()?;
                if !self.store.terminate(self.seq, Expect::Claim(&claim))? {
                    return Err(StoreError::Fenced(self.seq).into());
                }
                Exit::Terminated
            }
        })
    }

    /// Ends the job as failed; what was not committed is dropped.
    fn fail(&self, message: String) -> Exit {
        match self.set_state(StoredState::Public(JobState::Failed), Some(&message)) {
            Ok(()) => {}
            Err(e) if e.is_fenced() => return Exit::Lost,
            Err(e) => tracing::error!(job = self.seq, error = %e, "cannot record the failure"),
        }
        Exit::Failed(message)
    }

    /// Changes the job's state under this worker's claim (if it made one yet).
    fn set_state(&self, state: StoredState, error: Option<&str>) -> Result<(), StoreError> {
        match self.claim.get() {
            Some(claim) => self.store.release(&claim, state, error),
            None => self.store.set_state(self.seq, state, error),
        }
    }

    /// This worker's claim, made now if the store was out of reach until now.
    fn held(&self) -> Result<Claim, StoreError> {
        if let Some(claim) = self.claim.get() {
            return Ok(claim);
        }
        let (_, claim) = self.store.claim(self.seq, None)?;
        self.claim.set(Some(claim));
        Ok(claim)
    }
}

/// The kind's view of a job.
pub fn context(job: &JobRow) -> JobContext<'_> {
    JobContext {
        seq: job.seq,
        owner_uid: job.owner_uid,
        owner: &job.owner,
        input: &job.input,
        cursor: job.cursor.as_deref(),
    }
}
