//! Crash safety. Each kind of job (baseline upload, bulk team, export over data
//! uploaded before) runs while `jobd` is SIGKILLed at seeded random moments and
//! restarted on the same state; once the job has finished its effects are compared
//! with a second daemon that ran the same input without ever being killed: every
//! baseline row present exactly once, every team exactly once, export bytes
//! identical, row-error reports identical, `integrity_check` ok after every restart.
//! Node kills: the same over three nodes on one PostgreSQL, a random node
//! killed at random points, the job taken over or re-claimed.
//! Then durable controls across SIGKILL (an acknowledged stop, an acknowledged
//! terminate, a crash inside a terminate's rollback) and uploads cut short by the
//! client or by the daemon.
//!
//! `JOBD_CRASH_SEED=N` replays a kill schedule (the seed is printed on failure).
//! The CI tests make [`CI_POINTS`] kill points per kind; the ignored `crash_soak`
//! makes `JOBD_CRASH_POINTS` (default 500) across the three kinds:
//!
//! ```text
//! JOBD_CRASH_POINTS=500 cargo test -p jobd-tests --test crash -- --ignored --nocapture crash_soak
//! ```

use jobd_protocol::{Client, Request, Response, UploadKind};
use jobd_tests::crash::*;
use jobd_tests::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Kill points per kind in CI (three kinds: 27 in all).
const CI_POINTS: u64 = 9;

/// Kills while one job runs, at most (then the job finishes and is checked).
const MAX_KILLS_PER_RUN: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Teams,
    Export,
}

impl Kind {
    fn salt(self) -> u64 {
        match self {
            Kind::Baseline => 0xB,
            Kind::Teams => 0x7,
            Kind::Export => 0xE,
        }
    }
}

// ---------------------------------------------------------------------------------
// Inputs with deliberate row errors, and the effects they must have

/// A baseline CSV whose good rows are `file.records` (renumbered to the data rows
/// they end up on) with bad rows mixed in at `bad_rows`.
struct MixedBaseline {
    file: BaselineFile,
    bytes: Vec<u8>,
    bad_rows: Vec<u64>,
}

fn line(fields: &[String]) -> Vec<u8> {
    let mut l = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    l.push(b'\n');
    l
}

fn baseline_mixed(seed: u64, header: &[&str], rows: usize, from: Date, days: u32) -> MixedBaseline {
    let mut file = gen_baseline(seed, header, rows, from, days);
    let mut rng = Rng::new(seed ^ 0xBAD);
    let width = header.len();
    let mut bytes = line(&file.header);
    let mut bad_rows = Vec::new();
    let mut row = 0u64;
    let mut records = Vec::with_capacity(file.records.len());
    for mut r in std::mem::take(&mut file.records) {
        while rng.chance(4) {
            row += 1;
            bad_rows.push(row);
            let date = from.add_days(rng.below(u64::from(days)) as i64).to_string();
            let mut fields = vec!["x".to_string(); width];
            fields[file.date_col] = date;
            match rng.below(4) {
                0 => fields.truncate(1.max(width - 1)),
                1 => fields.push("extra".into()),
                2 => fields[file.date_col] = "2023-02-29".into(),
                _ => {
                    let mut l = line(&fields);
                    // Invalid UTF-8 in the last field.
                    l.insert(l.len() - 1, 0xFF);
                    bytes.extend(l);
                    continue;
                }
            }
            bytes.extend(line(&fields));
        }
        row += 1;
        r.row = row;
        let mut fields = r.fields.clone();
        fields.insert(file.date_col, r.date.clone());
        bytes.extend(line(&fields));
        records.push(r);
    }
    file.records = records;
    MixedBaseline {
        file,
        bytes,
        bad_rows,
    }
}

/// A bulk-team CSV with duplicate names, ragged rows and empty names mixed in.
struct MixedTeams {
    bytes: Vec<u8>,
    teams: Vec<TeamRow>,
    bad_rows: Vec<u64>,
}

fn teams_mixed(seed: u64, prefix: &str, rows: usize, width: usize) -> MixedTeams {
    let t = gen_teams(seed, prefix, rows, width);
    let text = String::from_utf8(t.bytes).expect("generated teams are UTF-8");
    let mut lines = text.split_inclusive('\n');
    let mut bytes = lines.next().expect("header").as_bytes().to_vec();
    let mut rng = Rng::new(seed ^ 0x7EA);
    let mut teams = Vec::with_capacity(t.teams.len());
    let mut bad_rows = Vec::new();
    let mut row = 0u64;
    for (mut team, l) in t.teams.into_iter().zip(lines) {
        while rng.chance(4) {
            row += 1;
            bad_rows.push(row);
            let mut fields = vec![String::new(); width];
            match rng.below(3) {
                0 if !teams.is_empty() => {
                    let earlier: &TeamRow = rng.pick(&teams);
                    fields[0] = format!(" {}", earlier.name);
                }
                1 => {
                    fields[0] = format!("{prefix}-ragged-{row}");
                    fields.push("extra".into());
                }
                _ => fields[1] = "someone".into(),
            }
            bytes.extend(line(&fields));
        }
        row += 1;
        team.row = row;
        bytes.extend(l.as_bytes());
        teams.push(team);
    }
    MixedTeams {
        bytes,
        teams,
        bad_rows,
    }
}

