//! `jobctl ping`: prints `pong (jobd <version>, user <name>)`.

use super::{print_line, Ctx, Error, Outcome};
use serde_json::json;

pub async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    client.ping().await?;
    if ctx.json {
        print_line(json!({
            "pong": true,
            "daemon_version": client.daemon_version,
            "user": client.user,
        }))?;
    } else if !ctx.quiet {
        print_line(format_args!(
            "pong (jobd {}, user {})",
            client.daemon_version, client.user
        ))?;
    }
    Ok(Outcome::Success)
}
