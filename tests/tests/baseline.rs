//! `baselineCSV` (jobctl upload): exact records, row errors, a missing `date` column,
//! the CSV dialect, large files and stdin.

use jobd_tests::data::BaselineRecord;
use jobd_tests::*;

fn rec(row: u64, date: &str, fields: &[&str]) -> BaselineRecord {
    BaselineRecord {
        row,
        date: date.to_string(),
        fields: fields.iter().map(|s| s.to_string()).collect(),
    }
}

fn upload_completes_with_exact_records(b: Backend) {
    let d = Daemon::start_on(b);
    // `date` in the middle of the header: records keep the other fields in header order.
    let mut f = gen_baseline(
        1,
        &["name", "date", "value", "note"],
        300,
        Date::new(2024, 1, 1),
        60,
    );
    f.set_field(3, "note", "He said \"hi\", ok");
    let id = d.upload(&f.bytes(), None);

    let (user, kind, secs, n) = parse_job_id(&id).unwrap_or_else(|| panic!("bad id {id}"));
    assert_eq!(user, current_user(), "user part of {id}");
    assert_eq!(kind, "baselineCSV", "kind part of {id}");
    assert!(secs.abs_diff(unix_now()) < 120, "time part of {id}");
    assert!(n <= 9999, "number part of {id}");

    let s = d.wait_completed(&id);
    assert_counts(&s, 300, 0, Some(300));
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["kind"], "baselineCSV");
    assert_eq!(s["owner"], current_user().as_str());
    assert!(s["error"].is_null(), "error of a completed job: {s}");
    assert_baseline_exact(&d, &id, &f.records);
    assert_eq!(
        d.store().baseline_columns(&id),
        Some(f.columns()),
        "stored columns of {id}"
    );
    assert!(d.errors(&id).is_empty(), "row errors of a clean file");
    wait_uploads_gone(&d);
}

fn row_errors_are_recorded_and_skipped(b: Backend) {
    let d = Daemon::start_on(b);
    let mut input = Vec::new();
    input.extend_from_slice(b"date,name,value\n");
    input.extend_from_slice(b"2024-01-01,a,1\n"); // 1 ok
    input.extend_from_slice(b"2024-01-02,b\n"); // 2 too few fields
    input.extend_from_slice(b"2024-01-03,c,3,extra\n"); // 3 too many fields
    input.extend_from_slice(b"2023-02-29,d,4\n"); // 4 no Feb 29 in 2023
    input.extend_from_slice(b"2024-02-29,e,5\n"); // 5 ok: leap year
    input.extend_from_slice(b"2024-13-01,f,6\n"); // 6 month 13
    input.extend_from_slice(b"2024-1-05,g,7\n"); // 7 not YYYY-MM-DD
    input.extend_from_slice(b"not-a-date,h,8\n"); // 8
    input.extend_from_slice(b"2024-04-31,i,9\n"); // 9 April has 30 days
    input.extend_from_slice(b"2024-03-01,\xff\xfe,10\n"); // 10 invalid UTF-8
    input.extend_from_slice(b"2024-03-02,\"quoted, name\",11\n"); // 11 ok
    input.extend_from_slice(b",j,12\n"); // 12 empty date
    input.extend_from_slice(b"2024-03-03,k,13\n"); // 13 ok
    let id = d.upload(&input, None);
    let s = d.wait_completed(&id);
    assert_counts(&s, 4, 9, Some(13));

    let errors = d.errors(&id);
    let rows: Vec<u64> = errors.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        rows,
        vec![2, 3, 4, 6, 7, 8, 9, 10, 12],
        "error rows: {errors:?}"
    );
    for (row, msg) in &errors {
        assert!(!msg.trim().is_empty(), "row {row} has an empty message");
    }
    assert_eq!(d.store().row_errors(&id), errors, "stored row errors");
    assert_baseline_exact(
        &d,
        &id,
        &[
            rec(1, "2024-01-01", &["a", "1"]),
            rec(5, "2024-02-29", &["e", "5"]),
            rec(11, "2024-03-02", &["quoted, name", "11"]),
            rec(13, "2024-03-03", &["k", "13"]),
        ],
    );

    // Plain `errors ID` names the rows too.
    let text = d.jobctl(&["errors", &id]).ok().stdout_str();
    for row in ["2", "10", "12"] {
        assert!(text.contains(row), "errors output lacks row {row}:\n{text}");
    }
}

fn missing_date_column_fails_the_job(b: Backend) {
    let d = Daemon::start_on(b);
    let id = d.upload(b"name,value\nx,1\ny,2\n", None);
    let s = d.wait_for_state(&id, "failed", DEADLINE);
    let err = s["error"].as_str().unwrap_or_default();
    assert!(
        err.to_lowercase().contains("date"),
        "the error should mention the date column: {s}"
    );
    let out = d.jobctl(&["wait", &id]);
    assert_ne!(out.code, Some(0), "wait on a failed job: {out}");
    assert_eq!(d.store().baseline_count(&id), 0);
    wait_uploads_gone(&d);
}

