//! Forgetting many finished jobs while a job runs: the wall time of `jobctl stop
//! ID` (a whole process, as a user runs it) on a running ingest job while
//! `jobctl prune` forgets 100 000 finished jobs, against the same daemon and
//! job just before the prune. Every other stop goes over one open connection
//! instead (the client library): the daemon's share, without the start-up of a
//! process, which on a busy 2-core host has a tail of its own.
//!
//! The store of finished jobs is built once (submitting takes minutes); every
//! run starts a daemon on a fresh copy of it (the state directory copied, or on
//! PostgreSQL a database made from it as a template).

use super::{progress, submit_file, wait_completed};
use crate::bench::data::{small_csv, XorShift};
use crate::bench::env::{block_on, Env, Jobd};
use crate::bench::stats::{latencies, secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Result};
use jobd_protocol::{Client, JobState, UploadKind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PR: &str = "prune";

/// Connections submitting the finished jobs.
const CONNS: usize = 4;

pub fn prune(env: &Env) -> Result<Vec<Measure>> {
    prune_with(env, PR)
}

/// The same on the PostgreSQL store (every deleted job is announced to the
/// node's listener, which takes it out of the mirror).
pub fn pg_prune(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres("pg-prune", |env| prune_with(env, "pg-prune"))
}

fn prune_with(env: &Env, name: &str) -> Result<Vec<Measure>> {
    let n = env.sizes.prune_jobs;
    let (file, _) = env.ingest_file()?;
    let mut template = env.daemon(name, &[])?;
    let t = Instant::now();
    block_on(finished_jobs(&template, n, name))?;
    progress(
        name,
        format!(
            "{n} finished jobs in the store ({:.0} s); each run prunes a fresh copy",
            t.elapsed().as_secs_f64()
        ),
    );
    template.shutdown()?;
    let mut p99 = Measure::new(
        name,
        &format!("`jobctl stop` wall during a prune of {n} jobs, p99 (ref: before the prune)"),
        Unit::Seconds,
        Some(Target::AtMost(20e-3)),
    );
    let mut p50 = Measure::new(
        name,
        "  same, p50 (ref: before the prune) (info)",
        Unit::Seconds,
        None,
    );
    let mut max = Measure::new(name, "  same, max (info)", Unit::Seconds, None);
    let mut conn_p99 = Measure::new(
        name,
        "  stop → answer over one connection during the prune, p99 (ref: before) (info)",
        Unit::Seconds,
        None,
    );
    let mut stops = Measure::new(
        name,
        "  stops sampled during the prune (info)",
        Unit::Count,
        None,
    );
    let mut took = Measure::new(
        name,
        &format!("prune of {n} jobs: `jobctl prune` answered (info)"),
        Unit::Seconds,
        None,
    );
    let mut rate = Measure::new(
        name,
        "  jobs forgotten per second (info)",
        Unit::PerSecond,
        None,
    );
    for run in 0..env.sizes.runs {
        let d = env.daemon_from(name, &template, &[])?;
        let mut id = block_on(async {
            let mut c = d.client().await?;
            running_ingest_job(&mut c, &file).await
        })?;
        let mut rng = XorShift::new(run as u64 + 41);
        // Before: as many stops as a prune usually lasts, on the same job.
        let reference_stops = (env.sizes.jobctl_stops).max(30);
        let never = AtomicBool::new(false);
        let (before, before_conn) =
            stop_cycles(&d, &file, &mut id, &mut rng, &never, reference_stops)?;
        let pruned = AtomicBool::new(false);
        let ((during, during_conn), (count, prune_took)) = std::thread::scope(|s| {
            let pruner = s.spawn(|| {
                let t = Instant::now();
                let count = block_on(async {
                    let mut c = d.client().await?;
                    c.prune(0, &[JobState::Completed])
                        .await
                        .map_err(|e| anyhow!("prune: {e}"))
                });
                let took = t.elapsed();
                pruned.store(true, Ordering::SeqCst);
                count.map(|c| (c, took))
            });
            let during = stop_cycles(&d, &file, &mut id, &mut rng, &pruned, usize::MAX);
            let pruned = pruner
                .join()
                .map_err(|_| anyhow!("the prune thread panicked"))?;
            Ok::<_, anyhow::Error>((during?, pruned?))
        })?;
        // The running ingest job (and any resubmitted one) is not among them.
        if count < n as u64 || count > n as u64 + 4 {
            bail!("the prune forgot {count} jobs, expected {n}");
        }
        if during.is_empty() || during_conn.is_empty() {
            bail!("the prune ended before stops could be timed");
        }
        let (b, w) = (latencies(&before), latencies(&during));
        let (bc, wc) = (latencies(&before_conn), latencies(&during_conn));
        progress(
            name,
            format!(
                "run {}/{}: prune of {count} jobs in {:.2} s; jobctl stop during it p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} stops; before it p50 {:.2} ms, p99 {:.2} ms; over one connection during/before p99 {:.2}/{:.2} ms",
                run + 1,
                env.sizes.runs,
                secs(prune_took),
                w.p50 * 1e3,
                w.p99 * 1e3,
                w.max * 1e3,
                during.len(),
                b.p50 * 1e3,
                b.p99 * 1e3,
                wc.p99 * 1e3,
                bc.p99 * 1e3,
            ),
        );
        conn_p99.push_with_ref(wc.p99, bc.p99);
        p99.push_with_ref(w.p99, b.p99);
        p50.push_with_ref(w.p50, b.p50);
        max.push(w.max);
        stops.push(during.len() as f64);
        took.push(secs(prune_took));
        rate.push(count as f64 / secs(prune_took));
    }
    Ok(vec![p99, p50, max, conn_p99, stops, took, rate])
}

/// `n` finished jobs: small uploads (one record and one row error each) over
/// [`CONNS`] connections, then waits until the last of them completed.
async fn finished_jobs(d: &Jobd, n: usize, name: &str) -> Result<()> {
    let mut bytes = small_csv(9, 1);
    bytes.extend_from_slice(b"not-a-date,x,y,1,2,z\n");
    let bytes = Arc::new(bytes);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let mut c = d.client().await?;
        let (next, bytes) = (next.clone(), bytes.clone());
        let name = name.to_string();
        set.spawn(async move {
            let mut last = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(last);
                }
                let info = c
                    .upload(UploadKind::BaselineCsv, None, &bytes[..], |_| {})
                    .await
                    .map_err(|e| anyhow!("submit: {e}"))?;
                if i + 100 >= n {
                    last.push(info.id);
                }
                if (i + 1).is_multiple_of(10_000) {
                    progress(&name, format!("{} jobs submitted", i + 1));
                }
            }
        });
    }
    let mut last = Vec::new();
    while let Some(r) = set.join_next().await {
        last.extend(r??);
    }
    // First in, first out: once the last ones are done, all are.
    let mut c = d.client().await?;
    wait_completed(&mut c, &last).await?;
    Ok(())
}

