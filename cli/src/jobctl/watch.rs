//! `jobctl watch ID`: follow a job until it ends. A progress bar when stdout and
//! stderr are terminals, else one plain line per event
//! (`<id> <state> processed=N failed=N total=N|-`), or one JSON object per line
//! with `--json`. Exit 0 only if the job completed.

use super::progress::{self, Bar};
use super::render::{job_json, progress_line};
use super::wait::{missing, report_unfinished};
use super::{print_line, Ctx, Error, Outcome};
use jobd_protocol::{Client, JobInfo};

pub async fn run(ctx: &Ctx, id: &str) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let last = if ctx.json {
        follow(&mut client, id, |job| print_line(job_json(job))).await?
    } else if ctx.quiet {
        follow(&mut client, id, |_| Ok(())).await?
    } else if progress::interactive() {
        let mut bar: Option<Bar> = None;
        let last = follow(&mut client, id, |job| {
            match &bar {
                Some(bar) => bar.update(job),
                None => bar = Some(Bar::job(job)),
            }
            Ok(())
        })
        .await;
        drop(bar);
        let last = last?;
        print_line(progress_line(&last))?;
        last
    } else {
        follow(&mut client, id, |job| print_line(progress_line(job))).await?
    };
    report_unfinished(&last);
    Ok(Outcome::all_completed([&last.state]))
}

/// Watches `id` on `client`, calling `on_event` for every step, and returns the
/// job's final state. If the stream ends before a finished state was seen, the
/// final state is asked for once more (and shown as one more event).
pub(super) async fn follow(
    client: &mut Client,
    id: &str,
    mut on_event: impl FnMut(&JobInfo) -> Result<(), Error>,
) -> Result<JobInfo, Error> {
    client.watch(id).await?;
    let mut last: Option<JobInfo> = None;
    while let Some(job) = client.next_event().await? {
        on_event(&job)?;
        last = Some(job);
    }
    match last {
        Some(job) if job.state.is_finished() => Ok(job),
        _ => {
            let ids = [id.to_string()];
            let job = client
                .status(&ids)
                .await?
                .into_iter()
                .find(|j| j.id == id)
                .ok_or_else(|| missing(id))?;
            on_event(&job)?;
            Ok(job)
        }
    }
}
