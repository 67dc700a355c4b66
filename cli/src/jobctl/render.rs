//! How jobs look: JSON objects, table rows, progress lines and RFC 3339 times.

use jobd_protocol::{JobInfo, NodeInfo, RowError, UndoSummary};
use serde_json::{json, Value};

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-26T22:44:50.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of the given number of days since 1970-01-01 (proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The JSON object of a job.
pub fn job_json(job: &JobInfo) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind.as_str(),
        "state": job.state.as_str(),
        "owner": job.owner,
        "owner_uid": job.owner_uid,
        "processed": job.processed,
        "failed": job.failed,
        "total": job.total,
        "created_at": rfc3339_ms(job.created_at),
        "updated_at": rfc3339_ms(job.updated_at),
        "error": job.error,
        "rate": job.rate,
        "node": job.node,
    })
}

/// One object when exactly one job was asked for, else an array.
pub fn jobs_json(jobs: &[JobInfo], one: bool) -> Value {
    match jobs {
        [job] if one => job_json(job),
        _ => Value::Array(jobs.iter().map(job_json).collect()),
    }
}

pub fn row_errors_json(errors: &[RowError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({ "row": e.row, "message": e.message }))
            .collect(),
    )
}

/// Pretty JSON for whole answers.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn total_str(total: Option<u64>) -> String {
    total.map_or_else(|| "-".to_string(), |t| t.to_string())
}

/// `<id> <state> processed=N failed=N total=N|-`: one watch event, one waited job.
pub fn progress_line(job: &JobInfo) -> String {
    format!(
        "{} {} processed={} failed={} total={}",
        job.id,
        job.state,
        job.processed,
        job.failed,
        total_str(job.total)
    )
}

/// `Job <id> stopped.` for the three known actions (and revert).
pub fn control_line(job: &JobInfo, action: &str) -> String {
    match action {
        "stop" => format!("Job {} stopped.", job.id),
        "start" => format!("Job {} started.", job.id),
        "terminate" => format!("Job {} terminated.", job.id),
        "revert" => format!("Job {} reverted.", job.id),
        _ => format!("Job {}: {}.", job.id, job.state),
    }
}

/// What an undo (`revert` or `terminate`) would remove, as JSON; `action` names
/// it. The same object for `jobctl --json ... --dry-run` and `POST
/// /jobs/{id}/revert?dry_run=true`.
pub fn undo_json(u: &UndoSummary, action: &str) -> Value {
    json!({
        "id": u.job.id,
        "kind": u.job.kind.as_str(),
        "state": u.job.state.as_str(),
        "action": action,
        "dry_run": true,
        "records": u.records,
        "first_date": u.first_date,
        "last_date": u.last_date,
        "teams": u.teams,
        "team_names": u.team_names,
        "output_bytes": u.output_bytes,
    })
}

/// The same for people: what would go, then that nothing changed.
pub fn undo_text(u: &UndoSummary, action: &str) -> String {
    let mut out = format!(
        "Dry run: {action} of job {} ({}, {}) would remove:\n",
        u.job.id, u.job.kind, u.job.state
    );
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match (&u.first_date, &u.last_date) {
        (Some(first), Some(last)) if first != last => out.push_str(&format!(
            "  {} dated {first} to {last}\n",
            plural(u.records, "baseline record", "baseline records")
        )),
        (Some(first), _) => out.push_str(&format!(
            "  {} dated {first}\n",
            plural(u.records, "baseline record", "baseline records")
        )),
        _ => out.push_str(&format!(
            "  {}\n",
            plural(u.records, "baseline record", "baseline records")
        )),
    }
    let mut teams = format!("  {}", plural(u.teams, "team", "teams"));
    if !u.team_names.is_empty() {
        let names: Vec<&str> = u.team_names.iter().map(|n| n.as_str()).collect();
        let more = u.teams.saturating_sub(names.len() as u64);
        teams.push_str(&format!(": {}", one_line(&names.join(", "))));
        if more > 0 {
            teams.push_str(&format!(" and {more} more"));
        }
    }
    out.push_str(&teams);
    out.push('\n');
    if u.output_bytes > 0 {
        out.push_str(&format!(
            "  {} of export output\n",
            plural(u.output_bytes, "byte", "bytes")
        ));
    }
    out.push_str("Nothing was changed.");
    out
}

/// The status table: ID, KIND, STATE, NODE, PROCESSED, FAILED, TOTAL, ERROR (`-`
/// for none).
pub fn status_table(jobs: &[JobInfo]) -> String {
    const HEADER: [&str; 8] = [
        "ID",
        "KIND",
        "STATE",
        "NODE",
        "PROCESSED",
        "FAILED",
        "TOTAL",
        "ERROR",
    ];
    let rows: Vec<[String; 8]> = jobs
        .iter()
        .map(|j| {
            [
                j.id.clone(),
                j.kind.as_str().to_string(),
                j.state.as_str().to_string(),
                j.node.clone().unwrap_or_else(|| "-".into()),
                j.processed.to_string(),
                j.failed.to_string(),
                total_str(j.total),
                j.error.as_deref().map_or_else(|| "-".to_string(), one_line),
            ]
        })
        .collect();
    table(&HEADER, &rows, 4..=6)
}

