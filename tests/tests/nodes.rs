//! Several `jobd` nodes on one PostgreSQL database ([`Nodes`]): every node sees
//! every job; stop, start and terminate work from a node other than the one
//! running the job; a node killed (SIGKILL), frozen past its lease (SIGSTOP) or
//! stopped (SIGTERM) hands its jobs over, which resume from their committed
//! cursor with every effect exactly once; exports read the same from every node;
//! a PostgreSQL restart under three nodes loses nothing; work spreads over nodes.
//!
//! The node kills at random points are in `crash.rs` (`crash_nodes_*`).

use jobd_protocol::JobState;
use jobd_tests::backend::postgres_or_skip;
use jobd_tests::crash::{assert_committed_consistent, assert_integrity, units};
use jobd_tests::nodes::Nodes;
use jobd_tests::pgcluster::{Auth, PgCluster};
use jobd_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The lease of the tests that wait for one to run out.
const LEASE_SECS: u64 = 2;
/// What a takeover may take beyond the lease: the claimer looks just after the
/// lease runs out; the rest is a loaded CI machine's slack.
const TAKEOVER_SLACK: Duration = Duration::from_secs(6);

fn lease() -> Duration {
    Duration::from_secs(LEASE_SECS)
}

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn runs_on(s: &Value, node: usize) -> bool {
    s["state"] == "running" && s["node"] == name(node).as_str()
}

/// A baseline file of `rows` rows, for jobs that must still run after a takeover.
fn baseline(seed: u64, rows: usize) -> BaselineFile {
    gen_baseline(
        seed,
        &["date", "name", "value"],
        rows,
        Date::new(2024, 3, 1),
        25,
    )
}

#[test]
fn every_node_sees_every_job_and_every_node() {
    if !postgres_or_skip("every_node_sees_every_job_and_every_node") {
        return;
    }
    let c = Nodes::start(3, &[]);
    let f = slow_baseline(1201);
    let id = c.node(0).upload(&f.bytes(), Some(SLOW_RATE));
    let (runner, _) = c.wait_running(1, &id, 1);
    for i in 0..3 {
        let s = c.wait_until(i, &id, "the job running", DEADLINE, |s| runs_on(s, runner));
        assert_eq!(s["owner"], current_user().as_str(), "{s}");
        let table = c.node(i).jobctl(&["status"]).ok().stdout_str();
        let row = table
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("n{} does not list {id}:\n{table}", i + 1));
        assert!(row.contains(&format!(" {} ", name(runner))), "{row}");
    }

    // `jobctl nodes` lists the three, up, the runner with its job.
    let listed = c.node(2).jobctl(&["--json", "nodes"]).ok().json();
    let nodes = listed.as_array().expect("an array");
    let names: BTreeSet<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["n1", "n2", "n3"]), "{listed}");
    for n in nodes {
        assert_eq!(n["state"], "up", "{n}");
        assert!(n["heartbeat_age_ms"].as_u64() < Some(60_000), "{n}");
        let want = u64::from(n["name"] == name(runner).as_str());
        assert_eq!(n["running"].as_u64(), Some(want), "{n}");
    }
    let table = c.node(1).jobctl(&["nodes"]).ok().stdout_str();
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // A node that does not run the job follows it to its end (by notification).
    let watcher = c.other_than(&[runner]);
    let out = c.node(watcher).jobctl(&["watch", &id]).ok();
    let last = out
        .stdout_str()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("completed"), "{out}");
    // Every node hears of it (a node's view follows the store by notification).
    for i in 0..3 {
        let s = c.wait_until(i, &id, "completed", DEADLINE, |s| s["state"] == "completed");
        assert!(s["node"].is_null(), "{s}");
        assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    }
    assert_baseline_exact(c.node(2), &id, &f.records);
}

