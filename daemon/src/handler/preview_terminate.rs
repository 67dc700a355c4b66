//! `PreviewTerminate`: what a terminate of an unfinished job would roll back
//! now (`jobctl terminate --dry-run`). Nothing changes.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal};
use jobd_protocol::{ErrorCode, Response};

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
) -> Result<(), ConnError> {
    let id = id.trim();
    if id.is_empty() {
        return refuse(
            conn,
            Refusal::new(ErrorCode::InvalidId, "the job id is empty"),
        )
        .await;
    }
    match ctx.registry.preview_terminate(caller, id).await {
        Ok(summary) => conn.send(&Response::Undo(Box::new(summary))).await,
        Err(r) => refuse(conn, r).await,
    }
}
