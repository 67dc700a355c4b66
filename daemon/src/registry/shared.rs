//! The registry on a store shared with other nodes (PostgreSQL).
//!
//! The map mirrors every node's jobs: the store's change events (one per commit
//! of any node) update it, so `status`, `watch`, `wait` and `Events` follow jobs on
//! every node without polling. Work is not queued here: the claimer takes the
//! oldest claimable job from the store whenever a slot is free and something may
//! be claimable — a job became queued, a slot freed, or a lease of another node
//! is due to run out.

use super::{blocking, info_of, public, Entry, Refusal, Registry, State};
use crate::store::{Claim, Event, JobRow, Store, StoreError, StoredState};
use crate::worker::Control;
use jobd_protocol::{Action, JobState};
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Waits before claiming again after the store failed us.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Looks for expired leases this long after the soonest one runs out: the
/// database's clock decides, and a claim a little late is better than one early
/// that finds the lease just renewed.
const EXPIRY_SLACK: Duration = Duration::from_millis(50);

/// The jobs at start. Jobs this node ran when it stopped (killed, or a crash)
/// go back to the queue first — for whichever node claims them — keeping any
/// stop or terminate asked meanwhile.
pub(super) fn requeue_mine(store: &dyn Store) -> Result<Vec<JobRow>, StoreError> {
    if let Some(cluster) = store.cluster() {
        cluster.release_all()?;
    }
    store.recover()
}

/// Starts following the store's changes, and claiming.
pub(super) fn start(reg: &Arc<Registry>) {
    if let Some(events) = reg.store.cluster().and_then(|c| c.events()) {
        tokio::spawn(follow(Arc::downgrade(reg), events));
    }
    let claimer = tokio::spawn(claim(Arc::clone(reg)));
    *reg.claimer.lock().unwrap_or_else(|p| p.into_inner()) = Some(claimer);
}

/// After the workers checkpointed: hands this node's jobs back at once, so that
/// other nodes claim them without waiting for the leases to run out.
pub(super) async fn leave(reg: &Registry) {
    let claimer = reg.claimer.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(c) = claimer {
        let _ = c.await;
    }
    let store = Arc::clone(&reg.store);
    let left = blocking(move || match store.cluster() {
        Some(c) => c.leave().map_err(Refusal::storage),
        None => Ok(()),
    })
    .await;
    match left {
        Ok(()) => tracing::info!("this node's jobs are back in the queue"),
        Err(e) => tracing::warn!(
            error = %e.message,
            "cannot hand this node's jobs back; other nodes take them once their leases run out"
        ),
    }
}

/// What a claim pass ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// Every slot of this node is taken.
    Full,
    /// Nothing claimable is left.
    Empty,
    /// The store failed us.
    Failed,
    ShuttingDown,
}

/// Claims work while this node has free slots, then sleeps until woken or until
/// the next lease of another node runs out. Ends at shutdown.
async fn claim(reg: Arc<Registry>) {
    let mut retry = RETRY_FIRST;
    loop {
        let wake = reg.claim_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let mut wait = match reg.claim_pass().await {
            Pass::ShuttingDown => return,
            Pass::Failed => {
                let w = retry;
                retry = (retry * 2).min(RETRY_MAX);
                Wait::For(w)
            }
            // Nothing can be claimed until a slot frees, which wakes us.
            Pass::Full => Wait::Woken,
            Pass::Empty => {
                retry = RETRY_FIRST;
                Wait::Expiry
            }
        };
        loop {
            let leased = reg.lease_watch.notified();
            tokio::pin!(leased);
            leased.as_mut().enable();
            let due = match wait {
                Wait::Woken => None,
                Wait::For(d) => Some(d),
                Wait::Expiry => next_expiry(&reg).await,
            };
            tokio::select! {
                _ = &mut wake => break,
                _ = sleep_or_forever(due) => break,
                // Another node took a job: its lease is one to watch.
                _ = &mut leased, if wait == Wait::Expiry => {}
            }
            wait = Wait::Expiry;
        }
    }
}

