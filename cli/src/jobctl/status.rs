//! `jobctl status [ID...]`: a table of jobs (all of the caller's when no id is
//! given); `-q` prints only their ids; `--json` one object for exactly one id,
//! else an array.

use super::render::{self, jobs_json, status_table};
use super::{print_line, Ctx, Error, Outcome};
use jobd_protocol::{ClientError, ErrorCode};

pub async fn run(ctx: &Ctx, ids: &[String]) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let jobs = client.status(ids).await?;
    if let [id] = ids {
        if !jobs.iter().any(|j| &j.id == id) {
            return Err(Error::Client(ClientError::Daemon {
                code: ErrorCode::IdDoesntExist,
                message: format!("no job {id}"),
            }));
        }
    }
    if ctx.json {
        print_line(render::pretty(&jobs_json(&jobs, ids.len() == 1)))?;
    } else if ctx.quiet {
        for job in &jobs {
            print_line(&job.id)?;
        }
    } else {
        print_line(status_table(&jobs))?;
    }
    Ok(Outcome::Success)
}
