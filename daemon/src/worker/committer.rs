//! A worker's commit thread: it commits one batch while the worker fills the next,
//! so that reading and parsing go on while the store writes. One batch at a time:
//! each starts from the counts the one before committed.

use crate::kinds::KindError;
use crate::store::{Batch, Claim, CommitError, End, Progress, Seal, SharedStore, Store};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A batch with everything committed along with it.
pub struct SealedBatch {
    pub batch: Batch,
    pub before: Progress,
    pub total: Option<u64>,
    pub cursor: String,
    /// The batch is the job's last: it completes.
    pub completes: bool,
    pub max_failed: u64,
    /// Where the commit's time is recorded.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The batch back (emptied once committed, for its allocations) and the outcome.
pub type Answer = (Batch, Result<Progress, CommitError>);

impl SealedBatch {
    /// Commits; `interrupt`, when given, cuts a long commit short.
    fn commit(
        mut self,
        store: &dyn Store,
        claim: &Claim,
        interrupt: Option<&AtomicBool>,
    ) -> Answer {
        let seal = Seal {
            before: self.before,
            total: self.total,
            cursor: &self.cursor,
            end: self.completes.then_some(End::Completed),
            max_failed: self.max_failed,
        };
        let never = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let r = store.commit(claim, &mut self.batch, &seal, interrupt.unwrap_or(&never));
        if r.is_ok() {
            self.metrics.commit(started.elapsed());
            self.batch.clear();
        }
        (self.batch, r)
    }
}

struct Thread {
    tx: Sender<(SealedBatch, bool)>,
    rx: Receiver<Answer>,
    handle: JoinHandle<()>,
}

/// Commits batches on a thread of its own, which lives as long as this does (a
/// paused job holds no thread). Without a thread (none could be started), it
/// commits on the caller's.
pub struct Committer {
    thread: Option<Thread>,
    store: SharedStore,
    claim: Claim,
    interrupt: Arc<AtomicBool>,
    /// A batch handed over and not waited for yet.
    busy: bool,
    /// Batches handed over so far.
    sent: u64,
    /// What a commit made without a thread answered.
    answer: Option<Answer>,
}

impl Committer {
    pub fn start(
        store: &SharedStore,
        claim: Claim,
        interrupt: &Arc<AtomicBool>,
        seq: i64,
    ) -> Committer {
        let (tx, jobs) = channel::<(SealedBatch, bool)>();
        let (answers, rx) = channel();
        let (s, i) = (Arc::clone(store), Arc::clone(interrupt));
        let thread = std::thread::Builder::new()
            .name(format!("jobd-commit-{seq}"))
            .spawn(move || {
                for (job, interruptible) in jobs {
                    let answer = job.commit(&*s, &claim, interruptible.then_some(&*i));
                    if answers.send(answer).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| tracing::debug!(error = %e, "no commit thread: committing on the worker"))
            .ok()
            .map(|handle| Thread { tx, rx, handle });
        Committer {
            thread,
            store: Arc::clone(store),
            claim,
            interrupt: Arc::clone(interrupt),
            busy: false,
            sent: 0,
            answer: None,
        }
    }

    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Hands a batch over; the one before must have been waited for. A control
    /// cuts a commit short, except the first of a worker's run: that one (small:
    /// see the worker's first batch age) always commits, so that a job stopped
    /// soon after every start still advances.
    pub fn send(&mut self, job: SealedBatch) {
        debug_assert!(!self.busy, "one batch in flight at a time");
        self.busy = true;
        let interruptible = self.sent > 0;
        self.sent += 1;
        let job = match &self.thread {
            Some(t) => match t.tx.send((job, interruptible)) {
                Ok(()) => return,
                Err(e) => e.0 .0,
            },
            None => job,
        };
        let interrupt = interruptible.then_some(&*self.interrupt);
        self.answer = Some(job.commit(&*self.store, &self.claim, interrupt));
    }

    /// The answer for the batch handed over.
    pub fn wait(&mut self) -> Result<Answer, KindError> {
        self.busy = false;
        if let Some(a) = self.answer.take() {
            return Ok(a);
        }
        self.thread
            .as_ref()
            .and_then(|t| t.rx.recv().ok())
            .ok_or_else(|| KindError::Fatal("the commit thread died".into()))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Some(Thread { tx, rx, handle }) = self.thread.take() {
            drop(tx);
            drop(rx);
            let _ = handle.join();
        }
    }
}
