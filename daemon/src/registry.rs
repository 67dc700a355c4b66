//! The registry: every job by id, who owns it, its live state, the worker of each
//! running job, and who is watching. It is the only place that changes a job's state.
//!
//! One std mutex guards the maps; it is held only for bookkeeping, never across
//! I/O or an `.await`. Store writes run on blocking threads and are committed before
//! the caller is answered.
//!
//! On a store shared by several nodes the map is a mirror of every node's jobs,
//! kept current by the store's change events, and this node claims its work from
//! the store instead of a local queue (see `shared`). Controls are in `control`.

mod control;
mod prune;
mod shared;
mod undo;

pub use prune::Pruning;
pub use undo::Reverted;

use crate::feed::Feed;
use crate::kinds;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::store::{
    now_ms, Claim, JobRow, NewJob, Progress, SharedStore, StoreError, StoredState, Upload,
};
use crate::trim::Activity;
use crate::worker::{Control, ControlLine, Exit, Worker};
use jobd_protocol::{ErrorCode, JobInfo, JobKind, JobState, NodeInfo};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Ids tried for one submit when the store finds each taken (by another node).
const ID_ATTEMPTS: usize = 16;

/// A request the registry refuses, with the code clients see.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// A store error as clients see it: `storage_unavailable` while the store
    /// cannot be reached (try again later), else `storage_error`.
    pub fn storage(e: StoreError) -> Refusal {
        let code = if e.is_unavailable() {
            ErrorCode::StorageUnavailable
        } else {
            ErrorCode::StorageError
        };
        Refusal::new(code, e.to_string())
    }
}

/// Who is asking, from the socket's peer credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub user: String,
}

impl Caller {
    /// By user name, not uid: one person is the same user on every node.
    pub fn may_see(&self, info: &JobInfo) -> bool {
        self.uid == 0 || self.user == info.owner
    }
}

/// A job to create.
pub struct Submission {
    pub kind: JobKind,
    pub rate: Option<f64>,
    pub input: SubmitInput,
    /// Units in all, when the submitter counted them (an upload's data rows).
    pub total: Option<u64>,
}

/// What a new job reads.
pub enum SubmitInput {
    /// An upload received in full, not yet durable: the job and its upload are
    /// created together.
    Upload(Box<dyn Upload>),
    /// An export's range, as JSON.
    Range(String),
}

pub struct Limits {
    pub max_running: usize,
    pub max_row_errors: u64,
    /// This node's name: what running jobs show as their node.
    pub node: String,
}

pub struct Registry {
    state: Mutex<State>,
    store: SharedStore,
    max_row_errors: u64,
    /// Signalled whenever a worker ends, for shutdown.
    worker_ended: Notify,
    /// Running workers count as activity (see [`crate::trim`]).
    activity: Arc<Activity>,
    /// Every job change, for `Events` subscribers.
    feed: Feed,
    metrics: Arc<Metrics>,
    node: String,
    started_at: u64,
    /// The store is shared with other nodes: work is claimed from it.
    shared: bool,
    /// Wakes the claimer (shared store): a slot freed, or a job became queued.
    claim_wake: Notify,
    /// Tells the claimer that another node took a job: a lease to watch.
    lease_watch: Notify,
    /// The claimer task, until shutdown waits for it.
    claimer: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    /// Entries are boxed: the table then holds a key and a pointer per slot, and
    /// its spare capacity (up to half of it after a resize) costs 8 bytes a slot
    /// instead of a whole entry — most of a paused job's memory otherwise.
    jobs: HashMap<String, Box<Entry>>,
    /// Ids handed out whose job is not in `jobs` yet.
    reserved: HashSet<String>,
    scheduler: Scheduler,
    /// Jobs with a control in progress: controls on one job are serialized.
    controlling: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Seqs this node pruned (shared store) whose deletion events have not come
    /// back yet: those events need no pass over the map.
    pruned_here: HashSet<i64>,
    /// Jobs a prune forgot in the moment between their worker's last commit and
    /// its exit: they leave the map once the worker has.
    pruned_with_worker: HashSet<String>,
    shutting_down: bool,
}

