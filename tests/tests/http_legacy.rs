//! jobd-http's legacy routes against the contract (`legacy-http.md`): every row of
//! its table, byte for byte, against the real shim in front of the real daemon;
//! streaming uploads (memory bound, client dropping mid-upload); a daemon restart
//! under the running shim; graceful shutdown and bounded logging.

use jobd_tests::crash::receiving;
use jobd_tests::http::read_response;
use jobd_tests::http::{write_head, HttpResponse, Multipart, Shim, SseStream};
use jobd_tests::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

const JSON: &str = "application/json; charset=utf-8";
const NOT_ACCEPTED: &str = "File not accepted";

const BASELINE_3: &[u8] = b"date,name,value\n2020-01-01,ann,1\n2020-01-02,bob,2\n2020-01-03,cy,3\n";
const TEAMS_3: &[u8] = b"team,m1,m2\nred,ann,bob\nblue,cy,\ngreen,dee,eve\n";

/// Asserts `{"Job ID":"<user>-<kind>-<unix>-<n>"}` and returns the id.
#[track_caller]
fn job_id(resp: &HttpResponse, kind: &str, since: u64) -> String {
    assert_eq!(resp.status, 200, "expected a new job: {resp}");
    assert_eq!(resp.header("content-type"), Some(JSON), "{resp}");
    let text = resp.text();
    let id = text
        .strip_prefix("{\"Job ID\":\"")
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("not a Job ID body: {resp}"))
        .to_string();
    let (user, k, secs, n) = parse_job_id(&id).unwrap_or_else(|| panic!("bad job id {id:?}"));
    assert_eq!(user, current_user(), "{id}");
    assert_eq!(k, kind, "{id}");
    assert!(
        secs >= since && secs <= unix_now(),
        "{id}: time {secs} not now"
    );
    assert!(n <= 9999, "{id}");
    id
}

/// The job as `GET /jobs/{id}` shows it.
#[track_caller]
fn status(shim: &Shim, id: &str) -> Value {
    let r = shim.get(&format!("/jobs/{id}"));
    assert_eq!(r.status, 200, "{r}");
    r.json()
}

/// Polls `GET /jobs/{id}` until `pred` holds.
#[track_caller]
fn wait_http(shim: &Shim, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = status(shim, id);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "job {id}: no {what}; last {s}");
        std::thread::sleep(POLL);
    }
}

fn state_is(s: &Value, state: &str) -> bool {
    s["state"] == state
}

fn update(shim: &Shim, query: &str) -> HttpResponse {
    shim.get(&format!("/updateTask?{query}"))
}

/// A long export through the shim: 366 dates at `rate` per second.
fn slow_export(shim: &Shim, rate: u32) -> String {
    let since = unix_now();
    let r = shim.post(
        &format!("/exportData?rate={rate}"),
        Some("application/json"),
        br#"{"from":"2020-01-01","to":"2020-12-31"}"#,
    );
    job_id(&r, "createExport", since)
}

