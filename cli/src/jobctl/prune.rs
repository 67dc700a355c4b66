//! `jobctl prune [--older-than DURATION] [--state S,...]`: forgets finished jobs
//! (yours; everyone's for root). Prints how many: a line, `-q` the number alone,
//! `--json` `{"pruned": N}`.

use super::render;
use super::{print_line, Ctx, Error, Outcome};
use jobd_protocol::JobState;
use serde_json::json;
use std::time::Duration;

pub async fn run(ctx: &Ctx, older_than: Duration, states: &[JobState]) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let ms = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
    let count = client.prune(ms, states).await?;
    if ctx.json {
        print_line(render::pretty(&json!({ "pruned": count })))?;
    } else if ctx.quiet {
        print_line(count)?;
    } else {
        let jobs = if count == 1 { "job" } else { "jobs" };
        print_line(format!("Pruned {count} finished {jobs}."))?;
    }
    Ok(Outcome::Success)
}

/// `--state`: a final state by name.
pub fn parse_state(s: &str) -> Result<JobState, String> {
    match s.trim().parse::<JobState>() {
        Ok(state) if state.is_finished() => Ok(state),
        Ok(state) => Err(format!(
            "{state} jobs have not finished; only completed, failed, terminated and reverted ones can be pruned"
        )),
        Err(()) => Err(format!(
            "{s:?} is not a state: completed, failed, terminated or reverted"
        )),
    }
}

/// `--older-than`: a duration such as `30d`, `12h` or `0s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    jobd_protocol::duration::parse(s).map_err(|e| e.to_string())
}
