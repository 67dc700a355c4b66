//! `SubmitUpload`: receive the file's chunks into the store, then create the job
//! with it. A client that goes away mid-upload leaves nothing behind.

use super::{check_rate, refuse, store_call, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal, Submission, SubmitInput};
use jobd_protocol::{ErrorCode, Request, Response, UploadKind};
use std::sync::Arc;

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
    loop {
        match conn.read().await? {
            Some(Request::Chunk { data }) => {
                if upload.written() + data.len() as u64 > ctx.max_upload_bytes {
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
                let written = store_call(move || {
                    let r = upload.write(&data);
                    Ok((upload, r))
                })
                .await;
                let (u, result) = match written {
                    Ok(w) => w,
                    Err(r) => {
                        refuse(conn, r).await?;
                        return Err(ConnError::Idle);
                    }
                };
                upload = u;
                if let Err(e) = result {
                    // The connection cannot be resynchronized mid-stream: answer, then close.
                    refuse(conn, Refusal::storage(e)).await?;
                    return Err(ConnError::Idle);
                }
            }
            Some(Request::End { bytes }) if bytes == upload.written() => break,
            Some(Request::End { bytes }) => {
                let msg = format!(
                    "upload announced {bytes} bytes but {} arrived",
                    upload.written()
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
    let sub = Submission {
        kind: kind.into(),
        rate,
        input: SubmitInput::Upload(upload),
    };
    match ctx.registry.submit(caller, sub).await {
        Ok(info) => conn.send(&Response::Job(info)).await,
        Err(r) => refuse(conn, r).await,
    }
}
