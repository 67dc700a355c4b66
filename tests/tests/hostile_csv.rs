//! Hostile or broken CSV. The small files of `tests/corpus/` (ragged rows, invalid
//! UTF-8, unterminated quotes, NUL bytes, BOM, CRLF and lone CR, empty, header only,
//! ...) each get exact row errors or a clear job failure; the big ones are generated
//! here (a 10 MiB single field, 100 000 columns, binary files). None may crash the
//! daemon (it answers a ping after each) or make its memory grow without bound.

use jobd_tests::crash::*;
use jobd_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(rel)
}

/// Polls until the job has finished (any final state) and returns its status.
#[track_caller]
fn finished(d: &Daemon, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = d.status_json(id);
        if is_finished(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {s} after {timeout:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Submits `path` with `cmd` (`upload` or `bulk-team`) and waits for the end.
fn run_file(d: &Daemon, cmd: &str, path: &Path) -> (String, Value) {
    let id = d.submit(&[cmd, path.to_str().expect("UTF-8 path")]);
    let s = finished(d, &id, DEADLINE);
    assert_alive(d);
    d.jobctl(&["ping"]).ok();
    (id, s)
}

enum Outcome {
    /// Completed with these row errors (row, exact message).
    Completed {
        processed: u64,
        errors: &'static [(u64, &'static str)],
    },
    /// Failed with this exact error.
    Failed(&'static str),
}

/// The expected records of a baseline file: (row, date, other fields).
type Records = &'static [(u64, &'static str, &'static [&'static str])];

struct Case {
    file: &'static str,
    outcome: Outcome,
    /// Baseline: (row, date, fields); teams: (row, name, members).
    rows: Records,
    /// Baseline: the stored non-date column names.
    columns: Option<&'static [&'static str]>,
}

const OPEN_QUOTE: &str = "a quoted field is never closed: its quote runs to the end of the file";
const FOUND_2: &str = "expected 3 fields as in the header, found 2";
const TOO_LARGE: &str = "the row is larger than 16 MiB or has more than 1048576 fields";