/// The baseline data every export runs over, uploaded to both daemons in one order.
struct ExportData {
    files: Vec<MixedBaseline>,
    from: Date,
    days: u32,
}

fn export_data(seed: u64) -> ExportData {
    let from = Date::new(2024, 1, 1);
    let days = 366;
    let headers: [&[&str]; 3] = [
        &["date", "name", "value"],
        &["value", "date", "note"],
        &["date", "name", "extra", "value"],
    ];
    let files = headers
        .iter()
        .enumerate()
        .map(|(i, h)| baseline_mixed(seed + i as u64, h, 3000, from, days))
        .collect();
    ExportData { files, from, days }
}

fn upload_export_data(d: &Daemon, data: &ExportData) {
    for f in &data.files {
        let id = d.upload(&f.bytes, None);
        d.wait_completed(&id);
    }
}

/// One job to run in both daemons.
enum Input {
    Baseline(MixedBaseline),
    Teams(MixedTeams),
    Export { from: Date, to: Date },
}

impl Input {
    fn units(&self) -> u64 {
        match self {
            Input::Baseline(m) => (m.file.records.len() + m.bad_rows.len()) as u64,
            Input::Teams(m) => (m.teams.len() + m.bad_rows.len()) as u64,
            Input::Export { from, to } => from.through(*to).len() as u64,
        }
    }

    fn submit(&self, d: &Daemon, rate: Option<f64>) -> String {
        match self {
            Input::Baseline(m) => d.upload(&m.bytes, rate),
            Input::Teams(m) => d.bulk_team(&m.bytes, rate),
            Input::Export { from, to } => d.export(&from.to_string(), &to.to_string(), rate),
        }
    }
}

/// A random input for run `run` of `kind`, sized for its pace (`None`: unthrottled).
fn make_input(
    kind: Kind,
    rng: &mut Rng,
    run: u64,
    data: Option<&ExportData>,
) -> (Input, Option<f64>) {
    let pace = rng.below(3);
    let between = |rng: &mut Rng, lo: u64, hi: u64| (lo + rng.below(hi - lo + 1)) as usize;
    match kind {
        Kind::Baseline => {
            let (rows, rate) = match pace {
                0 => (between(rng, 60, 120), Some(40.0 + rng.below(30) as f64)),
                1 => (between(rng, 500, 800), Some(300.0)),
                _ => (between(rng, 25_000, 45_000), None),
            };
            let header: &[&str] = if rng.chance(50) {
                &["date", "name", "value"]
            } else {
                &["note", "value", "date", "name"]
            };
            let m = baseline_mixed(rng.next_u64(), header, rows, Date::new(2023, 6, 1), 60);
            (Input::Baseline(m), rate)
        }
        Kind::Teams => {
            let (rows, rate) = match pace {
                0 => (between(rng, 60, 120), Some(40.0 + rng.below(30) as f64)),
                1 => (between(rng, 500, 800), Some(300.0)),
                _ => (between(rng, 12_000, 20_000), None),
            };
            let width = 2 + rng.below(4) as usize;
            let m = teams_mixed(rng.next_u64(), &format!("run{run}"), rows, width);
            (Input::Teams(m), rate)
        }
        Kind::Export => {
            let data = data.expect("export data");
            // Ranges may start before and end after the data.
            let first = data.from.add_days(-10);
            let (days, rate) = match pace {
                0 => (between(rng, 40, 80), Some(25.0 + rng.below(15) as f64)),
                1 => (between(rng, 250, 380), Some(150.0)),
                _ => (data.days as usize + 20, None),
            };
            let span = (data.days + 20) as u64;
            let from = first.add_days(rng.below(span.saturating_sub(days as u64) + 1) as i64);
            let to = from.add_days(days as i64 - 1);
            (Input::Export { from, to }, rate)
        }
    }
}

/// Row errors as `(row, message)`, from jobctl.
fn row_errors(d: &Daemon, id: &str) -> Vec<(u64, String)> {
    d.errors(id)
}