#[test]
fn stop_start_and_terminate_from_another_node() {
    if !postgres_or_skip("stop_start_and_terminate_from_another_node") {
        return;
    }
    let c = Nodes::start(3, &[]);
    let f = slow_baseline(1202);
    let id = c.node(0).upload(&f.bytes(), Some(SLOW_RATE));
    let (runner, _) = c.wait_running(0, &id, MID_RUN);

    // Stop from another node: answered once the runner has parked it.
    let asker = (runner + 1) % 3;
    let out = c.node(asker).jobctl(&["--json", "stop", &id]).ok().json();
    assert_eq!(out["state"], "paused", "{out}");
    for i in 0..3 {
        let s = c.wait_until(i, &id, "paused", DEADLINE, |s| s["state"] == "paused");
        assert!(s["node"].is_null(), "{s}");
    }
    let parked = c.node(runner).assert_stays_paused(&id, HOLD);
    assert_eq!(
        committed_units(&c, &id),
        parked,
        "paused at its last commit"
    );

    // Start from the third node; it runs again, from where it parked.
    let third = (runner + 2) % 3;
    c.node(third).control("start", &id);
    c.wait_until(third, &id, "running again", DEADLINE, |s| {
        s["state"] == "running" && units(s) > parked
    });
    // The legacy updateTask too, from whichever node does not run it now.
    let (now, _) = c.wait_running(third, &id, parked);
    let asker = (now + 1) % 3;
    c.node(asker)
        .jobctl(&["update-task", "--id", &id, "--action", "stop"])
        .ok();
    c.wait_until(now, &id, "paused", DEADLINE, |s| s["state"] == "paused");
    c.node(now)
        .jobctl(&["update-task", "--id", &id, "--action", "start"])
        .ok();
    let s = c.node(asker).wait_completed(&id);
    assert_counts(&s, SLOW_ROWS as u64, 0, Some(SLOW_ROWS as u64));
    assert_baseline_exact(c.node(asker), &id, &f.records);

    // Terminate a running job from a node that does not run it: rolled back.
    let t = gen_teams(1203, "x", SLOW_ROWS, 3);
    let tid = c.node(1).bulk_team(&t.bytes, Some(SLOW_RATE));
    let (runner, _) = c.wait_running(1, &tid, MID_RUN);
    let asker = (runner + 2) % 3;
    let out = c
        .node(asker)
        .jobctl(&["--json", "terminate", &tid])
        .ok()
        .json();
    assert_eq!(out["state"], "terminated", "{out}");
    for i in 0..3 {
        c.wait_until(i, &tid, "terminated", DEADLINE, |s| {
            s["state"] == "terminated"
        });
    }
    assert_no_effects(c.node(runner), &tid);
    assert_committed_consistent(c.node(0), &tid);
}

/// Units committed for the job, as the store has them.
fn committed_units(c: &Nodes, id: &str) -> u64 {
    let k = jobd_tests::crash::committed(c.node(0), id);
    k.processed + k.failed
}

#[test]
fn sigkill_of_the_running_node_hands_the_job_over_after_its_lease() {
    if !postgres_or_skip("sigkill_of_the_running_node_hands_the_job_over_after_its_lease") {
        return;
    }
    let lease_arg = LEASE_SECS.to_string();
    let mut c = Nodes::start(3, &["--lease-secs", &lease_arg]);
    let f = baseline(1204, 600);
    let id = c.node(0).upload(&f.bytes(), Some(60.0));
    let (runner, before) = c.wait_running(0, &id, 20);
    let watcher = c.other_than(&[runner]);

    let t0 = Instant::now();
    c.node_mut(runner).sigkill();
    let s = c.wait_until(watcher, &id, "a takeover", lease() + TAKEOVER_SLACK, |s| {
        s["state"] == "running" && s["node"].is_string() && s["node"] != name(runner).as_str()
    });
    eprintln!(
        "taken over by {} {:?} after the kill (lease {LEASE_SECS} s)",
        s["node"],
        t0.elapsed()
    );
    assert!(units(&s) >= units(&before), "{before} -> {s}");

    // The killed node comes back and sees the job where the others have it.
    c.node_mut(runner).restart();
    let s = c.node(runner).wait_completed(&id);
    assert_counts(&s, 600, 0, Some(600));
    assert_baseline_exact(c.node(watcher), &id, &f.records);
    assert_committed_consistent(c.node(watcher), &id);
    assert_integrity(c.node(0));
}

