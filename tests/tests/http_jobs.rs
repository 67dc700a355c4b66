//! jobd-http's read routes (`docs/openapi.yaml`): `/jobs`, `/jobs/{id}`, its
//! `events` (SSE), `output` and `errors`, and `/healthz`, against the real daemon,
//! compared with what `jobctl` says about the same jobs.

use jobd_tests::http::{HttpResponse, Shim, SseEvent, SseStream};
use jobd_tests::*;
use serde_json::Value;
use std::time::Instant;

const JSON: &str = "application/json; charset=utf-8";

/// The id in a `{"Job ID":"..."}` answer.
#[track_caller]
fn created(resp: &HttpResponse) -> String {
    assert_eq!(resp.status, 200, "{resp}");
    resp.json()["Job ID"]
        .as_str()
        .unwrap_or_else(|| panic!("no Job ID: {resp}"))
        .to_string()
}

#[track_caller]
fn get_json(shim: &Shim, target: &str) -> Value {
    let r = shim.get(target);
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some(JSON)),
        "{r}"
    );
    r.json()
}

fn jobs_and_job_status_match_jobctl(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    assert_eq!(get_json(&shim, "/jobs"), Value::Array(vec![]));

    let f = gen_baseline(3, &["date", "name", "value"], 50, Date::new(2024, 1, 1), 5);
    let a = created(&shim.upload("/uploadCSV", "a.csv", &f.bytes()));
    let b = d.export("2024-01-01", "2024-01-03", None);
    d.wait_completed(&a);
    d.wait_completed(&b);

    // Same objects as `jobctl --json status`, field for field.
    for id in [&a, &b] {
        let via_http = get_json(&shim, &format!("/jobs/{id}"));
        assert_eq!(via_http, d.status_json(id));
        for key in STATUS_KEYS {
            assert!(via_http.get(key).is_some(), "no {key} in {via_http}");
        }
        assert!(via_http["created_at"]
            .as_str()
            .expect("created_at is a string")
            .ends_with('Z'));
    }
    let all = get_json(&shim, "/jobs");
    assert_eq!(all, Value::Array(d.status_all()));
    let ids: Vec<&str> = all
        .as_array()
        .expect("an array")
        .iter()
        .map(|j| j["id"].as_str().expect("id is a string"))
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);

    shim.get("/jobs/Jon-Doe-bulkTeam-1-1")
        .expect_error(404, "id_doesn't_exist");
    shim.get("/jobs/nope/errors")
        .expect_error(404, "id_doesn't_exist");
    shim.get("/jobs/nope/output")
        .expect_error(404, "id_doesn't_exist");
    shim.get("/jobs/nope/events")
        .expect_error(404, "id_doesn't_exist");
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
}

