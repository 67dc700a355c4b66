//! `Watch`: the job now, then every change pushed as it happens, until it ends.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::Caller;
use jobd_protocol::Response;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
) -> Result<(), ConnError> {
    let mut rx = match ctx.registry.subscribe(caller, id.trim()).await {
        Ok(rx) => rx,
        Err(r) => return refuse(conn, r).await,
    };
    loop {
        let info = rx.borrow_and_update().clone();
        let done = info.state.is_finished();
        conn.send(&Response::Job(info)).await?;
        if done {
            return conn.send(&Response::End { count: 0 }).await;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            // Anything from the client ends a watch; so does its going away.
            _ = conn.closed() => return Err(ConnError::Idle),
        }
    }
}
