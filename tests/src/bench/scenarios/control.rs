//! Control-path latency and throughput: status round trips, stop latency on a
//! running ingest job, and `jobctl stop` as a whole process.

use super::{progress, status_one, submit_bytes, submit_file, wait_completed, wait_for};
use crate::bench::data::{small_csv, XorShift};
use crate::bench::env::{block_on, Env, Jobd};
use crate::bench::procfs::{cpu_time, ctx_switches};
use crate::bench::stats::{latencies, median, secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Result};
use jobd_protocol::{Client, ErrorCode, JobState};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A daemon with one small completed job; returns the job id.
fn daemon_with_one_job(env: &Env, name: &str) -> Result<(Jobd, String)> {
    let d = env.daemon(name, &[])?;
    let id = block_on(async {
        let mut c = d.client().await?;
        let id = submit_bytes(&mut c, &small_csv(7, 20), None).await?;
        wait_completed(&mut c, std::slice::from_ref(&id)).await?;
        Ok::<_, anyhow::Error>(id)
    })?;
    Ok((d, id))
}

const RTT: &str = "rtt";

pub fn rtt(env: &Env) -> Result<Vec<Measure>> {
    rtt_with(env, 100e-6)
}

/// The same on the PostgreSQL store (status answers from memory there too).
pub fn pg_rtt(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres("pg-rtt", |env| rtt_with(env, 250e-6))
}

fn rtt_with(env: &Env, p50_target: f64) -> Result<Vec<Measure>> {
    let (d, id) = daemon_with_one_job(env, RTT)?;
    let n = env.sizes.rtt_calls;
    let mut p50 = Measure::new(
        RTT,
        &format!("status of 1 job, p50 of {n}"),
        Unit::Seconds,
        Some(Target::AtMost(p50_target)),
    );
    let mut p99 = Measure::new(
        RTT,
        &format!("status of 1 job, p99 of {n}"),
        Unit::Seconds,
        Some(Target::AtMost(250e-6)),
    );
    let mut ping = Measure::new(
        RTT,
        &format!("ping, p50 of {n} (floor)"),
        Unit::Seconds,
        None,
    );
    let ids = vec![id];
    for run in 0..env.sizes.runs {
        let (s, p) = block_on(async {
            let mut c = d.client().await?;
            for _ in 0..1000 {
                c.status(&ids).await?;
            }
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let v = c.status(&ids).await?;
                lat.push(secs(t.elapsed()));
                if v.len() != 1 {
                    bail!("status answered {} jobs", v.len());
                }
            }
            let mut pl = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                c.ping().await?;
                pl.push(secs(t.elapsed()));
            }
            Ok::<_, anyhow::Error>((latencies(&lat), latencies(&pl)))
        })?;
        progress(
            RTT,
            format!(
                "run {}/{}: status p50 {:.1} µs, p99 {:.1} µs, max {:.2} ms; ping p50 {:.1} µs",
                run + 1,
                env.sizes.runs,
                s.p50 * 1e6,
                s.p99 * 1e6,
                s.max * 1e3,
                p.p50 * 1e6
            ),
        );
        p50.push(s.p50);
        p99.push(s.p99);
        ping.push(p.p50);
    }
    Ok(vec![p50, p99, ping])
}

const TP: &str = "throughput";

/// CPU time of this process (all threads), from getrusage.
fn own_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
        };
        tv(u.user_time()) + tv(u.system_time())
    })
}