fn output_streams_the_export_and_errors_list_the_rows(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let f = gen_baseline(11, &["date", "city", "n"], 3000, Date::new(2023, 3, 1), 20);
    let up = d.upload(&f.bytes(), None);
    d.wait_completed(&up);
    let ex = created(&shim.post(
        "/exportData",
        Some("application/json"),
        br#"{"from":"2023-03-01","to":"2023-03-31"}"#,
    ));
    d.wait_completed(&ex);

    let r = shim.get(&format!("/jobs/{ex}/output"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let want = expected_export(&[&f], Date::new(2023, 3, 1), Date::new(2023, 3, 31));
    assert_bytes_eq("GET /jobs/{id}/output", &r.body, &want);
    assert_eq!(r.body, d.output(&ex));

    // No output: not an export, or an export that has not completed.
    shim.get(&format!("/jobs/{up}/output"))
        .expect_error(409, "no_output");
    let slow = created(&shim.post(
        "/exportData?rate=2",
        Some("application/json"),
        br#"{"from":"2023-03-01","to":"2023-12-31"}"#,
    ));
    shim.get(&format!("/jobs/{slow}/output"))
        .expect_error(409, "no_output");

    // Row errors, as jobctl shows them.
    let bad = b"date,x\n2020-01-01,1\nnot-a-date,2\n2020-01-03\n2020-01-04,4\n";
    let id = created(&shim.upload("/uploadCSV", "bad.csv", bad));
    d.wait_completed(&id);
    let errors = get_json(&shim, &format!("/jobs/{id}/errors"));
    let want: Vec<Value> = d
        .errors(&id)
        .into_iter()
        .map(|(row, message)| serde_json::json!({"row": row, "message": message}))
        .collect();
    assert_eq!(errors, Value::Array(want));
    let rows: Vec<u64> = errors
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["row"].as_u64().expect("row is a number"))
        .collect();
    assert_eq!(rows, [2, 3]);
    assert_eq!(
        get_json(&shim, &format!("/jobs/{up}/errors")),
        Value::Array(vec![])
    );

    // A control through the legacy route, then the new routes see the result;
    // a finished job's state stays readable.
    shim.get(&format!("/updateTask?id={slow}&action=terminate"))
        .expect_json(200, &format!("{{\"status\":\"Job {slow} terminated.\"}}"));
    assert_eq!(
        get_json(&shim, &format!("/jobs/{slow}"))["state"],
        "terminated"
    );
}

/// Reads every event of a stream, with a deadline.
fn all_events(stream: &mut SseStream) -> Vec<SseEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    while let Some(e) = stream.next_event() {
        events.push(e);
        assert!(
            Instant::now() < deadline,
            "the event stream did not end: {events:?}"
        );
    }
    events
}

fn events_follow_a_job_from_submit_to_end(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let id = created(&shim.post(
        "/exportData?rate=20",
        Some("application/json"),
        br#"{"from":"2020-01-01","to":"2020-01-20"}"#,
    ));
    let mut stream = SseStream::open(&shim, &format!("/jobs/{id}/events"));
    assert_eq!(stream.status, 200);
    let ct = stream
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("text/event-stream"));
    let events = all_events(&mut stream);
    let jobs: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("event data is JSON"))
        .collect();
    // First the state, then progress, and the end with the final state.
    assert!(events.len() >= 3, "too few events: {events:?}");
    assert_eq!(events[0].event, "state", "{events:?}");
    let last = events.last().expect("an event");
    assert_eq!(last.event, "end", "{events:?}");
    assert!(events[..events.len() - 1].iter().all(|e| e.event != "end"));
    let fin = jobs.last().expect("a job event");
    assert_eq!(fin["state"], "completed", "{fin}");
    assert_counts(fin, 20, 0, Some(20));
    assert_eq!(fin, &d.status_json(&id));
    let mut prev = 0;
    let mut prev_state = Value::Null;
    for (e, j) in events.iter().zip(&jobs) {
        assert_eq!(j["id"], id.as_str());
        let p = j["processed"].as_u64().expect("processed is a number");
        assert!(p >= prev, "processed went back: {events:?}");
        prev = p;
        if e.event == "progress" {
            assert_eq!(
                j["state"], prev_state,
                "a state change sent as progress: {events:?}"
            );
        } else if e.event == "state" {
            assert_ne!(j["state"], prev_state, "no state change: {events:?}");
        }
        prev_state = j["state"].clone();
    }
    assert!(
        events.iter().filter(|e| e.event == "progress").count() >= 2,
        "no progress steps: {events:?}"
    );

    // A finished job: one `end` event, then the stream closes.
    let mut again = SseStream::open(&shim, &format!("/jobs/{id}/events"));
    let events = all_events(&mut again);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "end");

    // A stream that sees a pause, a resumption and a termination.
    let slow = created(&shim.post(
        "/exportData?rate=10",
        Some("application/json"),
        br#"{"from":"2020-01-01","to":"2020-12-31"}"#,
    ));
    let mut stream = SseStream::open(&shim, &format!("/jobs/{slow}/events"));
    d.wait_processed(&slow, 2);
    d.stop(&slow);
    d.control("start", &slow);
    d.wait_processed(&slow, 4);
    d.control("terminate", &slow);
    let events = all_events(&mut stream);
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.event != "progress")
        .map(|e| {
            let j: Value = serde_json::from_str(&e.data).expect("event data is JSON");
            j["state"].as_str().expect("state is a string").to_string()
        })
        .collect();
    assert!(states.contains(&"paused".to_string()), "{states:?}");
    assert_eq!(states.last().map(String::as_str), Some("terminated"));
    // Every event stream's daemon connection was given back or closed: the
    // daemon is still fine, and so is the shim.
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
}

