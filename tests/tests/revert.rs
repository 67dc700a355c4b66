//! `jobctl revert` and the dry runs: a finished import undone in one go (records
//! or teams gone, names free again, the job `reverted` with its report kept),
//! what a dry run says (and that it changes nothing), the refusals, and exports
//! written before a revert left as they were.

use jobd_tests::*;
use serde_json::Value;

/// `date,name,value` rows over 20 days of January 2024, with two bad rows.
fn baseline_with_errors(seed: u64, rows: usize) -> (BaselineFile, Vec<u8>) {
    let f = gen_baseline(
        seed,
        &["date", "name", "value"],
        rows,
        Date::new(2024, 1, 1),
        20,
    );
    let mut bytes = f.bytes();
    bytes.extend_from_slice(b"2024-02-30,bad,1\nnot,a,date\n");
    (f, bytes)
}

/// The first and last dates of the file's records.
fn date_range(f: &BaselineFile) -> (String, String) {
    let min = f.records.iter().map(|r| &r.date).min().expect("records");
    let max = f.records.iter().map(|r| &r.date).max().expect("records");
    (min.clone(), max.clone())
}

#[track_caller]
fn dry_run(d: &Daemon, cmd: &str, id: &str) -> Value {
    let v = d.jobctl(&["--json", cmd, "--dry-run", id]).ok().json();
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["action"], cmd, "{v}");
    v
}