/// `conns` connections spread over `threads` client threads (each a current-thread
/// runtime), each doing `status` until the deadline. Returns the requests done.
fn status_flood(
    d: &Jobd,
    ids: &Arc<Vec<String>>,
    conns: usize,
    threads: usize,
    dur: Duration,
) -> Result<(u64, Duration)> {
    let threads = threads.clamp(1, conns);
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let start_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine = conns / threads + usize::from(t < conns % threads);
        let (ids, barrier, start_at) = (ids.clone(), barrier.clone(), start_at.clone());
        let socket = d.socket.clone();
        handles.push(std::thread::spawn(move || {
            block_on(async move {
                let mut clients = Vec::new();
                for _ in 0..mine {
                    clients.push(Client::connect(&socket, "jobd-bench").await?);
                }
                for c in clients.iter_mut() {
                    for _ in 0..100 {
                        c.status(&ids).await?;
                    }
                }
                barrier.wait();
                let deadline = *start_at.get().expect("set before the barrier opens") + dur;
                let mut set = tokio::task::JoinSet::new();
                for mut c in clients {
                    let ids = ids.clone();
                    set.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            c.status(&ids).await?;
                            n += 1;
                        }
                        Ok::<_, jobd_protocol::ClientError>(n)
                    });
                }
                let mut total = 0u64;
                while let Some(r) = set.join_next().await {
                    total += r??;
                }
                Ok::<_, anyhow::Error>(total)
            })
        }));
    }
    let _ = start_at.set(Instant::now() + Duration::from_millis(20));
    barrier.wait();
    let mut total = 0;
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some(anyhow!("a client thread panicked")),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let elapsed = start_at.get().map_or(dur, |s| s.elapsed());
    Ok((total, elapsed))
}

pub fn throughput(env: &Env) -> Result<Vec<Measure>> {
    let (d, id) = daemon_with_one_job(env, TP)?;
    let conns = env.sizes.throughput_conns;
    let threads = env.sizes.client_threads;
    let dur = Duration::from_secs_f64(env.sizes.throughput_secs);
    let mut m = Measure::new(
        TP,
        &format!("status, {conns} connections, {:.0} s", dur.as_secs_f64()),
        Unit::PerSecond,
        Some(Target::AtLeast(100_000.0)),
    );
    let mut dcpu = Measure::new(TP, "  jobd CPU per request (info)", Unit::Seconds, None);
    let mut ccpu = Measure::new(
        TP,
        &format!("  client CPU per request, {threads} thread(s) (info)"),
        Unit::Seconds,
        None,
    );
    let mut cs = Measure::new(
        TP,
        "  jobd context switches per request (info)",
        Unit::Count,
        None,
    );
    let ids = Arc::new(vec![id]);
    for run in 0..env.sizes.runs {
        let (d0, c0, x0) = (cpu_time(d.pid())?, own_cpu(), ctx_switches(d.pid()));
        let (total, elapsed) = status_flood(&d, &ids, conns, threads, dur)?;
        let (d1, c1, x1) = (cpu_time(d.pid())?, own_cpu(), ctx_switches(d.pid()));
        let switches = x1.saturating_sub(x0) as f64 / total as f64;
        let rate = total as f64 / elapsed.as_secs_f64();
        let per_d = secs(d1.saturating_sub(d0)) / total as f64;
        let per_c = secs(c1.saturating_sub(c0)) / total as f64;
        progress(
            TP,
            format!(
                "run {}/{}: {rate:.0} req/s; jobd {:.0}% CPU ({:.1} µs/req), client {:.0}% CPU ({:.1} µs/req); jobd {switches:.2} context switches/req",
                run + 1,
                env.sizes.runs,
                100.0 * secs(d1.saturating_sub(d0)) / elapsed.as_secs_f64(),
                per_d * 1e6,
                100.0 * secs(c1.saturating_sub(c0)) / elapsed.as_secs_f64(),
                per_c * 1e6
            ),
        );
        m.push(rate);
        dcpu.push(per_d);
        ccpu.push(per_c);
        cs.push(switches);
    }
    Ok(vec![m, dcpu, ccpu, cs])
}

/// Submits the ingest file (no rate) and waits until the job is running and has
/// applied some rows.
async fn running_ingest_job(c: &mut Client, file: &Path) -> Result<String> {
    let id = submit_file(c, file, None).await?;
    wait_for(c, &id, "running with progress", |i| {
        i.state == JobState::Running && i.processed > 0
    })
    .await?;
    Ok(id)
}

