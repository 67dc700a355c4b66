//! Forgetting finished jobs: `jobctl prune` by state and by age, `jobd
//! --retention` by itself, a prune while jobs run and are stopped and started,
//! ids never handed out again, effects that outlive their job (still exported,
//! team names still taken), and on PostgreSQL every node forgetting what one
//! pruned.

use jobd_tests::backend::postgres_or_skip;
use jobd_tests::crash::assert_integrity;
use jobd_tests::nodes::Nodes;
use jobd_tests::*;
use std::thread;
use std::time::{Duration, Instant};

/// `jobctl -q prune ARGS...`: the number pruned.
#[track_caller]
fn prune(d: &Daemon, args: &[&str]) -> u64 {
    let mut full = vec!["-q", "prune"];
    full.extend_from_slice(args);
    let out = d.jobctl(&full).ok();
    out.stdout_str()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("prune -q printed no number: {out}"))
}

/// The job is unknown to the daemon (status, errors, controls, revert).
#[track_caller]
fn assert_forgotten(d: &Daemon, id: &str) {
    d.jobctl(&["status", id]).refused("id_doesn't_exist");
    d.jobctl(&["errors", id]).refused("id_doesn't_exist");
    d.jobctl(&["stop", id]).refused("id_doesn't_exist");
    d.jobctl(&["revert", "--dry-run", id])
        .refused("id_doesn't_exist");
    d.jobctl(&["update-task", "--id", id, "--action", "bogus"])
        .refused("id_doesn't_exist");
    assert!(
        d.status_all().iter().all(|s| s["id"] != id),
        "{id} still listed"
    );
}

/// Polls until the job is forgotten (retention, or another node's prune).
#[track_caller]
fn wait_forgotten(d: &Daemon, id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = d.jobctl(&["--json", "status", id]);
        if out.code == Some(1) && out.stderr.contains("id_doesn't_exist") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not forgotten within {timeout:?}: {out}\n{}",
            d.logs()
        );
        thread::sleep(POLL);
    }
}

/// `date,name,value` rows in January 2024 and two bad rows.
fn january(seed: u64, rows: usize) -> (BaselineFile, Vec<u8>) {
    let f = gen_baseline(
        seed,
        &["date", "name", "value"],
        rows,
        Date::new(2024, 1, 1),
        31,
    );
    let mut bytes = f.bytes();
    bytes.extend_from_slice(b"2024-01-32,x,1\nnope,y,2\n");
    (f, bytes)
}

fn seq(d: &Daemon, id: &str) -> i64 {
    d.store()
        .job_seq(id)
        .unwrap_or_else(|| panic!("{id} not in the store"))
}

fn prune_forgets_finished_jobs_and_keeps_their_effects(b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "3"]);
    let (f, bytes) = january(151, 200);
    let base = d.upload(&bytes, None);
    d.wait_completed(&base);
    let t = gen_teams(152, "kept", 30, 3);
    let teams = d.bulk_team(&t.bytes, None);
    d.wait_completed(&teams);
    let export = d.export("2024-01-01", "2024-01-31", None);
    d.wait_completed(&export);
    let failed = d.upload(b"v,w\n1,2\n", None);
    d.wait_for_state(&failed, "failed", DEADLINE);
    let reverted = d.upload(b"date,v\n2024-06-01,1\n", None);
    d.wait_completed(&reverted);
    d.control("revert", &reverted);
    let terminated = d.upload(&slow_baseline(153).bytes(), Some(SLOW_RATE));
    d.wait_processed(&terminated, MID_RUN);
    d.control("terminate", &terminated);
    // Unfinished jobs, which no prune touches.
    let slow = slow_baseline(154);
    let running = d.upload(&slow.bytes(), Some(SLOW_RATE / 2.0));
    d.wait_processed(&running, MID_RUN);
    let paused_file = slow_baseline(155);
    let paused = d.upload(&paused_file.bytes(), Some(SLOW_RATE));
    d.wait_processed(&paused, MID_RUN);
    d.stop(&paused);
    let (sb, st, se) = (seq(&d, &base), seq(&d, &teams), seq(&d, &export));
    assert!(d.store().has_output_of(se, &export));
    assert_eq!(d.store().row_errors_of_seq(sb), 2);

    // Only the completed ones.
    assert_eq!(prune(&d, &["--state", "completed"]), 3);
    for id in [&base, &teams, &export] {
        assert_forgotten(&d, id);
        assert!(d.store().id_taken(id), "{id} no longer kept as taken");
    }
    for id in [&failed, &reverted, &terminated] {
        assert!(is_finished(&d.status_json(id)), "{id} was pruned too");
    }
    let db = d.store();
    assert_eq!(
        db.effects_of_seq(sb),
        (200, 0),
        "the records of a pruned job"
    );
    assert_eq!(db.effects_of_seq(st), (0, 30), "the teams of a pruned job");
    assert_eq!(
        db.row_errors_of_seq(sb),
        0,
        "row errors of a pruned job remain"
    );
    assert!(
        !db.has_output_of(se, &export),
        "a pruned export's output remains"
    );
    drop(db);
    // Its records are still the user's data: a new export has them all.
    let again = d.export("2024-01-01", "2024-01-31", None);
    d.wait_completed(&again);
    assert_bytes_eq(
        "export after the prune",
        &d.output(&again),
        &expected_export(&[&f], Date::new(2024, 1, 1), Date::new(2024, 1, 31)),
    );
    // And its team names are still taken.
    let dup = d.bulk_team(&t.bytes, None);
    let s = d.wait_completed(&dup);
    assert_counts(&s, 0, 30, Some(30));

    // Everything finished; the running and the paused job stay as they are.
    assert_eq!(prune(&d, &[]), 5, "failed, reverted, terminated, two more");
    let left: Vec<String> = d
        .status_all()
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(left, [running.clone(), paused.clone()]);
    assert_eq!(d.status_json(&paused)["state"], "paused");
    d.wait_completed(&running);
    assert_baseline_exact(&d, &running, &slow.records);
    d.control("start", &paused);
    d.wait_completed(&paused);
    assert_baseline_exact(&d, &paused, &paused_file.records);
    assert_eq!(d.store().job_rows(), 2);

    // A restart finds the same.
    d.restart();
    assert_integrity(&d);
    assert_forgotten(&d, &base);
    assert_eq!(d.status_all().len(), 2);
}

