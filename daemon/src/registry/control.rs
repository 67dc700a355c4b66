//! `stop`, `start` and `terminate`: each answers once its effect is committed.
//!
//! A running job is asked to park through its worker's control line — or, when
//! another node runs it, through the store (which tells that node) — and the
//! answer waits until the job is seen parked. A job no worker holds is changed in
//! the store directly; on a shared store the change is conditional on the state
//! the mirror showed, and a job that changed meanwhile is looked at again.

use super::{blocking, lookup, not_found, Caller, Refusal, Registry};
use crate::store::{Expect, StoredState};
use crate::worker::Control;
use jobd_protocol::{Action, ErrorCode, JobInfo, JobState};
use std::sync::Arc;
use std::time::Duration;

/// How long `stop` and `terminate` wait for a running worker to park.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

impl Registry {
    /// Applies `action` to the job and answers once it has taken effect.
    pub async fn control(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        action: Action,
    ) -> Result<JobInfo, Refusal> {
        let gate = self.gate(caller, id).await?;
        let result = {
            let _serial = gate.lock().await;
            self.control_serialized(id, action).await
        };
        self.ungate(id, gate);
        result
    }

    /// The lock that serializes changes of the job `id` (controls, reverts),
    /// once `caller` may make them.
    pub(super) async fn gate(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<()>>, Refusal> {
        self.find(id).await;
        let mut st = self.lock();
        lookup(&st, caller, id)?;
        Ok(Arc::clone(
            st.controlling.entry(id.to_string()).or_default(),
        ))
    }

    /// Drops the gate of `id` when nobody else waits on it.
    pub(super) fn ungate(&self, id: &str, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut st = self.lock();
        if Arc::strong_count(&gate) == 2 {
            st.controlling.remove(id);
        }
    }

    async fn control_serialized(
        self: &Arc<Self>,
        id: &str,
        action: Action,
    ) -> Result<JobInfo, Refusal> {
        if self.shared {
            // Decide on the store's state, not on a mirror that may not have
            // seen another node's change yet (a stop there, then a start here).
            // Unreachable, the store fails the control below anyway.
            if let Ok(false) = self.reload(id).await {
                self.await_worker_gone(id).await;
            }
        }
        // Loops only when the job changed state under our feet (started running,
        // or, on a shared store, was changed by another node).
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
        let (state, seq, local) = {
            let st = self.lock();
            match st.jobs.get(id) {
                Some(e) => (e.info.state, e.seq, e.worker.is_some()),
                None => return Some(Err(not_found(id))),
            }
        };
        if state.is_finished() {
            return Some(Err(finished(id, state)));
        }
        if self.shared {
            return self.control_shared(id, seq, action, state, local).await;
        }
        Some(match (action, state) {
            (Action::Stop, JobState::Paused)
            | (Action::Start, JobState::Queued | JobState::Running) => self.info(id),
            (Action::Stop | Action::Terminate, JobState::Running) => {
                self.control_worker(id, action).await
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
                self.terminate_idle(id, seq, state).await?
            }
            (_, s) => Err(finished(id, s)),
        })
    }

    /// A control on a shared store, where any node may change the job: every
    /// change is conditional on the state seen, and a miss looks again.
    async fn control_shared(
        self: &Arc<Self>,
        id: &str,
        seq: i64,
        action: Action,
        state: JobState,
        local: bool,
    ) -> Option<Result<JobInfo, Refusal>> {
        let moved = |from, to| {
            let store = Arc::clone(&self.store);
            blocking(move || store.transition(seq, from, to).map_err(Refusal::storage))
        };
        Some(match (action, state) {
            (Action::Stop, JobState::Paused)
            | (Action::Start, JobState::Queued | JobState::Running) => self.info(id),
            (Action::Stop | Action::Terminate, JobState::Running) if local => {
                self.control_worker(id, action).await
            }
            (Action::Stop | Action::Terminate, JobState::Running) => {
                self.control_remote(id, seq, action).await?
            }
            (Action::Stop, JobState::Queued) => {
                match moved(JobState::Queued, JobState::Paused).await {
                    Ok(true) => self.set_idle_state(id, JobState::Paused),
                    Ok(false) => return self.refresh(id).await.err().map(Err),
                    Err(e) => Err(e),
                }
            }
            (Action::Start, JobState::Paused) => {
                match moved(JobState::Paused, JobState::Queued).await {
                    Ok(true) => {
                        let info = self.set_idle_state(id, JobState::Queued);
                        self.claim_pass().await;
                        info
                    }
                    Ok(false) => return self.refresh(id).await.err().map(Err),
                    Err(e) => Err(e),
                }
            }
            (Action::Terminate, JobState::Queued | JobState::Paused) => {
                self.terminate_idle(id, seq, state).await?
            }
            (_, s) => Err(finished(id, s)),
        })
    }

    /// Rolls back a job no worker holds, if it is still `state`; `None` when it
    /// was not (looked at again).
    async fn terminate_idle(
        self: &Arc<Self>,
        id: &str,
        seq: i64,
        state: JobState,
    ) -> Option<Result<JobInfo, Refusal>> {
        let store = Arc::clone(&self.store);
        let undone = blocking(move || {
            store
                .terminate(seq, Expect::States(&[state]))
                .map_err(Refusal::storage)
        })
        .await;
        match undone {
            Ok(true) => Some(self.set_idle_state(id, JobState::Terminated)),
            Ok(false) => self.refresh(id).await.err().map(Err),
            Err(e) => Some(Err(e)),
        }
    }

    /// The store no longer has the job running here, but this node's worker may
    /// not have finished leaving it (another node that asked for the stop may
    /// answer first): its exit settles what this node shows, so wait for it.
    async fn await_worker_gone(&self, id: &str) {
        let mut rx = {
            let mut st = self.lock();
            match st.jobs.get_mut(id) {
                Some(e) if e.worker.is_some() => super::subscribe_entry(e),
                _ => return,
            }
        };
        let me = self.node.as_str();
        let gone = rx.wait_for(|i| i.state != JobState::Running || i.node.as_deref() != Some(me));
        if tokio::time::timeout(CONTROL_TIMEOUT, gone).await.is_err() {
            tracing::warn!(job = %id, "this node's worker has not let go of a job the store shows elsewhere");
        }
    }

    /// Sends a control to this node's worker of the job and waits until it has
    /// parked or ended.
    async fn control_worker(&self, id: &str, action: Action) -> Result<JobInfo, Refusal> {
        // A worker parks only once the store has recorded it: while the store is
        // out of reach, a control would only wait out its time.
        if !self.store.is_available() {
            return Err(unavailable(id));
        }
        let control = match action {
            Action::Stop => Control::Pause,
            _ => Control::Terminate,
        };
        let rx = {
            let mut st = self.lock();
            let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
            let rx = super::subscribe_entry(e);
            if let Some(w) = &e.worker {
                // A worker that already ended has dropped its receiver; the state
                // change it made is what we wait for below.
                w.send(control);
            }
            rx
        };
        self.await_parked(id, action, rx).await
    }

    /// Asks the node running the job (through the store) to park it, and waits
    /// until this node hears it did. `None` when the job was no longer running.
    async fn control_remote(
        self: &Arc<Self>,
        id: &str,
        seq: i64,
        action: Action,
    ) -> Option<Result<JobInfo, Refusal>> {
        if !self.store.is_available() {
            return Some(Err(unavailable(id)));
        }
        let rx = {
            let mut st = self.lock();
            match st.jobs.get_mut(id) {
                Some(e) => super::subscribe_entry(e),
                None => return Some(Err(not_found(id))),
            }
        };
        let store = Arc::clone(&self.store);
        let asked = blocking(move || match store.cluster() {
            Some(c) => c.request_control(seq, action).map_err(Refusal::storage),
            None => Ok(false),
        })
        .await;
        match asked {
            Ok(true) => Some(self.await_parked(id, action, rx).await),
            Ok(false) => self.refresh(id).await.err().map(Err),
            Err(e) => Some(Err(e)),
        }
    }

    /// Waits until the job has left `running` (as the worker or the store's
    /// events report it), at most [`CONTROL_TIMEOUT`].
    async fn await_parked(
        &self,
        id: &str,
        action: Action,
        mut rx: tokio::sync::watch::Receiver<JobInfo>,
    ) -> Result<JobInfo, Refusal> {
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

    /// Shows a state the store now has, unless a worker of this node took the
    /// job meanwhile (the claimer may have, from the change's own event): then
    /// the worker's state is the newer one.
    fn set_idle_state(&self, id: &str, state: JobState) -> Result<JobInfo, Refusal> {
        let mut st = self.lock();
        let e = st.jobs.get_mut(id).ok_or_else(|| not_found(id))?;
        if e.worker.is_none() {
            e.set_state(state, &self.feed);
        }
        Ok(e.info.clone())
    }

    fn info(&self, id: &str) -> Result<JobInfo, Refusal> {
        let st = self.lock();
        st.jobs
            .get(id)
            .map(|e| e.info.clone())
            .ok_or_else(|| not_found(id))
    }
}

fn unavailable(id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::StorageUnavailable,
        format!("the store cannot be reached, so {id} cannot be controlled now; try again"),
    )
}

pub(super) fn finished(id: &str, state: JobState) -> Refusal {
    Refusal::new(
        ErrorCode::JobFinished,
        format!("job {id} has already ended ({state})"),
    )
}
