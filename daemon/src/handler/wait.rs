//! `Wait`: answers once every named job has ended, with their final states.

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
    let mut receivers = Vec::with_capacity(ids.len());
    for id in ids {
        match ctx.registry.subscribe(caller, id.trim()).await {
            Ok(rx) => receivers.push(rx),
            Err(r) => return refuse(conn, r).await,
        }
    }
    let all_done = async {
        let mut finals = Vec::with_capacity(receivers.len());
        for rx in &mut receivers {
            match rx.wait_for(|i| i.state.is_finished()).await {
                Ok(info) => finals.push(info.clone()),
                Err(_) => return None,
            }
        }
        Some(finals)
    };
    let finals = tokio::select! {
        f = all_done => f,
        _ = conn.closed() => return Err(ConnError::Idle),
    };
    let Some(finals) = finals else {
        return Ok(());
    };
    for page in finals.chunks(PAGE) {
        conn.queue(&Response::Jobs(page.to_vec())).await?;
    }
    conn.send(&Response::End {
        count: finals.len() as u64,
    })
    .await
}
