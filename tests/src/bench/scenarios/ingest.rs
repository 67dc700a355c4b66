//! Ingest speed against `sqlite3 .import`, and peak memory on a 1 GiB file.

use super::{progress, status_one};
use crate::bench::data::write_csv;
use crate::bench::env::{block_on, Env};
use crate::bench::procfs::{run_measuring_rss, status_kb};
use crate::bench::stats::{secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Context, Result};
use jobd_protocol::{JobInfo, JobState};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const S: &str = "ingest";

pub fn ingest(env: &Env) -> Result<Vec<Measure>> {
    let sqlite = env.bins.sqlite3.clone().ok_or_else(|| {
        anyhow!("sqlite3 not found (apt-get install sqlite3): it is the reference")
    })?;
    let (file, info) = env.ingest_file()?;
    let mb = info.bytes as f64 / 1e6;
    let mut wall = Measure::new(
        S,
        &format!(
            "{}k rows, {mb:.0} MB: upload --wait (ref sqlite3 .import)",
            info.rows / 1000
        ),
        Unit::Seconds,
        Some(Target::RatioAtMost(1.0)),
    );
    let mut spool = Measure::new(
        S,
        "  upload + spool, until the job exists (info)",
        Unit::Seconds,
        None,
    );
    let mut running = Measure::new(
        S,
        "  job run, created → completed (info)",
        Unit::Seconds,
        None,
    );
    let mut rate = Measure::new(S, "rows/s (ref sqlite3 .import)", Unit::PerSecond, None);
    for run in 0..env.sizes.runs {
        // Alternate the order so that neither side always gets the warmer machine.
        let (j, s) = if run % 2 == 0 {
            let j = ingest_jobd(env, &file, info.rows)?;
            (j, ingest_sqlite(env, &sqlite, &file, info.rows, run == 0)?)
        } else {
            let s = ingest_sqlite(env, &sqlite, &file, info.rows, false)?;
            (ingest_jobd(env, &file, info.rows)?, s)
        };
        progress(
            S,
            format!(
                "run {}/{}: jobd {:.2} s (spool {:.2} s + run {:.2} s), sqlite3 {:.2} s, ratio {:.2}",
                run + 1,
                env.sizes.runs,
                secs(j.wall),
                j.spool,
                j.run,
                secs(s),
                secs(j.wall) / secs(s)
            ),
        );
        wall.push_with_ref(secs(j.wall), secs(s));
        spool.push(j.spool);
        running.push(j.run);
        rate.push_with_ref(info.rows as f64 / secs(j.wall), info.rows as f64 / secs(s));
    }
    Ok(vec![wall, spool, running, rate])
}