struct Entry {
    seq: i64,
    info: JobInfo,
    /// Present while a worker runs the job.
    worker: Option<ControlLine>,
    /// Present while someone watches the job; created on demand.
    watch: Option<watch::Sender<JobInfo>>,
}

impl Entry {
    fn publish(&mut self, feed: &Feed) {
        feed.publish(&self.info);
        if let Some(tx) = &self.watch {
            if tx.receiver_count() == 0 {
                self.watch = None;
            } else {
                tx.send_replace(self.info.clone());
            }
        }
    }

    fn set_state(&mut self, state: JobState, feed: &Feed) {
        self.info.state = state;
        self.info.updated_at = now_ms();
        self.publish(feed);
    }
}

/// A stored state as clients see it: a terminate still rolling back is running.
fn public(state: StoredState) -> JobState {
    match state {
        StoredState::Public(s) => s,
        StoredState::Terminating => JobState::Running,
    }
}

fn info_of(row: &JobRow, state: JobState) -> JobInfo {
    JobInfo {
        id: row.id.clone(),
        kind: row.kind,
        state,
        owner: row.owner.clone(),
        owner_uid: row.owner_uid,
        processed: row.processed,
        failed: row.failed,
        total: row.total,
        created_at: row.created_at,
        updated_at: row.updated_at,
        error: row.error.clone(),
        rate: row.rate,
        node: row.node.clone(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("store task failed: {e}")))?
}

impl Registry {
    /// Loads every job from the store (which first finishes what a crash
    /// interrupted); jobs that were queued or running are queued again in creation
    /// order. On a shared store, only this node's running jobs are queued again
    /// (for any node to claim); the others are as their nodes left them.
    pub fn load(store: SharedStore, limits: Limits) -> Result<Arc<Registry>, StoreError> {
        let shared = store.cluster().is_some();
        let rows = match shared {
            true => shared::requeue_mine(&*store)?,
            false => store.recover()?,
        };
        let mut state = State {
            jobs: HashMap::with_capacity(rows.len()),
            reserved: HashSet::new(),
            scheduler: Scheduler::new(limits.max_running),
            controlling: HashMap::new(),
            pruned_here: HashSet::new(),
            pruned_with_worker: HashSet::new(),
            shutting_down: false,
        };
        for row in rows {
            let public = match row.state {
                StoredState::Public(s) if shared => s,
                StoredState::Public(JobState::Running | JobState::Queued) => {
                    state.scheduler.enqueue(row.id.clone());
                    JobState::Queued
                }
                StoredState::Public(s) => s,
                StoredState::Terminating => {
                    return Err(StoreError::Corrupt(format!(
                        "job {} is still terminating after recovery",
                        row.id
                    )))
                }
            };
            let entry = Entry {
                seq: row.seq,
                info: info_of(&row, public),
                worker: None,
                watch: None,
            };
            state.jobs.insert(row.id.clone(), Box::new(entry));
        }
        Ok(Arc::new(Registry {
            state: Mutex::new(state),
            store,
            max_row_errors: limits.max_row_errors,
            worker_ended: Notify::new(),
            activity: Activity::new(),
            feed: Feed::new(),
            metrics: Metrics::new(),
            node: limits.node,
            started_at: now_ms(),
            shared,
            claim_wake: Notify::new(),
            lease_watch: Notify::new(),
            claimer: Mutex::new(None),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// What keeps the daemon busy; connections hold it too.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Creates a job and queues it. The job exists once this returns.
    pub async fn submit(
        self: &Arc<Self>,
        caller: &Caller,
        sub: Submission,
    ) -> Result<JobInfo, Refusal> {
        let created_at = now_ms();
        let first = self.reserve_id(&caller.user, sub.kind, created_at)?;
        let store = Arc::clone(&self.store);
        let me = Arc::clone(self);
        let (owner_uid, owner) = (caller.uid, caller.user.clone());
        let (kind, rate, total) = (sub.kind, sub.rate, sub.total);
        let mut input = sub.input;
        let (id, inserted) = blocking(move || {
            let range = match &input {
                SubmitInput::Range(r) => r.clone(),
                SubmitInput::Upload(_) => String::new(),
            };
            let total = total.or_else(|| kinds::total_at_submit(kind, &range));
            let mut id = first;
            // Ids are drawn without the store: another node may have taken this one.
            for attempt in 1.. {
                let job = NewJob {
                    id: &id,
                    kind,
                    owner_uid,
                    owner: &owner,
                    rate,
                    total,
                    input: &range,
                    created_at,
                };
                let created = match &mut input {
                    SubmitInput::Upload(upload) => upload.create_job(&job),
                    SubmitInput::Range(_) => store.insert_job(&job),
                };
                match created {
                    Err(StoreError::DuplicateId(_)) if attempt < ID_ATTEMPTS => {
                        me.lock().reserved.remove(&id);
                        id = me.reserve_id(&owner, kind, created_at)?;
                    }
                    r => return Ok((id, r)),
                }
            }
            unreachable!("the loop returns")
        })
        .await?;
        let mut st = self.lock();
        st.reserved.remove(&id);
        let row = inserted.map_err(Refusal::storage)?;
        // On a shared store the change event may have brought the job in first.
        if let Some(e) = st.jobs.get(&id) {
            return Ok(e.info.clone());
        }
        let info = info_of(&row, JobState::Queued);
        st.jobs.insert(
            id.clone(),
            Box::new(Entry {
                seq: row.seq,
                info: info.clone(),
                worker: None,
                watch: None,
            }),
        );
        self.feed.publish(&info);
        if !self.shared {
            st.scheduler.enqueue(id);
        }
        self.dispatch(&mut st);
        Ok(info)
    }

    /// Picks a free id and holds it until its job is in the map.
    fn reserve_id(&self, user: &str, kind: JobKind, created_at: u64) -> Result<String, Refusal> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down",
            ));
        }
        let id = allocate_id(&st, user, kind, created_at / 1000);
        st.reserved.insert(id.clone());
        Ok(id)
    }

