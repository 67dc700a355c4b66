//! `createExport` (jobctl export): byte-exact output with the union of columns, single
//! days, bad and reversed dates, and which jobs' records an export may see.

use jobd_tests::*;

/// A completed upload of `f`.
fn uploaded(d: &Daemon, f: &BaselineFile) -> String {
    let id = d.upload(&f.bytes(), None);
    let s = d.wait_completed(&id);
    assert_counts(&s, f.records.len() as u64, 0, Some(f.records.len() as u64));
    id
}

/// Moves row 1 of `f` to `date`, so that the file has a record on that day.
fn first_row_on(f: &mut BaselineFile, date: Date) {
    f.records[0].date = date.to_string();
}

fn export_is_byte_exact_with_union_of_columns(b: Backend) {
    let d = Daemon::start_on(b);
    let from = Date::new(2024, 3, 1);
    let to = Date::new(2024, 3, 20);
    let mut a = gen_baseline(11, &["date", "name", "value"], 120, from, 20);
    a.set_field(2, "name", "He said \"hi\", ok");
    first_row_on(&mut a, from);
    // Different columns, in another order: `value` is shared, `score` is new.
    let mut b = gen_baseline(12, &["value", "date", "score"], 80, from, 20);
    first_row_on(&mut b, from);
    uploaded(&d, &a);
    uploaded(&d, &b);

    let id = d.export(&from.to_string(), &to.to_string(), None);
    let (_, kind, _, _) = parse_job_id(&id).unwrap_or_else(|| panic!("bad id {id}"));
    assert_eq!(kind, "createExport");
    let s = d.wait_completed(&id);
    assert_counts(&s, 20, 0, Some(20));
    assert_eq!(s["kind"], "createExport");

    let want = expected_export(&[&a, &b], from, to);
    assert!(want.starts_with(b"date,name,value,score\n"));
    let got = d.output(&id);
    assert_bytes_eq("export output", &got, &want);
    let stored = d
        .store()
        .output(&id)
        .expect("the export's output in the store");
    assert_bytes_eq("export output as stored", &stored, &want);
}

fn export_header_counts_only_exported_records(b: Backend) {
    let d = Daemon::start_on(b);
    let from = Date::new(2024, 3, 1);
    let to = Date::new(2024, 3, 10);
    let a = gen_baseline(13, &["date", "name", "value"], 50, from, 10);
    // All of b's dates are in 2023: its column `extra` must not appear.
    let b = gen_baseline(14, &["date", "extra"], 30, Date::new(2023, 3, 1), 10);
    uploaded(&d, &a);
    uploaded(&d, &b);
    let id = d.export(&from.to_string(), &to.to_string(), None);
    d.wait_completed(&id);
    let want = expected_export(&[&a, &b], from, to);
    assert!(want.starts_with(b"date,name,value\n"));
    assert_bytes_eq("export output", &d.output(&id), &want);
}

fn export_of_one_day(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(
        15,
        &["date", "name", "value"],
        60,
        Date::new(2024, 2, 27),
        5,
    );
    assert!(f.records.iter().any(|r| r.date == "2024-02-29"));
    uploaded(&d, &f);
    let day = Date::new(2024, 2, 29);
    let id = d.export("2024-02-29", "2024-02-29", None);
    let s = d.wait_completed(&id);
    assert_counts(&s, 1, 0, Some(1));
    assert_bytes_eq(
        "export output",
        &d.output(&id),
        &expected_export(&[&f], day, day),
    );
}

