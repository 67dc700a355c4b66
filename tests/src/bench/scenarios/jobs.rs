//! Many jobs: the cost of paused jobs, submit latency as the store grows, and
//! restart time with a big store.

use super::{progress, status_one, submit_bytes, wait_completed};
use crate::bench::data::small_csv;
use crate::bench::env::{block_on, Env, Jobd};
use crate::bench::procfs::{
    cpu_ticks, cpu_time, fd_count, fd_diff, fd_targets, status_kb, thread_count,
};
use crate::bench::stats::{latencies, median, secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Result};
use jobd_protocol::{Client, JobInfo, JobState};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Connections used to submit and control many jobs.
const CONNS: usize = 4;

/// One submission: its index in submit order, latency (s) and job id.
struct Submitted {
    index: usize,
    latency: f64,
    id: String,
}

/// Submits one upload of `bytes` for each index in `range`, over `CONNS` connections.
/// Returns the submissions sorted by index.
async fn submit_many(
    d: &Jobd,
    range: Range<usize>,
    bytes: Arc<Vec<u8>>,
    rate: Option<f64>,
    label: &'static str,
) -> Result<Vec<Submitted>> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let mut c = d.client().await?;
        let next = next.clone();
        let bytes = bytes.clone();
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<_, anyhow::Error>(out);
                }
                let t = Instant::now();
                let id = submit_bytes(&mut c, &bytes, rate).await?;
                out.push(Submitted {
                    index,
                    latency: secs(t.elapsed()),
                    id,
                });
                if (index + 1).is_multiple_of(10_000) {
                    progress(label, format!("{} jobs submitted", index + 1));
                }
            }
        });
    }
    let mut all = Vec::with_capacity(range.len());
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|s| s.index);
    Ok(all)
}

/// Applies `action` to every job over `CONNS` connections; returns the answers.
async fn control_many(d: &Jobd, ids: &[String], action: &'static str) -> Result<Vec<JobInfo>> {
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let mut c = d.client().await?;
        let (ids, next) = (ids.clone(), next.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, anyhow::Error>(out);
                };
                out.push(
                    c.control(id, action)
                        .await
                        .map_err(|e| anyhow!("{action} {id}: {e}"))?,
                );
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// Median latency of `n` status calls of one job.
async fn status_median(c: &mut Client, id: &str, n: usize) -> Result<f64> {
    let ids = vec![id.to_string()];
    for _ in 0..100 {
        c.status(&ids).await?;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.status(&ids).await?;
        lat.push(secs(t.elapsed()));
    }
    Ok(latencies(&lat).p50)
}

/// Counts the caller's jobs by state (one `status` of all jobs); also returns its time.
async fn census(c: &mut Client) -> Result<(Vec<(JobState, usize)>, usize, Duration)> {
    let t = Instant::now();
    let all = c.status(&[]).await?;
    let dt = t.elapsed();
    let mut counts: Vec<(JobState, usize)> = Vec::new();
    for j in &all {
        match counts.iter_mut().find(|(s, _)| *s == j.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((j.state, 1)),
        }
    }
    Ok((counts, all.len(), dt))
}

fn count(counts: &[(JobState, usize)], state: JobState) -> usize {
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| *n)
}

