//! `Revert`: undoes a finished upload or bulk-team job, or with `dry_run` says
//! what that would undo. Checks run as for controls: the id, then the job's
//! existence and owner, then whether it can be reverted.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal, Reverted};
use jobd_protocol::{ErrorCode, Response};

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
    dry_run: bool,
) -> Result<(), ConnError> {
    let id = id.trim();
    if id.is_empty() {
        return refuse(
            conn,
            Refusal::new(ErrorCode::InvalidId, "the job id is empty"),
        )
        .await;
    }
    match ctx.registry.revert(caller, id, dry_run).await {
        Ok(Reverted::Done(info)) => conn.send(&Response::Job(info)).await,
        Ok(Reverted::Preview(summary)) => conn.send(&Response::Undo(Box::new(summary))).await,
        Err(r) => refuse(conn, r).await,
    }
}
