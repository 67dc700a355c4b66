//! `Prune`: forgets finished jobs — the caller's, or every user's for root —
//! and answers with how many once every batch has committed.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Pruning, Refusal};
use jobd_protocol::{ErrorCode, JobState, Response};
use std::time::Duration;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    older_than_ms: u64,
    states: &[JobState],
) -> Result<(), ConnError> {
    // There are only so many states: a longer list is not a client's mistake.
    if states.len() > JobState::all().len() {
        return refuse(
            conn,
            Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "{} states given; there are {}",
                    states.len(),
                    JobState::all().len()
                ),
            ),
        )
        .await;
    }
    let mut wanted: Vec<JobState> = Vec::with_capacity(states.len());
    for s in states {
        if !wanted.contains(s) {
            wanted.push(*s);
        }
    }
    let pruning = Pruning {
        older_than: Duration::from_millis(older_than_ms),
        states: wanted,
        owner: (caller.uid != 0).then(|| caller.user.clone()),
    };
    match ctx.registry.prune(&pruning).await {
        Ok(count) => conn.send(&Response::Pruned { count }).await,
        Err(r) => refuse(conn, r).await,
    }
}
