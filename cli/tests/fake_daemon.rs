//! Runs the real `jobctl` binary against a scripted fake daemon that speaks the
//! wire protocol, to pin down output formats and exit codes without a real jobd.

use jobd_protocol::frame::{read_message, write_message, DEFAULT_MAX_FRAME};
use jobd_protocol::{
    ErrorCode, JobInfo, JobKind, JobState, Request, Response, RowError, UndoSummary,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

const EXPORT_CSV: &[u8] = b"date,a\n2020-01-01,1\n";

fn job(id: &str, state: JobState) -> JobInfo {
    let kind = if id.contains("bulkTeam") {
        JobKind::BulkTeam
    } else if id.contains("createExport") {
        JobKind::CreateExport
    } else {
        JobKind::BaselineCsv
    };
    let failed = id.contains("fail");
    JobInfo {
        id: id.to_string(),
        kind,
        state: if failed && state == JobState::Completed {
            JobState::Failed
        } else {
            state
        },
        owner: "alice".into(),
        owner_uid: 1000,
        processed: 3,
        failed: 1,
        total: if state == JobState::Completed {
            Some(4)
        } else {
            None
        },
        created_at: 1_575_836_394_007,
        updated_at: 1_575_836_395_123,
        error: (failed && state.is_finished()).then(|| "too many row errors".to_string()),
        rate: None,
        node: None,
    }
}

fn refuse(code: ErrorCode) -> Response {
    Response::error(code, "refused by the fake daemon")
}

async fn send(s: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    write_message(s, r)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.flush().await
}

async fn serve_conn(mut s: UnixStream) -> std::io::Result<()> {
    let mut upload: Option<(JobKind, u64)> = None;
    loop {
        let req: Request = match read_message(&mut s, DEFAULT_MAX_FRAME).await {
            Ok(Some(r)) => r,
            _ => return Ok(()),
        };
        let reply = match req {
            Request::Hello { .. } => Response::Welcome {
                protocol_version: jobd_protocol::PROTOCOL_VERSION,
                daemon_version: "9.9.9".into(),
                user: "alice".into(),
            },
            Request::Ping => Response::Pong,
            Request::SubmitUpload { kind, .. } => {
                upload = Some((kind.into(), 0));
                Response::Ready
            }
            Request::Chunk { data } => {
                if let Some((_, n)) = &mut upload {
                    *n += data.len() as u64;
                }
                continue;
            }
            Request::End { bytes } => match upload.take() {
                Some((kind, n)) if n == bytes => {
                    let id = format!("alice-{kind}-1575836394-{n}");
                    Response::Job(job(&id, JobState::Queued))
                }
                _ => refuse(ErrorCode::UploadIncomplete),
            },
            Request::SubmitExport { from, .. } => {
                if from == "bad" {
                    refuse(ErrorCode::InvalidFromDate)
                } else {
                    Response::Job(job("alice-createExport-1575836394-1", JobState::Queued))
                }
            }
            Request::Control { id, action } => {
                let state = match action.as_str() {
                    "stop" => JobState::Paused,
                    "start" => JobState::Running,
                    "terminate" => JobState::Terminated,
                    _ => {
                        send(&mut s, &refuse(ErrorCode::InvalidAction)).await?;
                        continue;
                    }
                };
                if id.contains("missing") {
                    refuse(ErrorCode::IdDoesntExist)
                } else {
                    Response::Job(job(&id, state))
                }
            }
            Request::Status { ids } => {
                let ids = if ids.is_empty() {
                    vec!["alice-baselineCSV-1-1".into(), "alice-bulkTeam-1-2".into()]
                } else {
                    ids
                };
                if ids.iter().any(|i| i.contains("missing")) {
                    refuse(ErrorCode::IdDoesntExist)
                } else {
                    let jobs: Vec<JobInfo> =
                        ids.iter().map(|i| job(i, JobState::Running)).collect();
                    send(&mut s, &Response::Jobs(jobs)).await?;
                    Response::End {
                        count: ids.len() as u64,
                    }
                }
            }
            Request::Wait { ids } => {
                let jobs: Vec<JobInfo> = ids.iter().map(|i| job(i, JobState::Completed)).collect();
                send(&mut s, &Response::Jobs(jobs)).await?;
                Response::End {
                    count: ids.len() as u64,
                }
            }
            Request::Watch { id } => {
                for state in [JobState::Queued, JobState::Running] {
                    send(&mut s, &Response::Job(job(&id, state))).await?;
                }
                send(&mut s, &Response::Job(job(&id, JobState::Completed))).await?;
                Response::End { count: 3 }
            }
            Request::Output { id } => {
                send(
                    &mut s,
                    &Response::Chunk {
                        data: EXPORT_CSV.to_vec(),
                    },
                )
                .await?;
                if id.contains("broken") {
                    return Ok(());
                }
                Response::End {
                    count: EXPORT_CSV.len() as u64,
                }
            }
            Request::Errors { .. } => {
                send(
                    &mut s,
                    &Response::RowErrors(vec![
                        RowError {
                            row: 2,
                            message: "bad date".into(),
                        },
                        RowError {
                            row: 7,
                            message: "wrong field count".into(),
                        },
                    ]),
                )
                .await?;
                Response::End { count: 2 }
            }
            Request::Revert { id, .. } if id.contains("running") => {
                refuse(ErrorCode::JobNotFinished)
            }
            Request::Revert { id, dry_run: true } => Response::Undo(Box::new(UndoSummary {
                job: job(&id, JobState::Completed),
                records: 3,
                first_date: Some("2024-01-01".into()),
                last_date: Some("2024-01-03".into()),
                teams: 0,
                team_names: Vec::new(),
                output_bytes: 0,
            })),
            Request::Revert { id, dry_run: false } => Response::Job(job(&id, JobState::Reverted)),
            Request::PreviewTerminate { id } => Response::Undo(Box::new(UndoSummary {
                job: job(&id, JobState::Running),
                records: 0,
                first_date: None,
                last_date: None,
                teams: 12,
                team_names: vec!["red".into(), "blue".into()],
                output_bytes: 0,
            })),
            // Echoes what it was asked, as a count.
            Request::Prune {
                older_than_ms,
                states,
            } => Response::Pruned {
                count: older_than_ms / 1000 + states.len() as u64,
            },
            // Not used by these tests.
            Request::Events | Request::Metrics | Request::ErrorsPage { .. } | Request::Nodes => {
                refuse(ErrorCode::BadRequest)
            }
        };
        send(&mut s, &reply).await?;
    }
}

struct Fake {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Fake {
    fn start() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("jobd.sock");
        let listener = {
            let _guard = runtime().enter();
            UnixListener::bind(&socket).expect("bind")
        };
        runtime().spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_conn(s));
            }
        });
        Fake { dir, socket }
    }

    fn jobctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jobctl");
        if let Some(mut input) = child.stdin.take() {
            if let Some(data) = stdin {
                input.write_all(data).expect("write stdin");
            }
        }
        child.wait_with_output().expect("jobctl output")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write file");
}