fn a_client_leaving_an_event_stream_ends_the_watch(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let slow = created(&shim.post(
        "/exportData?rate=5",
        Some("application/json"),
        br#"{"from":"2020-01-01","to":"2020-12-31"}"#,
    ));
    for _ in 0..20 {
        let mut s = SseStream::open(&shim, &format!("/jobs/{slow}/events"));
        assert!(s.next_event().is_some());
        drop(s);
    }
    // The shim still answers at once, and the job is unaffected.
    shim.get("/healthz").expect_json(200, "{\"status\":\"ok\"}");
    assert!(!is_finished(&d.status_json(&slow)));
    shim.get(&format!("/updateTask?id={slow}&action=terminate"))
        .expect_json(200, &format!("{{\"status\":\"Job {slow} terminated.\"}}"));
}

/// `POST /jobs/{id}/revert`: the dry run (what would go, nothing changed), the
/// revert (the job as `GET /jobs/{id}` then shows it), and the refusals.
fn revert_route_with_and_without_dry_run(b: Backend) {
    let d = Daemon::start_on(b);
    let shim = Shim::start(&d, &[]);
    let f = gen_teams(23, "web", 12, 3);
    let id = d.bulk_team(&f.bytes, None);
    d.wait_completed(&id);

    let r = shim.post(&format!("/jobs/{id}/revert?dry_run=true"), None, b"");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some(JSON)),
        "{r}"
    );
    let v = r.json();
    assert_eq!(
        v,
        d.jobctl(&["--json", "revert", "--dry-run", &id])
            .ok()
            .json()
    );
    assert_eq!(
        (v["teams"].as_u64(), v["dry_run"].as_bool()),
        (Some(12), Some(true))
    );
    assert_eq!(d.store().team_count(&id), 12, "a dry run changed something");
    shim.post(&format!("/jobs/{id}/revert?dry_run=maybe"), None, b"")
        .expect_error(400, "bad_request");

    let r = shim.post(&format!("/jobs/{id}/revert?dry_run=false"), None, b"");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["state"], "reverted");
    assert_eq!(r.json(), get_json(&shim, &format!("/jobs/{id}")));
    assert_eq!(d.store().team_count(&id), 0);
    shim.post(&format!("/jobs/{id}/revert"), None, b"")
        .expect_error(409, "already_reverted");
    shim.post(&format!("/jobs/{id}/revert?dry_run=1"), None, b"")
        .expect_error(409, "already_reverted");

    let e = d.export("2024-01-01", "2024-01-02", None);
    d.wait_completed(&e);
    shim.post(&format!("/jobs/{e}/revert"), None, b"")
        .expect_error(409, "not_revertible");
    let slow = d.upload(&slow_baseline(24).bytes(), Some(SLOW_RATE));
    d.wait_processed(&slow, MID_RUN);
    shim.post(&format!("/jobs/{slow}/revert"), None, b"")
        .expect_error(409, "job_not_finished");
    shim.post("/jobs/nobody-bulkTeam-1-1/revert", None, b"")
        .expect_error(404, "id_doesn't_exist");
    // Another method is the usual 404.
    shim.get(&format!("/jobs/{id}/revert"))
        .expect(404, "text/plain", "404 page not found");
}

both_stores!(
    revert_route_with_and_without_dry_run,
    jobs_and_job_status_match_jobctl,
    output_streams_the_export_and_errors_list_the_rows,
    events_follow_a_job_from_submit_to_end,
    a_client_leaving_an_event_stream_ends_the_watch,
);
