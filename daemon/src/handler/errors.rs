//! `Errors`: a job's row errors in row order, paged straight from the store.

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
) -> Result<(), ConnError> {
    let seq = match ctx.registry.get(caller, id.trim()).await {
        Ok((seq, _)) => seq,
        Err(r) => return refuse(conn, r).await,
    };
    let mut after = 0u64;
    let mut count = 0u64;
    loop {
        let store = Arc::clone(ctx.registry.store());
        let page = match store_call(move || store.row_errors(seq, after, PAGE)).await {
            Ok(p) => p,
            // Pages already sent cannot be taken back; the error ends the list.
            Err(r) => return refuse(conn, r).await,
        };
        let Some(last) = page.last() else { break };
        after = last.row;
        count += page.len() as u64;
        let full = page.len() == PAGE;
        conn.queue(&Response::RowErrors(page)).await?;
        if !full {
            break;
        }
    }
    conn.send(&Response::End { count }).await
}
