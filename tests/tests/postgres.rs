//! What only the PostgreSQL store has: its URL (masked, checked), the database
//! refusing jobd at start, the server going away mid-run and coming back, jobd
//! starting before its database. Each test that stops a server runs its own
//! private cluster ([`PgCluster`]); the others use the suite's server.

use jobd_tests::backend::postgres_or_skip;
use jobd_tests::http::Shim;
use jobd_tests::pgcluster::{Auth, PgCluster};
use jobd_tests::*;
use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `jobd ARGS` with a temporary socket and state directory, no config file.
fn jobd(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(&bins().jobd);
    c.env_remove("JOBD_STORE")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .arg("--socket")
        .arg(dir.join("run/jobd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args);
    c
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("jobd-pg-t")
        .tempdir()
        .expect("temporary directory")
}

/// jobd refusing to start: exit `code`, one line on stderr containing `says`, and
/// never the password.
#[track_caller]
fn refused_at_start(dir: &std::path::Path, url: &str, code: i32, says: &str) -> Out {
    let out = run_with_timeout(jobd(dir, &["--store", url]), None, Duration::from_secs(30));
    assert_eq!(out.code, Some(code), "exit code: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {out}");
    assert!(
        lines[0].starts_with("jobd: ") && lines[0].contains(says),
        "{out}"
    );
    assert!(
        !out.stderr.contains("s3cret"),
        "the password is shown: {out}"
    );
    eprintln!("[exit {code}] {}", out.stderr.trim());
    out
}

#[test]
fn check_config_masks_the_password_and_bad_urls_exit_2() {
    let dir = tempdir();
    let url = "postgres://jobd:s3cret@db.example:5432/jobs?application_name=x";
    let masked = "postgres://jobd:****@db.example:5432/jobs?application_name=x";
    // Flag, environment, config file: each shows the URL masked.
    let flag = run_with_timeout(
        jobd(dir.path(), &["--store", url, "--check-config"]),
        None,
        Duration::from_secs(30),
    )
    .ok();
    let mut env = jobd(dir.path(), &["--check-config"]);
    env.env("JOBD_STORE", url);
    let env = run_with_timeout(env, None, Duration::from_secs(30)).ok();
    let file = dir.path().join("jobd.toml");
    fs::write(&file, format!("store = \"{url}\"\n")).expect("config file");
    let from_file = run_with_timeout(
        jobd(
            dir.path(),
            &["--config", file.to_str().expect("path"), "--check-config"],
        ),
        None,
        Duration::from_secs(30),
    )
    .ok();
    for out in [&flag, &env, &from_file] {
        let text = out.stdout_str();
        assert!(text.contains(&format!("store = \"{masked}\"")), "{out}");
        assert!(!text.contains("s3cret"), "the password is shown: {out}");
    }
    // The default is the embedded store.
    let default = run_with_timeout(
        jobd(dir.path(), &["--check-config"]),
        None,
        Duration::from_secs(30),
    )
    .ok();
    assert!(
        default.stdout_str().contains("store = \"sqlite\""),
        "{default}"
    );

    for bad in [
        "postgres://jobd:s3cret@db.example:notaport/jobs",
        "postgres://jobd:s3cret@db.example/jobs?nosuchoption=1",
        "mysql://jobd:s3cret@db.example/jobs",
    ] {
        let out = run_with_timeout(
            jobd(dir.path(), &["--store", bad, "--check-config"]),
            None,
            Duration::from_secs(30),
        );
        assert_eq!(out.code, Some(2), "{out}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");
        assert!(out.stderr.contains("store"), "{out}");
        assert!(
            !out.stderr.contains("s3cret"),
            "the password is shown: {out}"
        );
    }
}

/// Wrong password, missing database, a database of another application, a newer
/// layout: exit 2; a server that refuses what jobd needs: exit 1. Never a
/// half-created schema.
#[test]
fn a_database_jobd_cannot_use_stops_it_at_start_with_one_line() {
    if !postgres_or_skip("a_database_jobd_cannot_use_stops_it_at_start_with_one_line") {
        return;
    }
    let pw = "s3cret";
    let cluster = PgCluster::start(Auth::Password(pw));
    let port = cluster.port;
    let url = |user: &str, pass: &str, db: &str| {
        format!("postgres://{user}:{pass}@127.0.0.1:{port}/{db}")
    };
    let dir = tempdir();

    refused_at_start(
        dir.path(),
        &url("postgres", "wrong", "postgres"),
        2,
        "password authentication failed",
    );
    refused_at_start(
        dir.path(),
        &url("postgres", pw, "nosuchdb"),
        2,
        "does not exist",
    );

    cluster.sql("postgres", Some(pw), "CREATE DATABASE foreign_app");
    cluster.sql("foreign_app", Some(pw), "CREATE TABLE accounts (id int)");
    refused_at_start(
        dir.path(),
        &url("postgres", pw, "foreign_app"),
        2,
        "not jobd's",
    );

    // A role that may not create a schema in its database: the server refuses.
    cluster.sql(
        "postgres",
        Some(pw),
        "CREATE ROLE limited LOGIN PASSWORD 's3cret'",
    );
    cluster.sql("postgres", Some(pw), "CREATE DATABASE locked");
    cluster.sql(
        "postgres",
        Some(pw),
        "REVOKE CREATE ON DATABASE locked FROM PUBLIC",
    );
    refused_at_start(
        dir.path(),
        &url("limited", pw, "locked"),
        1,
        "permission denied",
    );

    // A store written by a later jobd.
    cluster.sql("postgres", Some(pw), "CREATE DATABASE newer");
    {
        let mut d = Daemon::start_on_url(&url("postgres", pw, "newer"), &[]);
        d.sigterm_and_wait();
    }
    cluster.sql(
        "newer",
        Some(pw),
        "UPDATE jobd.meta SET value = '99' WHERE key = 'layout'",
    );
    refused_at_start(dir.path(), &url("postgres", pw, "newer"), 2, "newer");

    // Nothing was created where jobd was refused.
    for db in ["foreign_app", "locked"] {
        let mut c =
            postgres::Client::connect(&url("postgres", pw, db), postgres::NoTls).expect("connect");
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'jobd'",
                &[],
            )
            .expect("query")
            .get(0);
        assert_eq!(n, 0, "jobd left a schema in {db}");
    }
}

/// PostgreSQL stops in the middle of an ingest and starts again: requests that need
/// it are refused with `storage_unavailable` meanwhile, the worker waits, and the
/// job goes on from its committed cursor with every row exactly once, without a
/// restart of jobd.
#[test]
fn an_ingest_survives_a_postgresql_restart() {
    if !postgres_or_skip("an_ingest_survives_a_postgresql_restart") {
        return;
    }
    let mut cluster = PgCluster::start(Auth::Trust);
    cluster.sql("postgres", None, "CREATE DATABASE jobd");
    let d = Daemon::start_on_url(&cluster.url("jobd"), &[]);
    let pid = d.pid();
    let shim = Shim::start(&d, &[]);
    let f = gen_baseline(
        401,
        &["date", "name", "value"],
        400,
        Date::new(2024, 2, 1),
        20,
    );
    let id = d.upload(&f.bytes(), Some(50.0));
    d.wait_processed(&id, 40);

    cluster.stop_server();
    // A request that reads the store finds it gone (and teaches the daemon so).
    d.jobctl(&["errors", &id]).refused("storage_unavailable");
    // Controls and submits are refused at once, changing nothing.
    let out = d.jobctl(&["stop", &id]).refused("storage_unavailable");
    assert!(out.stderr.contains("cannot be reached"), "{out}");
    let small = d.input_file(b"date,v\n2024-01-01,1\n");
    d.jobctl(&["upload", small.to_str().expect("path")])
        .refused("storage_unavailable");
    d.jobctl(&["export", "--from", "2024-01-01", "--to", "2024-01-02"])
        .refused("storage_unavailable");
    shim.get(&format!("/jobs/{id}/errors"))
        .expect_error(503, "storage_unavailable");
    // What needs no store still answers.
    let s = d.status_json(&id);
    assert_eq!(s["state"], "running", "{s}");
    let during = s["processed"].as_u64().unwrap_or(0);
    assert!(during < 400, "the job ended before the outage: {s}");

    cluster.start_server();
    let s = d.wait_completed(&id);
    assert_counts(&s, 400, 0, Some(400));
    assert_baseline_exact(&d, &id, &f.records);
    assert!(d.errors(&id).is_empty());
    assert_eq!(d.pid(), pid, "jobd was restarted");
    assert!(
        d.logs().contains("the store is unavailable"),
        "the wait is not in the log:\n{}",
        d.logs()
    );
    // And the daemon takes new work again.
    let again = d.upload(&f.bytes(), None);
    d.wait_completed(&again);
    assert_eq!(d.store().baseline_count(&again), 400);
}

/// Started while its database is down, jobd says it waits, answers nobody and
/// tells systemd nothing; once the database is up it becomes ready.
#[test]
fn jobd_waits_for_its_database_before_it_is_ready() {
    if !postgres_or_skip("jobd_waits_for_its_database_before_it_is_ready") {
        return;
    }
    let mut cluster = PgCluster::start(Auth::Trust);
    cluster.sql("postgres", None, "CREATE DATABASE jobd");
    cluster.stop_server();
    let dir = tempdir();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let log = dir.path().join("jobd.log");
    let mut child = jobd(dir.path(), &["--store", &cluster.url("jobd")])
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(File::create(&log).expect("log"))
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("spawn jobd");
    let socket = dir.path().join("run/jobd.sock");
    let ping = || {
        let mut c = Command::new(&bins().jobctl);
        c.env_remove("JOBD_SOCKET")
            .arg("--socket")
            .arg(&socket)
            .arg("ping");
        run_with_timeout(c, None, Duration::from_secs(30))
    };
    // It says it waits, twice (so it retries), and is not ready meanwhile.
    let deadline = Instant::now() + DEADLINE;
    while fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("waiting for PostgreSQL")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no retries logged:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "jobd exited:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(POLL);
    }
    let mut buf = [0u8; 256];
    if let Ok(n) = sock.recv(&mut buf) {
        panic!(
            "notified while its database is down: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert_eq!(ping().code, Some(3), "answered while its database is down");

    cluster.start_server();
    sock.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let n = sock
        .recv(&mut buf)
        .expect("READY=1 once the database is up");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert_eq!(
        ping().code,
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The same jobs on both stores give byte-identical exports.
#[test]
fn exports_are_byte_identical_on_both_stores() {
    if !postgres_or_skip("exports_are_byte_identical_on_both_stores") {
        return;
    }
    let from = Date::new(2023, 12, 30);
    let a = gen_baseline(
        411,
        &["date", "name", "value"],
        3000,
        Date::new(2024, 1, 1),
        40,
    );
    let b = gen_baseline(
        412,
        &["amount", "date", "name", "note"],
        2000,
        Date::new(2023, 12, 30),
        30,
    );
    let mut outputs = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let d = Daemon::start_on(backend);
        // Throttled, so that the records come in many small batches.
        let ia = d.upload(&a.bytes(), Some(2000.0));
        let ib = d.upload(&b.bytes(), None);
        d.wait_completed(&ia);
        d.wait_completed(&ib);
        let e = d.export(&from.to_string(), "2024-02-15", None);
        d.wait_completed(&e);
        outputs.push(d.output(&e));
    }
    let want = expected_export(&[&a, &b], from, Date::new(2024, 2, 15));
    assert_bytes_eq("the SQLite export", &outputs[0], &want);
    assert_bytes_eq(
        "the PostgreSQL export vs the SQLite one",
        &outputs[1],
        &outputs[0],
    );
}