/// A stop answered by one node and a start sent at once to another: the start
/// acts on what the store holds, not on a view that has not seen the stop yet,
/// so the job runs again every time (and a stop right after a start parks it).
#[test]
fn stop_on_one_node_then_start_at_once_on_another_runs_the_job() {
    if !postgres_or_skip("stop_on_one_node_then_start_at_once_on_another_runs_the_job") {
        return;
    }
    let c = Nodes::start(3, &[]);
    let f = baseline(1208, 3000);
    let id = c.node(0).upload(&f.bytes(), Some(300.0));
    c.wait_running(0, &id, 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut clients = Vec::new();
        for d in &c.nodes {
            clients.push(
                jobd_protocol::Client::connect(&d.socket, "jobd-tests/nodes")
                    .await
                    .expect("connect"),
            );
        }
        for round in 0..12 {
            let (a, b) = (round % 3, (round + 1 + round / 3 % 2) % 3);
            let stopped = clients[a].control(&id, "stop").await.expect("stop");
            assert_eq!(
                stopped.state,
                JobState::Paused,
                "round {round}: {stopped:?}"
            );
            let started = clients[b].control(&id, "start").await.expect("start");
            assert!(
                matches!(started.state, JobState::Queued | JobState::Running),
                "round {round}: start on n{} after a stop on n{} answered {started:?}",
                b + 1,
                a + 1
            );
            // Running again, on whichever node claimed it, before the next stop.
            let deadline = Instant::now() + DEADLINE;
            loop {
                let s = clients[a]
                    .status(std::slice::from_ref(&id))
                    .await
                    .expect("status");
                if s[0].state == JobState::Running && s[0].node.is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: not running again: {:?}",
                    s[0]
                );
                tokio::time::sleep(POLL).await;
            }
        }
    });
    let s = c.node(2).wait_completed(&id);
    assert_counts(&s, 3000, 0, Some(3000));
    assert_baseline_exact(c.node(1), &id, &f.records);
    assert_committed_consistent(c.node(0), &id);
}

/// Job ids are drawn by each node without asking the others; when the store
/// already has the one drawn, the upload (kept in its transaction) is given
/// another. Half of the ids of the coming seconds are taken behind the nodes'
/// backs (no notification), so most uploads draw a taken one at least once.
#[test]
fn an_upload_whose_id_another_node_took_gets_another() {
    if !postgres_or_skip("an_upload_whose_id_another_node_took_gets_another") {
        return;
    }
    let c = Nodes::start(2, &[]);
    let user = current_user();
    let uid = nix::unistd::getuid().as_raw() as i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut db = postgres::Client::connect(c.url(), postgres::NoTls).expect("connect");
    db.batch_execute("SET session_replication_role = replica")
        .expect("no triggers");
    let taken = db
        .execute(
            "INSERT INTO jobd.jobs (id, kind, owner_uid, owner, state, created_at, updated_at, input)
             SELECT $1 || '-baselineCSV-' || s || '-' || n, 'baselineCSV', $2, $1, 'completed', 0, 0, ''
               FROM generate_series($3::int8, $3::int8 + 20) s, generate_series(0, 9999, 2) n",
            &[&user, &uid, &now],
        )
        .expect("take ids");
    assert_eq!(taken, 21 * 5000);
    let files: Vec<BaselineFile> = (0..12).map(|i| baseline(1210 + i, 50)).collect();
    let ids: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| c.node(i % 2).upload(&f.bytes(), None))
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    for (id, f) in ids.iter().zip(&files) {
        let n: u64 = id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("id number");
        assert_eq!(n % 2, 1, "{id} was taken already");
        c.node(0).wait_completed(id);
        assert_baseline_exact(c.node(1), id, &f.records);
    }
}

