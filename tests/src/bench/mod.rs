//! The benchmark harness of issue 6 (see `docs/BENCHMARKS.md`): real release binaries,
//! seeded data, a real daemon on a temporary directory, several runs per scenario, and
//! a table of medians with min, max and same-run reference ratios.

pub mod data;
pub mod env;
pub mod procfs;
pub mod scenarios;
pub mod stats;
