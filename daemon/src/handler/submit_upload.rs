//! `SubmitUpload`: receive the file's chunks into the store, then create the job
//! with it. A client that goes away mid-upload leaves nothing behind. The data
//! rows are counted as the chunks pass (see [`Counting`]), so the job has its
//! total from the start.

use super::{check_rate, refuse, store_call, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal, Submission, SubmitInput};
use crate::rowcount::Counting;
use crate::store::Upload;
use jobd_protocol::{ErrorCode, Request, Response, UploadKind, CHUNK_SIZE};
use std::sync::Arc;

/// Bytes gathered before they are handed to the store.
const HAND_OVER: usize = 1 << 20;

/// Writes `pending` to the upload on a blocking thread and hands a copy to the
/// row counter (which may make it wait); gives all back (the buffer emptied).
async fn hand_over(
    mut upload: Box<dyn Upload>,
    mut pending: Vec<u8>,
    rows: Option<Counting>,
) -> Result<(Box<dyn Upload>, Vec<u8>, Option<Counting>), Refusal> {
    store_call(move || {
        upload.write(&pending)?;
        if let Some(c) = &rows {
            c.feed(pending.clone());
        }
        pending.clear();
        Ok((upload, pending, rows))
    })
    .await
}

pub async fn handle(
    conn: &mut Connection,
    ctx: &Context,
    caller: &Caller,
    kind: UploadKind,
    rate: Option<f64>,
) -> Result<(), ConnError> {
    let rate = match check_rate(rate) {
        Ok(r) => r,
        Err(r) => return refuse(conn, r).await,
    };
    let store = Arc::clone(ctx.registry.store());
    let mut upload = match store_call(move || store.create_upload()).await {
        Ok(u) => u,
        Err(r) => return refuse(conn, r).await,
    };
    conn.send(&Response::Ready).await?;
    // Chunks are handed to the store a few at a time: each hand-over is a trip to
    // a blocking thread.
    let mut pending: Vec<u8> = Vec::with_capacity(HAND_OVER + CHUNK_SIZE);
    // Without a thread to count on, the job just has no total.
    let mut rows = Counting::start()
        .inspect_err(|e| tracing::warn!("cannot count the upload's rows: {e}"))
        .ok();
    loop {
        match conn.read().await? {
            Some(Request::Chunk { data }) => {
                let received = upload.written() + (pending.len() + data.len()) as u64;
                if received > ctx.max_upload_bytes {
                    let r = Refusal::new(
                        ErrorCode::UploadIncomplete,
                        format!(
                            "upload larger than the limit of {} bytes",
                            ctx.max_upload_bytes
                        ),
                    );
                    refuse(conn, r).await?;
                    return Err(ConnError::Idle);
                }
                pending.extend_from_slice(&data);
                if pending.len() >= HAND_OVER {
                    (upload, pending, rows) = match hand_over(upload, pending, rows).await {
                        Ok(u) => u,
                        Err(r) => {
                            // The connection cannot be resynchronized mid-stream:
                            // answer, then close.
                            refuse(conn, r).await?;
                            return Err(ConnError::Idle);
                        }
                    };
                }
            }
            Some(Request::End { bytes }) if bytes == upload.written() + pending.len() as u64 => {
                break
            }
            Some(Request::End { bytes }) => {
                let msg = format!(
                    "upload announced {bytes} bytes but {} arrived",
                    upload.written() + pending.len() as u64
                );
                return refuse(conn, Refusal::new(ErrorCode::UploadIncomplete, msg)).await;
            }
            Some(_) => {
                let r = Refusal::new(
                    ErrorCode::BadRequest,
                    "expected Chunk or End during an upload",
                );
                refuse(conn, r).await?;
                return Err(ConnError::Idle);
            }
            // Client gone: the upload is discarded when it drops.
            None => return Ok(()),
        }
    }
    if !pending.is_empty() {
        (upload, _, rows) = match hand_over(upload, pending, rows).await {
            Ok(u) => u,
            Err(r) => return refuse(conn, r).await,
        };
    }
    let sub = Submission {
        kind: kind.into(),
        rate,
        input: SubmitInput::Upload(upload),
        total: match rows {
            Some(c) => tokio::task::spawn_blocking(|| c.finish())
                .await
                .ok()
                .flatten(),
            None => None,
        },
    };
    match ctx.registry.submit(caller, sub).await {
        Ok(info) => conn.send(&Response::Job(info)).await,
        Err(r) => refuse(conn, r).await,
    }
}