    /// Starts the jobs queued at load time; on a shared store, starts claiming
    /// work and following every node's changes.
    pub fn start(self: &Arc<Self>) {
        if self.shared {
            shared::start(self);
        }
        let mut st = self.lock();
        self.dispatch(&mut st);
    }

    /// Starts queued jobs while there are free slots (on a shared store, the
    /// claimer does).
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        if st.shutting_down {
            return;
        }
        if self.shared {
            self.claim_wake.notify_one();
            return;
        }
        while let Some(id) = st.scheduler.take_next() {
            if st.jobs.contains_key(&id) {
                self.spawn_worker(st, &id, None);
            } else {
                st.scheduler.release();
            }
        }
    }

    /// Runs the job `id` (its slot taken) on a worker of its own; `claimed` is the
    /// claim already made for it, if any.
    fn spawn_worker(self: &Arc<Self>, st: &mut State, id: &str, claimed: Option<(JobRow, Claim)>) {
        let Some(entry) = st.jobs.get_mut(id) else {
            st.scheduler.release();
            return;
        };
        let (line, rx, interrupt, epoch) = ControlLine::new();
        entry.worker = Some(line);
        entry.info.node = Some(self.node.clone());
        entry.set_state(JobState::Running, &self.feed);
        let reporter = Arc::downgrade(self);
        let report_id = id.to_string();
        let w = Worker {
            store: Arc::clone(&self.store),
            seq: entry.seq,
            controls: rx,
            interrupt,
            epoch,
            max_row_errors: self.max_row_errors,
            claim: std::cell::Cell::new(claimed.as_ref().map(|(_, c)| *c)),
            claimed: std::cell::Cell::new(claimed),
            metrics: Arc::clone(&self.metrics),
            report: Box::new(move |p: Progress| {
                if let Some(reg) = reporter.upgrade() {
                    reg.progress(&report_id, p);
                }
            }),
        };
        let me = Arc::clone(self);
        let busy = self.activity.busy();
        let id = id.to_string();
        tokio::spawn(async move {
            let _busy = busy;
            let exit = match tokio::task::spawn_blocking(move || w.run()).await {
                Ok(exit) => exit,
                Err(e) => Exit::Failed(format!("the worker crashed: {e}")),
            };
            me.worker_exited(&id, exit).await;
        });
    }

    fn progress(&self, id: &str, p: Progress) {
        let mut st = self.lock();
        if let Some(e) = st.jobs.get_mut(id) {
            self.metrics.units(
                e.info.kind,
                p.processed.saturating_sub(e.info.processed),
                p.failed.saturating_sub(e.info.failed),
            );
            e.info.processed = p.processed;
            e.info.failed = p.failed;
            e.info.total = p.total;
            e.info.updated_at = now_ms();
            e.publish(&self.feed);
        }
    }

    async fn worker_exited(self: &Arc<Self>, id: &str, exit: Exit) {
        if let Exit::Failed(msg) = &exit {
            tracing::warn!(job = %id, error = %msg, "job failed");
            self.persist_failure(id, msg).await;
        }
        if self.shared && exit != Exit::Shutdown {
            // Show the job as the store has it (its times are the store's, as
            // every node shows them); from memory only if the store is out of reach.
            self.settle_exit(id, None);
            if self.refresh(id).await.is_err() {
                self.settle_exit(id, Some(exit));
            }
        } else {
            self.settle_exit(id, Some(exit));
        }
        self.worker_ended.notify_waiters();
    }

    /// Frees the worker's slot (if it still holds one) and shows how it ended.
    fn settle_exit(self: &Arc<Self>, id: &str, exit: Option<Exit>) {
        let mut st = self.lock();
        let Some(e) = st.jobs.get_mut(id) else {
            return;
        };
        if e.worker.take().is_some() {
            st.scheduler.release();
        }
        if st.pruned_with_worker.remove(id) {
            st.jobs.remove(id);
            self.dispatch(&mut st);
            return;
        }
        let Some(exit) = exit else {
            self.dispatch(&mut st);
            return;
        };
        if let Some(e) = st.jobs.get_mut(id) {
            if exit != Exit::Shutdown {
                e.info.node = None;
            }
            match exit {
                Exit::Completed => e.set_state(JobState::Completed, &self.feed),
                Exit::Paused => e.set_state(JobState::Paused, &self.feed),
                Exit::Terminated => e.set_state(JobState::Terminated, &self.feed),
                Exit::Failed(msg) => {
                    e.info.error = Some(msg);
                    e.set_state(JobState::Failed, &self.feed);
                }
                Exit::Shutdown => {}
                Exit::Lost => tracing::warn!(job = %id, "the job's worker lost its claim"),
            }
        }
        self.dispatch(&mut st);
    }

    /// A worker that could not even record its failure (store unreachable, panic)
    /// gets one more try from here.
    async fn persist_failure(&self, id: &str, msg: &str) {
        let Some(seq) = self.lock().jobs.get(id).map(|e| e.seq) else {
            return;
        };
        let store = Arc::clone(&self.store);
        let msg = msg.to_string();
        let _ = blocking(move || {
            let row = store.load_job(seq).map_err(Refusal::storage)?;
            if row.state != StoredState::Public(JobState::Failed) {
                store
                    .set_state(seq, StoredState::Public(JobState::Failed), Some(&msg))
                    .map_err(Refusal::storage)?;
            }
            Ok(())
        })
        .await;
    }

    /// The job `id` as `caller` may see it.
    pub async fn get(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<(i64, JobInfo), Refusal> {
        self.find(id).await;
        let st = self.lock();
        lookup(&st, caller, id).map(|e| (e.seq, e.info.clone()))
    }

    /// Every job `caller` may see, in creation order.
    pub fn list(&self, caller: &Caller) -> Vec<JobInfo> {
        let st = self.lock();
        let mut jobs: Vec<(i64, JobInfo)> = st
            .jobs
            .values()
            .filter(|e| caller.may_see(&e.info))
            .map(|e| (e.seq, e.info.clone()))
            .collect();
        jobs.sort_by_key(|(seq, _)| *seq);
        jobs.into_iter().map(|(_, i)| i).collect()
    }

    /// A live view of the job: the receiver sees every later change.
    pub async fn subscribe(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<watch::Receiver<JobInfo>, Refusal> {
        self.find(id).await;
        let mut st = self.lock();
        lookup(&st, caller, id)?;
        let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
        Ok(subscribe_entry(e))
    }

    /// Stops starting jobs, asks every worker to checkpoint, and waits until all
    /// have. On a shared store, this node's jobs are then handed back at once.
    pub async fn shutdown(&self) {
        self.stop_workers().await;
        if self.shared {
            shared::leave(self).await;
        }
    }

    async fn stop_workers(&self) {
        loop {
            let notified = self.worker_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                st.shutting_down = true;
                self.claim_wake.notify_one();
                if st.scheduler.running() == 0 {
                    return;
                }
                for e in st.jobs.values() {
                    if let Some(w) = &e.worker {
                        w.send(Control::Shutdown);
                    }
                }
            }
            notified.await;
        }
    }
}