fn dialect_bom_crlf_lone_cr_and_quoted_newline(b: Backend) {
    let d = Daemon::start_on(b);
    let mut input = "\u{feff}date,name,value\r\n".as_bytes().to_vec();
    input.extend_from_slice(b"2024-01-01,a,1\r\n"); // 1, CRLF
    input.extend_from_slice(b"2024-01-02,b,2\r"); // 2, lone CR
    input.extend_from_slice(b"2024-01-03,\"multi\nline\",3\n"); // 3, newline inside quotes
    input.extend_from_slice(b"2024-13-01,bad,4\r\n"); // 4, a row error: counted by record, not line
    input.extend_from_slice(b"2024-01-04,\"say \"\"x\"\"\",5"); // 5, no final line end
    let id = d.upload(&input, None);
    let s = d.wait_completed(&id);
    assert_counts(&s, 4, 1, Some(5));
    let rows: Vec<u64> = d.errors(&id).iter().map(|(r, _)| *r).collect();
    assert_eq!(rows, vec![4]);
    assert_baseline_exact(
        &d,
        &id,
        &[
            rec(1, "2024-01-01", &["a", "1"]),
            rec(2, "2024-01-02", &["b", "2"]),
            rec(3, "2024-01-03", &["multi\nline", "3"]),
            rec(5, "2024-01-04", &["say \"x\"", "5"]),
        ],
    );
    assert_eq!(
        d.store().baseline_columns(&id),
        Some(vec!["name".to_string(), "value".to_string()]),
        "the BOM must not end up in the first column name"
    );
}

fn large_upload_spans_many_chunks(b: Backend) {
    let d = Daemon::start_on(b);
    // About 600 KB: several 256 KiB chunks, with rows cut across chunk boundaries.
    let f = gen_baseline(
        2,
        &["date", "name", "value", "note"],
        20_000,
        Date::new(2023, 1, 1),
        365,
    );
    let bytes = f.bytes();
    assert!(bytes.len() > 2 * jobd_protocol::CHUNK_SIZE);
    let id = d.upload(&bytes, None);
    let s = d.wait_completed(&id);
    assert_counts(&s, 20_000, 0, Some(20_000));
    assert_baseline_exact(&d, &id, &f.records);
}

fn upload_from_stdin(b: Backend) {
    let d = Daemon::start_on(b);
    let f = gen_baseline(
        3,
        &["date", "name", "value"],
        150,
        Date::new(2024, 6, 1),
        10,
    );
    let out = d.jobctl_stdin(&["-q", "upload", "-"], &f.bytes()).ok();
    let id = bare_id(&out);
    let s = d.wait_completed(&id);
    assert_counts(&s, 150, 0, Some(150));
    assert_baseline_exact(&d, &id, &f.records);
}

fn too_many_row_errors_fail_the_job(b: Backend) {
    let d = Daemon::start_on_with(b, &["--max-row-errors", "2"]);
    let input = b"date,v\n2024-01-01,1\nbad,2\n2024-01-03\n2024-01-04,4\nworse,5\n2024-01-06,6\n";
    let id = d.upload(input, None);
    let s = d.wait_for_state(&id, "failed", DEADLINE);
    let err = s["error"].as_str().unwrap_or_default();
    assert!(!err.trim().is_empty(), "a failed job says why: {s}");
    let rows: Vec<u64> = d.errors(&id).iter().map(|(r, _)| *r).collect();
    assert_eq!(
        &rows[..2],
        &[2, 3],
        "the first errors are recorded: {rows:?}"
    );
    // Under the limit, the same file completes.
    let d2 = Daemon::start_on_with(b, &["--max-row-errors", "3"]);
    let id2 = d2.upload(input, None);
    let s2 = d2.wait_completed(&id2);
    assert_counts(&s2, 3, 3, Some(6));
}

/// A long ingest keeps the WAL about one batch long: checkpoints run beside the
/// worker and SQLite starts the WAL over, instead of the WAL growing to the size
/// of everything written (it did, before batch transactions were deferred).
#[test]
fn a_long_ingest_keeps_the_wal_short() {
    let d = Daemon::start();
    let rows = 600_000;
    let f = gen_baseline(
        5,
        &["date", "name", "value", "note"],
        rows,
        Date::new(2020, 1, 1),
        1000,
    );
    let id = d.upload(&f.bytes(), None);
    let s = d.wait_completed(&id);
    let n = rows as u64;
    assert_counts(&s, n, 0, Some(n));
    assert_eq!(d.store().baseline_count(&id), n);
    // The WAL file keeps the largest size it reached (below the 64 MiB cut-back).
    let size = |name: &str| {
        std::fs::metadata(d.state_dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (db, wal) = (size("jobd.db"), size("jobd.db-wal"));
    eprintln!("[wal] store {db} bytes, WAL high-water mark {wal} bytes");
    assert!(
        wal < db / 2,
        "the WAL grew to {wal} bytes beside a {db}-byte store"
    );
}

both_stores!(
    upload_completes_with_exact_records,
    row_errors_are_recorded_and_skipped,
    missing_date_column_fails_the_job,
    dialect_bom_crlf_lone_cr_and_quoted_newline,
    large_upload_spans_many_chunks,
    upload_from_stdin,
    too_many_row_errors_fail_the_job,
);
