//! `jobctl upload FILE|-` and `jobctl bulk-team FILE|-`: stream a file (or stdin)
//! to the daemon in chunks, never whole in memory. Also the common end of every
//! submit command: print the new job, and with `--wait` follow it to its end.

use super::progress::Bar;
use super::render::{self, job_json, progress_line};
use super::{print_line, wait, Ctx, Error, Outcome, SubmitOpts};
use jobd_protocol::{Client, JobInfo, UploadKind};
use std::path::Path;
use tokio::io::AsyncRead;

pub async fn run(
    ctx: &Ctx,
    kind: UploadKind,
    file: &Path,
    opts: &SubmitOpts,
) -> Result<Outcome, Error> {
    // The input is opened before anything is sent, so a bad path never makes a job.
    let (input, len) = open_input(file).await?;
    let mut client = ctx.connect().await?;
    let bar = if ctx.quiet {
        Bar::hidden()
    } else {
        Bar::upload(len)
    };
    let job = client
        .upload(kind, opts.rate, input, |sent| bar.set_bytes(sent))
        .await;
    bar.finish();
    submitted(ctx, &mut client, job?, opts).await
}

type Input = Box<dyn AsyncRead + Unpin + Send>;

/// The file to upload and its size when known; `-` is stdin.
async fn open_input(file: &Path) -> Result<(Input, Option<u64>), Error> {
    if file.as_os_str() == "-" {
        return Ok((Box::new(tokio::io::stdin()), None));
    }
    let open_error = |source| Error::Open {
        path: file.to_path_buf(),
        source,
    };
    let f = tokio::fs::File::open(file).await.map_err(open_error)?;
    let meta = f.metadata().await.map_err(open_error)?;
    if meta.is_dir() {
        return Err(open_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    // Pipes and devices report no meaningful size.
    let len = meta.is_file().then_some(meta.len());
    Ok((Box::new(f), len))
}

/// Prints a new job: `Job <id> submitted.`, only the id with `-q`, the object with
/// `--json`. With `--wait`, follows it to its end: the final state is printed
/// (`--json`: only the final object) and the outcome is whether it completed.
pub(super) async fn submitted(
    ctx: &Ctx,
    client: &mut Client,
    job: JobInfo,
    opts: &SubmitOpts,
) -> Result<Outcome, Error> {
    if !ctx.json {
        if ctx.quiet {
            print_line(&job.id)?;
        } else {
            print_line(format_args!("Job {} submitted.", job.id))?;
        }
    }
    if !opts.wait {
        if ctx.json {
            print_line(render::pretty(&job_json(&job)))?;
        }
        return Ok(Outcome::Success);
    }
    let last = if job.state.is_finished() {
        job
    } else {
        wait::one(ctx, client, &job).await?
    };
    if ctx.json {
        print_line(render::pretty(&job_json(&last)))?;
    } else if !ctx.quiet {
        print_line(progress_line(&last))?;
    }
    wait::report_unfinished(&last);
    Ok(Outcome::all_completed([&last.state]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobd_protocol::JobState;

    #[tokio::test]
    async fn missing_file_is_an_open_error() {
        let err = open_input(Path::new("/nonexistent/jobctl-test.csv"))
            .await
            .err()
            .expect("error");
        assert!(err
            .to_string()
            .starts_with("cannot open /nonexistent/jobctl-test.csv: "));
        let err = open_input(Path::new("/")).await.err().expect("error");
        assert!(matches!(err, Error::Open { .. }));
    }

    #[test]
    fn completed_is_success() {
        assert_eq!(
            Outcome::all_completed([&JobState::Completed]),
            Outcome::Success
        );
        assert_eq!(
            Outcome::all_completed([&JobState::Terminated]),
            Outcome::NotCompleted
        );
    }
}
