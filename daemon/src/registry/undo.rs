//! `revert` (and its dry run) and the dry run of `terminate`.
//!
//! A revert undoes a finished upload or bulk-team job's effects in one store
//! transaction that also moves it from completed or failed to `reverted`: the
//! state check is part of the change, so a revert never races another revert, a
//! prune, or (on a shared store) another node. A dry run reads what the undo
//! would remove and changes nothing.

use super::control::finished;
use super::{blocking, not_found, Caller, Refusal, Registry};
use crate::dates;
use crate::store::{now_ms, Effects, StoreError};
use jobd_protocol::job::UNDO_NAMES;
use jobd_protocol::{ErrorCode, JobInfo, JobKind, JobState, UndoSummary};
use std::sync::Arc;

/// What a revert request got.
#[derive(Debug)]
pub enum Reverted {
    /// Done: the job, now `reverted`.
    Done(JobInfo),
    /// A dry run: what it would undo.
    Preview(UndoSummary),
}

/// The states a revert starts from.
const REVERTIBLE: [JobState; 2] = [JobState::Completed, JobState::Failed];

impl Registry {
    /// Reverts the job `id` (or, with `dry_run`, says what that would undo).
    /// Serialized with the job's controls, answered once committed.
    pub async fn revert(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        dry_run: bool,
    ) -> Result<Reverted, Refusal> {
        let gate = self.gate(caller, id).await?;
        let result = {
            let _serial = gate.lock().await;
            self.revert_serialized(id, dry_run).await
        };
        self.ungate(id, gate);
        result
    }

    async fn revert_serialized(
        self: &Arc<Self>,
        id: &str,
        dry_run: bool,
    ) -> Result<Reverted, Refusal> {
        // A second pass only after the store had the job in another state than
        // the map showed (changed on another node): the map is fresh then.
        for _ in 0..2 {
            let (seq, info) = self.entry(id)?;
            revertible(&info)?;
            if dry_run {
                return Ok(Reverted::Preview(self.summary(seq, info, false).await?));
            }
            let store = Arc::clone(&self.store);
            let at = now_ms();
            match blocking(move || Ok(store.revert(seq, &REVERTIBLE, at))).await? {
                Ok(true) => return Ok(Reverted::Done(self.mark_reverted(id, info, at))),
                Ok(false) => self.refresh(id).await?,
                Err(e) if e.is_gone() => return Err(self.gone(id, seq)),
                Err(e) => return Err(Refusal::storage(e)),
            }
        }
        let (_, info) = self.entry(id)?;
        revertible(&info)?;
        Err(Refusal::new(
            ErrorCode::Internal,
            format!("job {id} changed state during the revert; try again"),
        ))
    }

    /// What a terminate of the unfinished job `id` would roll back now.
    pub async fn preview_terminate(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<UndoSummary, Refusal> {
        let (seq, info) = self.get(caller, id).await?;
        if info.state.is_finished() {
            return Err(finished(id, info.state));
        }
        self.summary(seq, info, true).await
    }

    /// The job as the map has it now.
    fn entry(&self, id: &str) -> Result<(i64, JobInfo), Refusal> {
        let st = self.lock();
        st.jobs
            .get(id)
            .map(|e| (e.seq, e.info.clone()))
            .ok_or_else(|| not_found(id))
    }

    /// Shows the job reverted `at`, as the store has it now.
    fn mark_reverted(&self, id: &str, mut info: JobInfo, at: u64) -> JobInfo {
        let mut st = self.lock();
        match st.jobs.get_mut(id) {
            Some(e) => {
                e.info.state = JobState::Reverted;
                e.info.updated_at = at;
                e.publish(&self.feed);
                e.info.clone()
            }
            // Pruned right after the revert committed.
            None => {
                info.state = JobState::Reverted;
                info.updated_at = at;
                info
            }
        }
    }

    /// The job is not in the store any more (pruned): forget it here too.
    fn gone(&self, id: &str, seq: i64) -> Refusal {
        let mut st = self.lock();
        if st
            .jobs
            .get(id)
            .is_some_and(|e| e.seq == seq && e.worker.is_none())
        {
            st.jobs.remove(id);
        }
        not_found(id)
    }

    /// Reads what undoing the job would remove; an export's output counts only
    /// for a terminate (a revert never touches exports).
    async fn summary(
        &self,
        seq: i64,
        job: JobInfo,
        with_output: bool,
    ) -> Result<UndoSummary, Refusal> {
        let store = Arc::clone(&self.store);
        let effects = blocking(move || Ok(store.effects(seq, UNDO_NAMES))).await?;
        let e: Effects = match effects {
            Ok(e) => e,
            Err(StoreError::Gone(_)) => return Err(self.gone(&job.id, seq)),
            Err(e) => return Err(Refusal::storage(e)),
        };
        Ok(UndoSummary {
            job,
            records: e.records,
            first_date: e.first_day.map(dates::format),
            last_date: e.last_day.map(dates::format),
            teams: e.teams,
            team_names: e.team_names,
            output_bytes: if with_output { e.output_bytes } else { 0 },
        })
    }
}

/// Why the job cannot be reverted, if it cannot.
fn revertible(info: &JobInfo) -> Result<(), Refusal> {
    let id = &info.id;
    if info.kind == JobKind::CreateExport {
        return Err(Refusal::new(
            ErrorCode::NotRevertible,
            format!(
                "job {id} is an export: it wrote a file, no records or teams, so there is nothing to revert"
            ),
        ));
    }
    match info.state {
        JobState::Completed | JobState::Failed => Ok(()),
        JobState::Queued | JobState::Running | JobState::Paused => Err(Refusal::new(
            ErrorCode::JobNotFinished,
            format!(
                "job {id} is {}: revert undoes finished jobs; terminate rolls back one that has not finished",
                info.state
            ),
        )),
        JobState::Reverted => Err(Refusal::new(
            ErrorCode::AlreadyReverted,
            format!("job {id} was already reverted"),
        )),
        JobState::Terminated => Err(Refusal::new(
            ErrorCode::NotRevertible,
            format!("job {id} was terminated: everything it wrote was rolled back then"),
        )),
    }
}