fn bad_and_reversed_dates_are_refused(b: Backend) {
    let d = Daemon::start_on(b);
    let cases: &[(&str, &str, &str)] = &[
        ("2024-13-01", "2024-12-31", "invalid_from_date"),
        ("2023-02-29", "2023-03-01", "invalid_from_date"),
        ("2024-1-01", "2024-01-31", "invalid_from_date"),
        ("yesterday", "2024-01-31", "invalid_from_date"),
        ("2024-01-01", "2024-02-30", "invalid_to_date"),
        ("2024-01-01", "2024-04-31", "invalid_to_date"),
        ("2024-01-01", "2024/01/31", "invalid_to_date"),
        // Both bad: the from date is reported.
        ("2024-00-10", "2024-99-99", "invalid_from_date"),
        ("2024-02-10", "2024-02-01", "invalid_date_range"),
        ("2025-01-01", "2024-12-31", "invalid_date_range"),
    ];
    for (from, to, code) in cases {
        let arg_from = format!("--from={from}");
        let arg_to = format!("--to={to}");
        d.jobctl(&["export", &arg_from, &arg_to]).refused(code);
    }
    let exports = d
        .status_all()
        .into_iter()
        .filter(|j| j["kind"] == "createExport")
        .count();
    assert_eq!(exports, 0, "a refused export created a job");
    // Feb 29 of a leap year is fine, and from == to is a valid range.
    let id = d.export("2024-02-29", "2024-02-29", None);
    d.wait_completed(&id);
}

fn export_sees_only_completed_jobs(b: Backend) {
    let d = Daemon::start_on(b);
    let from = Date::new(2024, 5, 1);
    let to = Date::new(2024, 5, 30);
    let done = slow_baseline(21);
    let paused = slow_baseline(22);
    let terminated = slow_baseline(23);
    uploaded(&d, &done);
    let p = d.upload(&paused.bytes(), Some(SLOW_RATE));
    let t = d.upload(&terminated.bytes(), Some(SLOW_RATE));
    d.wait_processed(&p, MID_RUN);
    d.stop(&p);
    d.wait_processed(&t, MID_RUN);
    d.control("terminate", &t);
    assert_eq!(d.status_json(&t)["state"], "terminated");

    let e1 = d.export(&from.to_string(), &to.to_string(), None);
    d.wait_completed(&e1);
    assert_bytes_eq(
        "export while one job is paused and one terminated",
        &d.output(&e1),
        &expected_export(&[&done], from, to),
    );

    // Once the paused job completes, its records are exported too.
    d.control("start", &p);
    d.wait_completed(&p);
    let e2 = d.export(&from.to_string(), &to.to_string(), None);
    d.wait_completed(&e2);
    assert_bytes_eq(
        "export after the paused job completed",
        &d.output(&e2),
        &expected_export(&[&done, &paused], from, to),
    );
}

fn output_is_refused_until_the_export_completed(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(
        24,
        &["date", "name", "value"],
        40,
        Date::new(2024, 1, 1),
        30,
    );
    let b = uploaded(&d, &f);
    let id = d.export("2024-01-01", "2024-01-30", Some(10.0));
    d.wait_processed(&id, 1);
    let out = d.jobctl(&["output", &id]);
    assert_eq!(out.code, Some(1), "output of a running export: {out}");
    // A baseline job has no output either.
    let out = d.jobctl(&["output", &b]);
    assert_eq!(out.code, Some(1), "output of a baseline job: {out}");
    d.control("terminate", &id);
}

fn output_to_a_file(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(25, &["date", "name", "value"], 40, Date::new(2024, 1, 1), 5);
    uploaded(&d, &f);
    let id = d.export("2024-01-01", "2024-01-05", None);
    d.wait_completed(&id);
    let want = expected_export(&[&f], Date::new(2024, 1, 1), Date::new(2024, 1, 5));
    let path = d.dir().join("out.csv");
    let path_s = path.to_str().expect("UTF-8 path");
    let out = d.jobctl(&["output", &id, "-o", path_s]).ok();
    // A short note is fine; the data itself goes to the file only.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("date,name,value"),
        "output -o FILE printed the data to stdout: {out}"
    );
    assert_bytes_eq(
        "output -o FILE",
        &std::fs::read(&path).expect("read -o file"),
        &want,
    );
    let out = d.jobctl(&["output", &id, "-o", "-"]).ok();
    assert_bytes_eq("output -o -", &out.stdout, &want);
}

both_stores!(
    export_is_byte_exact_with_union_of_columns,
    export_header_counts_only_exported_records,
    export_of_one_day,
    bad_and_reversed_dates_are_refused,
    export_sees_only_completed_jobs,
    output_is_refused_until_the_export_completed,
    output_to_a_file,
);