const CASES: &[Case] = &[
    Case {
        file: "baseline/ragged.csv",
        outcome: Outcome::Completed {
            processed: 3,
            errors: &[
                (2, FOUND_2),
                (3, "expected 3 fields as in the header, found 4"),
                (5, FOUND_2),
            ],
        },
        rows: &[
            (1, "2024-01-01", &["alice", "1"]),
            (4, "2024-01-04", &["dave", "4"]),
            (6, "2024-01-05", &["erin", "5"]),
        ],
        columns: Some(&["name", "value"]),
    },
    Case {
        file: "baseline/invalid_utf8.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[
                (1, "field 2 is not valid UTF-8"),
                (3, "field 1 is not valid UTF-8"),
                (4, "field 2 is not valid UTF-8"),
            ],
        },
        rows: &[
            (2, "2024-01-02", &["ok", "2"]),
            (5, "2024-01-05", &["\u{1F600} smile", "5"]),
        ],
        columns: None,
    },
    Case {
        file: "baseline/header_invalid_utf8.csv",
        outcome: Outcome::Failed("header field 2 is not valid UTF-8"),
        rows: &[],
        columns: None,
    },
    Case {
        // The quote opened in row 2 runs to the end of the file: row 2 is refused for it.
        file: "baseline/unterminated_quote_middle.csv",
        outcome: Outcome::Completed {
            processed: 1,
            errors: &[(2, OPEN_QUOTE)],
        },
        rows: &[(1, "2024-01-01", &["alice", "1"])],
        columns: None,
    },
    Case {
        // The quote opened in the last field of row 2 runs to the end of the file:
        // row 2 is refused for it, not taken with row 3 inside its last field.
        file: "baseline/unterminated_quote_last.csv",
        outcome: Outcome::Completed {
            processed: 1,
            errors: &[(2, OPEN_QUOTE)],
        },
        rows: &[(1, "2024-01-01", &["alice", "1"])],
        columns: None,
    },
    Case {
        file: "baseline/nul_bytes.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[(2, "date \"\\02024-01-02\" is not a valid YYYY-MM-DD date")],
        },
        rows: &[
            (1, "2024-01-01", &["a\0b", "1"]),
            (3, "2024-01-03", &["\0", "\0"]),
        ],
        columns: None,
    },
    Case {
        file: "baseline/bom.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[],
        },
        rows: &[
            (1, "2024-01-01", &["alice", "1"]),
            (2, "2024-01-02", &["bob", "2"]),
        ],
        columns: Some(&["name", "value"]),
    },
    Case {
        file: "baseline/bom_quoted_header.csv",
        outcome: Outcome::Completed {
            processed: 1,
            errors: &[],
        },
        rows: &[(1, "2024-01-01", &["alice"])],
        columns: Some(&["name"]),
    },
    Case {
        file: "baseline/crlf.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[],
        },
        rows: &[
            (1, "2024-01-01", &["alice", "two\r\nlines"]),
            (2, "2024-01-02", &["bob", "plain"]),
        ],
        columns: Some(&["name", "note"]),
    },
    Case {
        file: "baseline/lone_cr.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[],
        },
        rows: &[
            (1, "2024-01-01", &["alice", "1"]),
            (2, "2024-01-02", &["bob", "2"]),
        ],
        columns: None,
    },
    Case {
        file: "baseline/mixed_line_ends.csv",
        outcome: Outcome::Completed {
            processed: 3,
            errors: &[],
        },
        rows: &[
            (1, "2024-01-01", &["a", "1"]),
            (2, "2024-01-02", &["b", "2"]),
            (3, "2024-01-03", &["c", "3"]),
        ],
        columns: None,
    },
    Case {
        file: "baseline/empty.csv",
        outcome: Outcome::Failed("the file is empty: no header row"),
        rows: &[],
        columns: None,
    },
    Case {
        file: "baseline/header_only.csv",
        outcome: Outcome::Completed {
            processed: 0,
            errors: &[],
        },
        rows: &[],
        columns: Some(&["name", "value"]),
    },
    Case {
        file: "baseline/header_only_no_newline.csv",
        outcome: Outcome::Completed {
            processed: 0,
            errors: &[],
        },
        rows: &[],
        columns: Some(&["name", "value"]),
    },
    Case {
        file: "baseline/no_date_column.csv",
        outcome: Outcome::Failed("the header has no `date` column (found: name,value)"),
        rows: &[],
        columns: None,
    },
    Case {
        file: "baseline/bad_dates.csv",
        outcome: Outcome::Completed {
            processed: 1,
            errors: &[
                (1, "date \"2024-02-30\" is not a valid YYYY-MM-DD date"),
                (2, "date \"2023-02-29\" is not a valid YYYY-MM-DD date"),
                (4, "date \"24-01-01\" is not a valid YYYY-MM-DD date"),
                (5, "date \"2024-1-01\" is not a valid YYYY-MM-DD date"),
                (6, "date \" 2024-01-01\" is not a valid YYYY-MM-DD date"),
                (7, "date \"2024-13-01\" is not a valid YYYY-MM-DD date"),
            ],
        },
        rows: &[(3, "2024-02-29", &["3"])],
        columns: None,
    },
    Case {
        // Empty lines are not records; a line of spaces is a record of one field.
        file: "baseline/blank_lines.csv",
        outcome: Outcome::Completed {
            processed: 1,
            errors: &[(1, "expected 2 fields as in the header, found 1")],
        },
        rows: &[(2, "2024-01-01", &["1"])],
        columns: None,
    },
    Case {
        file: "teams/mixed.csv",
        outcome: Outcome::Completed {
            processed: 3,
            errors: &[
                (3, "team \"red\" already exists"),
                (4, "empty team name"),
                (5, "expected 4 fields as in the header, found 2"),
                (6, "field 2 is not valid UTF-8"),
            ],
        },
        rows: &[
            (1, "red", &["ann", "bob"]),
            (2, "blue", &["cat", "dan"]),
            (7, "purple", &["x,y", "q\"uote"]),
        ],
        columns: None,
    },
    Case {
        file: "teams/bom_crlf.csv",
        outcome: Outcome::Completed {
            processed: 2,
            errors: &[],
        },
        rows: &[(1, "alpha", &["a"]), (2, "beta", &["b"])],
        columns: None,
    },
    Case {
        file: "teams/empty.csv",
        outcome: Outcome::Failed("the file is empty: no header row"),
        rows: &[],
        columns: None,
    },
    Case {
        file: "teams/header_only.csv",
        outcome: Outcome::Completed {
            processed: 0,
            errors: &[],
        },
        rows: &[],
        columns: None,
    },
];

