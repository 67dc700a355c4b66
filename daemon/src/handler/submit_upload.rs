//! `SubmitUpload`: receive the file's chunks into a spool file, make it durable,
//! then create the job. A client that goes away mid-upload leaves nothing behind.

use super::{check_rate, refuse, Context};
use crate::connection::{ConnError, Connection};
use crate::registry::{Caller, Refusal, Submission};
use crate::spool::SpoolFile;
use jobd_protocol::{ErrorCode, Request, Response, UploadKind};

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
    let mut spool = match SpoolFile::create(&ctx.registry.paths().spool_dir).await {
        Ok(s) => s,
        Err(e) => return refuse(conn, storage("cannot create a spool file", e)).await,
    };
    conn.send(&Response::Ready).await?;
    loop {
        match conn.read().await? {
            Some(Request::Chunk { data }) => {
                if spool.written() + data.len() as u64 > ctx.max_upload_bytes {
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
                if let Err(e) = spool.write(&data).await {
                    // The connection cannot be resynchronized mid-stream: answer, then close.
                    refuse(conn, storage("cannot write the upload", e)).await?;
                    return Err(ConnError::Idle);
                }
            }
            Some(Request::End { bytes }) if bytes == spool.written() => break,
            Some(Request::End { bytes }) => {
                let msg = format!(
                    "upload announced {bytes} bytes but {} arrived",
                    spool.written()
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
            // Client gone: the spool file is removed when `spool` drops.
            None => return Ok(()),
        }
    }
    if let Err(e) = spool.sync().await {
        return refuse(conn, storage("cannot sync the upload", e)).await;
    }
    let sub = Submission {
        kind: kind.into(),
        rate,
        input: spool.name().to_string(),
    };
    match ctx.registry.submit(caller, sub).await {
        Ok(info) => {
            spool.keep();
            conn.send(&Response::Job(info)).await
        }
        Err(r) => refuse(conn, r).await,
    }
}

fn storage(what: &str, e: std::io::Error) -> Refusal {
    Refusal::new(ErrorCode::StorageError, format!("{what}: {e}"))
}