fn pruned_ids_are_never_handed_out_again(b: Backend) {
    let mut d = Daemon::start_on(b);
    let first = gen_baseline(161, &["date", "v"], 50, Date::new(2024, 2, 1), 3);
    let one = d.upload(&first.bytes(), None);
    d.wait_completed(&one);
    let s1 = seq(&d, &one);
    // The newest job pruned: on SQLite a new row would take its seq were it
    // not kept.
    assert_eq!(prune(&d, &[]), 1);
    assert_eq!(d.store().job_rows(), 0);
    assert!(d.store().id_taken(&one));
    let second = gen_baseline(162, &["date", "v"], 40, Date::new(2024, 2, 1), 3);
    let two = d.upload(&second.bytes(), None);
    d.wait_completed(&two);
    let s2 = seq(&d, &two);
    assert!(s2 > s1, "seq {s2} of a new job after {s1} was pruned");
    assert_ne!(two, one);
    assert_baseline_exact(&d, &two, &second.records);
    assert_eq!(
        d.store().effects_of_seq(s1),
        (50, 0),
        "the pruned job's records mixed with the new one's"
    );
    // Across a restart too.
    assert_eq!(prune(&d, &[]), 1);
    d.restart();
    let three = d.upload(&first.bytes(), None);
    d.wait_completed(&three);
    assert!(seq(&d, &three) > s2);
    for id in [&one, &two] {
        assert!(d.store().id_taken(id));
        assert_forgotten(&d, id);
    }
}

fn prune_by_age(b: Backend) {
    let d = Daemon::start_on(b);
    let id = d.upload(b"date,v\n2024-01-01,1\n", None);
    d.wait_completed(&id);
    assert_eq!(prune(&d, &["--older-than", "1h"]), 0);
    assert_eq!(
        prune(&d, &["--older-than", "1d", "--state", "completed"]),
        0
    );
    let out = d.jobctl(&["prune", "--older-than", "1w"]).ok();
    assert_eq!(out.stdout_str(), "Pruned 0 finished jobs.\n");
    assert_eq!(d.status_json(&id)["state"], "completed");
    // Once it ended over a second ago, `--older-than 1s` takes it.
    let deadline = Instant::now() + DEADLINE;
    while prune(&d, &["--older-than", "1s"]) == 0 {
        assert!(Instant::now() < deadline, "{id} never became 1 s old");
        thread::sleep(POLL);
    }
    assert_forgotten(&d, &id);
    assert_eq!(
        d.jobctl(&["--json", "prune"]).ok().json(),
        serde_json::json!({ "pruned": 0 })
    );
}

fn retention_prunes_by_itself(b: Backend) {
    let d = Daemon::start_on_with(b, &["--retention", "1s", "--max-running", "2"]);
    let done = d.upload(b"date,v\n2024-01-01,1\n2024-01-02,2\n", None);
    // Read before it can be due: it is pruned a second after it ends.
    let s_done = seq(&d, &done);
    let slow = slow_baseline(171);
    let running = d.upload(&slow.bytes(), Some(SLOW_RATE / 2.0));
    d.wait_processed(&running, MID_RUN);
    // The finished job goes by itself; the running one stays.
    wait_forgotten(&d, &done, DEADLINE);
    let s = d.status_json(&running);
    assert!(!is_finished(&s), "{s}");
    assert_eq!(d.store().effects_of_seq(s_done), (2, 0));
    let w = d.jobctl(&["wait", &running]).ok();
    assert!(w.stdout_str().contains("completed"), "{w}");
    wait_forgotten(&d, &running, DEADLINE);
    assert!(
        d.logs().contains("pruned finished jobs past the retention"),
        "no log line"
    );
    assert!(d.status_all().is_empty());
}