/// Submits the ingest file (no rate) and waits until the job runs and has
/// applied some rows.
async fn running_ingest_job(c: &mut Client, file: &Path) -> Result<String> {
    let id = submit_file(c, file, None).await?;
    super::wait_for(c, &id, "running with progress", |i| {
        i.state == JobState::Running && i.processed > 0
    })
    .await?;
    Ok(id)
}

/// Cycles of: let the job run 1–5 ms, stop it (timed), start it; until `max`
/// stops of each way were timed or `until` turns true (a stop that began
/// before it did still counts). The stops alternate: `jobctl stop ID` as a
/// process, then `stop` over one open connection. A job that completes is
/// submitted again. Returns the times of each way.
fn stop_cycles(
    d: &Jobd,
    file: &Path,
    id: &mut String,
    rng: &mut XorShift,
    until: &AtomicBool,
    max: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut c = rt.block_on(d.client())?;
    let (mut by_jobctl, mut by_conn) = (Vec::new(), Vec::new());
    let finished =
        |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).contains("job_finished");
    while by_jobctl.len().min(by_conn.len()) < max && !until.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
        let with_jobctl = by_jobctl.len() <= by_conn.len();
        let stopped = if with_jobctl {
            let mut cmd = d.jobctl(&["stop", id]);
            let t = Instant::now();
            let o = cmd.output()?;
            let dt = t.elapsed();
            if o.status.success() {
                by_jobctl.push(secs(dt));
                true
            } else if finished(&o) {
                false
            } else {
                bail!("jobctl stop failed: {}", String::from_utf8_lossy(&o.stderr));
            }
        } else {
            let t = Instant::now();
            let r = rt.block_on(c.control(id, "stop"));
            let dt = t.elapsed();
            match r {
                Ok(info) if info.state == JobState::Paused => {
                    by_conn.push(secs(dt));
                    true
                }
                Ok(info) if info.state.is_finished() => false,
                Err(e) if e.code() == Some(jobd_protocol::ErrorCode::JobFinished) => false,
                Ok(info) => bail!("stop answered {}", info.state),
                Err(e) => bail!("stop {id}: {e}"),
            }
        };
        if stopped {
            match rt.block_on(c.control(id, "start")) {
                Ok(info) if !info.state.is_finished() => continue,
                Ok(_) => {}
                Err(e) if e.code() == Some(jobd_protocol::ErrorCode::JobFinished) => {}
                Err(e) => bail!("start {id}: {e}"),
            }
        }
        *id = rt.block_on(running_ingest_job(&mut c, file))?;
    }
    Ok((by_jobctl, by_conn))
}