/// The crashed job's effects equal the reference job's and the generator's.
fn verify(input: &Input, data: Option<&ExportData>, d: &Daemon, id: &str, r: &Daemon, rid: &str) {
    let s = d.status_json(id);
    let rs = r.status_json(rid);
    assert_eq!(s["state"], "completed", "crashed job: {s}");
    for k in ["processed", "failed", "total"] {
        assert_eq!(
            s[k], rs[k],
            "{k} differs from the run never killed: {s} vs {rs}"
        );
    }
    let errors = row_errors(d, id);
    assert_eq!(
        errors,
        row_errors(r, rid),
        "row errors differ from the run never killed"
    );
    match input {
        Input::Baseline(m) => {
            assert_counts(
                &s,
                m.file.records.len() as u64,
                m.bad_rows.len() as u64,
                Some(input.units()),
            );
            assert_baseline_exact(d, id, &m.file.records);
            let rows: Vec<u64> = errors.iter().map(|e| e.0).collect();
            assert_eq!(rows, m.bad_rows, "rows of the row errors");
        }
        Input::Teams(m) => {
            assert_counts(
                &s,
                m.teams.len() as u64,
                m.bad_rows.len() as u64,
                Some(input.units()),
            );
            assert_teams_exact(d, id, &m.teams);
            let rows: Vec<u64> = errors.iter().map(|e| e.0).collect();
            assert_eq!(rows, m.bad_rows, "rows of the row errors");
        }
        Input::Export { from, to } => {
            assert_counts(&s, input.units(), 0, Some(input.units()));
            let got = d.output(id);
            assert_bytes_eq("export vs the run never killed", &got, &r.output(rid));
            let data = data.expect("export data");
            let files: Vec<&BaselineFile> = data.files.iter().map(|f| &f.file).collect();
            assert_bytes_eq(
                "export vs the expected file",
                &got,
                &expected_export(&files, *from, *to),
            );
        }
    }
    assert_committed_consistent(d, id);
}

/// Runs jobs of `kind` until `points` kill points were made; returns (points, runs).
fn crash_kind(kind: Kind, points: u64, seed: &Seed, b: Backend) -> (u64, u64) {
    let mut rng = seed.rng(kind.salt());
    let mut d = Daemon::start_on_with(b, &["--max-running", "2"]);
    let reference = Daemon::start_on_with(b, &["--max-running", "2"]);
    let data = (kind == Kind::Export).then(|| export_data(rng.next_u64()));
    if let Some(data) = &data {
        upload_export_data(&d, data);
        upload_export_data(&reference, data);
    }
    let (mut made, mut runs) = (0u64, 0u64);
    while made < points {
        runs += 1;
        assert!(
            runs <= points * 3 + 5,
            "{kind:?}: only {made} kill points in {runs} runs: the jobs end before the kills"
        );
        let (input, rate) = make_input(kind, &mut rng, runs, data.as_ref());
        let units = input.units();
        let t0 = Instant::now();
        let rid = input.submit(&reference, None);
        reference.wait_completed(&rid);
        let unthrottled = t0.elapsed();
        let id = input.submit(&d, rate);
        let window = |done: u64| {
            let left = units.saturating_sub(done) as f64 / units.max(1) as f64;
            let full = match rate {
                Some(r) => Duration::from_secs_f64(units as f64 / r),
                None => unthrottled,
            };
            full.mul_f64(left) + Duration::from_millis(30)
        };
        let kills = (1 + rng.below(MAX_KILLS_PER_RUN)).min(points - made) as u32;
        let k = kill_while_running(&mut d, &id, &mut rng, kills, window);
        eprintln!("[crash {kind:?}] run {runs}: {units} units, rate {rate:?}: {k} kill points");
        made += u64::from(k);
        d.wait_completed(&id);
        verify(&input, data.as_ref(), &d, &id, &reference, &rid);
        if kind != Kind::Export {
            wait_uploads_gone(&d);
        }
    }
    assert_integrity(&d);
    (made, runs)
}

fn crash_ci(kind: Kind, name: &str, b: Backend) {
    let seed = Seed::from_env("JOBD_CRASH_SEED", name);
    let (points, runs) = crash_kind(kind, CI_POINTS, &seed, b);
    eprintln!("[{name}] {points} kill points over {runs} job runs");
    assert!(points >= CI_POINTS);
}

fn crash_baseline_upload_at_random_points(b: Backend) {
    crash_ci(Kind::Baseline, "crash_baseline_upload_at_random_points", b);
}

fn crash_bulk_team_at_random_points(b: Backend) {
    crash_ci(Kind::Teams, "crash_bulk_team_at_random_points", b);
}

fn crash_export_at_random_points(b: Backend) {
    crash_ci(Kind::Export, "crash_export_at_random_points", b);
}

