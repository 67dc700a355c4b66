//! Durability: SIGTERM and SIGKILL mid-run, restart on the same directories, jobs go
//! on from their cursor with exact effects; paused and queued jobs across a restart;
//! a second daemon on a live socket.

use jobd_tests::*;
use std::process::Command;
use std::time::Duration;

/// Jobs of every kind caught mid-run by SIGTERM or SIGKILL finish after a restart
/// with every unit applied exactly once.
fn interrupt_all_kinds(seed: u64, kill: bool, b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "3"]);
    let from = Date::new(2024, 1, 1);
    let to = Date::new(2024, 1, 30);
    let base = gen_baseline(seed, &["date", "name", "value"], 150, from, 30);
    let base_id = d.upload(&base.bytes(), None);
    d.wait_completed(&base_id);

    // slow_baseline's dates are in May: the export below does not see them.
    let slow = slow_baseline(seed + 1);
    let teams = gen_teams(seed + 2, "eps", SLOW_ROWS, 4);
    let b = d.upload(&slow.bytes(), Some(SLOW_RATE));
    let t = d.bulk_team(&teams.bytes, Some(SLOW_RATE));
    let e = d.export(&from.to_string(), &to.to_string(), Some(10.0));
    for id in [&b, &t, &e] {
        d.wait_processed(id, MID_RUN);
    }

    if kill {
        d.sigkill();
        assert!(d.socket.exists(), "SIGKILL cannot remove the socket");
    } else {
        d.sigterm_and_wait();
    }

    // What was committed is consistent: effects match the committed counts.
    {
        let db = d.store();
        let (_, pb, _) = db.job_progress(&b);
        assert_eq!(db.baseline_count(&b), pb, "baseline records vs cursor");
        assert!(
            pb < SLOW_ROWS as u64,
            "baseline job finished before the signal"
        );
        let (_, pt, _) = db.job_progress(&t);
        assert_eq!(db.team_count(&t), pt, "teams vs cursor");
        assert!(pt < SLOW_ROWS as u64, "team job finished before the signal");
    }

    d.restart(); // on SIGKILL this also replaces the stale socket
    for id in [&b, &t, &e] {
        let s = d.status_json(id);
        assert!(
            matches!(
                s["state"].as_str(),
                Some("running" | "queued" | "completed")
            ),
            "a job that was running before the restart: {s}"
        );
    }
    let s = d.wait_completed(&b);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_baseline_exact(&d, &b, &slow.records);
    let s = d.wait_completed(&t);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_teams_exact(&d, &t, &teams.teams);
    let s = d.wait_completed(&e);
    assert_counts(&s, 30, 0, Some(30));
    assert_bytes_eq(
        "export output after the restart",
        &d.output(&e),
        &expected_export(&[&base], from, to),
    );
    assert_baseline_exact(&d, &base_id, &base.records);
    wait_uploads_gone(&d);
}

fn sigterm_mid_run_then_restart_finishes_exactly(b: Backend) {
    interrupt_all_kinds(51, false, b);
}

fn sigkill_mid_run_then_restart_finishes_exactly(b: Backend) {
    interrupt_all_kinds(61, true, b);
}

fn paused_job_stays_paused_across_restart(b: Backend) {
    let mut d = Daemon::start_on(b);
    let f = slow_baseline(71);
    let id = d.upload(&f.bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    d.stop(&id);
    let p = d.status_json(&id)["processed"].as_u64().expect("processed");
    d.restart();
    let q = d.assert_stays_paused(&id, HOLD);
    assert_eq!(q, p, "processed changed across the restart");
    d.control("start", &id);
    let s = d.wait_completed(&id);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_baseline_exact(&d, &id, &f.records);
}

fn queued_job_runs_after_restart(b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "1"]);
    let a = slow_baseline(81);
    let b = gen_teams(82, "zeta", 40, 3);
    let ida = d.upload(&a.bytes(), Some(SLOW_RATE));
    d.wait_processed(&ida, MID_RUN);
    let idb = d.bulk_team(&b.bytes, None);
    assert_eq!(d.status_json(&idb)["state"], "queued");
    d.restart();
    d.wait_completed(&ida);
    d.wait_completed(&idb);
    assert_baseline_exact(&d, &ida, &a.records);
    assert_teams_exact(&d, &idb, &b.teams);
}

#[test]
fn second_daemon_on_a_live_socket_exits_with_a_message() {
    let d = Daemon::start();
    let mut second = Command::new(&bins().jobd);
    second
        .arg("--socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(d.dir().join("other-state"));
    let out = run_with_timeout(second, None, Duration::from_secs(20));
    assert!(
        out.code.is_some_and(|c| c != 0),
        "a second jobd on a live socket should exit non-zero: {out}"
    );
    assert!(!out.stderr.trim().is_empty(), "no message: {out}");
    assert!(
        d.socket.exists(),
        "the second daemon removed the live socket"
    );
    d.jobctl(&["ping"]).ok();
}

#[test]
fn stale_socket_is_replaced() {
    let mut d = Daemon::start();
    let id = d.upload(b"date,v\n2024-01-01,1\n", None);
    d.wait_completed(&id);
    d.sigkill();
    assert!(d.socket.exists(), "SIGKILL cannot remove the socket");
    d.restart();
    assert_eq!(d.status_json(&id)["state"], "completed");
}

both_stores!(
    sigterm_mid_run_then_restart_finishes_exactly,
    sigkill_mid_run_then_restart_finishes_exactly,
    paused_job_stays_paused_across_restart,
    queued_job_runs_after_restart,
);