/// For `Events`, `Metrics` and `Nodes`.
impl Registry {
    /// Every node on the store, or this one alone.
    pub async fn nodes(self: &Arc<Self>) -> Result<Vec<NodeInfo>, Refusal> {
        if self.shared {
            let store = Arc::clone(&self.store);
            return blocking(move || match store.cluster() {
                Some(c) => c.nodes().map_err(Refusal::storage),
                None => Ok(Vec::new()),
            })
            .await;
        }
        let st = self.lock();
        Ok(vec![NodeInfo {
            name: self.node.clone(),
            started_at: self.started_at,
            heartbeat_age_ms: 0,
            running: st.scheduler.running() as u32,
            max_running: st.scheduler.max_running() as u32,
            stopped: st.shutting_down,
        }])
    }

    /// Every job change from now on; the receiver filters what its caller may see.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Jobs by kind and state, every pair listed.
    pub fn job_counts(&self) -> Vec<jobd_protocol::metrics::JobCount> {
        const STATES: [JobState; 7] = JobState::all();
        let mut counts = [[0u64; 7]; 3];
        {
            let st = self.lock();
            for e in st.jobs.values() {
                let k = JobKind::all()
                    .iter()
                    .position(|k| *k == e.info.kind)
                    .unwrap_or(0);
                let s = STATES.iter().position(|s| *s == e.info.state).unwrap_or(0);
                counts[k][s] += 1;
            }
        }
        let mut out = Vec::with_capacity(3 * STATES.len());
        for (k, kind) in JobKind::all().into_iter().enumerate() {
            for (s, state) in STATES.into_iter().enumerate() {
                out.push(jobd_protocol::metrics::JobCount {
                    kind,
                    state,
                    count: counts[k][s],
                });
            }
        }
        out
    }
}

