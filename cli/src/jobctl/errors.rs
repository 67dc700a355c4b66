//! `jobctl errors ID`: the rows a job rejected, as `row N: message` lines or, with
//! `--json`, an array of `{"row": N, "message": "..."}`.

use super::render::{self, row_errors_json};
use super::{print_line, Ctx, Error, Outcome};

pub async fn run(ctx: &Ctx, id: &str) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let errors = client.errors(id).await?;
    if ctx.json {
        print_line(render::pretty(&row_errors_json(&errors)))?;
    } else {
        for e in &errors {
            print_line(format_args!("row {}: {}", e.row, e.message))?;
        }
    }
    Ok(Outcome::Success)
}