/// Checks one corpus file's outcome, row errors and stored rows.
fn check_case(d: &Daemon, case: &Case) {
    let teams = case.file.starts_with("teams/");
    let cmd = if teams { "bulk-team" } else { "upload" };
    let (id, s) = run_file(d, cmd, &corpus(case.file));
    let what = format!("{} ({id})", case.file);
    match &case.outcome {
        Outcome::Completed { processed, errors } => {
            assert_eq!(s["state"], "completed", "{what}: {s}");
            let total = processed + errors.len() as u64;
            assert_counts(&s, *processed, errors.len() as u64, Some(total));
            let want: Vec<(u64, String)> =
                errors.iter().map(|(r, m)| (*r, m.to_string())).collect();
            assert_eq!(d.errors(&id), want, "{what}: row errors");
        }
        Outcome::Failed(message) => {
            assert_eq!(s["state"], "failed", "{what}: {s}");
            assert_eq!(s["error"], *message, "{what}: {s}");
        }
    }
    let db = d.store();
    if teams {
        let want: Vec<TeamRow> = case
            .rows
            .iter()
            .map(|(row, name, members)| TeamRow {
                row: *row,
                name: name.to_string(),
                members: members.iter().map(|m| m.to_string()).collect(),
            })
            .collect();
        assert_eq!(db.teams_of_job(&id), want, "{what}: teams");
    } else {
        let want: Vec<BaselineRecord> = case
            .rows
            .iter()
            .map(|(row, date, fields)| BaselineRecord {
                row: *row,
                date: date.to_string(),
                fields: fields.iter().map(|f| f.to_string()).collect(),
            })
            .collect();
        assert_eq!(db.baseline_records(&id), want, "{what}: records");
        if let Some(cols) = case.columns {
            let want: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
            assert_eq!(db.baseline_columns(&id), Some(want), "{what}: columns");
        }
    }
    assert_committed_consistent(d, &id);
}

fn corpus_files_get_exact_row_errors_or_a_clear_failure(b: Backend) {
    let d = Daemon::start_on(b);
    for case in CASES {
        check_case(&d, case);
    }
    // Every file of the corpus has its expectations here.
    let mut on_disk = BTreeSet::new();
    for sub in ["baseline", "teams"] {
        for e in std::fs::read_dir(corpus(sub)).expect("corpus directory") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            on_disk.insert(format!("{sub}/{name}"));
        }
    }
    let covered: BTreeSet<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    let extra: Vec<_> = on_disk.difference(&covered).collect();
    assert!(
        extra.is_empty(),
        "corpus files without expectations: {extra:?}"
    );
    wait_uploads_gone(&d);
    assert_integrity(&d);
    eprintln!("[hostile_csv] {} corpus files checked", CASES.len());
}

