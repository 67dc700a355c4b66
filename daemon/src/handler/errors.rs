//! `Errors`: a job's row errors in row order, paged straight from the store.

use super::{refuse, Context, PAGE};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal};
use crate::store;
use jobd_protocol::{ErrorCode, Response};

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
) -> Result<(), ConnError> {
    let seq = match ctx.registry.get(caller, id.trim()) {
        Ok((seq, _)) => seq,
        Err(r) => return refuse(conn, r).await,
    };
    let mut after = 0u64;
    let mut count = 0u64;
    loop {
        let st = ctx.registry.store().clone();
        let page = tokio::task::spawn_blocking(move || {
            let c = st.conn()?;
            store::jobs::row_errors(&c, seq, after, PAGE)
        })
        .await;
        let page = match page {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return refuse(conn, Refusal::new(ErrorCode::StorageError, e.to_string())).await
            }
            Err(e) => return refuse(conn, Refusal::new(ErrorCode::Internal, e.to_string())).await,
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