fn is_finished_err(e: &jobd_protocol::ClientError) -> bool {
    e.code() == Some(ErrorCode::JobFinished)
}

const STOP: &str = "stop";

pub fn stop_latency(env: &Env) -> Result<Vec<Measure>> {
    stop_latency_with(env, Some(Target::AtMost(5e-3)))
}

/// The same on the PostgreSQL store (its issue sets a target for the p99 only).
pub fn pg_stop_latency(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres("pg-stop", |env| stop_latency_with(env, None))
}

fn stop_latency_with(env: &Env, p50_target: Option<Target>) -> Result<Vec<Measure>> {
    let (file, _) = env.ingest_file()?;
    let d = env.daemon(STOP, &[])?;
    let cycles = env.sizes.stop_cycles;
    let mut p50 = Measure::new(
        STOP,
        &format!("stop → answer, p50 of {cycles}"),
        Unit::Seconds,
        p50_target,
    );
    let mut p99 = Measure::new(
        STOP,
        &format!("stop → answer, p99 of {cycles}"),
        Unit::Seconds,
        Some(Target::AtMost(20e-3)),
    );
    let mut start_p50 = Measure::new(STOP, "start → answer, p50 (info)", Unit::Seconds, None);
    let mut committed = Measure::new(
        STOP,
        "  rows committed over the cycles (info)",
        Unit::Count,
        None,
    );
    let slow_cycles = (cycles / 20).max(10);
    let mut slow_committed = Measure::new(
        STOP,
        &format!("  rows committed over {slow_cycles} cycles of 20–40 ms (info)"),
        Unit::Count,
        None,
    );
    for run in 0..env.sizes.runs {
        let (storm, slow) = block_on(async {
            let mut c = d.client().await?;
            let mut id = running_ingest_job(&mut c, &file).await?;
            let mut rng = XorShift::new(run as u64 + 11);
            // Let the worker run 1..5 ms, so stops land anywhere in a batch.
            let storm = stop_cycles(&mut c, &file, &mut id, &mut rng, cycles, 1000, 4000).await?;
            // Slower: each worker runs past its first commit (at 16 ms).
            let slow = stop_cycles(
                &mut c,
                &file,
                &mut id,
                &mut rng,
                slow_cycles,
                20_000,
                20_000,
            )
            .await?;
            c.control(&id, "terminate").await.ok();
            Ok::<_, anyhow::Error>((storm, slow))
        })?;
        let (s, st) = (latencies(&storm.stop), latencies(&storm.start));
        progress(
            STOP,
            format!(
                "run {}/{}: stop p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; start p50 {:.2} ms; {} rows applied between stops, {} resubmits; at 20–40 ms: {} rows over {slow_cycles} cycles",
                run + 1,
                env.sizes.runs,
                s.p50 * 1e3,
                s.p99 * 1e3,
                s.max * 1e3,
                st.p50 * 1e3,
                storm.rows,
                storm.resubmits + slow.resubmits,
                slow.rows,
            ),
        );
        p50.push(s.p50);
        p99.push(s.p99);
        start_p50.push(st.p50);
        committed.push(storm.rows as f64);
        slow_committed.push(slow.rows as f64);
    }
    Ok(vec![p50, p99, start_p50, committed, slow_committed])
}

/// What [`stop_cycles`] saw.
struct Cycles {
    stop: Vec<f64>,
    start: Vec<f64>,
    rows: u64,
    resubmits: u32,
}