/// A 10 MiB single field, bare and quoted (with commas, quotes and line ends inside):
/// stored whole, and the daemon's peak memory stays reasonable.
fn ten_mib_single_field(b: Backend) {
    let d = Daemon::start_on(b);
    let field: String = "abcdefghij".repeat(1024 * 1024);
    let mut quoted_value = String::new();
    while quoted_value.len() < 10 << 20 {
        quoted_value.push_str("a,b \"q\"\r\nline\n");
    }
    for (value, raw) in [
        (field.clone(), field.clone()),
        (
            quoted_value.clone(),
            format!("\"{}\"", quoted_value.replace('"', "\"\"")),
        ),
    ] {
        let bytes = format!("date,name,value\n2024-01-01,{raw},1\n2024-01-02,b,2\n");
        let path = d.input_file(bytes.as_bytes());
        let (id, s) = run_file(&d, "upload", &path);
        assert_eq!(s["state"], "completed", "{s}");
        assert_counts(&s, 2, 0, Some(2));
        let recs = d.store().baseline_records(&id);
        assert_eq!(recs.len(), 2);
        assert!(
            recs[0].fields[0] == value,
            "the 10 MiB field was not stored whole ({} bytes)",
            recs[0].fields[0].len()
        );
    }
    let hwm = proc_kb(d.pid(), "VmHWM");
    eprintln!("[hostile_csv] jobd VmHWM after two 10 MiB fields: {hwm} kB");
    assert!(
        hwm < 200 * 1024,
        "jobd peaked at {hwm} kB for a 10 MiB field"
    );
}

/// Memory must not follow the size of one record: a single 64 MiB field is a row
/// error (rows are bounded at 16 MiB), the next row is taken, and the daemon's peak
/// does not grow with it.
fn one_huge_record_does_not_make_memory_follow_it(b: Backend) {
    let d = Daemon::start_on(b);
    let hwm0 = proc_kb(d.pid(), "VmHWM");
    let mut bytes = b"date,name,value\n2024-01-01,".to_vec();
    bytes.resize(bytes.len() + (64 << 20), b'x');
    bytes.extend_from_slice(b",1\n2024-01-02,b,2\n");
    let path = d.input_file(&bytes);
    drop(bytes);
    let (id, s) = run_file(&d, "upload", &path);
    let hwm = proc_kb(d.pid(), "VmHWM");
    eprintln!("[hostile_csv] jobd VmHWM {hwm0} -> {hwm} kB for a 64 MiB record: {s}");
    assert!(
        hwm.saturating_sub(hwm0) < 200 * 1024,
        "jobd's peak grew by {} MiB for one 64 MiB record ({s}, errors {:?})",
        hwm.saturating_sub(hwm0) / 1024,
        d.errors(&id)
    );
    assert_eq!(s["state"], "completed", "{s}");
    assert_counts(&s, 1, 1, Some(2));
    assert_eq!(d.errors(&id), [(1, TOO_LARGE.to_string())]);
    assert_eq!(
        d.store().baseline_records(&id),
        [BaselineRecord {
            row: 2,
            date: "2024-01-02".into(),
            fields: vec!["b".into(), "2".into()],
        }]
    );
}

