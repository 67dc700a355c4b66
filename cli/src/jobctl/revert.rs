//! `jobctl revert ID [--dry-run]`: undoes every effect of a finished upload or
//! bulk-team job in one transaction (the job becomes `reverted`), or says what
//! that would undo.

use super::render::{self, control_line, job_json, undo_json, undo_text};
use super::{print_line, Ctx, Error, Outcome};

pub async fn run(ctx: &Ctx, id: &str, dry_run: bool) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    if dry_run {
        let summary = client.revert_dry_run(id).await?;
        if ctx.json {
            print_line(render::pretty(&undo_json(&summary, "revert")))?;
        } else if !ctx.quiet {
            print_line(undo_text(&summary, "revert"))?;
        }
        return Ok(Outcome::Success);
    }
    let job = client.revert(id).await?;
    if ctx.json {
        print_line(render::pretty(&job_json(&job)))?;
    } else if !ctx.quiet {
        print_line(control_line(&job, "revert"))?;
    }
    Ok(Outcome::Success)
}
