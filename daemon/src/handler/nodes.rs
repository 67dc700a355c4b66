use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use jobd_protocol::Response;

/// Every node sharing the store (or this one alone), answered in one frame: a
/// cluster has few nodes, and the frame limit is checked by the sender anyway.
pub async fn handle(conn: &mut Connection, ctx: &Context) -> Result<(), ConnError> {
    match ctx.registry.nodes().await {
        Ok(nodes) => conn.send(&Response::Nodes(nodes)).await,
        Err(r) => refuse(conn, r).await,
    }
}