/// The same bound holds for rows made only of separators (empty fields carry no
/// bytes of their own, but each costs the parser a field end): 24 MiB of commas in
/// a data row, and in the header.
fn a_row_of_only_commas_does_not_make_memory_follow_it(b: Backend) {
    let d = Daemon::start_on(b);
    let hwm0 = proc_kb(d.pid(), "VmHWM");
    let commas = vec![b','; 24 << 20];
    let mut data_row = b"date,name,value\n2024-01-01".to_vec();
    data_row.extend_from_slice(&commas);
    data_row.extend_from_slice(b"\n2024-01-02,b,2\n");
    let (id, s) = run_file(&d, "upload", &d.input_file(&data_row));
    drop(data_row);
    let hwm1 = proc_kb(d.pid(), "VmHWM");
    eprintln!(
        "[hostile_csv] jobd VmHWM {hwm0} -> {hwm1} kB for a data row of 24 MiB of commas: {s}"
    );
    let mut header = commas.clone();
    header.extend_from_slice(b"date\n2024-01-02\n");
    drop(commas);
    let t0 = Instant::now();
    let (hid, hs) = run_file(&d, "upload", &d.input_file(&header));
    let took = t0.elapsed();
    let hwm2 = proc_kb(d.pid(), "VmHWM");
    eprintln!("[hostile_csv] jobd VmHWM {hwm1} -> {hwm2} kB, {took:?} for a header of 24 MiB of commas: {hs}");
    assert!(
        hwm2.saturating_sub(hwm0) < 200 * 1024,
        "jobd's peak grew by {} MiB for rows of commas (data row: {s} {:?}; header: {hs})",
        hwm2.saturating_sub(hwm0) / 1024,
        d.errors(&id)
    );
    assert_eq!(s["state"], "completed", "{s}");
    assert_counts(&s, 1, 1, Some(2));
    assert_eq!(d.errors(&id), [(1, TOO_LARGE.to_string())]);
    assert_eq!(hs["state"], "failed", "a header of 24 MiB: {hs}");
    assert_eq!(
        hs["error"],
        format!("unreadable header row: {TOO_LARGE}"),
        "{hs}"
    );
    assert_no_effects(&d, &hid);
}

fn wide_header(n: usize) -> String {
    let mut h = String::from("date");
    for i in 1..n {
        h.push_str(&format!(",c{i}"));
    }
    h.push('\n');
    h
}

fn wide_row(date: &str, n: usize) -> String {
    let mut r = date.to_string();
    for i in 1..n {
        r.push_str(&format!(",{i}"));
    }
    r.push('\n');
    r
}

const WIDE: usize = 100_000;

/// 100 000 columns: a baseline upload and a team with 99 999 members.
fn one_hundred_thousand_columns(b: Backend) {
    let d = Daemon::start_on(b);
    let mut text = wide_header(WIDE);
    for day in 1..=3 {
        text.push_str(&wide_row(&format!("2024-01-0{day}"), WIDE));
    }
    text.push_str("2024-01-04,1,2\n");
    let (id, s) = run_file(&d, "upload", &d.input_file(text.as_bytes()));
    assert_eq!(s["state"], "completed", "{s}");
    assert_counts(&s, 3, 1, Some(4));
    assert_eq!(
        d.errors(&id),
        [(
            4,
            format!("expected {WIDE} fields as in the header, found 3")
        )]
    );
    let db = d.store();
    assert_eq!(db.baseline_columns(&id).map(|c| c.len()), Some(WIDE - 1));
    let recs = db.baseline_records(&id);
    assert_eq!(recs.len(), 3);
    assert!(recs
        .iter()
        .all(|r| r.fields.len() == WIDE - 1 && r.fields[WIDE - 2] == (WIDE - 1).to_string()));

    let mut teams = String::from("team");
    for i in 1..WIDE {
        teams.push_str(&format!(",m{i}"));
    }
    teams.push_str("\nwide");
    for i in 1..WIDE {
        teams.push_str(&format!(",p{i}"));
    }
    teams.push('\n');
    let (tid, s) = run_file(&d, "bulk-team", &d.input_file(teams.as_bytes()));
    assert_eq!(s["state"], "completed", "{s}");
    assert_counts(&s, 1, 0, Some(1));
    let t = d.store().teams_of_job(&tid);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].members.len(), WIDE - 1);
    assert_eq!(t[0].members[WIDE - 2], format!("p{}", WIDE - 1));
    let hwm = proc_kb(d.pid(), "VmHWM");
    eprintln!("[hostile_csv] jobd VmHWM after 100 000 columns: {hwm} kB");
    assert!(
        hwm < 300 * 1024,
        "jobd peaked at {hwm} kB for 100 000 columns"
    );
}

