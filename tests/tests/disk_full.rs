//! Disk full. The state directory sits on an 8 MiB tmpfs (mounting needs root or
//! CAP_SYS_ADMIN; without it each test says why and passes without checking): an
//! upload that does not fit is refused with a clear error and leaves nothing, a job
//! that hits ENOSPC (in the store or in its export file) fails with a message saying
//! so, the store stays consistent, and the daemon keeps serving — new jobs run once
//! space is freed.

use jobd_tests::crash::*;
use jobd_tests::*;
use std::fs;
use std::path::PathBuf;

const SIZE: &str = "8m";

/// The daemon on a fresh tmpfs, or `None` (with the reason printed) where mounting
/// is not permitted. Bind the pair in this order: the tmpfs is then dropped first
/// (detached lazily), and the daemon's temporary directory can be removed whole.
fn on_tmpfs(test: &str) -> Option<(Daemon, Tmpfs)> {
    let mut d = Daemon::start();
    match state_on_tmpfs(&mut d, SIZE) {
        Ok(fs) => Some((d, fs)),
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot put the state directory on a tmpfs: {why}");
            None
        }
    }
}

/// Fills the filesystem with a file, leaving about `leave` bytes free.
fn fill(fs: &Tmpfs, leave: u64) -> PathBuf {
    let path = fs.path.join("filler.bin");
    let size = fs.free_bytes().saturating_sub(leave);
    fs::write(&path, vec![0xAAu8; size as usize]).expect("write the filler");
    path
}

/// A baseline CSV of about `bytes`, all rows valid.
fn baseline_of(seed: u64, bytes: usize) -> BaselineFile {
    gen_baseline(
        seed,
        &["date", "name", "value", "note"],
        bytes / 30,
        Date::new(2024, 1, 1),
        366,
    )
}

fn says_no_space(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("no space") || t.contains("disk is full") || t.contains("database or disk is full")
}

#[track_caller]
fn still_serving(d: &Daemon) {
    assert_alive(d);
    d.jobctl(&["ping"]).ok();
    d.status_all();
    assert_integrity(d);
}

#[test]
fn an_upload_that_does_not_fit_is_refused() {
    let Some((d, fs)) = on_tmpfs("an_upload_that_does_not_fit_is_refused") else {
        return;
    };
    let free = fs.free_bytes();
    // The input lives outside the tmpfs (in the daemon's temporary directory).
    let big = baseline_of(1, 12 << 20).bytes();
    let path = d.input_file(&big);
    let out = d.jobctl(&["upload", path.to_str().expect("path")]);
    let out = out.refused("storage_error");
    assert!(
        says_no_space(&out.stderr),
        "the refusal does not say the disk is full: {out}"
    );
    wait_uploads_gone(&d);
    assert!(
        d.status_all().is_empty(),
        "a job exists after a refused upload"
    );
    let after = fs.free_bytes();
    assert!(
        after + (256 << 10) >= free,
        "space not given back: {free} free before, {after} after"
    );
    still_serving(&d);
    // The same daemon takes an upload that fits.
    let small = baseline_of(2, 50_000);
    let id = d.upload(&small.bytes(), None);
    d.wait_completed(&id);
    assert_baseline_exact(&d, &id, &small.records);
}

#[test]
fn a_job_that_hits_enospc_fails_and_the_daemon_keeps_serving() {
    let Some((mut d, fs)) = on_tmpfs("a_job_that_hits_enospc_fails") else {
        return;
    };
    // The file fits in the spool (8 MiB); its records next to it do not.
    let f = baseline_of(3, 6_000_000);
    let id = d.upload(&f.bytes(), None);
    let s = d.jobctl(&["wait", &id]);
    let status = d.status_json(&id);
    assert_eq!(status["state"], "failed", "{status}\n{s}");
    let err = status["error"].as_str().unwrap_or("");
    assert!(
        says_no_space(err),
        "the failure does not say the disk is full: {err:?}"
    );
    eprintln!("[disk_full] job failed with: {err}");
    // What was committed is consistent, and the daemon still answers.
    assert_committed_consistent(&d, &id);
    still_serving(&d);
    wait_uploads_gone(&d);

    // Full to the brim: a new upload is refused cleanly, with nothing left behind.
    let filler = fill(&fs, 0);
    let small = baseline_of(4, 40_000);
    let path = d.input_file(&small.bytes());
    let out = d.jobctl(&["-q", "upload", path.to_str().expect("path")]);
    if out.code == Some(0) {
        // Accepted into the last free pages: it must then end cleanly either way.
        let nid = bare_id(&out);
        eprintln!("[disk_full] upload on a full disk accepted as {nid}");
        d.jobctl(&["wait", &nid]);
        let s = d.status_json(&nid);
        assert!(
            matches!(s["state"].as_str(), Some("completed" | "failed")),
            "{s}"
        );
        assert_committed_consistent(&d, &nid);
    } else {
        let out = out.refused("storage_error");
        assert!(says_no_space(&out.stderr), "{out}");
        eprintln!("[disk_full] upload on a full disk: {}", out.stderr.trim());
    }
    still_serving(&d);

    // Space freed: new jobs run, and a restart finds everything consistent.
    fs::remove_file(&filler).expect("remove the filler");
    let id2 = d.upload(&small.bytes(), None);
    d.wait_completed(&id2);
    assert_baseline_exact(&d, &id2, &small.records);
    d.restart();
    still_serving(&d);
    assert_eq!(d.status_json(&id)["state"], "failed");
    assert_committed_consistent(&d, &id);
    assert_baseline_exact(&d, &id2, &small.records);
}

#[test]
fn an_export_that_hits_enospc_fails_and_leaves_no_file() {
    let Some((d, fs)) = on_tmpfs("an_export_that_hits_enospc_fails") else {
        return;
    };
    let data = baseline_of(5, 700_000);
    let bid = d.upload(&data.bytes(), None);
    d.wait_completed(&bid);
    let filler = fill(&fs, 200 << 10);
    let id = d.export("2024-01-01", "2024-12-31", None);
    d.jobctl(&["wait", &id]);
    let s = d.status_json(&id);
    assert_eq!(
        s["state"], "failed",
        "an export larger than the free space: {s}"
    );
    let err = s["error"].as_str().unwrap_or("");
    assert!(
        says_no_space(err),
        "the failure does not say the disk is full: {err:?}"
    );
    eprintln!("[disk_full] export failed with: {err}");
    assert!(
        d.store().output(&id).is_none(),
        "the failed export left its file"
    );
    d.jobctl(&["output", &id]).refused("no_output");
    still_serving(&d);
    fs::remove_file(&filler).expect("remove the filler");
    let id2 = d.export("2024-01-01", "2024-12-31", None);
    d.wait_completed(&id2);
    let from = Date::new(2024, 1, 1);
    assert_bytes_eq(
        "export after space was freed",
        &d.output(&id2),
        &expected_export(&[&data], from, Date::new(2024, 12, 31)),
    );
    assert_baseline_exact(&d, &bid, &data.records);
}
