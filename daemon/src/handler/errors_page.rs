//! `ErrorsPage`: one page of a job's row errors, after a given row, straight from
//! the store (a dashboard shows them page by page, never all at once).

use super::{refuse, store_call, Context, PAGE};
use crate::connection::{ConnError, Connection};
use crate::registry::Caller;
use jobd_protocol::Response;
use std::sync::Arc;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
    after: u64,
    limit: u32,
) -> Result<(), ConnError> {
    let seq = match ctx.registry.get(caller, id.trim()).await {
        Ok((seq, _)) => seq,
        Err(r) => return refuse(conn, r).await,
    };
    let limit = usize::try_from(limit).unwrap_or(PAGE).min(PAGE);
    let store = Arc::clone(ctx.registry.store());
    let page = match store_call(move || store.row_errors(seq, after, limit)).await {
        Ok(p) => p,
        Err(r) => return refuse(conn, r).await,
    };
    let count = page.len() as u64;
    conn.queue(&Response::RowErrors(page)).await?;
    conn.send(&Response::End { count }).await
}