/// Exporting records with 100 000 columns costs about what writing them does: the
/// header union must not be quadratic in the number of columns.
fn export_of_one_hundred_thousand_columns(b: Backend) {
    let d = Daemon::start_on(b);
    let mut text = wide_header(WIDE);
    for day in 1..=3 {
        text.push_str(&wide_row(&format!("2024-01-0{day}"), WIDE));
    }
    let (id, s) = run_file(&d, "upload", &d.input_file(text.as_bytes()));
    assert_eq!(s["state"], "completed", "{s}");
    let t0 = Instant::now();
    let e = d.export("2024-01-01", "2024-01-05", None);
    let s = finished(&d, &e, Duration::from_secs(60));
    let took = t0.elapsed();
    eprintln!("[hostile_csv] export of 3 rows x 100 000 columns took {took:?}");
    assert_eq!(s["state"], "completed", "{s}");
    let out = d.output(&e);
    assert_bytes_eq("wide export", &out, text.as_bytes());
    assert!(
        took < Duration::from_secs(20),
        "the export of {id} took {took:?}"
    );
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Binary files: as a whole (the header is garbage: a clear failure), and after a
/// valid header (row errors with row numbers, then a failure on the error limit
/// that names the row).
fn binary_files(b: Backend) {
    let seed = Seed::from_env("JOBD_HOSTILE_SEED", "binary_files");
    let d = Daemon::start_on_with(b, &["--max-row-errors", "1000"]);
    let hwm0 = proc_kb(d.pid(), "VmHWM");
    for (i, cmd) in ["upload", "bulk-team"].into_iter().enumerate() {
        let junk = random_bytes(seed.value + i as u64, 2 << 20);
        let (id, s) = run_file(&d, cmd, &d.input_file(&junk));
        assert_eq!(s["state"], "failed", "{cmd} of random bytes: {s}");
        let err = s["error"].as_str().unwrap_or("");
        assert!(
            err.contains("header") || err.contains("row"),
            "{cmd} of random bytes: unclear failure {err:?}"
        );
        assert_no_effects(&d, &id);

        let header: &[u8] = if cmd == "upload" {
            b"date,v\n"
        } else {
            b"team,m1\n"
        };
        let mut file = header.to_vec();
        file.extend(random_bytes(seed.value + 10 + i as u64, 2 << 20));
        let (id, s) = run_file(&d, cmd, &d.input_file(&file));
        let errors = d.errors(&id);
        assert!(
            !errors.is_empty(),
            "{cmd}: no row errors for a binary body: {s}"
        );
        assert!(
            errors.windows(2).all(|w| w[0].0 < w[1].0) && errors.iter().all(|(_, m)| !m.is_empty()),
            "{cmd}: row errors out of order or empty"
        );
        match s["state"].as_str() {
            Some("failed") => {
                let err = s["error"].as_str().unwrap_or("");
                assert!(
                    err.starts_with("too many row errors: more than 1000 (the next at row "),
                    "{cmd}: {err:?}"
                );
                assert_eq!(errors.len(), 1000);
                let next: u64 = err
                    ["too many row errors: more than 1000 (the next at row ".len()..]
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no row number in {err:?}"));
                assert!(
                    next > errors[999].0,
                    "{err:?} vs the last row error {:?}",
                    errors[999]
                );
            }
            Some("completed") => {}
            _ => panic!("{cmd} of a binary body: {s}"),
        }
        assert_committed_consistent(&d, &id);
    }
    let hwm = proc_kb(d.pid(), "VmHWM");
    eprintln!("[hostile_csv] jobd VmHWM {hwm0} -> {hwm} kB over the binary files");
    assert!(hwm < 200 * 1024);
    wait_uploads_gone(&d);
}

both_stores!(
    corpus_files_get_exact_row_errors_or_a_clear_failure,
    ten_mib_single_field,
    one_huge_record_does_not_make_memory_follow_it,
    a_row_of_only_commas_does_not_make_memory_follow_it,
    one_hundred_thousand_columns,
    export_of_one_hundred_thousand_columns,
    binary_files,
);