fn upload_routes_accept_files_and_refuse_anything_else(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let since = unix_now();

    // uploadCSV ok, createBulkTeam ok.
    let b = job_id(
        &shim.upload("/uploadCSV", "b.csv", BASELINE_3),
        "baselineCSV",
        since,
    );
    let t = job_id(
        &shim.upload("/createBulkTeam", "t.csv", TEAMS_3),
        "bulkTeam",
        since,
    );
    for id in [&b, &t] {
        let s = wait_http(&shim, id, "completion", is_finished);
        assert_counts(&s, 3, 0, Some(3));
        assert_eq!(s["state"], "completed", "{s}");
    }
    // Binary and ragged files are accepted; their jobs say what went wrong.
    let mut rng = Rng::new(7);
    let binary: Vec<u8> = (0..4096).map(|_| rng.below(256) as u8).collect();
    let bin = job_id(
        &shim.upload("/uploadCSV", "x.bin", &binary),
        "baselineCSV",
        since,
    );
    let ragged = job_id(
        &shim.upload("/uploadCSV", "r.csv", b"a,b\nc,d,e\nf,g\n"),
        "baselineCSV",
        since,
    );
    for id in [&bin, &ragged] {
        wait_http(&shim, id, "the end", is_finished);
    }

    for route in ["/uploadCSV", "/createBulkTeam"] {
        // No body.
        shim.post(route, None, b"").expect_error(400, NOT_ACCEPTED);
        // Multipart without a 'file' part.
        let form = Multipart::new()
            .file("other", "a.csv", BASELINE_3)
            .field("x", "y");
        shim.post(route, Some(&form.content_type()), &form.body())
            .expect_error(400, NOT_ACCEPTED);
        // 'file' as a plain text field.
        let form = Multipart::new().field("file", "date\n2020-01-01\n");
        shim.post(route, Some(&form.content_type()), &form.body())
            .expect_error(400, NOT_ACCEPTED);
        // urlencoded file=...
        shim.post(
            route,
            Some("application/x-www-form-urlencoded"),
            b"file=date%0A2020-01-01%0A",
        )
        .expect_error(400, NOT_ACCEPTED);
        // JSON body.
        shim.post(route, Some("application/json"), br#"{"file":"date\n"}"#)
            .expect_error(400, NOT_ACCEPTED);
        // A malformed form (no closing boundary) is not a job either.
        let form = Multipart::new();
        let mut body = form.file_head("file", "a.csv").into_bytes();
        body.extend_from_slice(BASELINE_3);
        shim.post(route, Some(&form.content_type()), &body)
            .expect_error(400, NOT_ACCEPTED);
    }
    // The plain 'file' field is skipped; a later file part named 'file' is used.
    let form = Multipart::new()
        .field("file", "not me")
        .file("file", "t.csv", TEAMS_3);
    let r = shim.post("/createBulkTeam", Some(&form.content_type()), &form.body());
    let id = job_id(&r, "bulkTeam", since);
    wait_http(&shim, &id, "the end", is_finished);

    // Exactly the jobs answered 200 exist.
    let mut ids: Vec<String> = d
        .status_all()
        .iter()
        .map(|j| j["id"].as_str().expect("id is a string").to_string())
        .collect();
    ids.sort();
    let mut want = vec![b, t, bin, ragged, id];
    want.sort();
    assert_eq!(ids, want);
    wait_uploads_gone(&d);
}

fn export_data_validates_like_the_original(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let since = unix_now();
    let ok = |ct: Option<&str>, body: &str| {
        let r = shim.post("/exportData", ct, body.as_bytes());
        job_id(&r, "createExport", since)
    };
    let refused = |ct: Option<&str>, body: &str, code: &str| {
        shim.post("/exportData", ct, body.as_bytes())
            .expect_error(400, code);
    };
    let j = Some("application/json");
    let five = ok(j, r#"{"from":"2020-01-01","to":"2020-01-05"}"#);
    ok(
        Some("text/plain"),
        r#"{"from":"2020-01-01","to":"2020-01-05"}"#,
    );
    ok(None, r#"{"from":"2020-01-01","to":"2020-01-05"}"#);
    ok(j, r#"{"from":"2020-01-01","to":"2020-01-05","x":1}"#);
    ok(j, r#"{"from":"2020-02-29","to":"2020-03-01"}"#);
    ok(j, r#"{"FROM":"2020-01-01","To":"2020-01-02"}"#);
    // 3.6 million dates: accepted, throttled and terminated at once (it is not
    // waited for, and an unthrottled one keeps the daemon's store busy).
    let wide = {
        let r = shim.post(
            "/exportData?rate=1",
            j,
            br#"{"from":"0000-01-01","to":"9999-12-31"}"#,
        );
        job_id(&r, "createExport", since)
    };
    shim.get(&format!("/updateTask?id={wide}&action=terminate"))
        .expect_json(200, &format!("{{\"status\":\"Job {wide} terminated.\"}}"));
    // The range is inclusive: from == to is one date, and the job completes.
    let one = ok(j, r#"{"from":"2020-01-01","to":"2020-01-01"}"#);

    for body in [
        "not json",
        "",
        "null",
        "[]",
        r#"{"from":"2020-01-01"}"#,
        r#"{"to":"2020-01-01"}"#,
        r#"{"from":"","to":"2020-01-02"}"#,
        r#"{"from":1,"to":2}"#,
        r#"{"from":"2020-01-01","#,
    ] {
        refused(j, body, "invalid_json");
    }
    for (body, code) in [
        (
            r#"{"from":"2020-13-01","to":"2020-01-02"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":"2020/01/01","to":"2020-01-02"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":"2020-1-1","to":"2020-01-02"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":"2020-01-01T00:00:00Z","to":"2020-01-02"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":" 2020-01-01","to":"2020-01-02"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":"2020-01-01","to":"2020-02-30"}"#,
            "invalid_to_date",
        ),
        (
            r#"{"from":"2020-01-01","to":"tomorrow"}"#,
            "invalid_to_date",
        ),
        (r#"{"from":"x","to":"y"}"#, "invalid_from_date"),
        (
            r#"{"from":"2020-01-02","to":"2020-01-01"}"#,
            "invalid_date_range",
        ),
        (
            r#"{"from":"2021-01-01","to":"2020-12-31"}"#,
            "invalid_date_range",
        ),
        (
            r#"{"from":"2021-02-29","to":"2021-03-01"}"#,
            "invalid_from_date",
        ),
        (
            r#"{"from":"2020-01-01","to":"2020-01-02","from":"x"}"#,
            "invalid_from_date",
        ),
    ] {
        refused(j, body, code);
    }

    let s = wait_http(&shim, &one, "completion", is_finished);
    assert_eq!(s["state"], "completed", "{s}");
    assert_counts(&s, 1, 0, Some(1));
    let s = wait_http(&shim, &five, "completion", is_finished);
    assert_counts(&s, 5, 0, Some(5));
}

#[test]
fn update_task_checks_id_then_existence_then_action() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let live = slow_export(&shim, 2);

    for q in [
        "action=stop",
        "",
        "id=&action=stop",
        "id=%20%09%20&action=stop",
        "action=bogus",
    ] {
        update(&shim, q).expect_error(400, "invalid_id");
    }
    shim.get("/updateTask").expect_error(400, "invalid_id");
    for q in [
        "id=Jon-Doe-bulkTeam-1-1&action=stop",
        "id=nope&action=bogus",
        "id=nope",
    ] {
        update(&shim, q).expect_error(404, "id_doesn't_exist");
    }
    for q in [
        format!("id={live}"),
        format!("id={live}&action="),
        format!("id={live}&action=pause"),
        format!("id={live}&action=STOP"),
        format!("id={live}&action=resume"),
    ] {
        update(&shim, &q).expect_error(400, "invalid_action");
    }
    // None of that touched the job.
    assert!(!is_finished(&status(&shim, &live)));
    assert_ne!(status(&shim, &live)["state"], "paused");
    update(&shim, &format!("id={live}&action=terminate"))
        .expect_json(200, &format!("{{\"status\":\"Job {live} terminated.\"}}"));
}

fn update_task_stops_starts_and_terminates_live_jobs(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let expect = |q: &str, id: &str, word: &str| {
        update(&shim, q).expect_json(200, &format!("{{\"status\":\"Job {id} {word}.\"}}"));
    };

    let id = slow_export(&shim, 20);
    wait_http(&shim, &id, "progress", |s| {
        state_is(s, "running") && s["processed"].as_u64() >= Some(2)
    });
    // stop running job: answered once paused.
    expect(&format!("id={id}&action=stop"), &id, "stopped");
    let paused = status(&shim, &id);
    assert_eq!(paused["state"], "paused", "{paused}");
    // stop paused job.
    expect(&format!("id={id}&action=stop"), &id, "stopped");
    assert_eq!(status(&shim, &id)["processed"], paused["processed"]);
    // start paused job.
    expect(&format!("id={id}&action=start"), &id, "started");
    let s = status(&shim, &id);
    assert!(
        matches!(s["state"].as_str(), Some("running" | "queued")),
        "{s}"
    );
    wait_http(&shim, &id, "running again", |s| state_is(s, "running"));
    // start running job: a no-op.
    expect(&format!("id={id}&action=start"), &id, "started");
    // padded id and action.
    expect(&format!("id=%20{id}%20&action=%20stop%20"), &id, "stopped");
    assert_eq!(status(&shim, &id)["state"], "paused");
    expect(&format!("id={id}&action=start"), &id, "started");
    wait_http(&shim, &id, "running again", |s| state_is(s, "running"));
    // terminate running job.
    expect(&format!("id={id}&action=terminate"), &id, "terminated");
    assert_eq!(status(&shim, &id)["state"], "terminated");

    // terminate paused job (a bulkTeam, as in the contract).
    let since = unix_now();
    let f = gen_teams(5, "t", 200, 3);
    let t = job_id(
        &shim.upload("/createBulkTeam?rate=20", "t.csv", &f.bytes),
        "bulkTeam",
        since,
    );
    wait_http(&shim, &t, "progress", |s| {
        s["processed"].as_u64() >= Some(1)
    });
    expect(&format!("id={t}&action=stop"), &t, "stopped");
    assert_eq!(status(&shim, &t)["state"], "paused");
    expect(&format!("id={t}&action=terminate"), &t, "terminated");
    assert_eq!(status(&shim, &t)["state"], "terminated");
    assert_no_effects(&d, &t);
}

fn finished_and_terminated_jobs_do_not_exist_for_update_task(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let since = unix_now();
    let done = job_id(
        &shim.post(
            "/exportData",
            Some("application/json"),
            br#"{"from":"2020-01-01","to":"2020-01-02"}"#,
        ),
        "createExport",
        since,
    );
    let s = wait_http(&shim, &done, "completion", is_finished);
    assert_eq!(s["state"], "completed");
    let gone = slow_export(&shim, 2);
    update(&shim, &format!("id={gone}&action=terminate"))
        .expect_json(200, &format!("{{\"status\":\"Job {gone} terminated.\"}}"));
    // Failed, reverted, and pruned (forgotten by the daemon too).
    let failed = d.upload(b"v,w\n1,2\n", None);
    d.wait_for_state(&failed, "failed", DEADLINE);
    let reverted = d.upload(b"date,v\n2020-01-01,1\n", None);
    d.wait_completed(&reverted);
    d.control("revert", &reverted);
    let pruned = d.upload(b"date,v\n2020-01-02,1\n", None);
    d.wait_completed(&pruned);
    d.jobctl(&["prune", "--state", "completed"]).ok();
    let done_again = d.export("2020-01-01", "2020-01-02", None);
    d.wait_completed(&done_again);
    // Every action, valid or not, even none: existence comes before the action,
    // and to this route a finished job does not exist.
    let actions = [
        "&action=stop",
        "&action=start",
        "&action=terminate",
        "&action=bogus",
        "&action=STOP",
        "&action=",
        "&action=%20",
        "",
    ];
    for id in [&done_again, &gone, &failed, &reverted, &pruned] {
        for action in actions {
            update(&shim, &format!("id={id}{action}")).expect_error(404, "id_doesn't_exist");
            update(&shim, &format!("id=%20{id}%20{action}")).expect_error(404, "id_doesn't_exist");
        }
    }
    // A live job still gets invalid_action for a bad action.
    let live = slow_export(&shim, 2);
    update(&shim, &format!("id={live}&action=bogus")).expect_error(400, "invalid_action");
    update(&shim, &format!("id={live}")).expect_error(400, "invalid_action");
    // The new routes tell the truth: 409 job_finished is for controls, which the
    // legacy route hides; the job itself is still visible.
    assert_eq!(status(&shim, &gone)["state"], "terminated");
    assert_eq!(status(&shim, &reverted)["state"], "reverted");
    shim.post(&format!("/jobs/{gone}/stop"), None, b"")
        .expect_error(409, "job_finished");
    d.jobctl(&["update-task", "--id", &reverted, "--action", "stop"])
        .refused("job_finished");
    shim.get(&format!("/jobs/{pruned}"))
        .expect_error(404, "id_doesn't_exist");
}

#[test]
fn unknown_routes_wrong_methods_and_trailing_slashes() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let not_found = |r: HttpResponse| {
        r.expect(404, "text/plain", "404 page not found");
    };
    not_found(shim.get("/uploadCSV"));
    not_found(shim.get("/createBulkTeam"));
    not_found(shim.get("/exportData"));
    not_found(shim.post("/updateTask?id=x&action=stop", None, b""));
    // HEAD is not GET: 404 (its body is not sent).
    shim.request("HEAD", "/updateTask?id=x&action=stop", &[], b"")
        .expect(404, "text/plain", "");
    not_found(shim.request("PUT", "/exportData", &[], b"{}"));
    not_found(shim.request("DELETE", "/jobs", &[], b""));
    not_found(shim.get("/nope"));
    not_found(shim.get("/"));
    not_found(shim.get("/updatetask?id=x&action=stop"));
    // Only paths that exist without the slash, for that method, are redirected.
    not_found(shim.post("/updateTask/?id=x", None, b""));
    not_found(shim.get("/uploadCSV/"));
    not_found(shim.get("/updateTask//"));

    let r = shim.get("/updateTask/?id=x&action=stop");
    r.expect(
        301,
        "text/html; charset=utf-8",
        "<a href=\"/updateTask?id=x&amp;action=stop\">Moved Permanently</a>.\n\n",
    );
    assert_eq!(r.header("location"), Some("/updateTask?id=x&action=stop"));
    let r = shim.get("/updateTask/");
    assert_eq!(r.status, 301, "{r}");
    assert_eq!(r.header("location"), Some("/updateTask"));
    assert_eq!(
        r.text(),
        "<a href=\"/updateTask\">Moved Permanently</a>.\n\n"
    );

    for path in ["/exportData/", "/uploadCSV/", "/createBulkTeam/"] {
        let r = shim.post(path, Some("application/json"), b"{}");
        assert_eq!((r.status, r.body.len()), (307, 0), "{r}");
        assert_eq!(r.header("location"), Some(path.trim_end_matches('/')));
    }
    let r = shim.get("/jobs/");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("/jobs")),
        "{r}"
    );
    // Nothing was submitted by any of that.
    assert!(d.status_all().is_empty());
}

fn default_rate_and_rate_parameter(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &["--default-rate", "1"]);
    let since = unix_now();
    let body = br#"{"from":"2020-01-01","to":"2020-01-10"}"#;
    let ct = Some("application/json");
    let slow = job_id(&shim.post("/exportData", ct, body), "createExport", since);
    let fast = job_id(
        &shim.post("/exportData?rate=250", ct, body),
        "createExport",
        since,
    );
    let up = job_id(
        &shim.upload("/uploadCSV", "b.csv", BASELINE_3),
        "baselineCSV",
        since,
    );
    assert_eq!(status(&shim, &slow)["rate"], 1.0);
    assert_eq!(status(&shim, &fast)["rate"], 250.0);
    assert_eq!(status(&shim, &up)["rate"], 1.0);
    shim.post("/exportData?rate=fast", ct, body)
        .expect_error(400, "invalid_rate");
    shim.post("/exportData?rate=0", ct, body)
        .expect_error(400, "invalid_rate");
    shim.post("/exportData?rate=-2", ct, body)
        .expect_error(400, "invalid_rate");
    let s = wait_http(&shim, &fast, "completion", is_finished);
    assert_eq!(s["state"], "completed");
    // The default rate really paces the job: one date per second.
    let s = status(&shim, &slow);
    assert!(s["processed"].as_u64() < Some(10), "{s}");

    // Without --default-rate, jobs are not throttled.
    let shim2 = Shim::start(&d, &[]);
    let free = job_id(&shim2.post("/exportData", ct, body), "createExport", since);
    assert_eq!(status(&shim2, &free)["rate"], Value::Null);
}

/// Sends an upload head and the start of its form; the caller sends the file's
/// bytes, then `Multipart::tail`.
fn start_upload(shim: &Shim, route: &str, file_len: u64) -> (std::net::TcpStream, Multipart) {
    let form = Multipart::new();
    let head = form.file_head("file", "big.csv");
    let total = head.len() as u64 + file_len + form.tail().len() as u64;
    let mut s = shim.connect();
    write_head(
        &mut s,
        "POST",
        route,
        &[("Content-Type", &form.content_type())],
        Some(total),
    );
    s.write_all(head.as_bytes()).expect("form head");
    (s, form)
}

fn uploads_stream_without_buffering_the_file(b: Backend) {
    const MIB: usize = 1024 * 1024;
    const FILE: usize = 200 * MIB;
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    // Warm up: one small upload, so that steady-state buffers exist.
    let since = unix_now();
    job_id(
        &shim.upload("/uploadCSV", "b.csv", BASELINE_3),
        "baselineCSV",
        since,
    );
    let before = shim.proc_kib("VmHWM");

    // A header without a `date` column: the job fails at once instead of storing
    // millions of rows; what is measured here is the upload.
    let piece = b"1,1\n".repeat(MIB / 4);
    let (mut s, form) = start_upload(&shim, "/uploadCSV", FILE as u64);
    let mut first = piece.clone();
    first[..4].copy_from_slice(b"x,y\n");
    s.write_all(&first).expect("upload");
    for _ in 1..FILE / MIB {
        s.write_all(&piece).expect("upload");
    }
    s.write_all(form.tail().as_bytes()).expect("upload");
    let resp = jobd_tests::http::read_response(&mut BufReader::new(s), "POST");
    let id = job_id(&resp, "baselineCSV", since);
    let after = shim.proc_kib("VmHWM");
    eprintln!("jobd-http VmHWM: {before} KiB before, {after} KiB after a {FILE}-byte upload");
    assert!(
        after < 32 * 1024,
        "jobd-http peaked at {after} KiB during a {FILE}-byte upload (before: {before} KiB)"
    );
    assert!(
        after - before < 16 * 1024,
        "a {FILE}-byte upload raised jobd-http's peak by {} KiB",
        after - before
    );
    let s = wait_http(&shim, &id, "the end", is_finished);
    assert_eq!(s["state"], "failed", "{s}");
    wait_uploads_gone(&d);
}

fn a_client_dropping_mid_upload_leaves_no_job(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let chunk = vec![b'7'; 1024 * 1024];
    let (mut s, _form) = start_upload(&shim, "/createBulkTeam", 64 * 1024 * 1024);
    s.write_all(b"team,m1\n").expect("upload");
    // Keep sending until the daemon's store holds some of it.
    let deadline = Instant::now() + DEADLINE;
    loop {
        s.write_all(&chunk).expect("upload");
        if receiving(&d, 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the daemon's store"
        );
    }
    drop(s);
    wait_uploads_gone(&d);
    assert!(
        d.status_all().is_empty(),
        "a job exists: {:?}",
        d.status_all()
    );
    // The shim is fine and serves on.
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
}

#[test]
fn daemon_restart_gives_503_then_the_shim_reconnects() {
    let mut d = Daemon::start();
    let mut shim = Shim::start(&d, &[]);
    let body: &[u8] = br#"{"from":"2020-01-01","to":"2020-01-02"}"#;
    // Fill the pool with connections that the restart will kill.
    for _ in 0..4 {
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
    }
    for round in 0..2 {
        // An event stream open on a long job when the daemon goes away.
        let slow = slow_export(&shim, 1);
        let mut events = SseStream::open(&shim, &format!("/jobs/{slow}/events"));
        assert_eq!(
            events.next_event().map(|e| e.event).as_deref(),
            Some("state")
        );
        if round == 0 {
            d.sigterm_and_wait();
        } else {
            d.sigkill();
        }
        // Progress until then, then one `error` event, and the stream ends.
        let mut last = None;
        while let Some(e) = events.next_event() {
            last = Some(e);
        }
        let last = last.expect("an event before the stream ends");
        assert_eq!(last.event, "error", "{last:?}");
        assert_eq!(last.data, "{\"errorType\":\"daemon_unavailable\"}");
        for _ in 0..3 {
            shim.get("/healthz").expect_error(503, "daemon_unavailable");
            update(&shim, "id=nope&action=stop").expect_error(503, "daemon_unavailable");
            shim.post("/exportData", Some("application/json"), body)
                .expect_error(503, "daemon_unavailable");
            shim.upload("/uploadCSV", "b.csv", BASELINE_3)
                .expect_error(503, "daemon_unavailable");
            shim.get("/jobs").expect_error(503, "daemon_unavailable");
            shim.get("/jobs/x/events")
                .expect_error(503, "daemon_unavailable");
        }
        assert!(shim.is_running(), "jobd-http died with the daemon");
        d.restart();
        // The first request after the restart already works: stale pooled
        // connections are replaced transparently.
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
        shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
        let since = unix_now();
        let id = job_id(
            &shim.post("/exportData", Some("application/json"), body),
            "createExport",
            since,
        );
        // (A pool slot is taken by the long job, requeued after the restart.)
        wait_http(&shim, &id, "completion", is_finished);
        // The long job went on after the restart; it is not needed any more.
        update(&shim, &format!("id={slow}&action=terminate"))
            .expect_json(200, &format!("{{\"status\":\"Job {slow} terminated.\"}}"));
    }
    drop(shim);

    // A shim started while no daemon runs serves 503, then the daemon once it is up.
    d.sigterm_and_wait();
    let shim = Shim::start(&d, &[]);
    shim.get("/healthz").expect_error(503, "daemon_unavailable");
    update(&shim, "id=nope&action=stop").expect_error(503, "daemon_unavailable");
    d.restart();
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
    update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let d = Daemon::start();
    let mut shim = Shim::start(&d, &[]);
    let since = unix_now();
    // An event stream on a long job, and an upload half sent.
    let slow = slow_export(&shim, 2);
    let mut events = SseStream::open(&shim, &format!("/jobs/{slow}/events"));
    assert_eq!(events.status, 200);
    assert!(events.next_event().is_some());
    let (mut s, form) = start_upload(&shim, "/uploadCSV", BASELINE_3.len() as u64);
    s.write_all(&BASELINE_3[..10]).expect("upload");
    s.flush().expect("flush");
    // Let the shim see the request before the signal.
    let deadline = Instant::now() + DEADLINE;
    while d.uploads() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload did not reach the daemon"
        );
        std::thread::sleep(POLL);
    }
    let pid = shim.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM)
        .expect("SIGTERM");
    // The event stream ends; the upload completes.
    let end = Instant::now() + DEADLINE;
    while events.next_event().is_some() {
        assert!(Instant::now() < end, "the event stream did not end");
    }
    s.write_all(&BASELINE_3[10..]).expect("upload");
    s.write_all(form.tail().as_bytes()).expect("upload");
    let resp = jobd_tests::http::read_response(&mut BufReader::new(s), "POST");
    let id = job_id(&resp, "baselineCSV", since);
    let status = shim.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "jobd-http exited with {status}");
    assert!(d.status_json(&id)["state"].is_string());
    assert!(shim.logs().contains("SIGTERM received"));
}

