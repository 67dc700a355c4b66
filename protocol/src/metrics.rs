//! The daemon's own counters, as `Request::Metrics` returns them: plain numbers,
//! so that any client can render them (jobd-http and `jobctl metrics` write the
//! Prometheus text format from them).

use crate::job::{Action, JobKind, JobState};
use serde::{Deserialize, Serialize};

/// A snapshot of the daemon's counters. Counters count since the daemon started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Jobs known to the daemon (every owner's) by kind and state, now. Every
    /// pair of kind and state is listed, zeros included.
    pub jobs: Vec<JobCount>,
    /// Units handled, by kind.
    pub units: Vec<UnitCount>,
    /// Time from a control request to its answer, by action.
    pub controls: Vec<ControlTimes>,
    /// Time a worker's batch commit takes (effects, counts and cursor in one
    /// transaction).
    pub commits: Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobCount {
    pub kind: JobKind,
    pub state: JobState,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UnitCount {
    pub kind: JobKind,
    /// Units committed as applied.
    pub applied: u64,
    /// Units committed as row errors.
    pub rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlTimes {
    pub action: Action,
    pub seconds: Histogram,
}

/// Observations in buckets: `counts[i]` observations were at most `bounds[i]`
/// seconds and above the bound before it; the last count (one more than there are
/// bounds) is of those above every bound. Counts are not cumulative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}
