//! jobctl's contract: exit codes 2 and 3, `-q`, `--json` shapes and keys, `--wait`,
//! `JOBD_SOCKET`, `wait`, `watch`, `--rate`, job ids.

use jobd_tests::*;
use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

fn jobctl_at(socket: &std::path::Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(&bins().jobctl);
    cmd.env_remove("JOBD_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(30))
}

#[test]
fn no_daemon_is_exit_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "date,v\n2024-01-01,1\n").expect("write input");
    let input = input.to_str().expect("UTF-8 path");
    let missing = dir.path().join("nothing-here.sock");
    // A stale socket: the file exists, nothing listens.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    for socket in [&missing, &stale] {
        for args in [
            vec!["ping"],
            vec!["status"],
            vec!["--json", "status"],
            vec!["upload", input],
            vec!["stop", "root-baselineCSV-1700000000-1"],
            vec!["export", "--from", "2024-01-01", "--to", "2024-01-02"],
        ] {
            jobctl_at(socket, &args).expect_code(3, None);
        }
    }
    // JOBD_SOCKET is honoured too.
    let mut cmd = Command::new(&bins().jobctl);
    cmd.env("JOBD_SOCKET", &missing).arg("ping");
    run_with_timeout(cmd, None, Duration::from_secs(30)).expect_code(3, None);
}

#[test]
fn usage_errors_are_exit_2() {
    let d = Daemon::start();
    let input = d.input_file(b"date,v\n2024-01-01,1\n");
    let input = input.to_str().expect("UTF-8 path");
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["upload"],
        vec!["bulk-team"],
        vec!["upload", input, "--rate", "fast"],
        vec!["export", "--from", "2024-01-01"],
        vec!["export", "--to", "2024-01-01"],
        vec!["stop"],
        vec!["start"],
        vec!["terminate"],
        vec!["update-task", "--id", "x"],
        vec!["update-task", "--action", "stop"],
        vec!["output"],
        vec!["errors"],
        vec!["watch"],
        vec!["status", "--no-such-flag"],
    ];
    for args in &cases {
        d.jobctl(args).expect_code(2, None);
    }
    // Nothing was submitted by any of them.
    assert!(d.status_all().is_empty());
    // Usage is checked before connecting.
    let dir = tempfile::tempdir().expect("temp dir");
    jobctl_at(&dir.path().join("none.sock"), &["frobnicate"]).expect_code(2, None);
}

#[test]
fn quiet_prints_only_the_id() {
    let d = Daemon::start();
    let user = current_user();
    let base = d.input_file(b"date,v\n2024-01-01,1\n");
    let teams = d.input_file(b"team,m\nq1,a\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-q", "upload", base.to_str().expect("path")],
            "baselineCSV",
        ),
        (
            vec!["-q", "bulk-team", teams.to_str().expect("path")],
            "bulkTeam",
        ),
        (
            vec!["-q", "export", "--from", "2024-01-01", "--to", "2024-01-01"],
            "createExport",
        ),
    ];
    for (args, kind) in cases {
        let out = d.jobctl(&args).ok();
        let id = bare_id(&out);
        let (u, k, secs, n) = parse_job_id(&id).unwrap_or_else(|| panic!("bad id {id}"));
        assert_eq!((u.as_str(), k.as_str()), (user.as_str(), kind), "id {id}");
        assert!(secs.abs_diff(unix_now()) < 120 && n <= 9999, "id {id}");
        assert_eq!(out.stdout_str(), format!("{id}\n"));
        d.wait_completed(&id);
    }
}

fn submit_with_wait_returns_when_completed(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(91, &["date", "name", "value"], 40, Date::new(2024, 1, 1), 3);
    let path = d.input_file(&f.bytes());
    let out = d
        .jobctl(&[
            "-q",
            "upload",
            path.to_str().expect("path"),
            "--rate",
            "100",
            "--wait",
        ])
        .ok();
    let id = bare_id(&out);
    assert_eq!(d.status_json(&id)["state"], "completed");
    assert_baseline_exact(&d, &id, &f.records);

    let out = d
        .jobctl(&[
            "-q",
            "export",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-03",
            "--wait",
        ])
        .ok();
    let e = bare_id(&out);
    assert_eq!(d.status_json(&e)["state"], "completed");
    assert_bytes_eq(
        "export output",
        &d.output(&e),
        &expected_export(&[&f], Date::new(2024, 1, 1), Date::new(2024, 1, 3)),
    );
}

