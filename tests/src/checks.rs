//! Assertions on a job's effects, with messages that say exactly what differs.

use crate::data::{BaselineRecord, TeamRow};
use crate::{current_uid, Daemon, DEADLINE, POLL};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Instant;

/// Asserts `processed`, `failed` and `total` of a status object.
#[track_caller]
pub fn assert_counts(s: &Value, processed: u64, failed: u64, total: Option<u64>) {
    assert_eq!(
        (s["processed"].as_u64(), s["failed"].as_u64()),
        (Some(processed), Some(failed)),
        "processed/failed of {s}"
    );
    match total {
        Some(t) => assert_eq!(s["total"].as_u64(), Some(t), "total of {s}"),
        None => assert!(s["total"].is_null(), "total of {s} should be null"),
    }
}

/// Compares two sorted lists and names what is missing, extra, or doubled.
#[track_caller]
fn assert_same_rows<T: Ord + Debug + Clone>(what: &str, got: &[T], want: &[T]) {
    if got == want {
        return;
    }
    let mut count: BTreeMap<&T, i64> = BTreeMap::new();
    for w in want {
        *count.entry(w).or_default() -= 1;
    }
    for g in got {
        *count.entry(g).or_default() += 1;
    }
    let missing: Vec<_> = count
        .iter()
        .filter(|(_, c)| **c < 0)
        .map(|(k, _)| *k)
        .collect();
    let extra: Vec<_> = count
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(k, _)| *k)
        .collect();
    panic!(
        "{what}: got {} rows, want {}; {} missing (first: {:?}); {} extra or doubled (first: {:?})",
        got.len(),
        want.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
    );
}

/// The store holds exactly `expected` as the job's baseline records: every row once,
/// with its date and fields, owned by the test's user.
#[track_caller]
pub fn assert_baseline_exact(d: &Daemon, id: &str, expected: &[BaselineRecord]) {
    let db = d.store();
    let got = db.baseline_records(id);
    let mut want = expected.to_vec();
    want.sort();
    assert_same_rows(&format!("baseline records of {id}"), &got, &want);
    assert_eq!(db.owner_uid(id), current_uid(), "{id} owned by another uid");
}

/// The store holds exactly `expected` as the teams created by the job.
#[track_caller]
pub fn assert_teams_exact(d: &Daemon, id: &str, expected: &[TeamRow]) {
    let got = d.store().teams_of_job(id);
    let mut want = expected.to_vec();
    want.sort();
    assert_same_rows(&format!("teams of {id}"), &got, &want);
}

/// The job left nothing behind: no baseline records, no teams, no export output.
#[track_caller]
pub fn assert_no_effects(d: &Daemon, id: &str) {
    let db = d.store();
    assert_eq!(db.baseline_count(id), 0, "baseline records of {id} remain");
    assert_eq!(db.team_count(id), 0, "teams of {id} remain");
    assert_eq!(db.orphan_members(), 0, "team members without a team remain");
    assert!(db.output(id).is_none(), "export output of {id} remains");
}

/// Byte-for-byte equality, reporting the first differing line.
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let g = String::from_utf8_lossy(got);
    let w = String::from_utf8_lossy(want);
    let (gl, wl): (Vec<_>, Vec<_>) = (
        g.split_inclusive('\n').collect(),
        w.split_inclusive('\n').collect(),
    );
    let first = gl
        .iter()
        .zip(&wl)
        .position(|(a, b)| a != b)
        .unwrap_or(gl.len().min(wl.len()));
    panic!(
        "{what} differs ({} bytes, {} lines; want {} bytes, {} lines); first difference at line {}:\n got: {:?}\nwant: {:?}\n--- got (head) ---\n{}\n--- want (head) ---\n{}",
        got.len(),
        gl.len(),
        want.len(),
        wl.len(),
        first + 1,
        gl.get(first),
        wl.get(first),
        gl.iter().take(8).copied().collect::<String>(),
        wl.iter().take(8).copied().collect::<String>(),
    );
}

/// Polls until the store holds no upload (jobs drop theirs when they end).
#[track_caller]
pub fn wait_uploads_gone(d: &Daemon) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = d.uploads();
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} uploads remain after the jobs ended"
        );
        std::thread::sleep(POLL);
    }
}