/// The nodes table: NAME, STATE, RUNNING (of at most), HEARTBEAT age, STARTED.
pub fn nodes_table(nodes: &[NodeInfo], now_ms: u64) -> String {
    const HEADER: [&str; 5] = ["NAME", "STATE", "RUNNING", "HEARTBEAT", "STARTED"];
    let rows: Vec<[String; 5]> = nodes
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                node_state(n).to_string(),
                format!("{}/{}", n.running, n.max_running),
                age(n.heartbeat_age_ms),
                format!("{} ago", age(now_ms.saturating_sub(n.started_at))),
            ]
        })
        .collect();
    table(&HEADER, &rows, 2..=3)
}

/// `up`, `stopped` (left cleanly) or `silent` (no heartbeat for a minute: dead,
/// or cut off; its jobs are taken over once their leases run out).
pub fn node_state(n: &NodeInfo) -> &'static str {
    if n.stopped {
        "stopped"
    } else if n.heartbeat_age_ms > 60_000 {
        "silent"
    } else {
        "up"
    }
}

/// `850ms`, `12.3s`, `4m05s`, `3h12m`, `5d02h`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{}.{}s", s, ms % 1000 / 100),
        60_000..=3_599_999 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Columns padded to their widest cell, the last one unpadded; the columns in
/// `right` (numbers) right-aligned.
fn table<const N: usize>(
    header: &[&str; N],
    rows: &[[String; N]],
    right: std::ops::RangeInclusive<usize>,
) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_string);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                if right.contains(&i) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// Keeps a message on one table line.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobd_protocol::{JobKind, JobState};

    fn job() -> JobInfo {
        JobInfo {
            id: "alice-baselineCSV-1575836394-8469".into(),
            kind: JobKind::BaselineCsv,
            state: JobState::Running,
            owner: "alice".into(),
            owner_uid: 1000,
            processed: 12,
            failed: 1,
            total: None,
            created_at: 1_575_836_394_007,
            updated_at: 1_795_560_290_123,
            error: None,
            rate: Some(0.5),
            node: None,
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_575_836_394_007), "2019-12-08T20:19:54.007Z");
        assert_eq!(rfc3339_ms(1_795_560_290_123), "2026-11-24T22:44:50.123Z");
        // Leap days and the end of a century-leap year.
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(978_307_199_999), "2000-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn civil_from_days_walks_every_day() {
        // Day by day from 1970 to 2400, the date advances by exactly one day.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for d in 1..(430 * 366) {
            let cur = civil_from_days(d);
            let (y, m, day) = prev;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if day < len {
                (y, m, day + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn json_keys() {
        let v = job_json(&job());
        assert_eq!(v["kind"], "baselineCSV");
        assert_eq!(v["state"], "running");
        assert_eq!(v["total"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["rate"], 0.5);
        assert_eq!(v["processed"], 12);
        assert_eq!(v["created_at"], "2019-12-08T20:19:54.007Z");
        assert!(jobs_json(&[job()], true).is_object());
        assert!(jobs_json(&[job()], false).is_array());
        assert!(jobs_json(&[], true).is_array());
    }

    #[test]
    fn lines() {
        let mut j = job();
        assert_eq!(
            progress_line(&j),
            "alice-baselineCSV-1575836394-8469 running processed=12 failed=1 total=-"
        );
        j.total = Some(40);
        assert!(progress_line(&j).ends_with(" total=40"));
        assert_eq!(
            control_line(&j, "stop"),
            "Job alice-baselineCSV-1575836394-8469 stopped."
        );
    }

    #[test]
    fn undo() {
        let mut u = UndoSummary {
            job: job(),
            records: 1200,
            first_date: Some("2024-01-01".into()),
            last_date: Some("2024-03-31".into()),
            teams: 0,
            team_names: vec![],
            output_bytes: 0,
        };
        let t = undo_text(&u, "revert");
        assert!(t.starts_with("Dry run: revert of job alice-baselineCSV-1575836394-8469"));
        assert!(t.contains("  1200 baseline records dated 2024-01-01 to 2024-03-31\n"));
        assert!(t.contains("  0 teams\n"));
        assert!(t.ends_with("Nothing was changed."));
        u.teams = 12;
        u.team_names = vec!["red".into(), "blue".into()];
        assert!(undo_text(&u, "revert").contains("  12 teams: red, blue and 10 more\n"));
        let v = undo_json(&u, "terminate");
        assert_eq!(v["action"], "terminate");
        assert_eq!(v["records"], 1200);
        assert_eq!(v["team_names"][1], "blue");
        assert_eq!(v["first_date"], "2024-01-01");
    }

    #[test]
    fn table() {
        let mut other = job();
        other.id = "a".into();
        other.error = Some("too many\nerrors".into());
        let t = status_table(&[job(), other]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID "));
        assert!(lines[0].ends_with("ERROR"));
        assert!(lines[2].ends_with("too many errors"));
        assert!(lines[1].ends_with(" -"));
        assert!(lines[0].contains(" NODE "));
    }

    #[test]
    fn nodes() {
        let n = |name: &str, age, stopped| NodeInfo {
            name: name.into(),
            started_at: 1_000,
            heartbeat_age_ms: age,
            running: 1,
            max_running: 4,
            stopped,
        };
        let t = nodes_table(
            &[n("a", 850, false), n("bb", 125_000, false), n("c", 3, true)],
            3_601_000,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME  STATE    RUNNING  HEARTBEAT  STARTED");
        assert_eq!(lines[1], "a     up           1/4      850ms  1h00m ago");
        assert_eq!(lines[2], "bb    silent       1/4      2m05s  1h00m ago");
        assert_eq!(lines[3], "c     stopped      1/4        3ms  1h00m ago");
        assert_eq!(age(12_345), "12.3s");
        assert_eq!(age(5 * 86_400_000 + 7_200_000), "5d02h");
    }
}
