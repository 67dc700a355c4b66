//! `jobctl wait ID...`: block until the jobs end, print their final states, exit 0
//! only if every one completed. Also the `--wait` of the submit commands.

use super::progress::{self, Bar};
use super::render::{self, jobs_json, progress_line};
use super::{print_line, watch, Ctx, Error, Outcome};
use jobd_protocol::{Client, ClientError, JobInfo, JobState};

pub async fn run(ctx: &Ctx, ids: &[String]) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let jobs = client.wait(ids).await?;
    if ctx.json {
        print_line(render::pretty(&jobs_json(&jobs, ids.len() == 1)))?;
    } else if !ctx.quiet {
        for job in &jobs {
            print_line(progress_line(job))?;
        }
    }
    for job in &jobs {
        report_unfinished(job);
    }
    Ok(Outcome::all_completed(jobs.iter().map(|j| &j.state)))
}

/// Waits for one job on an open connection: with a progress bar when stderr is a
/// terminal (following its watch stream), else with a plain `Wait`.
pub(super) async fn one(ctx: &Ctx, client: &mut Client, job: &JobInfo) -> Result<JobInfo, Error> {
    if ctx.quiet || !progress::bars_enabled() {
        let ids = [job.id.clone()];
        let jobs = client.wait(&ids).await?;
        return jobs
            .into_iter()
            .find(|j| j.id == job.id)
            .ok_or_else(|| missing(&job.id));
    }
    let bar = Bar::job(job);
    let last = watch::follow(client, &job.id, |event| {
        bar.update(event);
        Ok(())
    })
    .await;
    bar.finish();
    last
}

/// On stderr, why a job did not complete: `jobctl: job <id> failed: <error>`.
pub(super) fn report_unfinished(job: &JobInfo) {
    if job.state == JobState::Completed {
        return;
    }
    match &job.error {
        Some(error) => eprintln!("jobctl: job {} {}: {error}", job.id, job.state),
        None if job.state.is_finished() => eprintln!("jobctl: job {} {}", job.id, job.state),
        None => eprintln!("jobctl: job {} is still {}", job.id, job.state),
    }
}

/// The daemon answered without the job asked for.
pub(super) fn missing(id: &str) -> Error {
    Error::Client(ClientError::Unexpected(format!(
        "the daemon's answer does not include job {id}"
    )))
}