#[test]
fn logging_is_bounded_under_load() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &["--log-budget", "5"]);
    let start = Instant::now();
    let n = 300;
    for _ in 0..n {
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
    }
    let secs = start.elapsed().as_secs() + 2;
    // Wait for the summary of the last busy second.
    let deadline = Instant::now() + DEADLINE;
    while !shim.logs().contains("not logged one by one") {
        assert!(
            Instant::now() < deadline,
            "no summary line:\n{}",
            shim.logs()
        );
        std::thread::sleep(POLL);
    }
    let logs = shim.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("GET /updateTask 404"))
        .count() as u64;
    assert!(lines >= 1, "no request line:\n{logs}");
    assert!(
        lines <= 5 * (secs + 1),
        "{lines} request lines for {n} requests in {secs} s:\n{logs}"
    );
    let total: u64 = logs
        .lines()
        .filter_map(|l| {
            l.split(" requests in the last second")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(total <= n, "{total} requests summarized, {n} made:\n{logs}");
    assert!(logs.len() < 64 * 1024, "log too long: {} bytes", logs.len());
}

#[test]
fn ids_that_can_never_exist_are_answered_without_the_daemon() {
    let mut d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let old = "Jon-Doe-bulkTeam-1-1";
    update(&shim, &format!("id={old}&action=stop")).expect_error(404, "id_doesn't_exist");
    update(&shim, "id=nope&action=bogus").expect_error(404, "id_doesn't_exist");
    // A frozen daemon answers nothing; the remembered ids are still answered
    // (their answer cannot change while this daemon lives).
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let answered = std::panic::catch_unwind(|| {
        update(&shim, &format!("id={old}&action=start")).expect_error(404, "id_doesn't_exist");
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
    });
    nix::sys::signal::kill(pid, Signal::SIGCONT).expect("SIGCONT");
    if let Err(e) = answered {
        std::panic::resume_unwind(e);
    }
    // Once that daemon is gone, nothing remembered is trusted: 503 until it is back.
    d.sigterm_and_wait();
    update(&shim, &format!("id={old}&action=stop")).expect_error(503, "daemon_unavailable");
    update(&shim, "id=nope&action=stop").expect_error(503, "daemon_unavailable");
    d.restart();
    update(&shim, &format!("id={old}&action=stop")).expect_error(404, "id_doesn't_exist");
    // A recent id is never remembered: a job could still get it.
    let recent = format!("{}-bulkTeam-{}-1", current_user(), unix_now());
    update(&shim, &format!("id={recent}&action=stop")).expect_error(404, "id_doesn't_exist");
}

#[test]
fn connections_closed_by_the_daemons_idle_timeout_are_replaced() {
    let d = Daemon::start_with(&["--idle-timeout", "1"]);
    let shim = Shim::start(&d, &[]);
    let since = unix_now();
    let body: &[u8] = br#"{"from":"2020-01-01","to":"2020-01-02"}"#;
    for _ in 0..3 {
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
        shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
        // Past the daemon's idle timeout: every pooled connection (and the
        // sentinel) has been closed by the daemon with a refusal.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        update(&shim, "id=nope&action=stop").expect_error(404, "id_doesn't_exist");
        let id = job_id(
            &shim.post("/exportData", Some("application/json"), body),
            "createExport",
            since,
        );
        shim.get(&format!("/jobs/{id}")).json();
    }
}

/// `GET /updateTask` on a plain HTTP/1.1 connection is answered by the shim's
/// fast path, and anything else by the framework, which then keeps the
/// connection. Both answer alike, in order, on one connection.
#[test]
fn keep_alive_connections_mix_fast_and_framework_answers() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let live = slow_export(&shim, 20);
    wait_http(&shim, &live, "running", |s| state_is(s, "running"));

    // Pipelined on one connection: two for the fast path, one for the framework,
    // two more after it (the framework's now), the last one closing.
    let head =
        |target: &str, extra: &str| format!("GET {target} HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
    let sent = [
        head("/updateTask?id=nope&action=stop", ""),
        head(&format!("/updateTask?id={live}&action=stop"), ""),
        head(&format!("/jobs/{live}"), ""),
        head(&format!("/updateTask?id={live}&action=start"), ""),
        head("/updateTask?id=&action=stop", "Connection: close\r\n"),
    ]
    .concat();
    let mut s = shim.connect();
    s.write_all(sent.as_bytes()).expect("send");
    let mut r = BufReader::new(s);
    let said = |word: &str| format!("{{\"status\":\"Job {live} {word}.\"}}");
    read_response(&mut r, "GET").expect_error(404, "id_doesn't_exist");
    read_response(&mut r, "GET").expect_json(200, &said("stopped"));
    let job = read_response(&mut r, "GET");
    assert_eq!(
        (job.status, &job.json()["state"]),
        (200, &Value::from("paused")),
        "{job}"
    );
    read_response(&mut r, "GET").expect_json(200, &said("started"));
    let last = read_response(&mut r, "GET");
    last.expect_error(400, "invalid_id");
    assert_eq!(last.header("connection"), Some("close"), "{last}");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the shim closes the connection");
    assert!(rest.is_empty(), "more after the closing answer: {rest:?}");

    // The same request, fast (HTTP/1.1) and through the framework (HTTP/1.0, or a
    // head too long for the fast path): the same answer.
    let pad = "x".repeat(20 * 1024);
    for query in [
        "id=nope&action=stop",
        "id=Jon-Doe-bulkTeam-1-1&action=stop",
        "id=nope&action=bogus",
        "id=%20%09%20&action=stop",
        "action=bogus",
        "",
        &format!("id={live}&action=pause"),
    ] {
        let target = format!("/updateTask?{query}");
        let mut answers = Vec::new();
        for (version, extra) in [
            ("HTTP/1.1", String::new()),
            ("HTTP/1.0", String::new()),
            ("HTTP/1.1", format!("X-Pad: {pad}\r\n")),
        ] {
            let mut s = shim.connect();
            let req =
                format!("GET {target} {version}\r\nHost: a\r\nConnection: close\r\n{extra}\r\n");
            s.write_all(req.as_bytes()).expect("send");
            let resp = read_response(&mut BufReader::new(s), "GET");
            answers.push((
                resp.status,
                resp.header("content-type").map(str::to_string),
                resp.text(),
            ));
        }
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{target}: {answers:?}"
        );
        assert_eq!(answers[0].1.as_deref(), Some(JSON), "{target}");
    }
}