/// The soak: `JOBD_CRASH_POINTS` kill points (default 500) across the three kinds,
/// the kinds in parallel, on the store `JOBD_CRASH_STORE` names (`sqlite`, the
/// default, or `postgres`).
#[test]
#[ignore = "soak: run with JOBD_CRASH_POINTS=N -- --ignored"]
fn crash_soak() {
    let total = env_number("JOBD_CRASH_POINTS", 500).max(3);
    let store = match std::env::var("JOBD_CRASH_STORE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let seed = Seed::from_env("JOBD_CRASH_SEED", "crash_soak");
    let started = Instant::now();
    let results: Vec<(Kind, (u64, u64))> = thread::scope(|s| {
        let handles: Vec<_> = [Kind::Baseline, Kind::Teams, Kind::Export]
            .into_iter()
            .map(|k| {
                let seed = &seed;
                s.spawn(move || (k, crash_kind(k, total.div_ceil(3), seed, store)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("soak thread"))
            .collect()
    });
    for (k, (points, runs)) in &results {
        eprintln!("[crash_soak] {k:?}: {points} kill points over {runs} job runs");
    }
    let sum: u64 = results.iter().map(|(_, (p, _))| p).sum();
    eprintln!("[crash_soak] {sum} kill points in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------
// Node kills

/// Kill points of the node harness in CI.
const NODE_POINTS: u64 = 21;
/// The nodes' lease: short, so that takeovers come quickly.
const NODE_LEASE: &str = "2";

/// A 3-node cluster on one PostgreSQL runs jobs of random kinds, each submitted to
/// a random node; at random moments a random node is SIGKILLed (mostly the one
/// running the job) and restarted either at once (it re-claims its own jobs) or
/// only after another node took the job over once the lease ran out. After every
/// kill no progress a client was shown is lost and the committed effects match
/// the committed counters; every job ends with the same effects as on a single
/// daemon that was never killed.
#[test]
fn crash_nodes_at_random_points() {
    if !jobd_tests::backend::postgres_or_skip("crash_nodes_at_random_points") {
        return;
    }
    let seed = Seed::from_env("JOBD_CRASH_SEED", "crash_nodes_at_random_points");
    let mut rng = seed.rng(0x40DE);
    let mut c =
        jobd_tests::nodes::Nodes::start(3, &["--lease-secs", NODE_LEASE, "--max-running", "2"]);
    let reference = Daemon::start_on_with(Backend::Postgres, &["--max-running", "2"]);
    let data = export_data(rng.next_u64());
    upload_export_data(c.node(0), &data);
    upload_export_data(&reference, &data);
    let kinds = [Kind::Baseline, Kind::Teams, Kind::Export];
    let (mut made, mut runs, mut takeovers) = (0u64, 0u64, 0u64);
    while made < NODE_POINTS {
        runs += 1;
        assert!(
            runs <= NODE_POINTS * 3,
            "only {made} node kill points in {runs} runs: the jobs end before the kills"
        );
        let kind = kinds[rng.below(3) as usize];
        let (input, rate) = make_input(kind, &mut rng, runs, Some(&data));
        let t0 = Instant::now();
        let rid = input.submit(&reference, None);
        reference.wait_completed(&rid);
        let unthrottled = t0.elapsed();
        let full = match rate {
            Some(r) => Duration::from_secs_f64(input.units() as f64 / r),
            None => unthrottled,
        };
        let id = input.submit(c.node(rng.below(3) as usize), rate);
        let kills = 1 + rng.below(3);
        for _ in 0..kills.min(NODE_POINTS - made) {
            let w = full.as_millis().max(2) as u64;
            thread::sleep(Duration::from_millis(if rng.chance(12) {
                rng.below(4)
            } else {
                rng.below(w / 2 + 1)
            }));
            let asked = c.other_than(&[]);
            let before = c.node(asked).status_json(&id);
            if is_finished(&before) {
                break;
            }
            let runner = before["node"].as_str().map(|n| c.index_of(n));
            let victim = match runner {
                Some(r) if !rng.chance(5) => r,
                _ => rng.below(3) as usize,
            };
            c.node_mut(victim).sigkill();
            made += 1;
            let wait_takeover = Some(victim) == runner && rng.chance(50);
            if wait_takeover {
                let other = c.other_than(&[victim]);
                let victim_name = format!("n{}", victim + 1);
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let s = c.node(other).status_json(&id);
                    if is_finished(&s)
                        || (s["state"] == "running" && s["node"] != victim_name.as_str())
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no takeover of {id} from {victim_name} within 20 s: n{} shows {s}\nstored: {}\n{}\n{}",
                        other + 1,
                        c.stored_row(&id),
                        c.sessions(),
                        c.logs()
                    );
                    thread::sleep(POLL);
                }
                takeovers += 1;
            }
            c.node_mut(victim).restart();
            let d = c.node(victim);
            assert_integrity(d);
            let cm = assert_committed_consistent(d, &id);
            let after = cm.processed + cm.failed;
            assert!(
                after >= units(&before),
                "job {id}: {} units were reported before n{} was killed, {after} committed after: {before} / {cm:?}",
                units(&before),
                victim + 1
            );
            assert_ne!(
                cm.state, "failed",
                "job {id} failed after a node kill: {cm:?}"
            );
        }
        eprintln!(
            "[crash nodes] run {runs}: {kind:?}, {} units, rate {rate:?}: {made} kill points so far",
            input.units()
        );
        let d = c.node(rng.below(3) as usize);
        d.wait_completed(&id);
        verify(&input, Some(&data), d, &id, &reference, &rid);
    }
    wait_uploads_gone(c.node(0));
    eprintln!(
        "[crash_nodes_at_random_points] {made} node kill points over {runs} job runs, {takeovers} waited for a takeover"
    );
}

// ---------------------------------------------------------------------------------
// Durable controls

/// A slow job of each kind (the export over data completed before), all mid-run.
struct Trio {
    base: MixedBaseline,
    teams: MixedTeams,
    data: BaselineFile,
    ids: [String; 3],
}

fn trio(d: &Daemon, seed: u64) -> Trio {
    let from = Date::new(2024, 1, 1);
    let data = gen_baseline(seed, &["date", "name", "value"], 200, from, 30);
    let did = d.upload(&data.bytes(), None);
    d.wait_completed(&did);
    let base = baseline_mixed(
        seed + 1,
        &["date", "name", "value"],
        SLOW_ROWS,
        Date::new(2024, 5, 1),
        30,
    );
    let teams = teams_mixed(seed + 2, "trio", SLOW_ROWS, 3);
    let b = d.upload(&base.bytes, Some(SLOW_RATE));
    let t = d.bulk_team(&teams.bytes, Some(SLOW_RATE));
    let e = d.export("2024-01-01", "2024-01-30", Some(8.0));
    for id in [&b, &t, &e] {
        d.wait_processed(id, MID_RUN + 5);
    }
    Trio {
        base,
        teams,
        data,
        ids: [b, t, e],
    }
}

fn acknowledged_stop_survives_sigkill(b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "3"]);
    let t = trio(&d, 301);
    let before: Vec<Value> = t.ids.iter().map(|id| d.stop(id)).collect();
    d.sigkill();
    d.restart();
    assert_integrity(&d);
    for (id, b) in t.ids.iter().zip(&before) {
        let c = assert_committed_consistent(&d, id);
        assert_eq!(c.state, "paused", "{id} after the restart: {c:?}");
        let p = d.assert_stays_paused(id, Duration::from_millis(600));
        assert_eq!(
            Some(p),
            b["processed"].as_u64(),
            "{id}: processed across the kill"
        );
    }
    for id in &t.ids {
        d.control("start", id);
    }
    let [b, tm, e] = &t.ids;
    let s = d.wait_completed(b);
    assert_counts(
        &s,
        t.base.file.records.len() as u64,
        t.base.bad_rows.len() as u64,
        Some((t.base.file.records.len() + t.base.bad_rows.len()) as u64),
    );
    assert_baseline_exact(&d, b, &t.base.file.records);
    d.wait_completed(tm);
    assert_teams_exact(&d, tm, &t.teams.teams);
    d.wait_completed(e);
    assert_bytes_eq(
        "export after stop, SIGKILL, start",
        &d.output(e),
        &expected_export(&[&t.data], Date::new(2024, 1, 1), Date::new(2024, 1, 30)),
    );
    wait_uploads_gone(&d);
}

/// The job is terminated with nothing left: no effects, no row errors, no files,
/// and controls answer `job_finished`.
#[track_caller]
fn assert_terminated_clean(d: &Daemon, id: &str) {
    let s = d.status_json(id);
    assert_eq!(s["state"], "terminated", "{id}: {s}");
    assert_no_effects(d, id);
    let c = assert_committed_consistent(d, id);
    assert_eq!(c.state, "terminated");
    assert!(
        d.errors(id).is_empty(),
        "row errors of terminated {id} remain"
    );
    d.jobctl(&["start", id]).refused("job_finished");
}

fn acknowledged_terminate_survives_sigkill(b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "3"]);
    let t = trio(&d, 311);
    for id in &t.ids {
        d.control("terminate", id);
    }
    d.sigkill();
    d.restart();
    assert_integrity(&d);
    for id in &t.ids {
        assert_terminated_clean(&d, id);
    }
    wait_uploads_gone(&d);
}

