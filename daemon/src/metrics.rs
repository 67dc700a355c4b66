//! The daemon's counters, kept as it works so that a scrape costs one request
//! whatever the number of jobs: units handled by kind, control and commit times.
//! Job counts by state are read from the registry when asked
//! ([`crate::registry::Registry::job_counts`]). Plain atomics: an increment is
//! all a worker or a control pays.

use jobd_protocol::metrics::{ControlTimes, Histogram, JobCount, UnitCount};
use jobd_protocol::{Action, JobKind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Buckets (seconds) of control times: a stop waits for a commit and a park,
/// bounded at 5 s (`worker_unresponsive`).
const CONTROL_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) of batch commits.
const COMMIT_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const ACTIONS: [Action; 3] = [Action::Stop, Action::Start, Action::Terminate];

pub struct Metrics {
    /// By kind: applied, rejected.
    units: [[AtomicU64; 2]; 3],
    /// By action, in [`ACTIONS`] order.
    controls: [Timings; 3],
    commits: Timings,
}

fn kind_index(kind: JobKind) -> usize {
    match kind {
        JobKind::BaselineCsv => 0,
        JobKind::BulkTeam => 1,
        JobKind::CreateExport => 2,
    }
}

fn action_index(action: Action) -> usize {
    match action {
        Action::Stop => 0,
        Action::Start => 1,
        Action::Terminate => 2,
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            units: Default::default(),
            controls: [
                Timings::new(CONTROL_BOUNDS),
                Timings::new(CONTROL_BOUNDS),
                Timings::new(CONTROL_BOUNDS),
            ],
            commits: Timings::new(COMMIT_BOUNDS),
        })
    }

    /// Units of a job of `kind` committed as applied and as row errors.
    pub fn units(&self, kind: JobKind, applied: u64, rejected: u64) {
        let [a, r] = &self.units[kind_index(kind)];
        if applied > 0 {
            a.fetch_add(applied, Relaxed);
        }
        if rejected > 0 {
            r.fetch_add(rejected, Relaxed);
        }
    }

    /// A control request answered after `took`.
    pub fn control(&self, action: Action, took: Duration) {
        self.controls[action_index(action)].observe(took);
    }

    /// A batch commit that took `took`.
    pub fn commit(&self, took: Duration) {
        self.commits.observe(took);
    }

    /// Everything, with the job counts given.
    pub fn snapshot(&self, jobs: Vec<JobCount>) -> jobd_protocol::Metrics {
        jobd_protocol::Metrics {
            jobs,
            units: JobKind::all()
                .into_iter()
                .map(|kind| {
                    let [a, r] = &self.units[kind_index(kind)];
                    UnitCount {
                        kind,
                        applied: a.load(Relaxed),
                        rejected: r.load(Relaxed),
                    }
                })
                .collect(),
            controls: ACTIONS
                .into_iter()
                .map(|action| ControlTimes {
                    action,
                    seconds: self.controls[action_index(action)].snapshot(),
                })
                .collect(),
            commits: self.commits.snapshot(),
        }
    }
}

/// A histogram of durations with fixed buckets.
struct Timings {
    bounds: &'static [f64],
    /// One per bound, then one for what is above every bound.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Timings {
    fn new(bounds: &'static [f64]) -> Timings {
        Timings {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_sums() {
        let m = Metrics::new();
        m.commit(Duration::from_micros(100));
        m.commit(Duration::from_millis(3));
        m.commit(Duration::from_secs(60));
        m.control(Action::Stop, Duration::from_millis(20));
        m.units(JobKind::BulkTeam, 5, 2);
        m.units(JobKind::BulkTeam, 1, 0);
        let s = m.snapshot(Vec::new());
        assert_eq!(s.commits.count(), 3);
        assert_eq!(s.commits.counts[0], 1, "100 µs is in the first bucket");
        assert_eq!(s.commits.counts[3], 1, "3 ms is in (2.5 ms, 5 ms]");
        assert_eq!(*s.commits.counts.last().expect("+Inf"), 1);
        assert!((s.commits.sum - 60.0031).abs() < 1e-6, "{}", s.commits.sum);
        let stop = &s.controls[0];
        assert_eq!((stop.action, stop.seconds.count()), (Action::Stop, 1));
        assert_eq!(s.controls[1].seconds.count(), 0);
        let team = s.units.iter().find(|u| u.kind == JobKind::BulkTeam);
        assert_eq!(team.map(|u| (u.applied, u.rejected)), Some((6, 2)));
    }
}
