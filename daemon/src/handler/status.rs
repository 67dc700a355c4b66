//! `Status`: the given jobs, or all the caller may see, in pages.

use super::{refuse, Context, PAGE};
use crate::connection::{ConnError, Connection};
use crate::registry::Caller;
use jobd_protocol::Response;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    ids: &[String],
) -> Result<(), ConnError> {
    let jobs = if ids.is_empty() {
        ctx.registry.list(caller)
    } else {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            match ctx.registry.get(caller, id.trim()).await {
                Ok((_, info)) => jobs.push(info),
                Err(r) => return refuse(conn, r).await,
            }
        }
        jobs
    };
    for page in jobs.chunks(PAGE) {
        conn.queue(&Response::Jobs(page.to_vec())).await?;
    }
    conn.send(&Response::End {
        count: jobs.len() as u64,
    })
    .await
}