/// One `jobctl upload --wait`: the wall time, and its two phases as the job's own
/// timestamps tell them (upload and spool until the job exists; then the run).
struct JobdIngest {
    wall: Duration,
    spool: f64,
    run: f64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `jobctl -q upload --wait FILE` on a fresh daemon; checks the job completed with
/// every row applied.
fn ingest_jobd(env: &Env, file: &Path, rows: u64) -> Result<JobdIngest> {
    let d = env.daemon("ingest", &[])?;
    let path = file.to_str().context("UTF-8 path")?;
    let mut cmd = d.jobctl(&["-q", "upload", "--wait", path]);
    let started_ms = unix_ms();
    let t = Instant::now();
    let out = cmd.output()?;
    let wall = t.elapsed();
    if !out.status.success() {
        bail!(
            "jobctl upload --wait failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            d.logs()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let info = check_completed(&d, &id, rows)?;
    Ok(JobdIngest {
        wall,
        spool: info.created_at.saturating_sub(started_ms) as f64 / 1e3,
        run: info.updated_at.saturating_sub(info.created_at) as f64 / 1e3,
    })
}

fn check_completed(d: &crate::bench::env::Jobd, id: &str, rows: u64) -> Result<JobInfo> {
    let info = block_on(async {
        let mut c = d.client().await?;
        status_one(&mut c, id).await
    })?;
    if info.state != JobState::Completed || info.processed != rows || info.failed != 0 {
        bail!("job {id} did not apply every row: {info:?}");
    }
    Ok(info)
}

/// `sqlite3 fresh.db ".import --csv FILE t"`; the first run also checks the row count.
fn ingest_sqlite(
    env: &Env,
    sqlite: &Path,
    file: &Path,
    rows: u64,
    check: bool,
) -> Result<Duration> {
    let dir = env.fresh_dir("sqlite")?;
    let db = dir.join("fresh.db");
    let t = Instant::now();
    let out = Command::new(sqlite)
        .arg(&db)
        .arg(format!(".import --csv {} t", file.display()))
        .stdin(Stdio::null())
        .output()?;
    let dt = t.elapsed();
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "sqlite3 .import failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if check {
        let out = Command::new(sqlite)
            .arg(&db)
            .arg("select count(*) from t")
            .output()?;
        let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        if n != rows {
            bail!("sqlite3 imported {n} rows, expected {rows}");
        }
    }
    fs::remove_dir_all(&dir)?;
    Ok(dt)
}

const PGI: &str = "pg-ingest";

/// The PostgreSQL store: `jobctl upload --wait` of the ingest CSV against `psql
/// \copy` of the same file into a fresh table (a text column per CSV column) of a
/// fresh database on the same server.
pub fn pg_ingest(env: &Env) -> Result<Vec<Measure>> {
    let psql = env.bins.psql.clone().ok_or_else(|| {
        anyhow!("psql not found (apt-get install postgresql-client): it is the reference")
    })?;
    let (file, info) = env.ingest_file()?;
    let mb = info.bytes as f64 / 1e6;
    let mut wall = Measure::new(
        PGI,
        &format!(
            "{}k rows, {mb:.0} MB: upload --wait (ref psql \\copy)",
            info.rows / 1000
        ),
        Unit::Seconds,
        Some(Target::RatioAtMost(1.0)),
    );
    let mut spool = Measure::new(
        PGI,
        "  upload into the database, until the job exists (info)",
        Unit::Seconds,
        None,
    );
    let mut running = Measure::new(
        PGI,
        "  job run, created → completed (info)",
        Unit::Seconds,
        None,
    );
    env.on_postgres(PGI, |env| {
        for run in 0..env.sizes.runs {
            let (j, c) = if run % 2 == 0 {
                let j = ingest_jobd(env, &file, info.rows)?;
                (j, ingest_psql(env, &psql, &file, info.rows, run == 0)?)
            } else {
                let c = ingest_psql(env, &psql, &file, info.rows, false)?;
                (ingest_jobd(env, &file, info.rows)?, c)
            };
            progress(
                PGI,
                format!(
                    "run {}/{}: jobd {:.2} s (upload {:.2} s + run {:.2} s), psql \\copy {:.2} s, ratio {:.2}",
                    run + 1,
                    env.sizes.runs,
                    secs(j.wall),
                    j.spool,
                    j.run,
                    secs(c),
                    secs(j.wall) / secs(c)
                ),
            );
            wall.push_with_ref(secs(j.wall), secs(c));
            spool.push(j.spool);
            running.push(j.run);
        }
        Ok(vec![wall, spool, running])
    })
}

/// `psql URL -c 'CREATE TABLE t (...)' -c '\copy t FROM FILE (csv, header)'` on a
/// fresh database; the first run also checks the row count.
fn ingest_psql(env: &Env, psql: &Path, file: &Path, rows: u64, check: bool) -> Result<Duration> {
    let header = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(fs::File::open(file)?).read_line(&mut line)?;
        line
    };
    let columns: Vec<String> = header
        .trim_end()
        .split(',')
        .map(|c| format!("\"{c}\" text"))
        .collect();
    let db = env.fresh_database("copy")?;
    let t = Instant::now();
    let out = Command::new(psql)
        .arg(db.url())
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE TABLE t ({})", columns.join(", ")))
        .arg("-c")
        .arg(format!(
            "\\copy t FROM '{}' WITH (FORMAT csv, HEADER true)",
            file.display()
        ))
        .stdin(Stdio::null())
        .output()?;
    let dt = t.elapsed();
    if !out.status.success() {
        bail!(
            "psql \\copy failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if check {
        let out = Command::new(psql)
            .arg(db.url())
            .args(["-At", "-c", "SELECT count(*) FROM t"])
            .output()?;
        let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        if n != rows {
            bail!("psql \\copy imported {n} rows, expected {rows}");
        }
    }
    Ok(dt)
}

const M: &str = "memory";

/// Removes the big file whatever happens.
struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

pub fn memory(env: &Env) -> Result<Vec<Measure>> {
    let path = env.root.join("big.csv");
    let _guard = RemoveOnDrop(path.clone());
    let t = Instant::now();
    let info = write_csv(&path, 2, None, Some(env.sizes.big_bytes))?;
    progress(
        M,
        format!(
            "generated {} ({} rows, {:.2} GiB) in {:.1} s",
            path.display(),
            info.rows,
            info.bytes as f64 / (1u64 << 30) as f64,
            t.elapsed().as_secs_f64()
        ),
    );
    let size = if info.bytes >= 1 << 30 {
        format!("{:.1} GiB", info.bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", info.bytes as f64 / (1u64 << 20) as f64)
    };
    let mut jobd = Measure::new(
        M,
        &format!("{size} upload: jobd peak RSS (VmHWM)"),
        Unit::Bytes,
        Some(Target::AtMost(64.0 * 1024.0 * 1024.0)),
    );
    let mut jobctl = Measure::new(
        M,
        &format!("{size} upload: jobctl peak RSS"),
        Unit::Bytes,
        Some(Target::AtMost(16.0 * 1024.0 * 1024.0)),
    );
    let mut wall = Measure::new(
        M,
        &format!("{size} upload --wait: wall time"),
        Unit::Seconds,
        None,
    );
    let p = path.to_str().context("UTF-8 path")?;
    for run in 0..env.sizes.heavy_runs {
        let d = env.daemon("memory", &[])?;
        let m = run_measuring_rss(
            d.jobctl_path(),
            &d.jobctl_args(&["-q", "upload", "--wait", p]),
        )?;
        if !m.output.status.success() {
            bail!(
                "jobctl upload --wait failed ({}): {}\n{}",
                m.output.status,
                String::from_utf8_lossy(&m.output.stderr),
                d.logs()
            );
        }
        let hwm = status_kb(d.pid(), "VmHWM")?;
        let id = String::from_utf8_lossy(&m.output.stdout).trim().to_string();
        check_completed(&d, &id, info.rows)?;
        progress(
            M,
            format!(
                "run {}/{}: jobd VmHWM {:.1} MiB, jobctl maxrss {:.1} MiB, {:.1} s",
                run + 1,
                env.sizes.heavy_runs,
                hwm as f64 / 1048576.0,
                m.max_rss as f64 / 1048576.0,
                secs(m.wall)
            ),
        );
        jobd.push(hwm as f64);
        jobctl.push(m.max_rss as f64);
        wall.push(secs(m.wall));
    }
    Ok(vec![jobd, jobctl, wall])
}
