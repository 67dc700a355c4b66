//! `jobctl stop|start|terminate ID` and `jobctl update-task --id ID --action A`.
//! The action travels as text; the daemon decides what is valid (`invalid_action`).
//! `jobctl terminate --dry-run ID` asks what a terminate would roll back instead.

use super::render::{self, control_line, job_json, undo_json, undo_text};
use super::{print_line, Ctx, Error, Outcome};

pub async fn run(ctx: &Ctx, id: &str, action: &str) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let job = client.control(id, action).await?;
    if ctx.json {
        print_line(render::pretty(&job_json(&job)))?;
    } else if !ctx.quiet {
        print_line(control_line(&job, action))?;
    }
    Ok(Outcome::Success)
}

/// What `terminate` would roll back now; nothing changes.
pub async fn terminate_dry_run(ctx: &Ctx, id: &str) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let summary = client.preview_terminate(id).await?;
    if ctx.json {
        print_line(render::pretty(&undo_json(&summary, "terminate")))?;
    } else if !ctx.quiet {
        print_line(undo_text(&summary, "terminate"))?;
    }
    Ok(Outcome::Success)
}
