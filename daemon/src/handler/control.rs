//! `Control`: stop, start or terminate a job. Checks run in the original service's
//! order: id, then existence, then action.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal};
use jobd_protocol::{Action, ErrorCode, Response};

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<(), ConnError> {
    let started = std::time::Instant::now();
    let result = control(ctx, caller, id.trim(), action.trim()).await;
    // Timed when the action was one (refusals of a bad action are not controls).
    if let Some(a) = Action::parse(action.trim()) {
        ctx.registry.metrics().control(a, started.elapsed());
    }
    match result {
        Ok(info) => conn.send(&Response::Job(info)).await,
        Err(r) => refuse(conn, r).await,
    }
}

async fn control(
    ctx: &Context,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<jobd_protocol::JobInfo, Refusal> {
    if id.is_empty() {
        return Err(Refusal::new(ErrorCode::InvalidId, "the job id is empty"));
    }
    ctx.registry.get(caller, id).await?;
    let action = Action::parse(action).ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidAction,
            format!("action {action:?} is not one of stop, start, terminate"),
        )
    })?;
    ctx.registry.control(caller, id, action).await
}