/// A crash between the committed `terminating` mark and the rollback's commit,
/// simulated: the jobs are marked `terminating` in the store while jobd is down.
fn crash_inside_a_terminate_rollback_is_finished_at_restart(b: Backend) {
    let mut d = Daemon::start_on_with(b, &["--max-running", "3"]);
    let t = trio(&d, 321);
    d.sigkill();
    for id in &t.ids {
        let c = committed(&d, id);
        assert!(c.processed > 0, "{id} has no effects to roll back: {c:?}");
        set_stored_state(&d, id, "terminating");
    }
    assert!(
        d.store().output(&t.ids[2]).is_some(),
        "the export has output"
    );
    d.restart();
    assert_integrity(&d);
    for id in &t.ids {
        assert_terminated_clean(&d, id);
    }
    wait_uploads_gone(&d);
    assert!(
        d.logs().contains("interrupted terminate"),
        "no sign of the finished rollback in the log"
    );
}

/// The same for real: terminates of jobs with many effects (paused ones, handled by
/// the registry, and running ones, handled by their worker), each raced by a SIGKILL
/// a random moment after the request was sent. Whatever the moment, after the
/// restart the job is either untouched (effects matching its committed counters) or
/// terminated with nothing left; never half rolled back.
fn sigkill_racing_a_terminate_never_leaves_half_a_rollback(b: Backend) {
    let seed = Seed::from_env("JOBD_CRASH_SEED", "sigkill_racing_a_terminate");
    let mut rng = seed.rng(0x7E);
    let mut d = Daemon::start_on_with(b, &["--max-running", "5"]);
    let files: Vec<MixedBaseline> = (0..5)
        .map(|i| {
            baseline_mixed(
                331 + i,
                &["date", "name", "value"],
                20_000,
                Date::new(2022, 1, 1),
                300,
            )
        })
        .collect();
    let ids: Vec<String> = files
        .iter()
        .map(|f| d.upload(&f.bytes, Some(2_000.0)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        d.wait_processed(id, 3_000);
        if i < 3 {
            d.control("stop", id);
        }
    }
    // Calibrate: how long one terminate takes, answered.
    let t0 = Instant::now();
    d.control("terminate", &ids[0]);
    let took = t0.elapsed().as_millis() as u64;
    assert_terminated_clean(&d, &ids[0]);
    let (mut hits, mut rounds) = (0, 0);
    for (id, file) in ids[1..].iter().zip(&files[1..]) {
        for attempt in 1.. {
            rounds += 1;
            let before = assert_committed_consistent(&d, id);
            let mut w = Wire::hello(&d);
            let starts = d.logs().matches("interrupted terminate").count();
            w.send(&Request::Control {
                id: id.clone(),
                action: "terminate".into(),
            })
            .expect("send terminate");
            thread::sleep(Duration::from_micros(rng.below(took.max(5) * 1000 + 1)));
            d.sigkill();
            d.restart();
            assert_integrity(&d);
            if d.logs().matches("interrupted terminate").count() > starts {
                hits += 1;
            }
            let c = assert_committed_consistent(&d, id);
            match c.state.as_str() {
                "terminated" => {
                    assert_terminated_clean(&d, id);
                    break;
                }
                "paused" => {
                    assert_eq!(before.state, "paused", "{id}: {c:?}");
                    assert_eq!((c.processed, c.effects), (before.processed, before.effects));
                }
                "running" | "queued" => {
                    assert_ne!(before.state, "paused", "{id} was paused: {c:?}");
                }
                "completed" => {
                    d.wait_completed(id);
                    assert_baseline_exact(&d, id, &file.file.records);
                    break;
                }
                other => panic!("{id} is {other} after a kill during its terminate: {c:?}"),
            }
            if attempt == 4 {
                d.control("terminate", id);
                assert_terminated_clean(&d, id);
                break;
            }
        }
    }
    eprintln!(
        "[sigkill_racing_a_terminate] {rounds} kills raced a terminate (one takes ~{took} ms); {hits} landed inside the rollback"
    );
}

// ---------------------------------------------------------------------------------
// Uploads cut short

/// `jobctl upload|bulk-team -` reading from a pipe the test feeds.
fn piped_jobctl(d: &Daemon, cmd: &str) -> Child {
    d.jobctl_cmd(&["-q", cmd, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jobctl")
}

/// About `bytes` of valid CSV for `cmd`.
fn csv_about(cmd: &str, bytes: usize) -> Vec<u8> {
    let mut s = if cmd == "upload" {
        "date,name,value\n".to_string()
    } else {
        "team,m1,m2\n".to_string()
    };
    let mut i = 0;
    while s.len() < bytes {
        i += 1;
        if cmd == "upload" {
            s.push_str(&format!("2024-03-{:02},name{i},{i}\n", 1 + i % 28));
        } else {
            s.push_str(&format!("cut-team-{i},ann{i},bob{i}\n"));
        }
    }
    s.into_bytes()
}

fn no_jobs_and_no_upload(d: &Daemon) {
    wait_uploads_gone(d);
    let jobs = d.status_all();
    assert!(
        jobs.is_empty(),
        "a job exists after an upload cut short: {jobs:?}"
    );
}

fn client_killed_mid_upload_leaves_no_job_and_no_upload(b: Backend) {
    let d = Daemon::start_on(b);
    // jobctl streaming from a pipe that stops being fed, then SIGKILLed.
    for cmd in ["upload", "bulk-team"] {
        let mut child = piped_jobctl(&d, cmd);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&csv_about(cmd, 3 << 20))
            .expect("feed jobctl");
        wait_receiving(&d, 1 << 20);
        child.kill().expect("SIGKILL jobctl");
        child.wait().expect("reap jobctl");
        drop(stdin);
        no_jobs_and_no_upload(&d);
    }
    // The client library dropped in the middle of the stream.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = Client::connect(&d.socket, "jobd-tests/cut")
            .await
            .expect("connect");
        let r = c
            .call(&Request::SubmitUpload {
                kind: UploadKind::BulkTeam,
                rate: None,
            })
            .await
            .expect("submit");
        assert_eq!(r, Response::Ready);
        c.send(&Request::Chunk {
            data: csv_about("bulk-team", 100_000),
        })
        .await
        .expect("chunk");
        drop(c);
    });
    no_jobs_and_no_upload(&d);
    // A chunk frame cut in its middle, then the connection closed.
    let mut w = Wire::start_upload(&d, UploadKind::BaselineCsv);
    let frame = jobd_protocol::frame::encode(&Request::Chunk {
        data: csv_about("upload", 50_000),
    })
    .expect("encode");
    w.send_raw(&frame[..frame.len() / 2]).expect("half a frame");
    wait_for("the upload begun in the store", DEADLINE, || {
        d.uploads() > 0
    });
    drop(w);
    no_jobs_and_no_upload(&d);
    d.jobctl(&["ping"]).ok();
}