/// `n` cycles of: let the job run `min_us + random(0..spread_us)` µs, stop it
/// (timed, must answer `paused`), start it (timed). A job that completes is
/// submitted again (`id` follows).
async fn stop_cycles(
    c: &mut Client,
    file: &Path,
    id: &mut String,
    rng: &mut XorShift,
    n: usize,
    min_us: u64,
    spread_us: u64,
) -> Result<Cycles> {
    let mut out = Cycles {
        stop: Vec::with_capacity(n),
        start: Vec::with_capacity(n),
        rows: 0,
        resubmits: 0,
    };
    let mut last_processed = status_one(c, id).await?.processed;
    while out.stop.len() < n {
        tokio::time::sleep(Duration::from_micros(min_us + rng.below(spread_us))).await;
        let t = Instant::now();
        let r = c.control(id, "stop").await;
        let dt = t.elapsed();
        let finished = match r {
            Ok(info) if info.state == JobState::Paused => {
                out.stop.push(secs(dt));
                out.rows += info.processed.saturating_sub(last_processed);
                last_processed = info.processed;
                false
            }
            Ok(info) if info.state.is_finished() => true,
            Ok(info) => bail!("stop answered with state {}", info.state),
            Err(e) if is_finished_err(&e) => true,
            Err(e) => return Err(anyhow!("stop {id}: {e}")),
        };
        if !finished {
            let t = Instant::now();
            let info = c
                .control(id, "start")
                .await
                .map_err(|e| anyhow!("start {id}: {e}"))?;
            out.start.push(secs(t.elapsed()));
            if !info.state.is_finished() {
                continue;
            }
        }
        *id = running_ingest_job(c, file).await?;
        last_processed = 0;
        out.resubmits += 1;
    }
    Ok(out)
}

const JS: &str = "jobctl-stop";

pub fn jobctl_stop(env: &Env) -> Result<Vec<Measure>> {
    let (file, _) = env.ingest_file()?;
    let d = env.daemon(JS, &[])?;
    let n = env.sizes.jobctl_stops;
    let mut stop = Measure::new(
        JS,
        &format!("`jobctl stop ID` wall, median of {n}"),
        Unit::Seconds,
        Some(Target::AtMost(10e-3)),
    );
    let mut start = Measure::new(JS, "`jobctl start ID` wall (info)", Unit::Seconds, None);
    let mut ping = Measure::new(
        JS,
        "`jobctl ping` wall (process floor)",
        Unit::Seconds,
        None,
    );
    let submit = || {
        block_on(async {
            let mut c = d.client().await?;
            running_ingest_job(&mut c, &file).await
        })
    };
    let mut id = submit()?;
    let mut rng = XorShift::new(5);
    for run in 0..env.sizes.runs {
        let (mut s, mut st, mut p) = (Vec::new(), Vec::new(), Vec::new());
        while s.len() < n {
            std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
            let mut cmd = d.jobctl(&["stop", &id]);
            let t = Instant::now();
            let out = cmd.output()?;
            let dt = t.elapsed();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                if err.contains("job_finished") {
                    id = submit()?;
                    continue;
                }
                bail!("jobctl stop failed ({}): {err}", out.status);
            }
            s.push(secs(dt));
            let mut cmd = d.jobctl(&["start", &id]);
            let t = Instant::now();
            let out = cmd.output()?;
            let dt = t.elapsed();
            if out.status.success() {
                st.push(secs(dt));
            } else if String::from_utf8_lossy(&out.stderr).contains("job_finished") {
                id = submit()?;
            } else {
                bail!(
                    "jobctl start failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let mut cmd = d.jobctl(&["ping"]);
            let t = Instant::now();
            let out = cmd.output()?;
            if out.status.success() {
                p.push(secs(t.elapsed()));
            }
        }
        let (ms, mst, mp) = (
            median(&s).unwrap_or(0.0),
            median(&st).unwrap_or(0.0),
            median(&p).unwrap_or(0.0),
        );
        progress(
            JS,
            format!(
                "run {}/{}: jobctl stop median {:.2} ms (p99 {:.2} ms), start {:.2} ms, ping {:.2} ms",
                run + 1,
                env.sizes.runs,
                ms * 1e3,
                latencies(&s).p99 * 1e3,
                mst * 1e3,
                mp * 1e3
            ),
        );
        stop.push(ms);
        start.push(mst);
        ping.push(mp);
    }
    Ok(vec![stop, start, ping])
}
