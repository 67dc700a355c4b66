//! stop / start / terminate (and `update-task`): acknowledged pauses that make no
//! progress, exact resumption, complete rollback, and the refusals.

use jobd_tests::*;
use std::time::{Duration, Instant};

fn stop_then_start_baseline_applies_every_row_once(b: Backend) {
    let d = Daemon::start_on(b);
    let f = slow_baseline(31);
    let id = d.upload(&f.bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    let p = d.assert_stays_paused(&id, HOLD);
    assert!(p < SLOW_ROWS as u64, "the job was not caught mid-run");
    assert_eq!(
        d.store().baseline_count(&id),
        p,
        "records committed while paused vs processed"
    );
    // Stopping a paused job is not an error, and changes nothing.
    d.stop(&id);
    assert_eq!(d.status_json(&id)["processed"].as_u64(), Some(p));

    d.control("start", &id);
    // Starting a running (or requeued) job is not an error either.
    d.control("start", &id);
    let s = d.status_json(&id);
    assert!(
        matches!(
            s["state"].as_str(),
            Some("running" | "queued" | "completed")
        ),
        "after start: {s}"
    );
    let s = d.wait_completed(&id);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_baseline_exact(&d, &id, &f.records);
    wait_uploads_gone(&d);
}

fn stop_then_start_bulk_team_via_update_task(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_teams(32, "gamma", SLOW_ROWS, 4);
    let id = d.bulk_team(&f.bytes, Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.jobctl(&["update-task", "--id", &id, "--action", "stop"])
        .ok();
    let p = d.assert_stays_paused(&id, HOLD);
    assert!(p < SLOW_ROWS as u64, "the job was not caught mid-run");
    assert_eq!(d.store().team_count(&id), p, "teams committed while paused");
    d.jobctl(&["update-task", "--id", &id, "--action", "start"])
        .ok();
    let s = d.wait_completed(&id);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_teams_exact(&d, &id, &f.teams);
}

fn stop_then_start_export_is_byte_exact(b: Backend) {
    let d = Daemon::start_on(b);
    let from = Date::new(2024, 1, 1);
    let to = Date::new(2024, 1, 30);
    let f = gen_baseline(33, &["date", "name", "value"], 200, from, 30);
    let b = d.upload(&f.bytes(), None);
    d.wait_completed(&b);
    let id = d.export(&from.to_string(), &to.to_string(), Some(10.0));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    let p = d.assert_stays_paused(&id, HOLD);
    assert!(p < 30, "the export was not caught mid-run");
    d.control("start", &id);
    let s = d.wait_completed(&id);
    assert_counts(&s, 30, 0, Some(30));
    assert_bytes_eq(
        "export output after stop/start",
        &d.output(&id),
        &expected_export(&[&f], from, to),
    );
}

fn terminate_running_baseline_rolls_back(b: Backend) {
    let d = Daemon::start_on(b);
    let f = slow_baseline(34);
    let id = d.upload(&f.bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    assert!(d.store().baseline_count(&id) > 0, "nothing to roll back");
    d.control("terminate", &id);
    let s = d.status_json(&id);
    assert_eq!(s["state"], "terminated", "after terminate: {s}");
    assert_no_effects(&d, &id);
    let out = d.jobctl(&["wait", &id]);
    assert_ne!(out.code, Some(0), "wait on a terminated job: {out}");
    wait_uploads_gone(&d);
}

fn terminate_paused_bulk_team_rolls_back_and_frees_the_names(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_teams(35, "delta", SLOW_ROWS, 4);
    let id = d.bulk_team(&f.bytes, Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    assert!(d.store().team_count(&id) > 0);
    d.control("terminate", &id);
    assert_eq!(d.status_json(&id)["state"], "terminated");
    assert_no_effects(&d, &id);
    assert!(d.store().team_names(current_uid()).is_empty());

    // The same names can be created again: nothing of the terminated job is left.
    let again = d.bulk_team(&f.bytes, None);
    let s = d.wait_completed(&again);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_teams_exact(&d, &again, &f.teams);
}

fn terminate_export_running_and_paused_leaves_no_file(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(
        36,
        &["date", "name", "value"],
        100,
        Date::new(2024, 1, 1),
        30,
    );
    let b = d.upload(&f.bytes(), None);
    d.wait_completed(&b);

    let running = d.export("2024-01-01", "2024-01-30", Some(10.0));
    d.wait_processed(&running, MID_RUN);
    d.control("terminate", &running);

    let paused = d.export("2024-01-01", "2024-01-30", Some(10.0));
    d.wait_processed(&paused, MID_RUN);
    d.stop(&paused);
    d.control("terminate", &paused);

    for id in [&running, &paused] {
        assert_eq!(d.status_json(id)["state"], "terminated");
        assert_no_effects(&d, id);
        let out = d.jobctl(&["output", id]);
        assert_eq!(out.code, Some(1), "output of a terminated export: {out}");
    }
    // The baseline records the exports read are untouched.
    assert_baseline_exact(&d, &b, &f.records);
}

fn controls_on_an_unknown_id_are_refused(b: Backend) {
    let d = Daemon::start_on(b);
    let id = format!("{}-baselineCSV-1700000000-4242", current_user());
    for action in ["stop", "start", "terminate"] {
        d.jobctl(&[action, &id]).refused("id_doesn't_exist");
        d.jobctl(&["update-task", "--id", &id, "--action", action])
            .refused("id_doesn't_exist");
    }
    d.jobctl(&["status", &id]).refused("id_doesn't_exist");
}

fn controls_on_finished_jobs_are_refused(b: Backend) {
    let d = Daemon::start_on(b);
    let completed = d.upload(b"date,v\n2024-01-01,1\n", None);
    d.wait_completed(&completed);
    let failed = d.upload(b"v,w\n1,2\n", None);
    d.wait_for_state(&failed, "failed", DEADLINE);
    let terminated = d.upload(&slow_baseline(37).bytes(), Some(SLOW_RATE));
    d.wait_processed(&terminated, MID_RUN);
    d.control("terminate", &terminated);

    for id in [&completed, &failed, &terminated] {
        let before = d.status_json(id);
        for action in ["stop", "start", "terminate"] {
            d.jobctl(&[action, id]).refused("job_finished");
            d.jobctl(&["update-task", "--id", id, "--action", action])
                .refused("job_finished");
        }
        assert_eq!(d.status_json(id)["state"], before["state"]);
    }
}

fn invalid_action_is_refused(b: Backend) {
    let d = Daemon::start_on(b);
    let id = d.upload(&slow_baseline(38).bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    for action in ["pause", "resume", "Stop", "STOP", "kill"] {
        d.jobctl(&["update-task", "--id", &id, "--action", action])
            .refused("invalid_action");
    }
    assert_eq!(d.status_json(&id)["state"], "paused");
    d.control("terminate", &id);
}

fn paused_job_holds_no_open_file(b: Backend) {
    let d = Daemon::start_on(b);
    let f = slow_baseline(39);
    let id = d.upload(&f.bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    let spool = d.state_dir.join("spool");
    let open: Vec<_> = d
        .open_files()
        .into_iter()
        .filter(|p| p.starts_with(&spool) || p.starts_with(d.dir().join("inputs")))
        .collect();
    assert!(open.is_empty(), "a paused job keeps files open: {open:?}");
    d.control("start", &id);
    d.wait_completed(&id);
    assert_baseline_exact(&d, &id, &f.records);
}

fn queued_job_can_be_paused_and_stays_paused(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-running", "1"]);
    let a = slow_baseline(40);
    let b = gen_baseline(41, &["date", "name", "value"], 50, Date::new(2024, 1, 1), 5);
    let ida = d.upload(&a.bytes(), Some(SLOW_RATE));
    d.wait_processed(&ida, 1);
    let idb = d.upload(&b.bytes(), None);
    assert_eq!(d.status_json(&idb)["state"], "queued");
    d.stop(&idb);
    d.wait_completed(&ida);
    // With the slot free, the paused job still does not run.
    let p = d.assert_stays_paused(&idb, HOLD);
    assert_eq!(p, 0);
    d.control("start", &idb);
    d.wait_completed(&idb);
    assert_baseline_exact(&d, &ida, &a.records);
    assert_baseline_exact(&d, &idb, &b.records);
}

/// A stop rolls back the open batch, so a job stopped soon after every start
/// advances only if a worker commits early: its first batch commits at 16 ms.
/// The gaps stay below a batch's age limit (250 ms), and the file is larger than
/// a full batch, so without that the job would never commit a row.
fn a_job_stopped_soon_after_every_start_still_advances(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-running", "1"]);
    // A slow job holds the one slot, so that the big one is paused before it runs.
    let blocker = slow_baseline(50);
    let blocker = d.upload(&blocker.bytes(), Some(SLOW_RATE));
    d.wait_processed(&blocker, 1);
    let big = gen_baseline(
        51,
        &["date", "name", "value"],
        120_000,
        Date::new(2024, 1, 1),
        30,
    );
    let id = d.upload(&big.bytes(), None);
    d.stop(&id);
    d.control("terminate", &blocker);
    assert_eq!(d.status_json(&id)["processed"].as_u64(), Some(0));

    let deadline = Instant::now() + DEADLINE;
    let mut gap = Duration::from_millis(2);
    let mut cycles = 0;
    loop {
        d.control("start", &id);
        std::thread::sleep(gap);
        d.control("stop", &id);
        cycles += 1;
        let s = d.status_json(&id);
        if s["processed"].as_u64() > Some(0) {
            break;
        }
        assert_eq!(s["state"], "paused", "{s}");
        assert!(
            Instant::now() < deadline,
            "no row committed over {cycles} stop/start cycles: {s}"
        );
        gap = (gap * 2).min(Duration::from_millis(100));
    }
    // What was committed is exact, and the rest follows.
    let p = d.status_json(&id)["processed"].as_u64().unwrap_or(0);
    assert_eq!(d.store().baseline_count(&id), p);
    d.control("start", &id);
    d.wait_completed(&id);
    assert_baseline_exact(&d, &id, &big.records);
}

both_stores!(
    stop_then_start_baseline_applies_every_row_once,
    stop_then_start_bulk_team_via_update_task,
    stop_then_start_export_is_byte_exact,
    terminate_running_baseline_rolls_back,
    terminate_paused_bulk_team_rolls_back_and_frees_the_names,
    terminate_export_running_and_paused_leaves_no_file,
    controls_on_an_unknown_id_are_refused,
    controls_on_finished_jobs_are_refused,
    invalid_action_is_refused,
    paused_job_holds_no_open_file,
    queued_job_can_be_paused_and_stays_paused,
    a_job_stopped_soon_after_every_start_still_advances,
);