fn daemon_killed_mid_upload_gives_the_client_an_error_and_leaves_nothing(b: Backend) {
    let mut d = Daemon::start_on(b);
    let mut child = piped_jobctl(&d, "upload");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&csv_about("upload", 3 << 20))
        .expect("feed jobctl");
    wait_receiving(&d, 1 << 20);
    d.sigkill();
    // The client notices when it next writes: feed it more, then end its input.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&csv_about("upload", 1024 * 1024));
    });
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("jobctl did not exit after the daemon died")
        .expect("jobctl output");
    feeder.join().expect("feeder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(3) | Some(1)),
        "jobctl should exit 3 (or 1) when the daemon dies mid-upload: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.starts_with("jobctl: ") && stderr.trim().len() > "jobctl: ".len(),
        "no clear message: {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "jobctl printed an id: {:?}",
        out.stdout
    );
    eprintln!(
        "jobctl after the daemon died mid-upload: exit {:?}: {}",
        out.status.code(),
        stderr.trim()
    );
    d.restart();
    assert_integrity(&d);
    no_jobs_and_no_upload(&d);
    // And the daemon takes the same upload whole afterwards.
    let id = d.upload(&csv_about("upload", 20_000), None);
    d.wait_completed(&id);
}

both_stores!(
    acknowledged_stop_survives_sigkill,
    acknowledged_terminate_survives_sigkill,
    crash_inside_a_terminate_rollback_is_finished_at_restart,
    sigkill_racing_a_terminate_never_leaves_half_a_rollback,
    client_killed_mid_upload_leaves_no_job_and_no_upload,
    crash_baseline_upload_at_random_points,
    crash_bulk_team_at_random_points,
    crash_export_at_random_points,
    daemon_killed_mid_upload_gives_the_client_an_error_and_leaves_nothing,
);