/// What the claimer waits for after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A wake-up only (a slot freeing, a job queued).
    Woken,
    /// This long, or a wake-up (the store failed us).
    For(Duration),
    /// The soonest lease of another node to run out, or a wake-up.
    Expiry,
}

/// When the soonest lease of another node runs out (and a little), if any runs.
async fn next_expiry(reg: &Registry) -> Option<Duration> {
    let store = Arc::clone(&reg.store);
    let due = blocking(move || match store.cluster() {
        Some(c) => c.next_expiry().map_err(Refusal::storage),
        None => Ok(None),
    })
    .await;
    match due {
        Ok(due) => due.map(|d| d + EXPIRY_SLACK),
        Err(_) => Some(RETRY_MAX),
    }
}

async fn sleep_or_forever(due: Option<Duration>) {
    match due {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Applies the store's changes to the mirror, in the order they come.
async fn follow(reg: Weak<Registry>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(reg) = reg.upgrade() else {
            return;
        };
        match event {
            Event::Job(row) => reg.apply(*row),
            Event::Gone(seqs) => reg.forget(&seqs),
            Event::Resync => {
                if let Err(e) = reg.resync().await {
                    tracing::warn!(error = %e.message, "cannot reload the jobs");
                }
            }
        }
    }
}

impl Registry {
    /// Claims the oldest claimable jobs while this node has free slots, and
    /// starts a worker for each. Run by the claimer, and by `start` so that a
    /// job started on a node with room runs there before the answer, as on one
    /// node.
    pub(super) async fn claim_pass(self: &Arc<Self>) -> Pass {
        loop {
            {
                let mut st = self.lock();
                if st.shutting_down {
                    return Pass::ShuttingDown;
                }
                if !st.scheduler.occupy() {
                    return Pass::Full;
                }
            }
            let store = Arc::clone(&self.store);
            let next = blocking(move || match store.cluster() {
                Some(c) => c.claim_next().map_err(Refusal::storage),
                None => Ok(None),
            })
            .await;
            let mut st = self.lock();
            match next {
                Ok(Some((row, claim))) => self.run_claimed(&mut st, row, claim),
                Ok(None) => {
                    self.give_back_slot(st);
                    return Pass::Empty;
                }
                Err(e) => {
                    self.give_back_slot(st);
                    tracing::warn!(error = %e.message, "cannot claim work");
                    return Pass::Failed;
                }
            }
        }
    }

    /// Runs a job the claimer took (its slot taken).
    fn run_claimed(self: &Arc<Self>, st: &mut State, row: JobRow, claim: Claim) {
        if st.shutting_down {
            // Left running here: leaving hands it back with the rest.
            st.scheduler.release();
            self.worker_ended.notify_waiters();
            return;
        }
        let id = row.id.clone();
        if !st.jobs.contains_key(&id) {
            let entry = Entry {
                seq: row.seq,
                info: info_of(&row, JobState::Running),
                worker: None,
                watch: None,
            };
            st.jobs.insert(id.clone(), Box::new(entry));
        }
        self.spawn_worker(st, &id, Some((row, claim)));
    }

    /// A claim found nothing: the slot it took is free again.
    fn give_back_slot(&self, mut st: std::sync::MutexGuard<'_, State>) {
        st.scheduler.release();
        drop(st);
        // Shutdown counts slots taken.
        self.worker_ended.notify_waiters();
    }

    /// The job as the store has it now.
    pub(super) fn apply(&self, row: JobRow) {
        let mut st = self.lock();
        let state = public(row.state);
        let elsewhere =
            state == JobState::Running && row.node.as_deref().is_some_and(|n| n != self.node);
        let taken = |e: &Entry| e.info.state != JobState::Running || e.info.node != row.node;
        if elsewhere && st.jobs.get(&row.id).is_none_or(|e| taken(e)) {
            self.lease_watch.notify_one();
        }
        match st.jobs.get_mut(&row.id) {
            Some(e) => {
                if let Some(w) = &e.worker {
                    // This node runs it and reports it itself; a control another
                    // node asked for is passed on to the worker.
                    let here = row.node.as_deref() == Some(self.node.as_str());
                    let running = row.state == StoredState::Public(JobState::Running);
                    if here && running && w.holds(row.epoch) {
                        match row.pending {
                            Some(Action::Stop) => w.send(Control::Pause),
                            Some(Action::Terminate) => w.send(Control::Terminate),
                            _ => {}
                        }
                    }
                    return;
                }
                let info = info_of(&row, state);
                // The same row comes again after this node's own refresh.
                if e.info != info {
                    e.seq = row.seq;
                    e.info = info;
                    e.publish(&self.feed);
                }
            }
            None => {
                let info = info_of(&row, state);
                self.feed.publish(&info);
                let entry = Entry {
                    seq: row.seq,
                    info,
                    worker: None,
                    watch: None,
                };
                st.jobs.insert(row.id.clone(), Box::new(entry));
            }
        }
        if state == JobState::Queued {
            self.claim_wake.notify_one();
        }
    }

    /// Makes sure the mirror has the job `id` if the store has it: a job another
    /// node just created may not have come through the events yet, and a client
    /// that submitted it there and asks here must find it.
    pub(super) async fn find(self: &Arc<Self>, id: &str) {
        if !self.shared || self.lock().jobs.contains_key(id) {
            return;
        }
        let store = Arc::clone(&self.store);
        let key = id.to_string();
        let found = blocking(move || match store.cluster() {
            Some(c) => c.find_job(&key).map_err(Refusal::storage),
            None => Ok(None),
        })
        .await;
        if let Ok(Some(row)) = found {
            self.apply(row);
        }
    }

    /// The jobs with these seqs are gone from the store (pruned, by any node).
    /// One pass over the map for the whole batch: a prune of many jobs sends a
    /// few hundred at a time.
    fn forget(&self, seqs: &[i64]) {
        let mut st = self.lock();
        // Those this node pruned itself are out of the map already.
        let gone: HashSet<i64> = seqs
            .iter()
            .copied()
            .filter(|s| !st.pruned_here.remove(s))
            .collect();
        if gone.is_empty() {
            return;
        }
        st.jobs
            .retain(|_, e| !gone.contains(&e.seq) || e.worker.is_some());
    }

    /// Reads every job again (changes may have been missed).
    async fn resync(self: &Arc<Self>) -> Result<(), Refusal> {
        let store = Arc::clone(&self.store);
        let rows = blocking(move || store.recover().map_err(Refusal::storage)).await?;
        let ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
        for row in rows {
            self.apply(row);
        }
        let mut st = self.lock();
        st.jobs
            .retain(|id, e| ids.contains(id) || e.worker.is_some());
        // Events missed are not coming: what they would have told is read now.
        st.pruned_here.clear();
        drop(st);
        self.claim_wake.notify_one();
        Ok(())
    }

    /// Reads the job `id` again from the store, after a change the mirror had
    /// not shown yet.
    pub(super) async fn refresh(self: &Arc<Self>, id: &str) -> Result<(), Refusal> {
        self.reload(id).await.map(|_| ())
    }

    /// [`Registry::refresh`], telling whether the store has the job running on
    /// this node.
    pub(super) async fn reload(self: &Arc<Self>, id: &str) -> Result<bool, Refusal> {
        let Some(seq) = self.lock().jobs.get(id).map(|e| e.seq) else {
            return Err(super::not_found(id));
        };
        let store = Arc::clone(&self.store);
        match blocking(move || Ok(store.load_job(seq))).await? {
            Ok(row) => {
                let here = row.state == StoredState::Public(JobState::Running)
                    && row.node.as_deref() == Some(self.node.as_str());
                self.apply(row);
                Ok(here)
            }
            // Pruned meanwhile: it is no more.
            Err(e) if e.is_gone() => {
                let mut st = self.lock();
                if st
                    .jobs
                    .get(id)
                    .is_some_and(|e| e.seq == seq && e.worker.is_none())
                {
                    st.jobs.remove(id);
                }
                Err(super::not_found(id))
            }
            Err(e) => Err(Refusal::storage(e)),
        }
    }
}
