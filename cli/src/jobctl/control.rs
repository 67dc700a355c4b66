//! `jobctl stop|start|terminate ID` and `jobctl update-task --id ID --action A`.
//! The action travels as text; the daemon decides what is valid (`invalid_action`).

use super::render::{self, control_line, job_json};
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
