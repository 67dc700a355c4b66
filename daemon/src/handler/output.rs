//! `Output`: the output of a completed export, streamed in chunks from the store.

use super::{refuse, store_call, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal};
use jobd_protocol::{ErrorCode, JobKind, JobState, Response, CHUNK_SIZE};
use std::sync::Arc;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
) -> Result<(), ConnError> {
    let id = id.trim();
    let (seq, info) = match ctx.registry.get(caller, id).await {
        Ok(found) => found,
        Err(r) => return refuse(conn, r).await,
    };
    if info.kind != JobKind::CreateExport || info.state != JobState::Completed {
        let why = if info.kind != JobKind::CreateExport {
            format!("job {id} is a {} job; only exports have output", info.kind)
        } else {
            format!(
                "export {id} is {}; its output exists once it completed",
                info.state
            )
        };
        return refuse(conn, Refusal::new(ErrorCode::NoOutput, why)).await;
    }
    let store = Arc::clone(ctx.registry.store());
    let mut reader = match store_call(move || store.output(seq)).await {
        Ok(r) => r,
        Err(r) => return refuse(conn, r).await,
    };
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut sent = 0u64;
    loop {
        let read = store_call(move || {
            let n = reader.read(&mut buf)?;
            Ok((reader, buf, n))
        })
        .await;
        let n;
        (reader, buf, n) = match read {
            Ok(r) => r,
            // Chunks already sent cannot be taken back: end the connection so that
            // the client sees the output cut short, never a truncated whole.
            Err(r) => {
                refuse(conn, r).await?;
                return Err(ConnError::Idle);
            }
        };
        if n == 0 {
            break;
        }
        conn.queue(&Response::Chunk {
            data: buf[..n].to_vec(),
        })
        .await?;
        sent += n as u64;
    }
    conn.send(&Response::End { count: sent }).await
}