/// A connection that waits longer than `--idle-timeout` for a request head is
/// closed, on the fast path (nothing sent, or part of a head) and after the
/// framework took it over.
#[test]
fn connections_waiting_for_a_request_are_closed() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &["--idle-timeout", "1"]);
    let closed_after = |sent: &str, answers: usize| {
        let mut s = shim.connect();
        s.write_all(sent.as_bytes()).expect("send");
        let mut r = BufReader::new(s);
        for _ in 0..answers {
            assert_eq!(read_response(&mut r, "GET").status, 200);
        }
        let mut rest = Vec::new();
        // The read times out (a panic) if the shim keeps the connection.
        r.read_to_end(&mut rest)
            .expect("the shim closes the connection");
        assert!(
            rest.is_empty(),
            "{sent:?}: {}",
            String::from_utf8_lossy(&rest)
        );
    };
    closed_after("", 0);
    closed_after(
        "GET /updateTask?id=nope&action=stop HTTP/1.1\r\nHost: a\r\n",
        0,
    );
    closed_after("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 1);
    closed_after("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /jobs HT", 1);
}

/// At most `--max-connections` are served at once; the next one is answered once
/// one of them closes.
#[test]
fn connections_beyond_the_limit_wait_their_turn() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &["--max-connections", "1"]);
    let healthz = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut first = shim.connect();
    first.write_all(healthz.as_bytes()).expect("send");
    let mut first = BufReader::new(first);
    assert_eq!(read_response(&mut first, "GET").status, 200);

    let mut second = shim.connect();
    second.write_all(healthz.as_bytes()).expect("send");
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match second.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the second connection was served beside the first: {other:?}"),
    }
    drop(first);
    second.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let second = read_response(&mut BufReader::new(second), "GET");
    assert_eq!(second.status, 200, "{second}");
}

both_stores!(
    upload_routes_accept_files_and_refuse_anything_else,
    export_data_validates_like_the_original,
    update_task_stops_starts_and_terminates_live_jobs,
    finished_and_terminated_jobs_do_not_exist_for_update_task,
    default_rate_and_rate_parameter,
    uploads_stream_without_buffering_the_file,
    a_client_dropping_mid_upload_leaves_no_job,
);
