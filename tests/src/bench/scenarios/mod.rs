//! The scenarios of issue 6. Each returns its lines of the table.

mod control;
mod http;
mod ingest;
mod jobs;
mod nodes;
mod prune;

use super::env::Env;
use super::stats::Measure;
use anyhow::{anyhow, bail, Result};
use jobd_protocol::{Client, JobInfo, JobState, UploadKind};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Part of `--skip-big`.
    pub big: bool,
    pub run: fn(&Env) -> Result<Vec<Measure>>,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "ingest",
        about: "jobctl upload --wait of the ingest CSV vs sqlite3 .import of the same file",
        big: false,
        run: ingest::ingest,
    },
    Scenario {
        name: "memory",
        about: "peak RSS of jobd and jobctl while ingesting a 1 GiB CSV (fresh daemon per run)",
        big: true,
        run: ingest::memory,
    },
    Scenario {
        name: "rtt",
        about: "status of one job over one connection: p50, p99",
        big: false,
        run: control::rtt,
    },
    Scenario {
        name: "throughput",
        about: "status requests per second over 8 connections",
        big: false,
        run: control::throughput,
    },
    Scenario {
        name: "stop",
        about: "stop -> answer latency on a running ingest job, stop/start cycles",
        big: false,
        run: control::stop_latency,
    },
    Scenario {
        name: "jobctl-stop",
        about: "`jobctl stop ID` as a whole process, alternating with `jobctl start ID`",
        big: false,
        run: control::jobctl_stop,
    },
    Scenario {
        name: "paused",
        about: "10 000 paused jobs: RSS and open files per job, CPU while idle",
        big: false,
        run: jobs::paused,
    },
    Scenario {
        name: "many-jobs",
        about: "100 000 submitted jobs: submit latency last/first 1 000, status at 100 000 vs 100",
        big: false,
        run: jobs::many_jobs,
    },
    Scenario {
        name: "restart",
        about: "restart with 100 000 jobs in the store, 1 000 unfinished: exec -> ping",
        big: false,
        run: jobs::restart,
    },
    Scenario {
        name: "pg-ingest",
        about: "PostgreSQL store: upload --wait of the ingest CSV vs psql \\copy of it into a fresh table on the same server",
        big: false,
        run: ingest::pg_ingest,
    },
    Scenario {
        name: "pg-rtt",
        about: "PostgreSQL store: status of one job over one connection: p50, p99",
        big: false,
        run: control::pg_rtt,
    },
    Scenario {
        name: "pg-stop",
        about: "PostgreSQL store: stop -> answer latency on a running ingest job, stop/start cycles",
        big: false,
        run: control::pg_stop_latency,
    },
    Scenario {
        name: "pg-many-jobs",
        about: "PostgreSQL store: 100 000 submitted jobs: submit latency last/first 1 000, status at 100 000 vs 100",
        big: false,
        run: jobs::pg_many_jobs,
    },
    Scenario {
        name: "nodes-takeover",
        about: "3 nodes on PostgreSQL: SIGKILL of the running node -> the job runs on another, vs the lease",
        big: false,
        run: nodes::takeover,
    },
    Scenario {
        name: "nodes-stop",
        about: "3 nodes on PostgreSQL: `jobctl stop ID` sent to a node other than the running one",
        big: false,
        run: nodes::stop,
    },
    Scenario {
        name: "nodes-claim",
        about: "3 idle nodes on PostgreSQL: a one-row job, submit answered -> completion seen",
        big: false,
        run: nodes::claim,
    },
    Scenario {
        name: "nodes-idle",
        about: "3 nodes on PostgreSQL with 200 paused jobs: CPU of each node while idle",
        big: false,
        run: nodes::idle,
    },
    Scenario {
        name: "nodes-many",
        about: "many small jobs on 3 nodes vs on 1 node (same database server)",
        big: false,
        run: nodes::many,
    },
    Scenario {
        name: "prune",
        about: "`jobctl stop` wall p99 on a running ingest job while `jobctl prune` forgets 100 000 finished jobs (ref: before the prune)",
        big: false,
        run: prune::prune,
    },
    Scenario {
        name: "pg-prune",
        about: "PostgreSQL store: the same prune scenario",
        big: false,
        run: prune::pg_prune,
    },
    Scenario {
        name: "http",
        about: "jobd-http under wrk: GET /updateTask for an unknown id (needs wrk)",
        big: false,
        run: http::http,
    },
];

pub fn progress(scenario: &str, msg: impl AsRef<str>) {
    eprintln!("  [{scenario}] {}", msg.as_ref());
}

/// Uploads bytes as a baseline job; returns its id.
pub async fn submit_bytes(c: &mut Client, bytes: &[u8], rate: Option<f64>) -> Result<String> {
    let info = c
        .upload(UploadKind::BaselineCsv, rate, bytes, |_| {})
        .await
        .map_err(|e| anyhow!("submit: {e}"))?;
    Ok(info.id)
}

/// Uploads a file as a baseline job; returns its id.
pub async fn submit_file(c: &mut Client, path: &Path, rate: Option<f64>) -> Result<String> {
    let f = tokio::fs::File::open(path).await?;
    let info = c
        .upload(UploadKind::BaselineCsv, rate, f, |_| {})
        .await
        .map_err(|e| anyhow!("submit {}: {e}", path.display()))?;
    Ok(info.id)
}

pub async fn status_one(c: &mut Client, id: &str) -> Result<JobInfo> {
    let mut v = c
        .status(&[id.to_string()])
        .await
        .map_err(|e| anyhow!("status {id}: {e}"))?;
    v.pop()
        .ok_or_else(|| anyhow!("status {id}: no job in the answer"))
}

/// Polls until `pred` holds for the job (fails if it finishes without it).
pub async fn wait_for(
    c: &mut Client,
    id: &str,
    what: &str,
    pred: impl Fn(&JobInfo) -> bool,
) -> Result<JobInfo> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = status_one(c, id).await?;
        if pred(&info) {
            return Ok(info);
        }
        if info.state.is_finished() || Instant::now() > deadline {
            bail!("job {id}: no {what}; last status {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the jobs to end and checks they completed.
pub async fn wait_completed(c: &mut Client, ids: &[String]) -> Result<Vec<JobInfo>> {
    let infos = c.wait(ids).await.map_err(|e| anyhow!("wait: {e}"))?;
    if let Some(bad) = infos.iter().find(|i| i.state != JobState::Completed) {
        bail!("job {} ended {}: {:?}", bad.id, bad.state, bad.error);
    }
    Ok(infos)
}