/// Waits until every job in `ids` has completed, polling with fresh connections (a
/// queue of 100 000 small jobs takes many minutes to drain), with progress lines.
async fn drain(d: &Jobd, ids: &[String], label: &str) -> Result<()> {
    let t = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let mut c = d.client().await?;
        let infos = c.status(ids).await?;
        if let Some(bad) = infos
            .iter()
            .find(|i| i.state.is_finished() && i.state != JobState::Completed)
        {
            bail!("job {} ended {}: {:?}", bad.id, bad.state, bad.error);
        }
        if infos.iter().all(|i| i.state == JobState::Completed) {
            progress(
                label,
                format!("queue drained in {:.0} s", t.elapsed().as_secs_f64()),
            );
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            let (counts, _, _) = census(&mut c).await?;
            progress(
                label,
                format!(
                    "draining: {} completed, {} queued",
                    count(&counts, JobState::Completed),
                    count(&counts, JobState::Queued)
                ),
            );
            last_report = Instant::now();
        }
        drop(c);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

const P: &str = "paused";

/// RSS, descriptors and threads of the daemon at one moment.
struct Footprint {
    rss: u64,
    fds: u64,
    threads: u64,
    fd_targets: Vec<String>,
}

fn footprint(pid: u32) -> Result<Footprint> {
    Ok(Footprint {
        rss: status_kb(pid, "VmRSS")?,
        fds: fd_count(pid)?,
        threads: thread_count(pid)?,
        fd_targets: fd_targets(pid),
    })
}

/// Submits `range.len()` throttled jobs (they queue behind one running job), stops
/// them all, and checks that `expect` jobs are paused in all.
async fn add_paused(
    d: &Jobd,
    range: Range<usize>,
    bytes: Arc<Vec<u8>>,
    expect: usize,
) -> Result<()> {
    let subs = submit_many(d, range, bytes, Some(0.1), P).await?;
    let ids: Vec<String> = subs.into_iter().map(|s| s.id).collect();
    let answers = control_many(d, &ids, "stop").await?;
    if let Some(bad) = answers.iter().find(|i| i.state != JobState::Paused) {
        bail!("stop of {} answered {}", bad.id, bad.state);
    }
    let mut c = d.client().await?;
    let (counts, _, _) = census(&mut c).await?;
    let paused = count(&counts, JobState::Paused);
    if paused != expect {
        bail!("{paused} jobs paused, expected {expect}");
    }
    Ok(())
}

pub fn paused(env: &Env) -> Result<Vec<Measure>> {
    let n = env.sizes.paused_jobs.max(2);
    let half = n / 2;
    let idle = Duration::from_secs_f64(env.sizes.idle_secs);
    let mut rss = Measure::new(
        P,
        &format!("{n} paused: RSS added per paused job"),
        Unit::Bytes,
        Some(Target::AtMost(1024.0)),
    );
    let mut rss_marginal = Measure::new(
        P,
        &format!("  same, marginal ({half} → {n}) (info)"),
        Unit::Bytes,
        None,
    );
    let mut rss_restarted = Measure::new(
        P,
        "  same, after a restart loads them (info)",
        Unit::Bytes,
        None,
    );
    let mut fds = Measure::new(
        P,
        &format!("{n} paused: open files per paused job ({half} → {n})"),
        Unit::Count,
        Some(Target::AtMost(0.0)),
    );
    let mut fds_added = Measure::new(P, "  open files added in all (info)", Unit::Count, None);
    let mut cpu = Measure::new(
        P,
        &format!("{n} paused: daemon CPU per 10 s idle"),
        Unit::Seconds,
        Some(Target::AtMost(10e-3)),
    );
    let mut submit_rate = Measure::new(P, "submit + stop, jobs/s (info)", Unit::PerSecond, None);
    let bytes = Arc::new(small_csv(3, 10));
    for run in 0..env.sizes.heavy_runs {
        // One job runs at a time; the throttled jobs queue behind it until they are
        // stopped (a stopped queued job is paused).
        let mut d = env.daemon(P, &["--max-running", "1"])?;
        let pid = d.pid();
        block_on(async {
            let mut c = d.client().await?;
            let id = submit_bytes(&mut c, &bytes, None).await?;
            wait_completed(&mut c, &[id]).await
        })?;
        // Client connections are closed between the samples; the daemon settles first.
        let settle = Duration::from_secs(1);
        thread::sleep(settle);
        let f0 = footprint(pid)?;
        let t = Instant::now();
        block_on(add_paused(&d, 0..half, bytes.clone(), half))?;
        let mut wall = t.elapsed();
        thread::sleep(settle);
        let f1 = footprint(pid)?;
        let t = Instant::now();
        block_on(add_paused(&d, half..n, bytes.clone(), n))?;
        wall += t.elapsed();
        thread::sleep(settle);
        let f2 = footprint(pid)?;
        let (c0, k0) = (cpu_time(pid)?, cpu_ticks(pid)?);
        thread::sleep(idle);
        let (c1, k1) = (cpu_time(pid)?, cpu_ticks(pid)?);
        let per10 = secs(c1.saturating_sub(c0)) * 10.0 / idle.as_secs_f64();
        let per_job = (f2.rss as f64 - f0.rss as f64) / n as f64;
        let marginal = (f2.rss as f64 - f1.rss as f64) / (n - half) as f64;
        let fd_added = f2.fds as f64 - f0.fds as f64;
        let fd_marginal = (f2.fds as f64 - f1.fds as f64) / (n - half) as f64;
        // The same jobs loaded from the store by a restarted daemon: the steady cost
        // of a paused job, without what the submissions left in the allocator.
        d.shutdown()?;
        d.spawn()?;
        thread::sleep(settle);
        let restarted = status_kb(d.pid(), "VmRSS")?;
        let per_job_restarted = (restarted as f64 - f0.rss as f64) / n as f64;
        progress(
            P,
            format!(
                "run {}/{}: VmRSS {:.1} -> {:.1} -> {:.1} MiB ({per_job:.0} B/job, marginal {marginal:.0} B/job; after a restart {:.1} MiB, {per_job_restarted:.0} B/job); fds {} -> {} -> {} (new: {}); threads {} -> {} -> {}; idle CPU {:.3} ms in {:.0} s ({} ticks); submit+stop {:.1} s",
                run + 1,
                env.sizes.heavy_runs,
                f0.rss as f64 / 1048576.0,
                f1.rss as f64 / 1048576.0,
                f2.rss as f64 / 1048576.0,
                restarted as f64 / 1048576.0,
                f0.fds,
                f1.fds,
                f2.fds,
                fd_diff(&f0.fd_targets, &f2.fd_targets),
                f0.threads,
                f1.threads,
                f2.threads,
                secs(c1.saturating_sub(c0)) * 1e3,
                idle.as_secs_f64(),
                k1 - k0,
                secs(wall)
            ),
        );
        rss.push(per_job);
        rss_marginal.push(marginal);
        rss_restarted.push(per_job_restarted);
        fds.push(fd_marginal.max(0.0));
        fds_added.push(fd_added);
        cpu.push(per10);
        submit_rate.push(n as f64 / secs(wall));
    }
    Ok(vec![
        rss,
        rss_marginal,
        rss_restarted,
        fds,
        fds_added,
        cpu,
        submit_rate,
    ])
}

const MJ: &str = "many-jobs";

/// The same on the PostgreSQL store.
pub fn pg_many_jobs(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres("pg-many-jobs", many_jobs)
}

pub fn many_jobs(env: &Env) -> Result<Vec<Measure>> {
    let n = env.sizes.many_jobs;
    let w = (n / 100).clamp(1, 1000);
    let early = 100.min(n / 10).max(1);
    let mut lat = Measure::new(
        MJ,
        &format!("{n} jobs: submit latency, last {w} (ref first {w})"),
        Unit::Seconds,
        Some(Target::RatioAtMost(1.5)),
    );
    let mut st = Measure::new(
        MJ,
        &format!("status of 1 job at {n} jobs (ref at {early})"),
        Unit::Seconds,
        Some(Target::RatioAtMost(2.0)),
    );
    let mut busy = Measure::new(
        MJ,
        "  same, while the queue still drains (info)",
        Unit::Seconds,
        None,
    );
    let mut rate = Measure::new(MJ, "submits/s, 4 connections (info)", Unit::PerSecond, None);
    let bytes = Arc::new(small_csv(4, 5));
    let runs = env.sizes.many_runs;
    for run in 0..runs {
        let d = env.daemon(MJ, &[])?;
        let (first, last, s_early, s_n, s_busy, sub_rate) = block_on(async {
            let t = Instant::now();
            let mut subs = submit_many(&d, 0..early, bytes.clone(), None, MJ).await?;
            let mut c = d.client().await?;
            let ids: Vec<String> = subs.iter().map(|s| s.id.clone()).collect();
            wait_completed(&mut c, &ids).await?;
            let probe = ids[0].clone();
            let s_early = status_median(&mut c, &probe, 2000).await?;
            let t_early = t.elapsed();
            let t2 = Instant::now();
            subs.extend(submit_many(&d, early..n, bytes.clone(), None, MJ).await?);
            let sub_secs = t_early.as_secs_f64() + t2.elapsed().as_secs_f64();
            // The first connection sat idle through the submissions (idle timeout).
            let mut c = d.client().await?;
            // While the daemon still works through the queue.
            let s_busy = status_median(&mut c, &probe, 2000).await?;
            // FIFO: once the last jobs are done, all are.
            let tail: Vec<String> = subs[n.saturating_sub(100)..]
                .iter()
                .map(|s| s.id.clone())
                .collect();
            drain(&d, &tail, MJ).await?;
            let mut c = d.client().await?;
            let s_n = status_median(&mut c, &probe, 2000).await?;
            let info = status_one(&mut c, &probe).await?;
            if info.state != JobState::Completed {
                bail!("probe job {probe}: {info:?}");
            }
            let l: Vec<f64> = subs.iter().map(|s| s.latency).collect();
            let first = median(&l[..w]).unwrap_or(0.0);
            let last = median(&l[n - w..]).unwrap_or(0.0);
            // How the latency moves along the submissions: median of each tenth.
            let curve: Vec<String> = (0..10)
                .map(|k| {
                    let part = &l[k * n / 10..((k + 1) * n / 10).max(k * n / 10 + 1).min(n)];
                    format!("{:.1}", median(part).unwrap_or(0.0) * 1e3)
                })
                .collect();
            progress(
                MJ,
                format!("submit latency median by tenth (ms): {}", curve.join(" ")),
            );
            Ok::<_, anyhow::Error>((first, last, s_early, s_n, s_busy, n as f64 / sub_secs))
        })?;
        progress(
            MJ,
            format!(
                "run {}/{runs}: submit median first {w} {:.2} ms, last {w} {:.2} ms (x{:.2}); status at {early} {:.1} µs, at {n} {:.1} µs (x{:.2}), at {n} while the queue drains {:.1} µs; {sub_rate:.0} submits/s",
                run + 1,
                first * 1e3,
                last * 1e3,
                last / first,
                s_early * 1e6,
                s_n * 1e6,
                s_n / s_early,
                s_busy * 1e6
            ),
        );
        lat.push_with_ref(last, first);
        st.push_with_ref(s_n, s_early);
        busy.push(s_busy);
        rate.push(sub_rate);
        if run + 1 == runs && env.keep_store && !env.is_postgres() {
            *env.store.lock().unwrap_or_else(|e| e.into_inner()) = Some((d, n));
        }
    }
    Ok(vec![lat, st, busy, rate])
}

const R: &str = "restart";

pub fn restart(env: &Env) -> Result<Vec<Measure>> {
    let total = env.sizes.restart_jobs;
    let unfinished = env.sizes.restart_unfinished.min(total);
    let reused = env.store.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (mut d, have) = match reused {
        Some((d, have)) if have <= total => {
            progress(R, format!("reusing the many-jobs store ({have} jobs)"));
            (d, have)
        }
        _ => (env.daemon(R, &[])?, 0),
    };
    let small = Arc::new(small_csv(5, 5));
    let slow = Arc::new(small_csv(6, 50));
    let finished = total - unfinished;
    // Reusing the many-jobs store gives `have` finished jobs, plus the unfinished ones.
    let total = have.max(finished) + unfinished;
    block_on(async {
        if have < finished {
            let t = Instant::now();
            let subs = submit_many(&d, have..finished, small.clone(), None, R).await?;
            let tail: Vec<String> = subs[subs.len().saturating_sub(100)..]
                .iter()
                .map(|s| s.id.clone())
                .collect();
            drain(&d, &tail, R).await?;
            progress(
                R,
                format!(
                    "{} finished jobs in the store ({:.0} s)",
                    finished,
                    t.elapsed().as_secs_f64()
                ),
            );
        }
        // The unfinished ones: throttled to 1 row/s, half of them paused, the rest
        // running or queued.
        let subs = submit_many(&d, 0..unfinished, slow.clone(), Some(1.0), R).await?;
        let ids: Vec<String> = subs.into_iter().map(|s| s.id).collect();
        control_many(&d, &ids[..unfinished / 2], "stop").await?;
        Ok::<_, anyhow::Error>(())
    })?;
    let check = |d: &Jobd| {
        block_on(async {
            let mut c = d.client().await?;
            let (counts, all, dt) = census(&mut c).await?;
            let open = count(&counts, JobState::Queued)
                + count(&counts, JobState::Running)
                + count(&counts, JobState::Paused);
            if all < total || open != unfinished {
                bail!("store holds {all} jobs, {open} unfinished ({counts:?}); expected {total}, {unfinished}");
            }
            Ok::<_, anyhow::Error>(dt)
        })
    };
    let census_time = check(&d)?;
    let mut sigterm = Measure::new(
        R,
        &format!("{total} jobs, {unfinished} unfinished: exec → ping"),
        Unit::Seconds,
        Some(Target::AtMost(1.0)),
    );
    let mut sigkill = Measure::new(
        R,
        "same, after SIGKILL (crash recovery)",
        Unit::Seconds,
        Some(Target::AtMost(1.0)),
    );
    let mut all_status = Measure::new(
        R,
        &format!("status of all {total} jobs (info)"),
        Unit::Seconds,
        None,
    );
    all_status.push(secs(census_time));
    for run in 0..env.sizes.runs {
        d.shutdown()?;
        let t_term = d.spawn()?;
        // A crash: the daemon is killed while it has work in hand.
        thread::sleep(Duration::from_millis(300));
        d.signal_and_wait(nix::sys::signal::Signal::SIGKILL)?;
        let t_kill = d.spawn()?;
        progress(
            R,
            format!(
                "run {}/{}: exec → ping {:.0} ms after SIGTERM, {:.0} ms after SIGKILL",
                run + 1,
                env.sizes.runs,
                secs(t_term) * 1e3,
                secs(t_kill) * 1e3
            ),
        );
        sigterm.push(secs(t_term));
        sigkill.push(secs(t_kill));
    }
    all_status.push(secs(check(&d)?));
    Ok(vec![sigterm, sigkill, all_status])
}
