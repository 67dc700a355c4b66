//! Nodes on one PostgreSQL (issue 12): what a takeover, a control across nodes, a
//! claim and an idle node cost, and how a cluster's throughput compares with one
//! node's. On one 2-core machine every node shares the cores: these figures are
//! about cost, not scale-out.

use super::{progress, status_one, submit_bytes, wait_completed};
use crate::bench::data::{small_csv, XorShift};
use crate::bench::env::{block_on, Cluster, Env, Jobd};
use crate::bench::procfs::cpu_time;
use crate::bench::stats::{latencies, median, secs, Measure, Target, Unit};
use anyhow::{anyhow, bail, Result};
use jobd_protocol::{ErrorCode, JobInfo, JobState};
use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const TAKEOVER: &str = "nodes-takeover";
const STOP: &str = "nodes-stop";
const CLAIM: &str = "nodes-claim";
const IDLE: &str = "nodes-idle";
const MANY: &str = "nodes-many";

/// The lease of the takeover scenario, in seconds.
const LEASE_SECS: u64 = 4;
/// Paused jobs of the idle scenario (the figure).
const IDLE_PAUSED: usize = 200;

/// The index of the node named `name` (`n1` is 0).
fn node_index(name: &str) -> Result<usize> {
    name.strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .ok_or_else(|| anyhow!("unexpected node name {name:?}"))
}

/// Waits (asking `d`) until the job runs on some node and has committed more
/// than `after` units; returns that node's index and the units committed. (A
/// worker's first commit after a start is never cut short by a control, so
/// that a job stopped soon after every start still advances: a stop aimed at a
/// running job waits for it.)
async fn runner(d: &Jobd, id: &str, after: u64) -> Result<(usize, u64)> {
    running_on(d, id, after)
        .await?
        .ok_or_else(|| anyhow!("job {id} ended before it ran on a node"))
}

