//! `Output`: the file of a completed export, streamed in chunks.

use super::{refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal};
use jobd_protocol::{ErrorCode, JobKind, JobState, Response, CHUNK_SIZE};
use tokio::io::AsyncReadExt;

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    id: &str,
) -> Result<(), ConnError> {
    let id = id.trim();
    let info = match ctx.registry.get(caller, id) {
        Ok((_, info)) => info,
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
    let path = ctx.registry.paths().export_file(id);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            let r = Refusal::new(
                ErrorCode::StorageError,
                format!("cannot open the output: {e}"),
            );
            return refuse(conn, r).await;
        }
    };
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
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
