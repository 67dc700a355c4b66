//! Forgetting finished jobs: `prune` on request, and `--retention` by itself.
//!
//! The map names the candidates; a prune forgets them in batches of [`BATCH`]
//! jobs, one short store transaction each over the seq range of its candidates
//! (bounded work, whatever the store's planner thinks of the table),
//! so that controls and commits of running jobs wait at most for one batch (on
//! SQLite writers queue first-in first-out, so a waiting commit goes before the
//! next batch). After each batch it rests as long as the batch took: a worker
//! parking for a stop writes twice (its last batch, then its state), and the
//! second write then finds the store free instead of behind the next batch; the
//! prune also leaves half of its core (on PostgreSQL, of the server backend
//! deleting for it) to the rest. Each batch is taken out of the
//! map as soon as it has committed; on a shared store the other nodes hear of
//! the deletions and do the same.

use super::{blocking, Refusal, Registry};
use crate::store::{now_ms, Forgotten, PruneQuery};
use jobd_protocol::{ErrorCode, JobState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs forgotten per store transaction: a few milliseconds of work on SQLite.
const BATCH: usize = 200;

/// The longest rest between two batches.
const MAX_REST: Duration = Duration::from_millis(20);

/// How often retention looks at the jobs at least, and at most.
const RETENTION_MAX_WAIT: Duration = Duration::from_secs(60);
const RETENTION_MIN_WAIT: Duration = Duration::from_secs(1);

/// Which jobs a prune forgets.
#[derive(Debug, Clone)]
pub struct Pruning {
    /// Jobs that ended at least this long ago.
    pub older_than: Duration,
    /// Final states; empty means all of them.
    pub states: Vec<JobState>,
    /// Only this user's jobs (by name), or every user's.
    pub owner: Option<String>,
}

impl Registry {
    /// Forgets the finished jobs `p` selects: their status, row errors and any
    /// files left; their effects stay. Returns how many.
    pub async fn prune(self: &Arc<Self>, p: &Pruning) -> Result<u64, Refusal> {
        let states = match p.states.is_empty() {
            true => JobState::finished().to_vec(),
            false => p.states.clone(),
        };
        if let Some(s) = states.iter().find(|s| !s.is_finished()) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("only finished jobs can be pruned, not {s} ones"),
            ));
        }
        let older_than = u64::try_from(p.older_than.as_millis()).unwrap_or(u64::MAX);
        let ended_before = now_ms().saturating_sub(older_than);
        let candidates = self.prune_candidates(&states, ended_before, p.owner.as_deref());
        let states = Arc::new(states);
        let mut total = 0u64;
        for chunk in candidates.chunks(BATCH) {
            if let (Some(first), Some(&through)) = (chunk.first(), chunk.last()) {
                let range = (first - 1, through);
                total += self
                    .prune_range(&states, ended_before, &p.owner, range)
                    .await?;
            }
        }
        if total > 0 {
            self.shrink_map();
        }
        Ok(total)
    }

    /// Forgets what the store finds to forget among the jobs with seqs in
    /// `(after, through]`, a batch at a time. Returns how many.
    async fn prune_range(
        self: &Arc<Self>,
        states: &Arc<Vec<JobState>>,
        ended_before: u64,
        owner: &Option<String>,
        (mut after, through): (i64, i64),
    ) -> Result<u64, Refusal> {
        let mut total = 0u64;
        loop {
            let store = Arc::clone(&self.store);
            let (states, owner) = (Arc::clone(states), owner.clone());
            let started = Instant::now();
            let gone = blocking(move || {
                store
                    .prune(&PruneQuery {
                        states: &states,
                        ended_before,
                        owner: owner.as_deref(),
                        after,
                        through,
                        limit: BATCH,
                    })
                    .map_err(Refusal::storage)
            })
            .await?;
            let Some(last) = gone.last() else {
                return Ok(total);
            };
            after = last.seq;
            total += gone.len() as u64;
            self.forget_pruned(&gone);
            tokio::time::sleep(started.elapsed().min(MAX_REST)).await;
            // Fewer than asked: nothing more in this range.
            if gone.len() < BATCH {
                return Ok(total);
            }
        }
    }

    /// The seqs, in order, of the jobs the map says a prune would forget. The
    /// store checks each again; what the map does not know yet (a job another
    /// node just finished) waits for the next prune.
    fn prune_candidates(
        &self,
        states: &[JobState],
        ended_before: u64,
        owner: Option<&str>,
    ) -> Vec<i64> {
        let mut seqs: Vec<i64> = {
            let st = self.lock();
            st.jobs
                .values()
                .filter(|e| {
                    states.contains(&e.info.state)
                        && e.info.updated_at <= ended_before
                        && owner.is_none_or(|o| e.info.owner == o)
                })
                .map(|e| e.seq)
                .collect()
        };
        seqs.sort_unstable();
        seqs
    }

    /// Takes pruned jobs out of the map.
    fn forget_pruned(&self, gone: &[Forgotten]) {
        let mut st = self.lock();
        for f in gone {
            match st.jobs.get(&f.id) {
                Some(e) if e.seq == f.seq && e.worker.is_none() => {
                    st.jobs.remove(&f.id);
                }
                // Its worker committed the end and has not exited yet: the
                // entry goes once it has (it holds the worker's slot).
                Some(e) if e.seq == f.seq => {
                    st.pruned_with_worker.insert(f.id.clone());
                }
                // The store's own announcement of the deletion came first.
                _ => continue,
            }
            // Its announcement, when it comes, has nothing left to do.
            if self.shared {
                st.pruned_here.insert(f.seq);
            }
        }
    }

    /// Gives back the map's room after a big prune.
    fn shrink_map(&self) {
        let mut st = self.lock();
        if st.jobs.capacity() > 4 * st.jobs.len() + 1024 {
            st.jobs.shrink_to_fit();
        }
    }

    /// When the first finished job becomes older than `keep`, in unix
    /// milliseconds; `None` while no job has finished.
    fn next_due(&self, keep: Duration) -> Option<u64> {
        let keep = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let st = self.lock();
        st.jobs
            .values()
            .filter(|e| e.info.state.is_finished() && e.worker.is_none())
            .map(|e| e.info.updated_at.saturating_add(keep))
            .min()
    }

    /// `--retention`: forgets every user's finished jobs once they ended `keep`
    /// ago — at start, then whenever one becomes due, looking at least every
    /// `keep` (between a second and a minute) for jobs that ended since. While
    /// nothing is due it only reads the map.
    pub fn start_retention(self: &Arc<Self>, keep: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let pruning = Pruning {
                older_than: keep,
                states: Vec::new(),
                owner: None,
            };
            loop {
                let Some(reg) = me.upgrade() else {
                    return;
                };
                if reg.lock().shutting_down {
                    return;
                }
                if reg.next_due(keep).is_some_and(|due| due <= now_ms()) {
                    match reg.prune(&pruning).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            jobs = n,
                            retention = %jobd_protocol::duration::format(keep),
                            "pruned finished jobs past the retention"
                        ),
                        Err(e) => tracing::warn!(error = %e.message, "retention: cannot prune"),
                    }
                }
                // A job that ends later is due `keep` after: looking again
                // within `keep` (at least every minute) finds it in time.
                let longest = keep.clamp(RETENTION_MIN_WAIT, RETENTION_MAX_WAIT);
                let wait = match reg.next_due(keep) {
                    Some(due) => Duration::from_millis(due.saturating_sub(now_ms())),
                    None => longest,
                };
                drop(reg);
                tokio::time::sleep(wait.clamp(RETENTION_MIN_WAIT, longest)).await;
            }
        });
    }
}