// ---------------------------------------------------------------------------------
// Reverts and prunes under SIGKILL

/// A finished job as a revert must leave it: untouched, or reverted whole.
enum Finished {
    Baseline(MixedBaseline),
    Teams(MixedTeams),
}

impl Finished {
    /// Asserts the job's committed rows: exactly its input's effects (untouched),
    /// or none (reverted); its counts and row errors are the same either way.
    #[track_caller]
    fn check(&self, d: &Daemon, id: &str, errors: &[(u64, String)]) -> String {
        let c = assert_committed_consistent(d, id);
        let (good, bad) = match self {
            Finished::Baseline(m) => (m.file.records.len(), m.bad_rows.len()),
            Finished::Teams(m) => (m.teams.len(), m.bad_rows.len()),
        };
        assert_eq!(
            (c.processed, c.failed),
            (good as u64, bad as u64),
            "{id}: {c:?}"
        );
        match (c.state.as_str(), self) {
            ("completed", Finished::Baseline(m)) => assert_baseline_exact(d, id, &m.file.records),
            ("completed", Finished::Teams(m)) => assert_teams_exact(d, id, &m.teams),
            ("reverted", _) => assert_eq!(c.effects, 0, "{id} half reverted: {c:?}"),
            (other, _) => panic!("{id} is {other} after a kill during its revert: {c:?}"),
        }
        assert_eq!(d.errors(id), errors, "{id}: row errors after the kill");
        c.state
    }
}