/// `--retention` and the config key `retention`: durations only (exit 2 else).
#[test]
fn retention_is_validated() {
    let d = Daemon::start();
    let check = |args: &[&str]| {
        let mut cmd = d.jobd_command();
        cmd.args(args).arg("--check-config");
        run_with_timeout(cmd, None, Duration::from_secs(30))
    };
    let out = check(&["--retention", "30d"]).ok();
    assert!(out.stdout_str().contains("retention = \"30d\""), "{out}");
    for bad in ["30", "soon", "-1d", "1.5h", "", "1000000w"] {
        check(&[&format!("--retention={bad}")]).expect_code(2, Some("retention"));
    }
    let file = d.dir().join("retention.toml");
    std::fs::write(&file, "retention = \"12h\"\n").expect("config file");
    let out = check(&["--config", file.to_str().expect("path")]).ok();
    assert!(out.stdout_str().contains("retention = \"12h\""), "{out}");
    std::fs::write(&file, "retention = 12\n").expect("config file");
    check(&["--config", file.to_str().expect("path")]).expect_code(2, Some("retention"));
}

/// Finished jobs pruned in many batches while two jobs run and are stopped and
/// started: every stop answers paused, both jobs end with every row once, and
/// the pruned jobs' records are all still exported.
fn prune_while_jobs_run(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-running", "2"]);
    const FINISHED: u64 = 450;
    let small = b"date,v\n2024-04-01,1\n";
    let ids: Vec<String> = (0..FINISHED).map(|_| d.upload(small, None)).collect();
    for id in ids.iter().rev().take(3) {
        d.wait_completed(id);
    }
    let files = [slow_baseline(181), slow_baseline(182)];
    let running: Vec<String> = files
        .iter()
        .map(|f| d.upload(&f.bytes(), Some(SLOW_RATE / 2.0)))
        .collect();
    for id in &running {
        d.wait_processed(id, MID_RUN);
    }
    let pruned = thread::scope(|s| {
        let pruner = s.spawn(|| prune(&d, &["--state", "completed"]));
        let mut cycles = 0;
        while !pruner.is_finished() || cycles < 2 {
            for id in &running {
                d.stop(id);
                d.control("start", id);
            }
            cycles += 1;
        }
        pruner.join().expect("prune thread")
    });
    assert_eq!(pruned, FINISHED, "pruned");
    for (id, f) in running.iter().zip(&files) {
        d.wait_completed(id);
        assert_baseline_exact(&d, id, &f.records);
    }
    assert_forgotten(&d, &ids[0]);
    let e = d.export("2024-04-01", "2024-04-01", None);
    d.wait_completed(&e);
    let out = d.output(&e);
    let lines = out.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(
        lines as u64,
        FINISHED + 1,
        "header and one row per pruned job"
    );
    assert_integrity(&d);
}

both_stores!(
    prune_forgets_finished_jobs_and_keeps_their_effects,
    pruned_ids_are_never_handed_out_again,
    prune_by_age,
    retention_prunes_by_itself,
    prune_while_jobs_run,
);

/// On PostgreSQL, what one node reverts or prunes, every node sees.
#[test]
fn every_node_follows_a_revert_and_a_prune() {
    if !postgres_or_skip("every_node_follows_a_revert_and_a_prune") {
        return;
    }
    let c = Nodes::start(2, &[]);
    let f = gen_baseline(191, &["date", "v"], 100, Date::new(2024, 5, 1), 5);
    let id = c.node(0).upload(&f.bytes(), None);
    c.node(0).wait_completed(&id);
    c.node(1).control("revert", &id);
    let deadline = Instant::now() + DEADLINE;
    while c.node(0).status_json(&id)["state"] != "reverted" {
        assert!(Instant::now() < deadline, "n1 never saw the revert");
        thread::sleep(POLL);
    }
    c.node(0)
        .jobctl(&["revert", &id])
        .refused("already_reverted");
    let kept = c.node(0).upload(&f.bytes(), None);
    c.node(0).wait_completed(&kept);
    assert_eq!(prune(c.node(1), &["--state", "reverted"]), 1);
    wait_forgotten(c.node(0), &id, DEADLINE);
    assert_eq!(c.node(0).status_json(&kept)["state"], "completed");
    // Two nodes pruning at once share the work: each job is pruned once.
    let more: Vec<String> = (0..40)
        .map(|i| c.node(i % 2).upload(b"date,v\n2024-05-02,1\n", None))
        .collect();
    for id in &more {
        c.node(0).wait_completed(id);
    }
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| prune(c.node(0), &[]));
        let b = s.spawn(|| prune(c.node(1), &[]));
        (a.join().expect("n1"), b.join().expect("n2"))
    });
    assert_eq!(a + b, 41, "pruned by n1 {a}, by n2 {b}");
    for n in 0..2 {
        assert!(c.node(n).status_all().is_empty());
    }
}