#[test]
fn ping() {
    let f = Fake::start();
    let o = f.jobctl(&["ping"], None);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "pong (jobd 9.9.9, user alice)\n");
    let o = f.jobctl(&["ping", "--json"], None);
    assert_eq!(json(&o)["pong"], true);
}

#[test]
fn no_daemon_is_exit_3() {
    let f = Fake::start();
    let missing = f.path("other.sock");
    let o = f.jobctl(&["--socket", missing.to_str().expect("utf8"), "ping"], None);
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).starts_with("jobctl: no daemon at "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn upload_file_and_stdin() {
    let f = Fake::start();
    let csv = f.path("big.csv");
    // Several chunks' worth, so the upload streams.
    let mut data = b"date,a\n".to_vec();
    while data.len() < 700_000 {
        data.extend_from_slice(b"2020-01-01,1\n");
    }
    write_file(&csv, &data);
    let id = format!("alice-baselineCSV-1575836394-{}", data.len());

    let o = f.jobctl(&["-q", "upload", csv.to_str().expect("utf8")], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{id}\n"));

    let o = f.jobctl(&["upload", csv.to_str().expect("utf8")], None);
    assert_eq!(stdout(&o), format!("Job {id} submitted.\n"));

    let o = f.jobctl(&["bulk-team", "-", "--json"], Some(b"team,m1\nred,ann\n"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["id"], "alice-bulkTeam-1575836394-16");
    assert_eq!(v["kind"], "bulkTeam");
    assert_eq!(v["state"], "queued");
    assert_eq!(v["total"], Value::Null);
    assert_eq!(v["created_at"], "2019-12-08T20:19:54.007Z");
}

#[test]
fn upload_missing_file_is_exit_1_without_connecting() {
    let f = Fake::start();
    let o = f.jobctl(
        &["upload", "/nonexistent/x.csv", "--socket", "/nowhere.sock"],
        None,
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("jobctl: cannot open /nonexistent/x.csv: "));
}

#[test]
fn submit_and_wait() {
    let f = Fake::start();
    let o = f.jobctl(
        &[
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
            "--wait",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Job alice-createExport-1575836394-1 submitted.\n\
         alice-createExport-1575836394-1 completed processed=3 failed=1 total=4\n"
    );
    let o = f.jobctl(
        &[
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "x",
            "--wait",
            "--json",
        ],
        None,
    );
    assert_eq!(json(&o)["state"], "completed");
    let o = f.jobctl(
        &["-q", "bulk-team", "-", "--wait", "--rate", "0.5"],
        Some(b"fail"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn refusals_are_exit_1_with_code() {
    let f = Fake::start();
    let o = f.jobctl(&["export", "--from", "bad", "--to", "2020-01-01"], None);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "jobctl: invalid_from_date: refused by the fake daemon\n"
    );
    let o = f.jobctl(&["stop", "alice-missing-1-1"], None);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("jobctl: id_doesn't_exist: "));
    let o = f.jobctl(
        &["update-task", "--id", "a-b-1-1", "--action", "pause"],
        None,
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("jobctl: invalid_action: "));
}

#[test]
fn controls() {
    let f = Fake::start();
    for (cmd, word) in [
        ("stop", "stopped"),
        ("start", "started"),
        ("terminate", "terminated"),
    ] {
        let o = f.jobctl(&[cmd, "alice-baselineCSV-1-1"], None);
        assert_eq!(code(&o), 0);
        assert_eq!(stdout(&o), format!("Job alice-baselineCSV-1-1 {word}.\n"));
    }
    let o = f.jobctl(
        &[
            "update-task",
            "--id",
            "alice-baselineCSV-1-1",
            "--action",
            "stop",
            "--json",
        ],
        None,
    );
    assert_eq!(json(&o)["state"], "paused");
}

#[test]
fn revert_and_dry_runs() {
    let f = Fake::start();
    let id = "alice-baselineCSV-1-1";
    let o = f.jobctl(&["revert", id], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("Job {id} reverted.\n"));
    assert_eq!(
        json(&f.jobctl(&["--json", "revert", id], None))["state"],
        "reverted"
    );
    let o = f.jobctl(&["revert", "--dry-run", id], None);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.starts_with(&format!(
        "Dry run: revert of job {id} (baselineCSV, completed)"
    )));
    assert!(
        text.contains("  3 baseline records dated 2024-01-01 to 2024-01-03\n"),
        "{text}"
    );
    assert!(text.ends_with("Nothing was changed.\n"), "{text}");
    let v = json(&f.jobctl(&["revert", "--dry-run", "--json", id], None));
    assert_eq!(
        (v["records"].as_u64(), v["dry_run"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(v["last_date"], "2024-01-03");
    let o = f.jobctl(&["revert", "alice-bulkTeam-running-1"], None);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("jobctl: job_not_finished: "),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());

    let o = f.jobctl(&["terminate", "--dry-run", "alice-bulkTeam-1-2"], None);
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("  12 teams: red, blue and 10 more\n"),
        "{}",
        stdout(&o)
    );
    let v = json(&f.jobctl(
        &["--json", "terminate", "--dry-run", "alice-bulkTeam-1-2"],
        None,
    ));
    assert_eq!(
        (v["action"].as_str(), v["teams"].as_u64()),
        (Some("terminate"), Some(12))
    );
    assert!(f
        .jobctl(&["-q", "revert", "--dry-run", id], None)
        .stdout
        .is_empty());
}

#[test]
fn prune_flags_and_output() {
    let f = Fake::start();
    let o = f.jobctl(&["prune", "--older-than", "30s", "--state", "failed"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "Pruned 31 finished jobs.\n");
    let o = f.jobctl(
        &[
            "-q",
            "prune",
            "--older-than",
            "1m",
            "--state",
            "failed,reverted",
        ],
        None,
    );
    assert_eq!(stdout(&o), "62\n");
    assert_eq!(json(&f.jobctl(&["--json", "prune"], None))["pruned"], 0);
    for bad in [
        vec!["prune", "--older-than", "30"],
        vec!["prune", "--state", "paused"],
        vec!["prune", "--state", "done"],
    ] {
        let o = f.jobctl(&bad, None);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn status() {
    let f = Fake::start();
    let o = f.jobctl(&["status"], None);
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("ID"));
    for col in ["KIND", "STATE", "PROCESSED", "FAILED", "TOTAL", "ERROR"] {
        assert!(lines[0].contains(col));
    }
    assert!(json(&f.jobctl(&["status", "--json"], None)).is_array());
    assert!(json(&f.jobctl(&["status", "--json", "a-b-1-1"], None)).is_object());
    assert_eq!(
        json(&f.jobctl(&["--json", "status", "a-b-1-1", "a-b-1-2"], None))
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        stdout(&f.jobctl(&["status", "-q"], None)),
        "alice-baselineCSV-1-1\nalice-bulkTeam-1-2\n"
    );
    assert_eq!(code(&f.jobctl(&["status", "missing"], None)), 1);
}

#[test]
fn wait_exit_codes() {
    let f = Fake::start();
    let o = f.jobctl(&["wait", "a-b-1-1", "a-b-1-2"], None);
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o),
        "a-b-1-1 completed processed=3 failed=1 total=4\na-b-1-2 completed processed=3 failed=1 total=4\n"
    );
    let o = f.jobctl(&["wait", "a-b-1-1", "a-fail-1-2"], None);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("job a-fail-1-2 failed: too many row errors"));
}

#[test]
fn watch_lines_and_json() {
    let f = Fake::start();
    let o = f.jobctl(&["watch", "a-b-1-1"], None);
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o),
        "a-b-1-1 queued processed=3 failed=1 total=-\n\
         a-b-1-1 running processed=3 failed=1 total=-\n\
         a-b-1-1 completed processed=3 failed=1 total=4\n"
    );
    let o = f.jobctl(&["watch", "a-fail-1-1", "--json"], None);
    assert_eq!(code(&o), 1);
    let states: Vec<String> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line")["state"].to_string())
        .collect();
    assert_eq!(states, ["\"queued\"", "\"running\"", "\"failed\""]);
}

#[test]
fn output_to_stdout_and_file() {
    let f = Fake::start();
    let o = f.jobctl(&["output", "a-createExport-1-1"], None);
    assert_eq!(code(&o), 0);
    assert_eq!(o.stdout, EXPORT_CSV);
    let dest = f.path("out.csv");
    let o = f.jobctl(
        &[
            "output",
            "a-createExport-1-1",
            "-o",
            dest.to_str().expect("utf8"),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read(&dest).expect("read"), EXPORT_CSV);
    let broken = f.path("broken.csv");
    let o = f.jobctl(
        &[
            "output",
            "a-broken-1-1",
            "-o",
            broken.to_str().expect("utf8"),
        ],
        None,
    );
    assert_eq!(code(&o), 3);
    assert!(!broken.exists());
    let leftovers = std::fs::read_dir(f.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn row_errors() {
    let f = Fake::start();
    let o = f.jobctl(&["errors", "a-b-1-1"], None);
    assert_eq!(stdout(&o), "row 2: bad date\nrow 7: wrong field count\n");
    let v = json(&f.jobctl(&["errors", "a-b-1-1", "--json"], None));
    assert_eq!(v[1]["row"], 7);
    assert_eq!(v[0]["message"], "bad date");
}