/// Reverts of finished jobs with many effects, each raced by a SIGKILL a random
/// moment after the request was sent (within about the time one revert takes).
/// After every restart each job is either untouched — every record or team of
/// its input exactly once — or reverted with nothing left; its counts and row
/// errors are the same either way.
fn sigkill_racing_a_revert_leaves_it_whole_or_untouched(b: Backend) {
    let seed = Seed::from_env("JOBD_CRASH_SEED", "sigkill_racing_a_revert");
    let mut rng = seed.rng(0x4E7);
    let mut d = Daemon::start_on_with(b, &["--max-running", "4"]);
    let mut jobs: Vec<Finished> = Vec::new();
    for i in 0..3 {
        jobs.push(Finished::Baseline(baseline_mixed(
            341 + i,
            &["date", "name", "value"],
            15_000,
            Date::new(2022, 1, 1),
            300,
        )));
        jobs.push(Finished::Teams(teams_mixed(
            351 + i,
            &format!("rv{i}"),
            6_000,
            3,
        )));
    }
    let ids: Vec<String> = jobs
        .iter()
        .map(|j| match j {
            Finished::Baseline(m) => d.upload(&m.bytes, None),
            Finished::Teams(m) => d.bulk_team(&m.bytes, None),
        })
        .collect();
    let errors: Vec<Vec<(u64, String)>> = ids
        .iter()
        .map(|id| {
            d.wait_completed(id);
            d.errors(id)
        })
        .collect();
    // Calibrate on the first job: how long one revert takes, answered.
    let t0 = Instant::now();
    d.control("revert", &ids[0]);
    let took = t0.elapsed().as_micros() as u64;
    assert_eq!(jobs[0].check(&d, &ids[0], &errors[0]), "reverted");
    let (mut points, mut untouched, mut reverted) = (0u32, 0u32, 0u32);
    for ((job, id), errs) in jobs.iter().zip(&ids).zip(&errors).skip(1) {
        for attempt in 1.. {
            let mut w = Wire::hello(&d);
            w.send(&Request::Revert {
                id: id.clone(),
                dry_run: false,
            })
            .expect("send revert");
            thread::sleep(Duration::from_micros(rng.below(took * 6 / 5 + 1)));
            d.sigkill();
            points += 1;
            d.restart();
            assert_integrity(&d);
            if job.check(&d, id, errs) == "reverted" {
                reverted += 1;
                break;
            }
            untouched += 1;
            if attempt == 4 {
                d.control("revert", id);
                assert_eq!(job.check(&d, id, errs), "reverted");
                break;
            }
        }
        // Whatever happened, a second revert is refused and names stay free.
        d.jobctl(&["revert", id]).refused("already_reverted");
    }
    assert!(d.store().team_names(current_uid()).is_empty(), "teams left");
    eprintln!(
        "[sigkill_racing_a_revert] {points} revert kill points (one revert takes ~{} ms): {reverted} found reverted, {untouched} untouched",
        took / 1000
    );
    assert!(points >= 5);
}

/// A prune of many finished jobs raced by a SIGKILL: after the restart every
/// job is either still there with its row errors, or gone with them (its
/// effects stay either way), and a second prune finishes the work. A few rounds,
/// until one kill landed in the middle of the prune (between or inside batches).
fn sigkill_racing_a_prune_forgets_each_job_whole(b: Backend) {
    let seed = Seed::from_env("JOBD_CRASH_SEED", "sigkill_racing_a_prune");
    let mut rng = seed.rng(0x9A);
    let mut d = Daemon::start_on_with(b, &["--max-running", "4"]);
    let bytes = b"date,v\n2024-07-01,1\nbad,2\n2024-07-02,3\n";
    let finished = |d: &Daemon, n: usize| -> Vec<String> {
        let ids: Vec<String> = (0..n).map(|_| d.upload(bytes, None)).collect();
        let mut wait = vec!["wait"];
        wait.extend(ids.iter().map(String::as_str));
        d.jobctl(&wait).ok();
        ids
    };
    let prune_request = Request::Prune {
        older_than_ms: 0,
        states: Vec::new(),
    };
    // Calibrate: how long a prune of 400 jobs takes, from request to answer.
    finished(&d, 400);
    let mut w = Wire::hello(&d);
    let t0 = Instant::now();
    w.send(&prune_request).expect("send prune");
    assert_eq!(w.recv(), Received::Frame(Response::Pruned { count: 400 }));
    let took = t0.elapsed().as_micros() as u64;
    let mut outcomes = Vec::new();
    for _round in 0..3 {
        let ids = finished(&d, 400);
        let seqs: Vec<i64> = ids
            .iter()
            .map(|id| d.store().job_seq(id).expect("in the store"))
            .collect();
        let mut w = Wire::hello(&d);
        w.send(&prune_request).expect("send prune");
        thread::sleep(Duration::from_micros(rng.below(took + 1)));
        d.sigkill();
        d.restart();
        assert_integrity(&d);
        let listed: std::collections::HashSet<String> = d
            .status_all()
            .iter()
            .map(|s| s["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let db = d.store();
        let mut gone = 0;
        for (id, seq) in ids.iter().zip(&seqs) {
            assert_eq!(db.effects_of_seq(*seq), (2, 0), "{id}: effects");
            if listed.contains(id) {
                assert_eq!(
                    db.row_errors_of_seq(*seq),
                    1,
                    "{id} listed without its row error"
                );
            } else {
                gone += 1;
                assert_eq!(
                    db.row_errors_of_seq(*seq),
                    0,
                    "{id} pruned, its row error kept"
                );
                assert!(db.job_seq(id).is_none(), "{id} not listed but in the store");
                assert!(db.id_taken(id), "{id} pruned, its id given up");
            }
        }
        drop(db);
        outcomes.push(gone);
        let rest = d.jobctl(&["-q", "prune"]).ok().stdout_str();
        assert_eq!(rest.trim(), (ids.len() - gone).to_string());
        assert_eq!(d.store().job_rows(), 0);
        if gone > 0 && gone < ids.len() {
            break;
        }
    }
    eprintln!(
        "[sigkill_racing_a_prune] jobs of 400 pruned when the kill landed, by round: {outcomes:?} (a prune of 400 takes ~{} ms)",
        took / 1000
    );
}

both_stores!(
    sigkill_racing_a_revert_leaves_it_whole_or_untouched,
    sigkill_racing_a_prune_forgets_each_job_whole,
);