#[test]
fn status_json_is_an_object_for_one_id_and_an_array_otherwise() {
    let d = Daemon::start();
    let a = d.upload(b"date,v\n2024-01-01,1\n", None);
    let b = d.upload(&slow_baseline(92).bytes(), Some(2.5));
    d.wait_completed(&a);

    let s = d.jobctl(&["--json", "status", &a]).ok().json();
    assert!(s.is_object(), "status ID --json: {s}");
    for k in STATUS_KEYS {
        assert!(s.get(k).is_some(), "key {k} missing from {s}");
    }
    assert_eq!(s["id"], a.as_str());
    assert_eq!(s["kind"], "baselineCSV");
    assert_eq!(s["state"], "completed");
    assert_eq!(s["owner"], current_user().as_str());
    for k in ["created_at", "updated_at"] {
        assert!(s[k].is_u64() || s[k].is_string(), "{k} of {s}");
    }
    assert!(s["error"].is_null() && s["rate"].is_null(), "{s}");

    assert!(s["node"].is_null(), "a finished job runs nowhere: {s}");
    let sb = d.wait_for_state(&b, "running", DEADLINE);
    assert_eq!(sb["rate"].as_f64(), Some(2.5), "fractional rate: {sb}");
    let host = nix::unistd::gethostname().expect("host name");
    assert_eq!(
        sb["node"],
        host.to_string_lossy().as_ref(),
        "runs here: {sb}"
    );
    let table = d.jobctl(&["status", &b]).ok().stdout_str();
    assert!(
        table.lines().next().is_some_and(|h| h.contains(" NODE ")),
        "{table}"
    );

    let all = d.jobctl(&["--json", "status"]).ok().json();
    let ids: BTreeSet<_> = all
        .as_array()
        .unwrap_or_else(|| panic!("status --json: {all}"))
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, BTreeSet::from([a.clone(), b.clone()]));

    let two = d.jobctl(&["--json", "status", &a, &b]).ok().json();
    let arr = two
        .as_array()
        .unwrap_or_else(|| panic!("status ID ID --json: {two}"));
    assert_eq!(arr.len(), 2, "{two}");
    for j in arr {
        for k in STATUS_KEYS {
            assert!(j.get(k).is_some(), "key {k} missing from {j}");
        }
    }

    // Plain status mentions the job and its state.
    let text = d.jobctl(&["status", &a]).ok().stdout_str();
    assert!(text.contains(&a) && text.contains("completed"), "{text}");
    d.control("terminate", &b);
}

#[test]
fn control_json_prints_the_job() {
    let d = Daemon::start();
    let id = d.upload(&slow_baseline(93).bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, MID_RUN);
    let s = d.jobctl(&["--json", "stop", &id]).ok().json();
    assert_eq!(
        (s["id"].as_str(), s["state"].as_str()),
        (Some(id.as_str()), Some("paused")),
        "{s}"
    );
    let s = d.jobctl(&["--json", "start", &id]).ok().json();
    assert_eq!(s["id"], id.as_str(), "{s}");
    assert!(
        matches!(s["state"].as_str(), Some("running" | "queued")),
        "{s}"
    );
    let s = d.jobctl(&["--json", "terminate", &id]).ok().json();
    assert_eq!(s["state"], "terminated", "{s}");
}

#[test]
fn jobd_socket_env_selects_the_daemon() {
    let d = Daemon::start();
    let mut cmd = Command::new(&bins().jobctl);
    cmd.env("JOBD_SOCKET", &d.socket).args(["--json", "status"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(30)).ok();
    assert_eq!(out.json(), serde_json::json!([]));
}

#[test]
fn wait_exits_0_only_if_every_job_completed() {
    let d = Daemon::start();
    let ok1 = d.upload(b"date,v\n2024-01-01,1\n", None);
    let ok2 = d.upload(b"date,v\n2024-01-02,2\n", None);
    let bad = d.upload(b"v\n1\n", None);
    d.jobctl(&["wait", &ok1, &ok2]).ok();
    let out = d.jobctl(&["wait", &ok1, &bad]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "wait with a failed job: {out}"
    );
    assert_eq!(d.status_json(&bad)["state"], "failed");
    d.jobctl(&["wait", "root-baselineCSV-1700000000-1"])
        .refused("id_doesn't_exist");
}

#[test]
fn watch_follows_a_job_to_its_end() {
    let d = Daemon::start();
    let f = gen_baseline(94, &["date", "v"], 30, Date::new(2024, 1, 1), 3);
    let id = d.upload(&f.bytes(), Some(60.0));
    let out = d.jobctl(&["watch", &id]).ok();
    assert!(
        !out.stdout.is_empty() || !out.stderr.is_empty(),
        "watch printed nothing"
    );
    assert_eq!(d.status_json(&id)["state"], "completed");
}

#[test]
fn errors_json_of_a_clean_job_is_empty() {
    let d = Daemon::start();
    let id = d.upload(b"date,v\n2024-01-01,1\n", None);
    d.wait_completed(&id);
    assert_eq!(
        d.jobctl(&["--json", "errors", &id]).ok().json(),
        serde_json::json!([])
    );
}

fn job_ids_are_never_reused(b: Backend) {
    let d = Daemon::start_on(b);
    let path = d.input_file(b"date,v\n2024-01-01,1\n");
    let path = path.to_str().expect("path");
    let mut ids = BTreeSet::new();
    for _ in 0..25 {
        let id = d.submit(&["upload", path]);
        assert!(parse_job_id(&id).is_some(), "bad id {id}");
        assert!(ids.insert(id.clone()), "id {id} was reused");
    }
    for id in &ids {
        d.wait_completed(id);
    }
    assert_eq!(d.status_all().len(), 25);
}

#[test]
fn ping_answers() {
    let d = Daemon::start();
    d.jobctl(&["ping"]).ok();
}

both_stores!(
    submit_with_wait_returns_when_completed,
    job_ids_are_never_reused,
);