/// A node frozen past its lease, whose job another node took over, wakes up with
/// a batch in hand: its commit finds another epoch and rolls back, and the job's
/// effects are exactly once. (Without the epoch check in the commit, this test
/// fails: the woken node applies rows the new holder applies too.)
#[test]
fn a_node_frozen_past_its_lease_cannot_commit_when_it_wakes() {
    if !postgres_or_skip("a_node_frozen_past_its_lease_cannot_commit_when_it_wakes") {
        return;
    }
    let lease_arg = LEASE_SECS.to_string();
    let c = Nodes::start(2, &["--lease-secs", &lease_arg]);
    let f = baseline(1205, 4000);
    let id = c.node(0).upload(&f.bytes(), Some(400.0));
    let (runner, _) = c.wait_running(0, &id, 200);
    let other = 1 - runner;

    c.freeze_between_commits(runner);
    let frozen_at = committed_units(&c, &id);
    // The other node takes over once the lease ran out and goes on well past
    // what the frozen node had in hand; on waking, the frozen node's commit of
    // that batch must find another epoch and roll back.
    let s = c.wait_until(
        other,
        &id,
        "a takeover past the frozen node's batch",
        Duration::from_secs(40),
        |s| runs_on(s, other) && units(s) > frozen_at + 400,
    );
    eprintln!("frozen at {frozen_at} committed units; taken over: {s}");
    c.node(runner).thaw();

    let s = c.node(other).wait_completed(&id);
    assert_counts(&s, 4000, 0, Some(4000));
    assert_baseline_exact(c.node(other), &id, &f.records);
    assert_committed_consistent(c.node(other), &id);
    // The woken node let go of the job and serves on.
    let s = c.node(runner).status_json(&id);
    assert_eq!(s["state"], "completed", "{s}");
    c.node(runner).jobctl(&["ping"]).ok();
    assert!(
        c.node(runner)
            .logs()
            .contains("another worker claimed the job"),
        "the woken node did not notice it lost the job:\n{}",
        c.node(runner).logs()
    );
}

#[test]
fn sigterm_hands_the_job_over_without_waiting_for_the_lease() {
    if !postgres_or_skip("sigterm_hands_the_job_over_without_waiting_for_the_lease") {
        return;
    }
    // A lease far longer than the test may wait.
    let mut c = Nodes::start(2, &["--lease-secs", "120"]);
    let f = baseline(1206, 400);
    let id = c.node(0).upload(&f.bytes(), Some(60.0));
    let (runner, before) = c.wait_running(0, &id, 20);
    let other = 1 - runner;
    let t0 = Instant::now();
    c.node_mut(runner).sigterm_and_wait();
    let s = c.wait_until(other, &id, "a handover", Duration::from_secs(10), |s| {
        runs_on(s, other)
    });
    eprintln!("handed over {:?} after SIGTERM", t0.elapsed());
    assert!(units(&s) >= units(&before), "{before} -> {s}");
    let listed = c.node(other).jobctl(&["--json", "nodes"]).ok().json();
    let gone = listed
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name(runner).as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(gone["state"], "stopped", "{listed}");

    let s = c.node(other).wait_completed(&id);
    assert_counts(&s, 400, 0, Some(400));
    assert_baseline_exact(c.node(other), &id, &f.records);
}

/// Every node keeps its paused jobs paused across a restart of them all, and a
/// stop asked while the running node is frozen holds when another node takes the
/// job (which fences the frozen node's worker, as a claim does).
#[test]
fn paused_stays_paused_across_restarts_and_a_dead_nodes_stop_holds() {
    if !postgres_or_skip("paused_stays_paused_across_restarts_and_a_dead_nodes_stop_holds") {
        return;
    }
    let lease_arg = LEASE_SECS.to_string();
    let mut c = Nodes::start(2, &["--lease-secs", &lease_arg]);
    let paused = c
        .node(0)
        .upload(&slow_baseline(1207).bytes(), Some(SLOW_RATE));
    c.wait_running(0, &paused, MID_RUN);
    c.node(1).control("stop", &paused);
    for i in 0..2 {
        c.node_mut(i).sigterm_and_wait();
    }
    for i in 0..2 {
        c.node_mut(i).restart();
    }
    let held = c.node(1).assert_stays_paused(&paused, HOLD);

    // A stop sent while the runner is frozen: not acknowledged (it cannot park
    // the job), but committed; the node that takes the job over parks it.
    let f = baseline(1208, 400);
    let id = c.node(0).upload(&f.bytes(), Some(60.0));
    let (runner, _) = c.wait_running(0, &id, 20);
    let other = 1 - runner;
    c.node(runner).freeze();
    // Acknowledged if the other node took the job over (and parked it) within
    // the 5 s a control waits, else refused as unresponsive: either way it holds.
    let out = c.node(other).jobctl(&["stop", &id]);
    assert!(
        out.code == Some(0) || out.stderr.contains("worker_unresponsive"),
        "{out}"
    );
    let s = c.wait_until(
        other,
        &id,
        "parked by the new holder",
        Duration::from_secs(30),
        |s| s["state"] == "paused",
    );
    c.node(runner).thaw();
    c.node(other).assert_stays_paused(&id, HOLD);
    assert_committed_consistent(c.node(other), &id);
    eprintln!("parked after the takeover: {s}");
    c.node(runner).control("start", &id);
    c.node(other).wait_completed(&id);
    assert_baseline_exact(c.node(other), &id, &f.records);
    assert_eq!(
        c.node(0).status_json(&paused)["processed"].as_u64(),
        Some(held)
    );
}