/// [`runner`], or `None` once the job has completed.
async fn running_on(d: &Jobd, id: &str, after: u64) -> Result<Option<(usize, u64)>> {
    let mut c = d.client().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = status_one(&mut c, id).await?;
        if i.state == JobState::Running && i.processed > after {
            if let Some(n) = i.node.as_deref() {
                return Ok(Some((node_index(n)?, i.processed)));
            }
        }
        if i.state == JobState::Completed {
            return Ok(None);
        }
        if i.state.is_finished() || Instant::now() > deadline {
            bail!("job {id}: not running on a node; last status {i:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGKILL of the node running a job → another node runs it, ÷ the lease.
pub fn takeover(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres(TAKEOVER, |env| {
        let lease = Duration::from_secs(LEASE_SECS);
        let mut m = Measure::new(
            TAKEOVER,
            &format!("SIGKILL → running on another node, ÷ lease ({LEASE_SECS} s)"),
            Unit::Seconds,
            Some(Target::RatioAtMost(1.3)),
        );
        let mut first = Measure::new(
            TAKEOVER,
            "  SIGKILL → first commit on the new node (info)",
            Unit::Seconds,
            None,
        );
        let bytes = small_csv(21, 200_000);
        let lease_arg = LEASE_SECS.to_string();
        let mut rng = XorShift::new(21);
        for run in 0..env.sizes.runs {
            let mut c = env.cluster(TAKEOVER, 3, &["--lease-secs", &lease_arg])?;
            let id = block_on(async {
                let mut cl = c.nodes[0].client().await?;
                submit_bytes(&mut cl, &bytes, Some(500.0)).await
            })?;
            let (r, _) = block_on(runner(&c.nodes[0], &id, 0))?;
            // A random moment of the renewal cycle.
            thread::sleep(Duration::from_millis(rng.below(LEASE_SECS * 1000)));
            let other = (r + 1) % 3;
            let before = block_on(async {
                let mut cl = c.nodes[other].client().await?;
                status_one(&mut cl, &id).await
            })?;
            let t0 = Instant::now();
            c.nodes[r].signal_and_wait(Signal::SIGKILL)?;
            let (taken, committed) = block_on(watch_takeover(&c.nodes[other], &id, r, &before))?;
            let (taken, committed) = (taken.duration_since(t0), committed.duration_since(t0));
            progress(
                TAKEOVER,
                format!(
                    "run {}/{}: n{} killed; running on another node after {:.2} s ({:.2} × lease), first commit after {:.2} s",
                    run + 1,
                    env.sizes.runs,
                    r + 1,
                    secs(taken),
                    secs(taken) / secs(lease),
                    secs(committed)
                ),
            );
            m.push_with_ref(secs(taken), secs(lease));
            first.push(secs(committed));
            drop(c);
        }
        Ok(vec![m, first])
    })
}

/// Polls `d` until the job runs on a node other than `dead`, then until it has
/// committed past `before`; returns both moments.
async fn watch_takeover(
    d: &Jobd,
    id: &str,
    dead: usize,
    before: &JobInfo,
) -> Result<(Instant, Instant)> {
    let mut c = d.client().await?;
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS * 10);
    let mut taken = None;
    loop {
        let i = status_one(&mut c, id).await?;
        let elsewhere = i.state == JobState::Running
            && i.node
                .as_deref()
                .is_some_and(|n| node_index(n).is_ok_and(|n| n != dead));
        if elsewhere && taken.is_none() {
            taken = Some(Instant::now());
        }
        if let Some(t) = taken {
            if i.processed + i.failed > before.processed + before.failed {
                return Ok((t, Instant::now()));
            }
        }
        if i.state.is_finished() || Instant::now() > deadline {
            bail!("job {id}: no takeover from n{}; last {i:?}", dead + 1);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `jobctl stop ID` sent to a node other than the running one, on two jobs: a
/// throttled one (5000 rows/s: the nodes have CPU to spare) and an unthrottled
/// ingest (the running node and its server backend take both cores).
pub fn stop(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres(STOP, |env| {
        let n = env.sizes.node_stops;
        let mut out = Vec::new();
        let loads: [(&str, u64, Option<f64>); 2] = [
            ("throttled job, 5000 rows/s", 400_000, Some(5000.0)),
            ("unthrottled ingest", 1_000_000, None),
        ];
        for (k, (what, rows, rate)) in loads.into_iter().enumerate() {
            let mut p50 = Measure::new(
                STOP,
                &format!("{what}: cross-node `jobctl --json stop ID` wall, median of {n}"),
                Unit::Seconds,
                Some(Target::AtMost(20e-3)),
            );
            let mut p99 = Measure::new(STOP, "  same, p99", Unit::Seconds, Some(Target::AtMost(50e-3)));
            let mut local = Measure::new(
                STOP,
                "  same node's `jobctl stop ID` wall, median (info)",
                Unit::Seconds,
                None,
            );
            let mut ping = Measure::new(
                STOP,
                "  `jobctl ping` wall (process floor, info)",
                Unit::Seconds,
                None,
            );
            let bytes = small_csv(22 + k as u64, rows);
            let mut rng = XorShift::new(22);
            for run in 0..env.sizes.runs {
                let c = env.cluster(STOP, 3, &[])?;
                let (cross, same, floor) = stop_cycles(&c, &bytes, rate, n, &mut rng)?;
                let l = latencies(&cross);
                let m = median(&same).unwrap_or(0.0);
                let f = median(&floor).unwrap_or(0.0);
                progress(
                    STOP,
                    format!(
                        "{what}, run {}/{}: cross-node jobctl stop p50 {:.2} ms, p99 {:.2} ms; same node {:.2} ms; ping {:.2} ms",
                        run + 1,
                        env.sizes.runs,
                        l.p50 * 1e3,
                        l.p99 * 1e3,
                        m * 1e3,
                        f * 1e3
                    ),
                );
                p50.push(l.p50);
                p99.push(l.p99);
                local.push(m);
                ping.push(f);
            }
            out.extend([p50, p99, local, ping]);
        }
        Ok(out)
    })
}

/// `n` stops sent to a node not running the job (and a third as many to the
/// one running it), each followed by a start through a random node; returns
/// the wall times of the cross-node stops, of the same-node ones, and of
/// `jobctl ping`.
fn stop_cycles(
    c: &Cluster,
    bytes: &[u8],
    rate: Option<f64>,
    n: usize,
    rng: &mut XorShift,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let submit = || {
        block_on(async {
            let mut cl = c.nodes[0].client().await?;
            let id = submit_bytes(&mut cl, bytes, rate).await?;
            let (r, _) = runner(&c.nodes[0], &id, 0).await?;
            Ok::<_, anyhow::Error>((id, r))
        })
    };
    let (mut id, mut r) = submit()?;
    let (mut cross, mut same, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    while cross.len() < n {
        thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
        // Every fourth stop goes to the running node itself, for comparison.
        let here = cross.len() % 4 == 3 && same.len() < cross.len() / 3;
        let to = if here {
            r
        } else {
            (r + 1 + rng.below(2) as usize) % 3
        };
        let t = Instant::now();
        let out = c.nodes[to].jobctl(&["--json", "stop", &id]).output()?;
        let dt = secs(t.elapsed());
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("job_finished") {
                (id, r) = submit()?;
                continue;
            }
            bail!("jobctl stop on n{} failed ({}): {err}", to + 1, out.status);
        }
        let parked = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["processed"].as_u64())
            .ok_or_else(|| anyhow!("jobctl --json stop printed no job"))?;
        if here {
            same.push(dt);
        } else {
            cross.push(dt);
        }
        // Started through some node: the job runs wherever it is claimed.
        let at = rng.below(3) as usize;
        let started = block_on(async {
            let mut cl = c.nodes[at].client().await?;
            match cl.control(&id, "start").await {
                Ok(_) => Ok(running_on(&c.nodes[at], &id, parked).await?.map(|(r, _)| r)),
                Err(e) if e.code() == Some(ErrorCode::JobFinished) => Ok(None),
                Err(e) => Err(anyhow!("start {id}: {e}")),
            }
        })?;
        match started {
            Some(now_on) => r = now_on,
            None => (id, r) = submit()?,
        }
        let t = Instant::now();
        if c.nodes[0].jobctl(&["ping"]).output()?.status.success() {
            floor.push(secs(t.elapsed()));
        }
    }
    Ok((cross, same, floor))
}

/// A one-row job submitted to an idle cluster: submit answered → its completion
/// seen by the node it was submitted to (the claim and the first commit happen
/// in between, on whichever node claimed it).
pub fn claim(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres(CLAIM, |env| {
        let n = env.sizes.node_claims;
        let mut wall = Measure::new(
            CLAIM,
            &format!("3 idle nodes: submit answered → first commit seen, p50 of {n}"),
            Unit::Seconds,
            Some(Target::AtMost(50e-3)),
        );
        let mut wall99 = Measure::new(CLAIM, "  same, p99 (info)", Unit::Seconds, None);
        let mut stored = Measure::new(
            CLAIM,
            "  created → committed, store timestamps, p50 (info)",
            Unit::Seconds,
            None,
        );
        let bytes = small_csv(23, 1);
        for run in 0..env.sizes.runs {
            let c = env.cluster(CLAIM, 3, &[])?;
            let (lat, store_lat) = block_on(async {
                let mut lat = Vec::with_capacity(n);
                let mut store_lat = Vec::with_capacity(n);
                let mut clients = Vec::new();
                for d in &c.nodes {
                    clients.push(d.client().await?);
                }
                for i in 0..n {
                    let at = i % 3;
                    let cl = &mut clients[at];
                    let id = submit_bytes(cl, &bytes, None).await?;
                    let t = Instant::now();
                    let done = wait_completed(cl, std::slice::from_ref(&id)).await?;
                    lat.push(secs(t.elapsed()));
                    let info = &done[0];
                    store_lat.push(info.updated_at.saturating_sub(info.created_at) as f64 / 1e3);
                }
                Ok::<_, anyhow::Error>((lat, store_lat))
            })?;
            let l = latencies(&lat);
            let s = latencies(&store_lat);
            progress(
                CLAIM,
                format!(
                    "run {}/{}: submit → completion seen p50 {:.1} ms, p99 {:.1} ms; store created → committed p50 {:.0} ms",
                    run + 1,
                    env.sizes.runs,
                    l.p50 * 1e3,
                    l.p99 * 1e3,
                    s.p50 * 1e3
                ),
            );
            wall.push(l.p50);
            wall99.push(l.p99);
            stored.push(s.p50);
        }
        Ok(vec![wall, wall99, stored])
    })
}

/// CPU of each node of an idle cluster that holds 200 paused jobs.
pub fn idle(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres(IDLE, |env| {
        let window = Duration::from_secs_f64(env.sizes.idle_secs);
        let mut worst = Measure::new(
            IDLE,
            &format!("{IDLE_PAUSED} paused, 3 nodes: CPU per 10 s idle, busiest node"),
            Unit::Seconds,
            Some(Target::AtMost(5e-3)),
        );
        let mut each = Measure::new(IDLE, "  same, median node (info)", Unit::Seconds, None);
        let mut fan_commits = Measure::new(
            IDLE,
            "one job running: its commits per second (info)",
            Unit::PerSecond,
            None,
        );
        let mut fan_cpu = Measure::new(
            IDLE,
            "  CPU of a node not running it, per commit it hears (info)",
            Unit::Seconds,
            None,
        );
        let bytes = Arc::new(small_csv(24, 10));
        for run in 0..env.sizes.heavy_runs {
            let c = env.cluster(IDLE, 3, &["--max-running", "1"])?;
            block_on(add_paused(&c, bytes.clone()))?;
            // Connections closed; the nodes settle first.
            thread::sleep(Duration::from_secs(1));
            let pids: Vec<u32> = c.nodes.iter().map(Jobd::pid).collect();
            let before = pids
                .iter()
                .map(|p| cpu_time(*p))
                .collect::<Result<Vec<_>>>()?;
            thread::sleep(window);
            let after = pids
                .iter()
                .map(|p| cpu_time(*p))
                .collect::<Result<Vec<_>>>()?;
            let per10: Vec<f64> = before
                .iter()
                .zip(&after)
                .map(|(b, a)| secs(a.saturating_sub(*b)) * 10.0 / window.as_secs_f64())
                .collect();
            let max = per10.iter().copied().fold(0.0, f64::max);
            progress(
                IDLE,
                format!(
                    "run {}/{}: CPU per 10 s of n1..n3: {}",
                    run + 1,
                    env.sizes.heavy_runs,
                    per10
                        .iter()
                        .map(|v| format!("{:.2} ms", v * 1e3))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            worst.push(max);
            each.push(median(&per10).unwrap_or(0.0));

            // The fan-out: one job commits often; what does every other node pay?
            let (commits, cpu) = fan_out(&c, window)?;
            progress(
                IDLE,
                format!(
                    "run {}/{}: one job running: {commits:.0} commits/s; CPU per 10 s of the nodes not running it: {}",
                    run + 1,
                    env.sizes.heavy_runs,
                    cpu.iter()
                        .map(|v| format!("{:.1} ms", v * 1e3))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            fan_commits.push(commits);
            // CPU seconds per second ÷ commits per second: the cost of one commit heard.
            fan_cpu.push(median(&cpu).unwrap_or(0.0) / 10.0 / commits.max(1e-9));
        }
        Ok(vec![worst, each, fan_commits, fan_cpu])
    })
}

/// Runs one throttled job (it commits whenever it waits) for `window`; returns
/// its commits per second and the CPU per 10 s of each node that does not run
/// it (the fan-out: every commit is heard, and its job loaded, by every node).
fn fan_out(c: &Cluster, window: Duration) -> Result<(f64, Vec<f64>)> {
    let bytes = small_csv(26, 400_000);
    let (id, r) = block_on(async {
        let mut cl = c.nodes[0].client().await?;
        let id = submit_bytes(&mut cl, &bytes, Some(1000.0)).await?;
        let (r, _) = runner(&c.nodes[0], &id, 0).await?;
        Ok::<_, anyhow::Error>((id, r))
    })?;
    let commits = || {
        block_on(async {
            let mut cl = c.nodes[r].client().await?;
            let m = cl.metrics().await.map_err(|e| anyhow!("metrics: {e}"))?;
            Ok::<_, anyhow::Error>(m.commits.count())
        })
    };
    let others: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != r).collect();
    let cpu = || {
        others
            .iter()
            .map(|i| cpu_time(c.nodes[*i].pid()))
            .collect::<Result<Vec<_>>>()
    };
    let (k0, before) = (commits()?, cpu()?);
    thread::sleep(window);
    let (k1, after) = (commits()?, cpu()?);
    block_on(async {
        let mut cl = c.nodes[0].client().await?;
        cl.control(&id, "terminate")
            .await
            .map_err(|e| anyhow!("terminate {id}: {e}"))
    })?;
    let per10 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| secs(a.saturating_sub(*b)) * 10.0 / window.as_secs_f64())
        .collect();
    Ok((k1.saturating_sub(k0) as f64 / window.as_secs_f64(), per10))
}

/// Submits [`IDLE_PAUSED`] throttled jobs spread over the nodes and stops each
/// through another node than it was submitted to; checks they are all paused.
async fn add_paused(c: &Cluster, bytes: Arc<Vec<u8>>) -> Result<()> {
    let mut clients = Vec::new();
    for d in &c.nodes {
        clients.push(d.client().await?);
    }
    for i in 0..IDLE_PAUSED {
        let id = submit_bytes(&mut clients[i % 3], &bytes, Some(0.1)).await?;
        let info = clients[(i + 1) % 3]
            .control(&id, "stop")
            .await
            .map_err(|e| anyhow!("stop {id}: {e}"))?;
        if info.state != JobState::Paused {
            bail!("stop of {id} answered {}", info.state);
        }
    }
    // Every node's view follows the others' changes by notification: n1 may see
    // the last stops a moment after they were answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = clients[0]
            .status(&[])
            .await
            .map_err(|e| anyhow!("status: {e}"))?;
        let paused = all.iter().filter(|i| i.state == JobState::Paused).count();
        if paused == IDLE_PAUSED {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{paused} jobs paused, expected {IDLE_PAUSED}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Many small jobs submitted to 3 nodes, and the same to 1 node: jobs per second
/// from the first submit to the last completion.
pub fn many(env: &Env) -> Result<Vec<Measure>> {
    env.on_postgres(MANY, |env| {
        let n = env.sizes.node_jobs;
        let mut rate = Measure::new(
            MANY,
            &format!("{n} small jobs: jobs/s with 3 nodes ÷ with 1 node"),
            Unit::PerSecond,
            None,
        );
        let bytes = Arc::new(small_csv(25, 5));
        for run in 0..env.sizes.runs {
            // Alternate the order, as the other same-run references do.
            let mut three = 0.0;
            let mut one = 0.0;
            for k in 0..2 {
                let nodes = if (run + k) % 2 == 0 { 3 } else { 1 };
                let c = env.cluster(MANY, nodes, &[])?;
                let r = block_on(many_jobs(&c, n, bytes.clone()))?;
                if nodes == 3 {
                    three = r;
                } else {
                    one = r;
                }
            }
            progress(
                MANY,
                format!(
                    "run {}/{}: 3 nodes {three:.0} jobs/s, 1 node {one:.0} jobs/s ({:.2})",
                    run + 1,
                    env.sizes.runs,
                    three / one
                ),
            );
            rate.push_with_ref(three, one);
        }
        Ok(vec![rate])
    })
}

/// Submits `n` jobs over 4 connections spread over the nodes, waits for all of
/// them; returns jobs per second.
async fn many_jobs(c: &Cluster, n: usize, bytes: Arc<Vec<u8>>) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for k in 0..4 {
        let mut cl = c.nodes[k % c.nodes.len()].client().await?;
        let (next, bytes) = (next.clone(), bytes.clone());
        set.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                ids.push(submit_bytes(&mut cl, &bytes, None).await?);
            }
            wait_completed(&mut cl, &ids).await?;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(n as f64 / secs(t.elapsed()))
}
