//! End-to-end test harness for jobd.
//!
//! Every test starts its own real `jobd` on a fresh temporary socket and state
//! directory ([`Daemon`]) and drives it with the real `jobctl` (and sometimes the
//! protocol crate's [`jobd_protocol::Client`]). Tests that touch the store run on
//! both backends ([`both_stores!`]): the embedded SQLite store and a fresh database
//! of a real PostgreSQL server ([`backend`]). Effects are checked through `jobctl`
//! and, for exact row sets, by reading what the daemon committed ([`store`]). Test data is generated from constant seeds ([`data`]) together with
//! the effects the daemon must produce, computed independently of it.
//!
//! The binaries are built once per test process (`cargo build -p jobd -p jobd-cli`
//! into the same target directory and profile as the test itself), so
//! `cargo test -p jobd-tests` alone always tests fresh binaries. Set
//! `JOBD_TESTS_NO_BUILD=1` to skip that build, or `JOBD_BIN_DIR=DIR` to test
//! binaries found in `DIR` instead.
//!
//! Waiting is always polling with a deadline ([`Daemon::wait_until`]), never a
//! sleep that hopes something happened meanwhile.

pub mod backend;
pub mod bins;
pub mod browser;
pub mod checks;
pub mod crash;
pub mod daemon;
pub mod data;
pub mod http;
pub mod nodes;
pub mod pgcluster;
pub mod service;
pub mod store;

pub use backend::Backend;
pub use bins::{bins, Bins};
pub use checks::{
    assert_baseline_exact, assert_bytes_eq, assert_counts, assert_no_effects, assert_teams_exact,
    wait_uploads_gone,
};
pub use daemon::{bare_id, is_finished, run_with_timeout, Daemon, Out};
pub use data::{
    csv_field, expected_export, gen_baseline, gen_teams, BaselineFile, BaselineRecord, Date, Rng,
    TeamFile, TeamRow,
};

use std::time::Duration;

/// Default deadline for a job to reach a state in a test.
/// The keys of a job as `jobctl status --json` (and `GET /jobs/{id}`) show it.
pub const STATUS_KEYS: &[&str] = &[
    "id",
    "kind",
    "state",
    "owner",
    "processed",
    "failed",
    "total",
    "created_at",
    "updated_at",
    "error",
    "rate",
    "node",
];

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Interval between two polls of a job's status.
pub const POLL: Duration = Duration::from_millis(20);

/// How long a paused job is watched to check that it makes no progress.
pub const HOLD: Duration = Duration::from_millis(1000);

/// Rows of a slow (rate-limited) upload: slow enough to be caught mid-run, short
/// enough to finish in about [`SLOW_ROWS`] / [`SLOW_RATE`] = 4 s.
pub const SLOW_ROWS: usize = 160;

/// Rate (units per second) of the slow jobs.
pub const SLOW_RATE: f64 = 40.0;

/// Units a slow job must have done before a test stops, terminates or kills it.
pub const MID_RUN: u64 = 3;

/// A slow baseline file: [`SLOW_ROWS`] rows under `date,name,value`.
pub fn slow_baseline(seed: u64) -> BaselineFile {
    gen_baseline(
        seed,
        &["date", "name", "value"],
        SLOW_ROWS,
        Date::new(2024, 5, 1),
        30,
    )
}

/// The user name of the test process, as the daemon reports owners and builds ids.
pub fn current_user() -> String {
    let uid = nix::unistd::Uid::current();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The uid of the test process (owner of every job it submits).
pub fn current_uid() -> u32 {
    nix::unistd::Uid::current().as_raw()
}

/// Splits a job id `<user>-<kind>-<unix>-<n>` into its parts (the user may contain `-`).
pub fn parse_job_id(id: &str) -> Option<(String, String, u64, u64)> {
    let mut parts = id.rsplitn(4, '-');
    let n = parts.next()?.parse().ok()?;
    let secs = parts.next()?.parse().ok()?;
    let kind = parts.next()?.to_string();
    let user = parts.next()?.to_string();
    Some((user, kind, secs, n))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
