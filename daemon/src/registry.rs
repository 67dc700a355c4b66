//! The registry: every job by id, who owns it, its live state, the worker of each
//! running job, and who is watching. It is the only place that changes a job's state.
//!
//! One std mutex guards the maps; it is held only for bookkeeping, never across
//! I/O or an `.await`. Store writes run on blocking threads and are committed before
//! the caller is answered.

use crate::feed::Feed;
use crate::kinds;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::store::{
    now_ms, JobRow, NewJob, Progress, SharedStore, StoreError, StoredState, Upload,
};
use crate::trim::Activity;
use crate::worker::{Control, ControlLine, Exit, Worker};
use jobd_protocol::{Action, ErrorCode, JobInfo, JobKind, JobState};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How long `stop` and `terminate` wait for a running worker to park.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub fn may_see(&self, info: &JobInfo) -> bool {
        self.uid == 0 || self.uid == info.owner_uid
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
    /// order.
    pub fn load(store: SharedStore, limits: Limits) -> Result<Arc<Registry>, StoreError> {
        let rows = store.recover()?;
        let mut state = State {
            jobs: HashMap::with_capacity(rows.len()),
            reserved: HashSet::new(),
            scheduler: Scheduler::new(limits.max_running),
            controlling: HashMap::new(),
            shutting_down: false,
        };
        for row in rows {
            let public = match row.state {
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
        let id = {
            let mut st = self.lock();
            if st.shutting_down {
                return Err(Refusal::new(
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down",
                ));
            }
            let id = allocate_id(&st, &caller.user, sub.kind, created_at / 1000);
            st.reserved.insert(id.clone());
            id
        };
        let store = Arc::clone(&self.store);
        let (owner_uid, owner) = (caller.uid, caller.user.clone());
        let (id2, kind, rate, total) = (id.clone(), sub.kind, sub.rate, sub.total);
        let inserted = blocking(move || {
            let range = match &sub.input {
                SubmitInput::Range(r) => r.clone(),
                SubmitInput::Upload(_) => String::new(),
            };
            let job = NewJob {
                id: &id2,
                kind,
                owner_uid,
                owner: &owner,
                rate,
                total: total.or_else(|| kinds::total_at_submit(kind, &range)),
                input: &range,
                created_at,
            };
            match sub.input {
                SubmitInput::Upload(upload) => upload.create_job(&job),
                SubmitInput::Range(_) => store.insert_job(&job),
            }
            .map_err(Refusal::storage)
        })
        .await;
        let mut st = self.lock();
        st.reserved.remove(&id);
        let row = inserted?;
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
        st.scheduler.enqueue(id);
        self.dispatch(&mut st);
        Ok(info)
    }

    /// Starts the jobs queued at load time.
    pub fn start(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch(&mut st);
    }

    /// Starts queued jobs while there are free slots.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        if st.shutting_down {
            return;
        }
        while let Some(id) = st.scheduler.take_next() {
            let Some(entry) = st.jobs.get_mut(&id) else {
                st.scheduler.release();
                continue;
            };
            let (line, rx, interrupt) = ControlLine::new();
            entry.worker = Some(line);
            entry.set_state(JobState::Running, &self.feed);
            let reporter = Arc::downgrade(self);
            let report_id = id.clone();
            let w = Worker {
                store: Arc::clone(&self.store),
                seq: entry.seq,
                controls: rx,
                interrupt,
                max_row_errors: self.max_row_errors,
                claim: std::cell::Cell::new(None),
                metrics: Arc::clone(&self.metrics),
                report: Box::new(move |p: Progress| {
                    if let Some(reg) = reporter.upgrade() {
                        reg.progress(&report_id, p);
                    }
                }),
            };
            let me = Arc::clone(self);
            let busy = self.activity.busy();
            tokio::spawn(async move {
                let _busy = busy;
                let exit = match tokio::task::spawn_blocking(move || w.run()).await {
                    Ok(exit) => exit,
                    Err(e) => Exit::Failed(format!("the worker crashed: {e}")),
                };
                me.worker_exited(&id, exit).await;
            });
        }
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
        let mut st = self.lock();
        st.scheduler.release();
        if let Some(e) = st.jobs.get_mut(id) {
            e.worker = None;
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
        drop(st);
        self.worker_ended.notify_waiters();
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
    pub fn get(&self, caller: &Caller, id: &str) -> Result<(i64, JobInfo), Refusal> {
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
    pub fn subscribe(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<watch::Receiver<JobInfo>, Refusal> {
        let mut st = self.lock();
        lookup(&st, caller, id)?;
        let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
        Ok(subscribe_entry(e))
    }

    /// Applies `action` to the job and answers once it has taken effect.
    pub async fn control(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<JobInfo, Refusal> {
        let gate = {
            let mut st = self.lock();
            lookup(&st, caller, id)?;
            Arc::clone(st.controlling.entry(id.to_string()).or_default())
        };
        let result = {
            let _serial = gate.lock().await;
            self.control_serialized(id, action).await
        };
        let mut st = self.lock();
        if Arc::strong_count(&gate) == 2 {
            st.controlling.remove(id);
        }
        result
    }

    async fn control_serialized(
        self: &Arc<Self>,
        id: &str,
        action: Action,
    ) -> Result<JobInfo, Refusal> {
        // Loops only when a queued job started running under our feet.
        loop {
            if let Some(answer) = self.control_once(id, action).await {
                return answer;
            }
        }
    }

    /// One attempt at a control; `None` means the job changed state meanwhile.
    async fn control_once(
        self: &Arc<Self>,
        id: &str,
        action: Action,
    ) -> Option<Result<JobInfo, Refusal>> {
        let (state, seq) = {
            let st = self.lock();
            match st.jobs.get(id) {
                Some(e) => (e.info.state, e.seq),
                None => return Some(Err(not_found(id))),
            }
        };
        if state.is_finished() {
            return Some(Err(finished(id, state)));
        }
        Some(match (action, state) {
            (Action::Stop, JobState::Paused)
            | (Action::Start, JobState::Queued | JobState::Running) => self.info(id),
            (Action::Stop | Action::Terminate, JobState::Running) => {
                let control = if action == Action::Stop {
                    Control::Pause
                } else {
                    Control::Terminate
                };
                self.control_worker(id, control, action).await
            }
            (Action::Stop, JobState::Queued) => {
                if !self.lock().scheduler.dequeue(id) {
                    return None;
                }
                if let Err(e) = self.persist_state(seq, JobState::Paused).await {
                    let mut st = self.lock();
                    st.scheduler.enqueue(id.to_string());
                    self.dispatch(&mut st);
                    return Some(Err(e));
                }
                self.set_state(id, JobState::Paused)
            }
            (Action::Start, JobState::Paused) => {
                if let Err(e) = self.persist_state(seq, JobState::Queued).await {
                    return Some(Err(e));
                }
                let mut st = self.lock();
                let info = match st.jobs.get_mut(id) {
                    Some(e) => {
                        e.set_state(JobState::Queued, &self.feed);
                        e.info.clone()
                    }
                    None => return Some(Err(not_found(id))),
                };
                st.scheduler.enqueue(id.to_string());
                self.dispatch(&mut st);
                Ok(info)
            }
            (Action::Terminate, JobState::Queued | JobState::Paused) => {
                if !self.lock().scheduler.dequeue(id) && state == JobState::Queued {
                    return None;
                }
                let store = Arc::clone(&self.store);
                let undone = blocking(move || store.terminate(seq).map_err(Refusal::storage)).await;
                undone.and_then(|()| self.set_state(id, JobState::Terminated))
            }
            (_, s) => Err(finished(id, s)),
        })
    }

    /// Sends a control to the running worker and waits until it has parked or ended.
    async fn control_worker(
        &self,
        id: &str,
        control: Control,
        action: Action,
    ) -> Result<JobInfo, Refusal> {
        // A worker parks only once the store has recorded it: while the store is
        // out of reach, a control would only wait out its time.
        if !self.store.is_available() {
            return Err(unavailable(id));
        }
        let mut rx = {
            let mut st = self.lock();
            let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
            let rx = subscribe_entry(e);
            if let Some(w) = &e.worker {
                // A worker that already ended has dropped its receiver; the state
                // change it made is what we wait for below.
                w.send(control);
            }
            rx
        };
        let settled = tokio::time::timeout(
            CONTROL_TIMEOUT,
            rx.wait_for(|i| i.state != JobState::Running && i.state != JobState::Queued),
        )
        .await;
        let info = match settled {
            Ok(Ok(info)) => info.clone(),
            Ok(Err(_)) => return Err(Refusal::new(ErrorCode::Internal, "job vanished")),
            // The control stays with the worker, which obeys once the store is back.
            Err(_) if !self.store.is_available() => {
                return Err(Refusal::new(
                    ErrorCode::StorageUnavailable,
                    format!(
                        "the store could not be reached within {} s: {id} parks once it is back",
                        CONTROL_TIMEOUT.as_secs()
                    ),
                ))
            }
            Err(_) => {
                return Err(Refusal::new(
                    ErrorCode::WorkerUnresponsive,
                    format!(
                        "the worker of {id} did not park within {} s",
                        CONTROL_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        let wanted = if action == Action::Stop {
            JobState::Paused
        } else {
            JobState::Terminated
        };
        if info.state == wanted {
            Ok(info)
        } else {
            Err(finished(id, info.state))
        }
    }

    async fn persist_state(&self, seq: i64, state: JobState) -> Result<(), Refusal> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            store
                .set_state(seq, StoredState::Public(state), None)
                .map_err(Refusal::storage)
        })
        .await
    }

    fn set_state(&self, id: &str, state: JobState) -> Result<JobInfo, Refusal> {
        let mut st = self.lock();
        let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
        e.set_state(state, &self.feed);
        Ok(e.info.clone())
    }

    fn info(&self, id: &str) -> Result<JobInfo, Refusal> {
        let st = self.lock();
        st.jobs
            .get(id)
            .map(|e| e.info.clone())
            .ok_or_else(|| not_found(id))
    }

    /// Stops starting jobs, asks every worker to checkpoint, and waits until all have.
    pub async fn shutdown(&self) {
        loop {
            let notified = self.worker_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                st.shutting_down = true;
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

/// For `Events` and `Metrics`.
impl Registry {
    /// Every job change from now on; the receiver filters what its caller may see.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Jobs by kind and state, every pair listed.
    pub fn job_counts(&self) -> Vec<jobd_protocol::metrics::JobCount> {
        const STATES: [JobState; 6] = [
            JobState::Queued,
            JobState::Running,
            JobState::Paused,
            JobState::Completed,
            JobState::Failed,
            JobState::Terminated,
        ];
        let mut counts = [[0u64; 6]; 3];
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
        let mut out = Vec::with_capacity(18);
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

fn unavailable(id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::StorageUnavailable,
        format!("the store cannot be reached, so {id} cannot be controlled now; try again"),
    )
}

fn not_found(id: &str) -> Refusal {
    Refusal::new(ErrorCode::IdDoesntExist, format!("no job with id {id:?}"))
}

fn finished(id: &str, state: JobState) -> Refusal {
    Refusal::new(
        ErrorCode::JobFinished,
        format!("job {id} has already ended ({state})"),
    )
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