#[test]
fn export_output_is_byte_identical_from_every_node() {
    if !postgres_or_skip("export_output_is_byte_identical_from_every_node") {
        return;
    }
    let c = Nodes::start(3, &[]);
    let a = gen_baseline(
        1209,
        &["date", "name", "value"],
        2500,
        Date::new(2024, 1, 1),
        40,
    );
    let b = gen_baseline(
        1210,
        &["amount", "date", "name", "note"],
        1500,
        Date::new(2023, 12, 30),
        30,
    );
    let ia = c.node(0).upload(&a.bytes(), Some(3000.0));
    let ib = c.node(1).upload(&b.bytes(), None);
    c.node(2).wait_completed(&ia);
    c.node(2).wait_completed(&ib);
    let from = Date::new(2023, 12, 30);
    let e = c.node(2).export(&from.to_string(), "2024-02-15", None);
    c.node(0).wait_completed(&e);
    let want = expected_export(&[&a, &b], from, Date::new(2024, 2, 15));
    for i in 0..3 {
        let got = c.node(i).output(&e);
        assert_bytes_eq(&format!("the export fetched from n{}", i + 1), &got, &want);
    }
}

#[test]
fn a_postgresql_restart_under_three_nodes_loses_nothing() {
    if !postgres_or_skip("a_postgresql_restart_under_three_nodes_loses_nothing") {
        return;
    }
    let mut cluster = PgCluster::start(Auth::Trust);
    cluster.sql("postgres", None, "CREATE DATABASE jobd");
    let c = Nodes::start_on_url(3, &cluster.url("jobd"), &["--max-running", "1"]);
    let files: Vec<BaselineFile> = (0..3).map(|i| baseline(1211 + i, 400)).collect();
    let teams = gen_teams(1214, "pg", 300, 3);
    let mut ids: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| c.node(i).upload(&f.bytes(), Some(60.0)))
        .collect();
    ids.push(c.node(0).bulk_team(&teams.bytes, Some(60.0)));
    for id in &ids[..3] {
        c.wait_running(0, id, 20);
    }

    cluster.stop_server();
    for i in 0..3 {
        // Status is served from memory while the store is away.
        c.node(i).status_json(&ids[0]);
    }
    cluster.start_server();

    for (i, id) in ids.iter().enumerate() {
        let s = c.node(i % 3).wait_completed(id);
        assert_committed_consistent(c.node(0), id);
        eprintln!("{id}: {s}");
    }
    for (f, id) in files.iter().zip(&ids) {
        assert_baseline_exact(c.node(1), id, &f.records);
    }
    assert_teams_exact(c.node(2), &ids[3], &teams.teams);
    assert_integrity(c.node(0));
}

#[test]
fn jobs_spread_over_nodes_of_one_slot_each() {
    if !postgres_or_skip("jobs_spread_over_nodes_of_one_slot_each") {
        return;
    }
    let c = Nodes::start(3, &["--max-running", "1"]);
    let ids: Vec<String> = (0..4)
        .map(|i| {
            c.node(0)
                .upload(&slow_baseline(1220 + i).bytes(), Some(SLOW_RATE))
        })
        .collect();
    // Three run at once, one per node; the fourth waits for a free slot.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = c.node(0).status_all();
        let running: BTreeSet<String> = all
            .iter()
            .filter(|s| s["state"] == "running")
            .filter_map(|s| s["node"].as_str().map(str::to_string))
            .collect();
        let count = all.iter().filter(|s| s["state"] == "running").count();
        assert!(count <= 3, "more jobs run than there are slots: {all:?}");
        if running.len() == 3 {
            assert_eq!(count, 3, "{all:?}");
            let queued = all.iter().filter(|s| s["state"] == "queued").count();
            assert_eq!(queued, 1, "{all:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs did not spread: {all:?}"
        );
        std::thread::sleep(POLL);
    }
    for id in &ids {
        c.node(1).wait_completed(id);
    }
}
