//! An upload's total is known from the start: the daemon counts the data rows as
//! the file is spooled (the CSV dialect of the kinds: quoted newlines are not row
//! ends, blank lines are not rows, the header is not a row), so `jobctl status`
//! shows it while the job is queued or running, and a job that completes has
//! handled exactly that many units.

use jobd_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus_files() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files = Vec::new();
    for (sub, cmd) in [("baseline", "upload"), ("teams", "bulk-team")] {
        let mut dir: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .expect("corpus directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        dir.sort();
        files.extend(dir.into_iter().map(|p| (cmd, p)));
    }
    files
}

fn finished(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = d.status_json(id);
        if is_finished(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} still {s}");
        std::thread::sleep(POLL);
    }
}

/// Every corpus file (CRLF, lone CR, BOM, blank lines, quoted newlines, ragged
/// rows, open quotes, NUL bytes, invalid UTF-8...): the total is set when the
/// job is created, and a completed job handled exactly that many rows.
fn totals_match_what_the_kinds_handle(b: Backend) {
    let d = Daemon::start_on(b);
    let mut completed = 0;
    for (cmd, path) in corpus_files() {
        let out = d
            .jobctl(&["--json", cmd, path.to_str().expect("utf-8")])
            .ok();
        let created = out.json();
        let id = created["id"].as_str().expect("id").to_string();
        let total = created["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no total at creation: {created}", path.display()));
        let s = finished(&d, &id);
        assert_eq!(
            s["total"],
            total,
            "{}: the total changed: {s}",
            path.display()
        );
        if s["state"] == "completed" {
            completed += 1;
            let handled = s["processed"].as_u64().expect("n") + s["failed"].as_u64().expect("n");
            assert_eq!(handled, total, "{}: {s}", path.display());
        }
    }
    assert!(completed >= 10, "only {completed} corpus files completed");

    // Made-up cases with known counts.
    for (bytes, rows) in [
        (
            &b"date,note\r\n2024-01-01,\"two\r\nlines\"\r\n2024-01-02,x\r\n"[..],
            2,
        ),
        (b"\xef\xbb\xbfdate,a\r1,2\r\r3,4", 2),
        (b"date,a\n\n\n", 0),
        (b"", 0),
    ] {
        let id = d.upload(bytes, None);
        let s = finished(&d, &id);
        assert_eq!(
            s["total"],
            rows,
            "{:?}: {s}",
            String::from_utf8_lossy(bytes)
        );
    }
}

both_stores!(totals_match_what_the_kinds_handle);

/// `jobctl status` shows the total of a job that is still running, and `jobctl
/// watch` prints it from its first line.
#[test]
fn status_shows_the_total_while_running() {
    let d = Daemon::start();
    let id = d.upload(&slow_baseline(9).bytes(), Some(SLOW_RATE));
    let s = d.status_json(&id);
    assert_eq!(s["total"], SLOW_ROWS as u64, "{s}");
    d.wait_processed(&id, 1);
    let text = d.jobctl(&["status", &id]).ok().stdout_str();
    let row = text
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}: {text}"));
    assert!(
        row.split_whitespace().any(|f| f == SLOW_ROWS.to_string()),
        "{row}"
    );
    let stop = d.stop(&id);
    assert_eq!(stop["total"], SLOW_ROWS as u64);
    d.control("terminate", &id).ok();
}