fn revert_baseline_removes_its_records_and_keeps_its_report(b: Backend) {
    let d = Daemon::start_on(b);
    let (f, bytes) = baseline_with_errors(141, 300);
    let id = d.upload(&bytes, None);
    let done = d.wait_completed(&id);
    assert_counts(&done, 300, 2, Some(302));
    let errors = d.errors(&id);
    let before = d.export("2024-01-01", "2024-01-31", None);
    d.wait_completed(&before);
    let exported = d.output(&before);
    assert_bytes_eq(
        "export before the revert",
        &exported,
        &expected_export(&[&f], Date::new(2024, 1, 1), Date::new(2024, 1, 31)),
    );

    // The dry run says what would go, and changes nothing.
    let v = dry_run(&d, "revert", &id);
    let (first, last) = date_range(&f);
    assert_eq!(v["state"], "completed");
    assert_eq!(v["records"], 300, "{v}");
    assert_eq!(
        (v["first_date"].as_str(), v["last_date"].as_str()),
        (Some(first.as_str()), Some(last.as_str()))
    );
    assert_eq!(
        (v["teams"].as_u64(), v["output_bytes"].as_u64()),
        (Some(0), Some(0))
    );
    let text = d.jobctl(&["revert", "--dry-run", &id]).ok().stdout_str();
    assert!(
        text.contains(&format!("300 baseline records dated {first} to {last}")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("Nothing was changed."), "{text}");
    assert_eq!(d.status_json(&id)["state"], "completed");
    assert_baseline_exact(&d, &id, &f.records);

    // The revert.
    let out = d.jobctl(&["revert", &id]).ok();
    assert_eq!(out.stdout_str(), format!("Job {id} reverted.\n"));
    let s = d.status_json(&id);
    assert_eq!(s["state"], "reverted", "{s}");
    assert_counts(&s, 300, 2, Some(302));
    assert_eq!(
        d.store().baseline_count(&id),
        0,
        "records left after the revert"
    );
    assert_eq!(d.store().baseline_columns(&id), None, "columns left");
    assert_eq!(d.errors(&id), errors, "the row errors are kept");
    let c = d.store().committed(&id);
    assert_eq!(c.state, "reverted");

    // Exports written before are as they were; new ones no longer see the rows.
    assert_bytes_eq("export written before", &d.output(&before), &exported);
    let after = d.export("2024-01-01", "2024-01-31", None);
    d.wait_completed(&after);
    assert_eq!(
        d.output(&after),
        b"date\n",
        "a later export still sees reverted rows"
    );

    // A reverted job is finished: a second revert, its dry run and controls refuse.
    d.jobctl(&["revert", &id]).refused("already_reverted");
    d.jobctl(&["revert", "--dry-run", &id])
        .refused("already_reverted");
    for action in ["stop", "start", "terminate"] {
        d.jobctl(&[action, &id]).refused("job_finished");
    }
    d.jobctl(&["terminate", "--dry-run", &id])
        .refused("job_finished");
    let w = d.jobctl(&["wait", &id]);
    assert_eq!(w.code, Some(1), "wait on a reverted job: {w}");
    assert!(w.stdout_str().contains("reverted"), "{w}");
}

fn revert_bulk_team_frees_its_names(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_teams(142, "rv", 40, 3);
    let id = d.bulk_team(&f.bytes, None);
    d.wait_completed(&id);
    assert_teams_exact(&d, &id, &f.teams);

    let v = dry_run(&d, "revert", &id);
    assert_eq!(
        (v["teams"].as_u64(), v["records"].as_u64()),
        (Some(40), Some(0))
    );
    let names: Vec<&str> = v["team_names"]
        .as_array()
        .expect("team_names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let want: Vec<&str> = f.teams.iter().take(10).map(|t| t.name.as_str()).collect();
    assert_eq!(names, want, "the first ten names, in row order");
    assert!(v["first_date"].is_null());
    let text = d.jobctl(&["revert", "--dry-run", &id]).ok().stdout_str();
    assert!(text.contains("40 teams: rv-team-0001, "), "{text}");
    assert!(text.contains(" and 30 more"), "{text}");
    assert_eq!(
        d.store().team_count(&id),
        40,
        "the dry run changed something"
    );

    let s = d.jobctl(&["--json", "revert", &id]).ok().json();
    assert_eq!(s["state"], "reverted", "{s}");
    assert_eq!(d.store().team_count(&id), 0);
    assert!(d.store().team_names(current_uid()).is_empty());
    assert_eq!(d.store().orphan_members(), 0);

    // The same names can be created again, without a single conflict.
    let again = d.bulk_team(&f.bytes, None);
    let s = d.wait_completed(&again);
    assert_counts(&s, 40, 0, Some(40));
    assert_teams_exact(&d, &again, &f.teams);
}

fn revert_of_a_failed_job_undoes_what_it_committed(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-row-errors", "3"]);
    // Good rows, then more bad rows than the limit: the job fails after
    // committing the good ones.
    let f = gen_baseline(143, &["date", "v"], 500, Date::new(2024, 3, 1), 5);
    let mut bytes = f.bytes();
    for _ in 0..10 {
        bytes.extend_from_slice(b"2024-13-01,x\n");
    }
    let id = d.upload(&bytes, None);
    let s = d.wait_for_state(&id, "failed", DEADLINE);
    let kept = d.store().baseline_count(&id);
    assert!(kept > 0, "the failed job committed nothing: {s}");
    let v = dry_run(&d, "revert", &id);
    assert_eq!(
        (v["state"].as_str(), v["records"].as_u64()),
        (Some("failed"), Some(kept))
    );
    d.control("revert", &id);
    let s = d.status_json(&id);
    assert_eq!(s["state"], "reverted", "{s}");
    assert!(
        s["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the failure is kept: {s}"
    );
    assert_eq!(d.store().baseline_count(&id), 0);
}

fn revert_refuses_what_it_cannot_undo(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-running", "2"]);
    let data = gen_baseline(144, &["date", "v"], 50, Date::new(2024, 1, 1), 10);
    let base = d.upload(&data.bytes(), None);
    d.wait_completed(&base);

    // Running, then paused: terminate is for those.
    let running = d.upload(&slow_baseline(145).bytes(), Some(SLOW_RATE));
    d.wait_processed(&running, MID_RUN);
    d.jobctl(&["revert", &running]).refused("job_not_finished");
    d.jobctl(&["revert", "--dry-run", &running])
        .refused("job_not_finished");
    // terminate --dry-run says what a terminate would roll back, and changes nothing.
    let v = dry_run(&d, "terminate", &running);
    assert_eq!(v["state"], "running", "{v}");
    assert!(v["records"].as_u64().is_some_and(|n| n >= MID_RUN), "{v}");
    let text = d
        .jobctl(&["terminate", "--dry-run", &running])
        .ok()
        .stdout_str();
    assert!(
        text.starts_with(&format!("Dry run: terminate of job {running}")),
        "{text}"
    );
    d.stop(&running);
    d.jobctl(&["revert", &running]).refused("job_not_finished");
    let paused = d.status_json(&running);
    let v = dry_run(&d, "terminate", &running);
    assert_eq!(v["records"], paused["processed"], "{v} vs {paused}");
    assert_eq!(d.status_json(&running)["state"], "paused");
    assert_eq!(
        d.store().baseline_count(&running),
        paused["processed"].as_u64().expect("processed")
    );

    // An export: nothing to revert, running or done; its terminate dry run
    // counts the output written so far.
    let export = d.export("2024-01-01", "2024-01-10", Some(4.0));
    d.wait_processed(&export, 3);
    d.jobctl(&["revert", &export]).refused("not_revertible");
    d.control("stop", &export);
    let v = dry_run(&d, "terminate", &export);
    assert!(v["output_bytes"].as_u64().is_some_and(|n| n > 0), "{v}");
    d.control("start", &export);
    d.wait_completed(&export);
    d.jobctl(&["revert", &export]).refused("not_revertible");

    // Terminated: it was rolled back then.
    d.control("terminate", &running);
    d.jobctl(&["revert", &running]).refused("not_revertible");
    d.jobctl(&["revert", "--dry-run", &running])
        .refused("not_revertible");

    // Unknown ids and blank ones.
    d.jobctl(&["revert", "nobody-baselineCSV-1-1"])
        .refused("id_doesn't_exist");
    d.jobctl(&["revert", " "]).refused("invalid_id");
    d.jobctl(&["terminate", "--dry-run", "nobody-baselineCSV-1-1"])
        .refused("id_doesn't_exist");
    // Usage errors.
    d.jobctl(&["revert"]).expect_code(2, None);
    // Nothing above changed the completed job.
    assert_eq!(d.status_json(&base)["state"], "completed");
    assert_baseline_exact(&d, &base, &data.records);
}

both_stores!(
    revert_baseline_removes_its_records_and_keeps_its_report,
    revert_bulk_team_frees_its_names,
    revert_of_a_failed_job_undoes_what_it_committed,
    revert_refuses_what_it_cannot_undo,
);