fn subscribe_entry(e: &mut Entry) -> watch::Receiver<JobInfo> {
    match &e.watch {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = watch::channel(e.info.clone());
            e.watch = Some(tx);
            rx
        }
    }
}

fn lookup<'a>(st: &'a State, caller: &Caller, id: &str) -> Result<&'a Entry, Refusal> {
    let e = st.jobs.get(id).ok_or_else(|| not_found(id))?;
    if !caller.may_see(&e.info) {
        return Err(Refusal::new(
            ErrorCode::PermissionDenied,
            format!("job {id} belongs to another user"),
        ));
    }
    Ok(e)
}

fn not_found(id: &str) -> Refusal {
    Refusal::new(ErrorCode::IdDoesntExist, format!("no job with id {id:?}"))
}

/// `<user>-<kind>-<unix seconds>-<n>`: `n` drawn among the numbers still free for
/// this user, kind and second; past 9 999 taken, it grows beyond.
fn allocate_id(st: &State, user: &str, kind: JobKind, secs: u64) -> String {
    let make = |n: u32| format!("{user}-{kind}-{secs}-{n}");
    let free = |id: &String| !st.jobs.contains_key(id) && !st.reserved.contains(id);
    for _ in 0..64 {
        let id = make(fastrand::u32(0..10_000));
        if free(&id) {
            return id;
        }
    }
    (0u32..)
        .map(make)
        .find(free)
        .unwrap_or_else(|| format!("{user}-{kind}-{secs}-{}", u64::MAX))
}
