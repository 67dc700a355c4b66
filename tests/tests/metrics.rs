//! The daemon's counters: `jobctl metrics` and jobd-http's `/metrics` print the
//! same Prometheus text, from one request to the daemon; the numbers follow the
//! work (units applied and rejected, jobs by state, control and commit times),
//! and `jobd_up` says when the daemon does not answer.

use jobd_tests::http::Shim;
use jobd_tests::*;
use std::collections::BTreeMap;

/// The samples of a Prometheus text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                k.to_string(),
                v.parse().unwrap_or_else(|_| panic!("bad value {l:?}")),
            )
        })
        .collect()
}

#[track_caller]
fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key).unwrap_or_else(|| panic!("no {key} in {s:#?}"))
}

fn jobctl_metrics(d: &Daemon) -> BTreeMap<String, f64> {
    samples(&d.jobctl(&["metrics"]).ok().stdout_str())
}

#[test]
fn counters_follow_the_work() {
    let mut d = Daemon::start();
    let s = jobctl_metrics(&d);
    assert_eq!(value(&s, "jobd_up"), 1.0);
    assert_eq!(
        value(
            &s,
            "jobd_units_total{kind=\"baselineCSV\",outcome=\"applied\"}"
        ),
        0.0
    );
    assert_eq!(value(&s, "jobd_commit_seconds_count"), 0.0);
    // All 21 kind/state pairs are there (three kinds, seven states), zeros included.
    assert_eq!(s.keys().filter(|k| k.starts_with("jobd_jobs{")).count(), 21);

    // 5 good rows and 2 bad ones; 2 teams, one of them a duplicate.
    let up = d.upload(
        b"date,x\n2024-01-01,1\nnope,2\n2024-01-02,3\n2024-01-03,4\n2024-13-01,5\n2024-01-04,6\n2024-01-05,7\n",
        None,
    );
    d.wait_completed(&up);
    let teams = d.bulk_team(b"team\nred\nred\n", None);
    d.wait_completed(&teams);
    let s = jobctl_metrics(&d);
    let units = |kind: &str, outcome: &str| {
        value(
            &s,
            &format!("jobd_units_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(units("baselineCSV", "applied"), 5.0);
    assert_eq!(units("baselineCSV", "rejected"), 2.0);
    assert_eq!(units("bulkTeam", "applied"), 1.0);
    assert_eq!(units("bulkTeam", "rejected"), 1.0);
    assert_eq!(
        value(&s, "jobd_jobs{kind=\"baselineCSV\",state=\"completed\"}"),
        1.0
    );
    assert!(value(&s, "jobd_commit_seconds_count") >= 2.0, "{s:#?}");
    assert!(value(&s, "jobd_commit_seconds_sum") > 0.0);

    // Controls are timed, by action.
    let slow = d.upload(&slow_baseline(4).bytes(), Some(SLOW_RATE));
    d.wait_processed(&slow, MID_RUN);
    d.stop(&slow);
    let s = jobctl_metrics(&d);
    assert_eq!(
        value(&s, "jobd_control_seconds_count{action=\"stop\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "jobd_control_seconds_count{action=\"terminate\"}"),
        0.0
    );
    assert!(
        value(
            &s,
            "jobd_control_seconds_bucket{action=\"stop\",le=\"+Inf\"}"
        ) == 1.0
    );
    assert_eq!(
        value(&s, "jobd_jobs{kind=\"baselineCSV\",state=\"paused\"}"),
        1.0
    );
    d.control("terminate", &slow).ok();

    // The shim serves the same text, from the same daemon.
    let shim = Shim::start(&d, &[]);
    let r = shim.get("/metrics");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(samples(&r.text()), jobctl_metrics(&d));
    let json = d.jobctl(&["--json", "metrics"]).ok().json();
    assert_eq!(json["units"][0]["kind"], "baselineCSV");
    let text = jobctl_metrics(&d);
    assert_eq!(
        json["units"][0]["applied"].as_f64(),
        Some(value(
            &text,
            "jobd_units_total{kind=\"baselineCSV\",outcome=\"applied\"}"
        )),
        "{json}"
    );

    // No daemon: still an answer, saying so.
    d.sigterm_and_wait();
    let r = shim.get("/metrics");
    assert_eq!(r.status, 200, "{r}");
    let s = samples(&r.text());
    assert_eq!(
        s.into_iter().collect::<Vec<_>>(),
        [("jobd_up".to_string(), 0.0)]
    );
    d.restart();
    let r = shim.get("/metrics");
    assert_eq!(value(&samples(&r.text()), "jobd_up"), 1.0);
}
